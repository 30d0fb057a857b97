//! The login steps, whichever way a card is reached: APDUs over PC/SC following a card
//! profile ([`ApduBackend`]), or a PKCS#11 module such as the ANS's Cryptolib CPS
//! ([`Pkcs11Backend`]). The card worker runs both the same way: presence and removal stay
//! on PC/SC, a new card is inspected (its certificate, its PIN tries) without a PIN, a
//! login verifies the PIN and the possession of the key, and the card then stays held for
//! the session's signatures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::CardError;
use super::pkcs11::{Pkcs11Labels, Pkcs11Module, TokenKey, TokenSession};
use super::profile::{
    CardProfile, SignatureScheme, pin_tries_left, prove_possession, read_certificate,
    read_signature_certificate, sign_with_authentication_key, sign_with_signature_key, verify_pin,
    verify_pin_on_pad,
};
use super::reader::PcscCard;
use super::worker::{CardKey, PinSource};

/// How the gateway reaches the cards (`[cards] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// APDUs through pcscd, following `[cards.profile]`.
    #[default]
    Apdu,
    /// A PKCS#11 module (`pkcs11_module`): the Cryptolib CPS, OpenSC.
    Pkcs11,
}

/// A card's first look: its authentication certificate, and its PIN tries when it says.
pub type Inspection = (Result<Vec<u8>, CardError>, Option<u8>);

/// The login steps of one way of reaching cards.
pub trait CardBackend: Send + Sync {
    /// What the card in `reader` shows without a PIN.
    fn inspect(&self, reader: &str) -> Inspection;
    /// Checks that the card in `reader` still carries `expected` (the authentication
    /// certificate seen at insertion), verifies the PIN, proves possession of the key:
    /// the card, held for the session. Unless `last_try_confirmed`, the card's tries are
    /// read again just before the PIN and a card with one left gets no PIN
    /// ([`CardError::LastTryUnconfirmed`]): the count the desk read at insertion may be
    /// out of date (a login that timed out and reached the card later, a token that does
    /// not count its tries, another program).
    fn login(
        &self,
        reader: &str,
        pin: &PinSource,
        expected: &[u8],
        last_try_confirmed: bool,
    ) -> Result<Box<dyn HeldCard>, CardError>;
    /// How the authentication key signs.
    fn authentication_scheme(&self) -> SignatureScheme;
}

/// A card logged in, held for its session.
pub trait HeldCard: Send {
    /// The signature certificate (DER), read at login.
    fn signature_certificate(&self) -> Vec<u8>;
    /// The holder's practice situations the card shows (PKCS#11 data objects, read at
    /// login); none over APDUs.
    fn activities(&self) -> Vec<super::cps_data::CardActivity> {
        Vec::new()
    }
    /// The holder's specialty the card shows (PKCS#11 data object); none over APDUs.
    fn specialty(&self) -> Option<String> {
        None
    }
    /// Signs `message` with `key` (SHA-256; checked against the key's certificate).
    fn sign(&mut self, key: CardKey, message: &[u8]) -> Result<Vec<u8>, CardError>;
}

/// Cards reached with APDUs through pcscd.
pub struct ApduBackend {
    profile: CardProfile,
}

impl ApduBackend {
    /// Cards following `profile`.
    pub fn new(profile: CardProfile) -> Self {
        Self { profile }
    }
}

/// What a card shows without a PIN, over APDUs: its certificate and its PIN tries.
pub(crate) fn inspect_apdu(
    card: &mut dyn super::apdu::Transport,
    profile: &CardProfile,
) -> Inspection {
    let certificate = read_certificate(card, profile);
    let tries = certificate
        .as_ref()
        .ok()
        .and_then(|_| pin_tries_left(card, profile).ok().flatten());
    (certificate, tries)
}

/// The APDU login sequence: the same card as at insertion, its signature certificate
/// (public, read before the PIN), the PIN, proof of possession. Returns the signature
/// certificate.
pub(crate) fn login_apdu(
    card: &mut dyn super::apdu::Transport,
    profile: &CardProfile,
    pin: &PinSource,
    expected: &[u8],
    last_try_confirmed: bool,
) -> Result<Vec<u8>, CardError> {
    if read_certificate(card, profile)? != expected {
        return Err(CardError::CardChanged);
    }
    let signature_certificate = read_signature_certificate(card, profile)?;
    if !last_try_confirmed {
        refuse_last_try(pin_tries_left(card, profile)?)?;
    }
    match pin {
        PinSource::Typed(pin) => verify_pin(card, profile, pin)?,
        PinSource::PinPad => verify_pin_on_pad(card, profile)?,
    }
    prove_possession(card, profile, expected)?;
    Ok(signature_certificate)
}

/// What the tries a card reports just before its PIN leave of an unconfirmed login: none
/// left is a blocked card, one left needs the confirmation; a card that does not say
/// gets its PIN (as a card whose count was unknown at insertion always did).
fn refuse_last_try(tries_left: Option<u8>) -> Result<(), CardError> {
    match tries_left {
        Some(0) => Err(CardError::PinBlocked),
        Some(1) => Err(CardError::LastTryUnconfirmed),
        _ => Ok(()),
    }
}

/// Signs over APDUs with the key `key` of a logged-in card.
pub(crate) fn sign_apdu(
    card: &mut dyn super::apdu::Transport,
    profile: &CardProfile,
    key: CardKey,
    message: &[u8],
    certificates: (&[u8], &[u8]),
) -> Result<Vec<u8>, CardError> {
    match key {
        CardKey::Authentication => {
            sign_with_authentication_key(card, profile, message, certificates.0)
        }
        CardKey::Signature => sign_with_signature_key(card, profile, message, certificates.1),
    }
}

impl CardBackend for ApduBackend {
    fn inspect(&self, reader: &str) -> Inspection {
        match PcscCard::connect(reader) {
            Ok(mut card) => {
                // In a transaction: other programs reading the same card at the same
                // moment must not interleave their commands with these.
                let found = card
                    .in_transaction(|card| Ok(inspect_apdu(card, &self.profile)))
                    .unwrap_or_else(|e| (Err(e), None));
                // Reading the certificate changes nothing worth a reset.
                card.leave();
                found
            }
            Err(e) => (Err(e), None),
        }
    }

    fn login(
        &self,
        reader: &str,
        pin: &PinSource,
        expected: &[u8],
        last_try_confirmed: bool,
    ) -> Result<Box<dyn HeldCard>, CardError> {
        let mut card = PcscCard::connect(reader)?;
        let signature_certificate = card.in_transaction(|card| {
            login_apdu(card, &self.profile, pin, expected, last_try_confirmed)
        })?;
        Ok(Box::new(HeldApdu {
            card,
            profile: self.profile.clone(),
            authentication_certificate: expected.to_vec(),
            signature_certificate,
        }))
    }

    fn authentication_scheme(&self) -> SignatureScheme {
        self.profile.signature
    }
}

/// A card held over APDUs: the login's own connection (the PIN stays verified on it).
struct HeldApdu {
    card: PcscCard,
    profile: CardProfile,
    authentication_certificate: Vec<u8>,
    signature_certificate: Vec<u8>,
}

impl HeldCard for HeldApdu {
    fn signature_certificate(&self) -> Vec<u8> {
        self.signature_certificate.clone()
    }

    fn sign(&mut self, key: CardKey, message: &[u8]) -> Result<Vec<u8>, CardError> {
        let (profile, certificates) = (
            &self.profile,
            (
                self.authentication_certificate.as_slice(),
                self.signature_certificate.as_slice(),
            ),
        );
        self.card
            .in_transaction(|card| sign_apdu(card, profile, key, message, certificates))
    }
}

/// `[cards]`'s PKCS#11 settings.
#[derive(Debug, Clone)]
pub struct Pkcs11Settings {
    /// The module file.
    pub module: PathBuf,
    /// The objects' labels.
    pub labels: Pkcs11Labels,
    /// How the authentication key signs (the profile's `signature`).
    pub scheme: SignatureScheme,
    /// Readers whose slot is found by its token's label (software tokens, modules that
    /// do not name slots after readers): reader → token label.
    pub tokens: HashMap<String, String>,
}

/// Cards reached through a PKCS#11 module.
pub struct Pkcs11Backend {
    module: Arc<Pkcs11Module>,
    settings: Pkcs11Settings,
}

impl Pkcs11Backend {
    /// Loads the module of `settings`.
    pub fn load(settings: Pkcs11Settings) -> Result<Self, CardError> {
        Ok(Self {
            module: Arc::new(Pkcs11Module::load(&settings.module)?),
            settings,
        })
    }

    fn token(&self, reader: &str) -> Result<TokenSession, CardError> {
        let slot = self
            .module
            .slot_for(reader, self.settings.tokens.get(reader).map(String::as_str))?;
        self.module.open(slot, &self.settings.labels)
    }
}

impl CardBackend for Pkcs11Backend {
    fn inspect(&self, reader: &str) -> Inspection {
        match self.token(reader) {
            Ok(token) => (
                Ok(token.authentication_certificate.clone()),
                self.module.pin_tries_left(token.slot()).ok().flatten(),
            ),
            Err(e) => (Err(e), None),
        }
    }

    fn login(
        &self,
        reader: &str,
        pin: &PinSource,
        expected: &[u8],
        last_try_confirmed: bool,
    ) -> Result<Box<dyn HeldCard>, CardError> {
        let token = self.token(reader)?;
        if token.authentication_certificate != expected {
            return Err(CardError::CardChanged);
        }
        // A module that cannot give the token's flags now gets the PIN, as one whose
        // count was unknown at insertion always did.
        if !last_try_confirmed {
            refuse_last_try(self.module.pin_tries_left(token.slot()).ok().flatten())?;
        }
        // A token with a protected authentication path reads the PIN on the reader's own
        // keypad (the module asks it): a PIN typed at the workstation is not used then.
        let pad = self.module.pin_pad(token.slot())?;
        match pin {
            PinSource::Typed(_) if pad => {
                tracing::warn!(
                    reader,
                    "the token reads the PIN on the reader: set this desk's pin_entry = \"pinpad\""
                );
                token.login(&self.module, None)?
            }
            PinSource::Typed(pin) => token.login(&self.module, Some(pin))?,
            // A login without a PIN means "read it on the reader" only to a token that
            // says it can; to another, what it does is the module's guess (an error, or
            // an empty PIN spending a try).
            PinSource::PinPad if !pad => {
                return Err(CardError::PinPadUnavailable(
                    "the PKCS#11 token does not read the PIN on its reader (no protected authentication path)".into(),
                ));
            }
            PinSource::PinPad => token.login(&self.module, None)?,
        }
        token.prove_possession(self.settings.scheme)?;
        let (activities, specialty) = (token.activities(), token.specialty());
        Ok(Box::new(HeldToken {
            token,
            scheme: self.settings.scheme,
            activities,
            specialty,
        }))
    }

    fn authentication_scheme(&self) -> SignatureScheme {
        self.settings.scheme
    }
}

/// A token held logged in: its session stays open (and logged in) for the card session;
/// dropping it logs out and closes it.
struct HeldToken {
    token: TokenSession,
    scheme: SignatureScheme,
    activities: Vec<super::cps_data::CardActivity>,
    specialty: Option<String>,
}

impl HeldCard for HeldToken {
    fn signature_certificate(&self) -> Vec<u8> {
        self.token.signature_certificate.clone()
    }

    fn activities(&self) -> Vec<super::cps_data::CardActivity> {
        self.activities.clone()
    }

    fn specialty(&self) -> Option<String> {
        self.specialty.clone()
    }

    fn sign(&mut self, key: CardKey, message: &[u8]) -> Result<Vec<u8>, CardError> {
        let key = match key {
            CardKey::Authentication => TokenKey::Authentication(self.scheme),
            CardKey::Signature => TokenKey::Signature,
        };
        self.token.sign(key, message)
    }
}

impl Drop for HeldToken {
    fn drop(&mut self) {
        self.token.logout();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::profile::Pin;

    /// A card swapped between the desk's reading and the PIN: said as such (the physician
    /// starts again with the card in the reader), and no PIN reaches the other card.
    #[test]
    fn a_card_swapped_before_the_pin_is_said_to_have_changed() {
        let profile = CardProfile::default();
        let (mut card, shown) = crate::dev_card::emulator::test_card(profile.clone());
        let mut other = shown.clone();
        if let Some(last) = other.last_mut() {
            *last ^= 0xFF;
        }
        let pin = PinSource::Typed(Pin::new("1234").unwrap());
        let refused = login_apdu(&mut card, &profile, &pin, &other, false).unwrap_err();
        assert_eq!(refused, CardError::CardChanged);
        assert!(refused.message_fr().contains("La carte a changé"));
        // No try was spent on the card in the reader: the right PIN still opens it.
        assert!(login_apdu(&mut card, &profile, &pin, &shown, false).is_ok());
    }

    /// The card's own count decides, read just before the PIN: a card down to its last
    /// try (however the desk's count went stale) gets no PIN until the login confirms.
    #[test]
    fn an_unconfirmed_login_sends_no_pin_to_a_card_on_its_last_try() {
        let profile = CardProfile::default();
        let (mut card, shown) = crate::dev_card::emulator::test_card(profile.clone());
        let (right, wrong) = (
            PinSource::Typed(Pin::new("1234").unwrap()),
            PinSource::Typed(Pin::new("9999").unwrap()),
        );
        for left in [2, 1] {
            assert_eq!(
                login_apdu(&mut card, &profile, &wrong, &shown, false).unwrap_err(),
                CardError::WrongPin { tries_left: left }
            );
        }
        for pin in [&wrong, &right] {
            assert_eq!(
                login_apdu(&mut card, &profile, pin, &shown, false).unwrap_err(),
                CardError::LastTryUnconfirmed
            );
        }
        assert_eq!(card.tries_left(), 1, "no PIN reached the card");
        assert!(login_apdu(&mut card, &profile, &right, &shown, true).is_ok());
        assert_eq!(card.tries_left(), 3);
    }

    #[test]
    fn the_tries_a_card_reports_before_the_pin_decide_an_unconfirmed_login() {
        assert_eq!(refuse_last_try(Some(0)), Err(CardError::PinBlocked));
        assert_eq!(refuse_last_try(Some(1)), Err(CardError::LastTryUnconfirmed));
        assert_eq!(refuse_last_try(Some(2)), Ok(()));
        assert_eq!(refuse_last_try(None), Ok(()));
    }
}
