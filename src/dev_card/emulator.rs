//! The card side of the CPS profile: a virtual card for tests, the demo, and centre IT
//! checking an install without a real card. It holds its own RSA key pair and certificate,
//! a PIN with a tries counter that blocks at 0, and fault modes.
//!
//! This module runs the card in-process (as an [`apdu::Transport`](crate::card::apdu::Transport));
//! `vpcd.rs` plugs it into a real pcscd through vsmartcard-vpcd.

use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::card::CardError;
use crate::card::apdu::{Command, Transport};
use crate::card::profile::{CardProfile, Pin, SHA256_DIGEST_INFO_PREFIX, SignatureScheme};
use crate::dev_pki::{Authority, CardHolder};

/// PIN tries of a CPS card (docs/domain.md §3).
pub(crate) const PIN_TRIES: u8 = 3;

const OK: [u8; 2] = [0x90, 0x00];

/// The key pairs and certificates a virtual card carries: authentication (login, TLS)
/// and signature (the VIHF), like a real CPS.
#[derive(Clone)]
pub(crate) struct CardIdentity {
    /// The authentication certificate (DER).
    pub certificate_der: Vec<u8>,
    key: RsaPrivateKey,
    /// The signature certificate (DER).
    pub signature_certificate_der: Vec<u8>,
    signature_key: RsaPrivateKey,
}

impl CardIdentity {
    /// A fresh RSA-2048 key pair with a certificate from `ca` for `holder`,
    /// valid from `validity_days.0` to `validity_days.1` days relative to today.
    pub(crate) fn generate(
        ca: &Authority,
        holder: &CardHolder,
        validity_days: (i64, i64),
    ) -> Result<Self, CardError> {
        let fail = |e: &dyn std::fmt::Display| {
            CardError::Certificate(format!("cannot make the virtual card's identity: {e}"))
        };
        let pair = || -> Result<(RsaPrivateKey, rcgen::KeyPair), CardError> {
            let key = RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| fail(&e))?;
            let pkcs8 = key.to_pkcs8_der().map_err(|e| fail(&e))?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
            let key_pair =
                rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                    .map_err(|e| fail(&e))?;
            Ok((key, key_pair))
        };
        let (key, key_pair) = pair()?;
        let issued = ca
            .issue_card(holder, &key_pair, validity_days)
            .map_err(|e| fail(&e))?;
        let (signature_key, signature_pair) = pair()?;
        let signature = ca
            .issue_card_signature(holder, &signature_pair, validity_days)
            .map_err(|e| fail(&e))?;
        Ok(Self {
            certificate_der: issued.der.to_vec(),
            key,
            signature_certificate_der: signature.der.to_vec(),
            signature_key,
        })
    }

    /// The private keys as PKCS#8 PEM, authentication then signature (to keep a virtual
    /// card's identity across runs).
    pub(crate) fn key_pems(
        &self,
    ) -> Result<(zeroize::Zeroizing<String>, zeroize::Zeroizing<String>), CardError> {
        let encode = |key: &RsaPrivateKey| {
            key.to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| CardError::Certificate(format!("cannot encode the card key: {e}")))
        };
        Ok((encode(&self.key)?, encode(&self.signature_key)?))
    }

    /// An identity saved earlier: both certificates (DER) and PKCS#8 PEM keys.
    pub(crate) fn from_parts(
        (certificate_der, key_pem): (Vec<u8>, &str),
        (signature_certificate_der, signature_key_pem): (Vec<u8>, &str),
    ) -> Result<Self, CardError> {
        let read = |pem: &str| {
            RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| CardError::Certificate(format!("card key unreadable: {e}")))
        };
        Ok(Self {
            certificate_der,
            key: read(key_pem)?,
            signature_certificate_der,
            signature_key: read(signature_key_pem)?,
        })
    }

    /// The authentication and signature private keys (to write them into a token).
    pub(crate) fn private_keys(&self) -> (&RsaPrivateKey, &RsaPrivateKey) {
        (&self.key, &self.signature_key)
    }

    /// A card whose certificate is `certificate_of`'s but whose key is `key_of`'s: its
    /// signatures never match its certificate.
    pub(crate) fn mismatched(certificate_of: &CardIdentity, key_of: &CardIdentity) -> Self {
        Self {
            certificate_der: certificate_of.certificate_der.clone(),
            key: key_of.key.clone(),
            signature_certificate_der: certificate_of.signature_certificate_der.clone(),
            signature_key: key_of.signature_key.clone(),
        }
    }
}

/// Which of the card's two key pairs (and certificate files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRole {
    Authentication,
    Signature,
}

/// Faults the card can be told to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Fault {
    /// Behaves.
    #[default]
    None,
    /// Answers every command with bytes that are not a valid response.
    Garbage,
    /// Never answers a PIN check (a VERIFY carrying a PIN): a card that stops answering
    /// mid-login. [`EmulatedCard::process`]
    /// gives no bytes at all for it; the reader link then stays silent.
    SilentOnVerify,
}

/// A virtual CPS card.
pub(crate) struct EmulatedCard {
    profile: CardProfile,
    identity: CardIdentity,
    pin_block: Zeroizing<Vec<u8>>,
    tries_left: u8,
    app_selected: bool,
    /// The certificate file selected: authentication or signature.
    file_selected: Option<KeyRole>,
    pin_verified: bool,
    key_selected: Option<KeyRole>,
    fault: Fault,
    pin_pad: Option<Zeroizing<Vec<u8>>>,
}

impl EmulatedCard {
    /// A card following `profile`, with `identity` and PIN `pin`.
    pub(crate) fn new(
        profile: CardProfile,
        identity: CardIdentity,
        pin: &str,
    ) -> Result<Self, CardError> {
        let pin_block = profile.pin_block(&Pin::new(pin)?);
        Ok(Self {
            profile,
            identity,
            pin_block,
            tries_left: PIN_TRIES,
            app_selected: false,
            file_selected: None,
            pin_verified: false,
            key_selected: None,
            fault: Fault::None,
            pin_pad: None,
        })
    }

    /// Puts the card in an emulated PIN-pad reader on whose keypad `typed` is entered at
    /// every secure PIN entry (`None`: a reader without keypad).
    #[cfg(test)]
    pub(crate) fn set_pin_pad(&mut self, typed: Option<&str>) {
        self.pin_pad = typed.map(|t| Zeroizing::new(t.as_bytes().to_vec()));
    }

    /// Sets a fault mode.
    pub(crate) fn set_fault(&mut self, fault: Fault) {
        self.fault = fault;
    }

    /// PIN tries left.
    #[cfg(test)]
    pub(crate) fn tries_left(&self) -> u8 {
        self.tries_left
    }

    /// Power off and on, as a reader does: security state and selections are lost, the
    /// tries counter (in card memory) is kept.
    pub(crate) fn power_cycle(&mut self) {
        self.app_selected = false;
        self.file_selected = None;
        self.pin_verified = false;
        self.key_selected = None;
    }

    /// Answers one command APDU.
    pub(crate) fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.fault == Fault::Garbage {
            return vec![0x42];
        }
        let Ok(command) = Command::decode(apdu) else {
            return vec![0x67, 0x00];
        };
        // A VERIFY without data only asks the tries left: the desk still reads the card.
        if self.fault == Fault::SilentOnVerify && command.ins == 0x20 && !command.data.is_empty() {
            return Vec::new();
        }
        let result = match (command.ins, command.p1, command.p2) {
            (0xA4, 0x04, _) => self.select_application(&command),
            (0xA4, 0x02, _) => self.select_file(&command),
            (0xB0, _, _) => self.read_binary(&command),
            (0x20, _, _) => self.verify(&command),
            (0x22, 0x41, 0xA4) => self.manage_security_environment(&command),
            (0x88, 0x00, 0x00) => self.sign(&command, SignatureScheme::Pkcs1Sha256),
            (0x2A, 0x9E, 0x9A) => self.sign(&command, SignatureScheme::PssSha256),
            _ => Err([0x6D, 0x00]),
        };
        result.unwrap_or_else(|sw| sw.to_vec())
    }

    fn select_application(&mut self, command: &Command) -> Result<Vec<u8>, [u8; 2]> {
        self.power_cycle();
        self.app_selected = self
            .profile
            .aid_bytes()
            .is_ok_and(|aid| aid == command.data);
        if self.app_selected {
            Ok(OK.to_vec())
        } else {
            Err([0x6A, 0x82])
        }
    }

    fn select_file(&mut self, command: &Command) -> Result<Vec<u8>, [u8; 2]> {
        let is = |fid: Result<[u8; 2], CardError>| fid.is_ok_and(|fid| fid[..] == command.data[..]);
        self.file_selected = if !self.app_selected {
            None
        } else if is(self.profile.certificate_fid()) {
            Some(KeyRole::Authentication)
        } else if is(self.profile.signature_certificate_fid()) {
            Some(KeyRole::Signature)
        } else {
            None
        };
        if self.file_selected.is_some() {
            Ok(OK.to_vec())
        } else {
            Err([0x6A, 0x82])
        }
    }

    fn read_binary(&mut self, command: &Command) -> Result<Vec<u8>, [u8; 2]> {
        let file = match self.file_selected {
            None => return Err([0x69, 0x86]),
            Some(KeyRole::Authentication) => &self.identity.certificate_der,
            Some(KeyRole::Signature) => &self.identity.signature_certificate_der,
        };
        let offset = usize::from(u16::from_be_bytes([command.p1, command.p2]));
        if offset > file.len() {
            return Err([0x6B, 0x00]);
        }
        let end = (offset + command.le.unwrap_or(256)).min(file.len());
        let mut out = file[offset..end].to_vec();
        out.extend_from_slice(&OK);
        Ok(out)
    }

    fn verify(&mut self, command: &Command) -> Result<Vec<u8>, [u8; 2]> {
        if command.p2 != self.profile.pin_reference {
            return Err([0x6A, 0x88]);
        }
        if self.tries_left == 0 {
            return Err([0x69, 0x83]);
        }
        // No data: a query of the tries left, which consumes none.
        if command.data.is_empty() {
            return if self.pin_verified {
                Ok(OK.to_vec())
            } else {
                Err([0x63, 0xC0 | self.tries_left])
            };
        }
        if command.data[..] == self.pin_block[..] {
            self.tries_left = PIN_TRIES;
            self.pin_verified = true;
            return Ok(OK.to_vec());
        }
        self.tries_left -= 1;
        self.pin_verified = false;
        if self.tries_left == 0 {
            Err([0x69, 0x83])
        } else {
            Err([0x63, 0xC0 | self.tries_left])
        }
    }

    fn manage_security_environment(&mut self, command: &Command) -> Result<Vec<u8>, [u8; 2]> {
        self.key_selected = if command.data == [0x84, 0x01, self.profile.key_reference] {
            Some(KeyRole::Authentication)
        } else if command.data == [0x84, 0x01, self.profile.signature_key_reference] {
            Some(KeyRole::Signature)
        } else {
            None
        };
        if self.key_selected.is_some() {
            Ok(OK.to_vec())
        } else {
            Err([0x6A, 0x88])
        }
    }

    fn sign(&mut self, command: &Command, scheme: SignatureScheme) -> Result<Vec<u8>, [u8; 2]> {
        if !self.pin_verified {
            return Err([0x69, 0x82]);
        }
        // The signature key signs PKCS#1 v1.5 over a DigestInfo, whatever the
        // authentication key's scheme (the VIHF's RSA-SHA256).
        let (key, expected) = match self.key_selected {
            Some(KeyRole::Authentication) => (&self.identity.key, self.profile.signature),
            Some(KeyRole::Signature) => {
                (&self.identity.signature_key, SignatureScheme::Pkcs1Sha256)
            }
            None => return Err([0x69, 0x85]),
        };
        if scheme != expected {
            return Err([0x69, 0x85]);
        }
        let signature = match scheme {
            SignatureScheme::Pkcs1Sha256 => {
                let hash = command
                    .data
                    .strip_prefix(&SHA256_DIGEST_INFO_PREFIX[..])
                    .filter(|h| h.len() == 32)
                    .ok_or([0x6A, 0x80])?;
                key.sign(Pkcs1v15Sign::new::<Sha256>(), hash)
            }
            SignatureScheme::PssSha256 => {
                if command.data.len() != 32 {
                    return Err([0x6A, 0x80]);
                }
                key.sign_with_rng(&mut OsRng, Pss::new::<Sha256>(), &command.data)
            }
        };
        let mut out = signature.map_err(|_| [0x6F, 0x00])?;
        out.extend_from_slice(&OK);
        Ok(out)
    }
}

impl Transport for EmulatedCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        Ok(self.process(apdu))
    }

    /// The reader's side of `FEATURE_VERIFY_PIN_DIRECT`: read the template as a driver
    /// does, insert the keypad entry, send the VERIFY; a wrong-length entry is cancelled.
    fn verify_pin_on_pad(&mut self, verify_structure: &[u8]) -> Result<Vec<u8>, CardError> {
        let typed = self.pin_pad.clone().ok_or_else(|| {
            CardError::PinPadUnavailable("the emulated reader has no PIN pad".into())
        })?;
        let template = crate::card::pinpad::VerifyTemplate::decode(verify_structure)?;
        match template.complete(&typed) {
            Some(apdu) => Ok(self.process(&Zeroizing::new(apdu))),
            None => Ok(vec![0x64, 0x01]),
        }
    }
}

/// One identity for the crate's tests (RSA key generation is the slow part), with its
/// authority's certificate and an empty CRL of it (PEM), for a trust that accepts it.
#[cfg(test)]
fn test_pki() -> &'static (CardIdentity, String, String) {
    static PKI: std::sync::OnceLock<(CardIdentity, String, String)> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Authority::new("test CPS CA").unwrap();
        let identity = CardIdentity::generate(
            &ca,
            &CardHolder::physician("810002813839", "Jeanne", "Urgentiste"),
            (-1, 365),
        )
        .unwrap();
        let crl = ca.crl(&[], 0, 7).unwrap();
        (identity, ca.cert_pem().to_owned(), crl)
    })
}

#[cfg(test)]
pub(crate) fn test_identity() -> CardIdentity {
    test_pki().0.clone()
}

/// A card trust accepting [`test_identity`]'s certificates (files written in `dir`).
#[cfg(test)]
pub(crate) fn test_trust(dir: &std::path::Path) -> crate::card::trust::CardTrust {
    let (_, ca, crl) = test_pki();
    let (anchor, list) = (dir.join("test-ca.pem"), dir.join("test-ca.crl"));
    crate::dev_pki::write_file(&anchor, ca, 0o644).unwrap();
    crate::dev_pki::write_file(&list, crl, 0o644).unwrap();
    crate::card::trust::CardTrust::load(crate::card::trust::TrustConfig::new(
        vec![anchor],
        vec![list],
    ))
    .unwrap()
}

/// A card of that identity, PIN `1234`, and its authentication certificate (DER).
#[cfg(test)]
pub(crate) fn test_card(profile: CardProfile) -> (EmulatedCard, Vec<u8>) {
    let identity = test_identity();
    let cert = identity.certificate_der.clone();
    (EmulatedCard::new(profile, identity, "1234").unwrap(), cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::profile::{prove_possession, read_certificate, verify_pin};

    fn card(profile: CardProfile) -> (EmulatedCard, Vec<u8>) {
        test_card(profile)
    }

    /// The signature key signs only after the PIN, and only as itself: its signature
    /// verifies with the signature certificate, never with the authentication one.
    #[test]
    fn the_signature_key_signs_after_the_pin_with_its_own_certificate() {
        use crate::card::profile::{read_signature_certificate, sign_with_signature_key};
        let (mut card, auth) = card(CardProfile::default());
        let profile = CardProfile::default();
        read_certificate(&mut card, &profile).unwrap();
        let signing = read_signature_certificate(&mut card, &profile).unwrap();
        assert_ne!(signing, auth);
        assert!(matches!(
            sign_with_signature_key(&mut card, &profile, b"vihf", &signing),
            Err(CardError::SecurityStatusNotSatisfied)
        ));
        verify_pin(&mut card, &profile, &Pin::new("1234").unwrap()).unwrap();
        let signature = sign_with_signature_key(&mut card, &profile, b"vihf", &signing).unwrap();
        assert!(!signature.is_empty());
        // Checked against the authentication certificate, the same signature is refused.
        assert!(matches!(
            sign_with_signature_key(&mut card, &profile, b"vihf", &auth),
            Err(CardError::SignatureMismatch)
        ));
        // Authentication still proves possession with its own key.
        prove_possession(&mut card, &profile, &auth).unwrap();
    }

    #[test]
    fn full_login_sequence_with_both_signature_schemes() {
        for scheme in [SignatureScheme::Pkcs1Sha256, SignatureScheme::PssSha256] {
            let profile = CardProfile {
                signature: scheme,
                ..CardProfile::default()
            };
            let (mut card, issued) = card(profile.clone());
            let cert = read_certificate(&mut card, &profile).unwrap();
            assert_eq!(cert, issued);
            let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
            assert_eq!(
                parsed
                    .subject()
                    .iter_common_name()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap(),
                "810002813839"
            );
            verify_pin(&mut card, &profile, &Pin::new("1234").unwrap()).unwrap();
            prove_possession(&mut card, &profile, &cert).unwrap();
        }
    }

    #[test]
    fn wrong_pins_count_down_then_block_and_the_right_pin_no_longer_helps() {
        let profile = CardProfile::default();
        let (mut card, _) = card(profile.clone());
        let cert = read_certificate(&mut card, &profile).unwrap();
        let wrong = Pin::new("0000").unwrap();
        assert_eq!(
            verify_pin(&mut card, &profile, &wrong),
            Err(CardError::WrongPin { tries_left: 2 })
        );
        assert_eq!(
            verify_pin(&mut card, &profile, &wrong),
            Err(CardError::WrongPin { tries_left: 1 })
        );
        assert_eq!(
            verify_pin(&mut card, &profile, &wrong),
            Err(CardError::PinBlocked)
        );
        assert_eq!(
            verify_pin(&mut card, &profile, &Pin::new("1234").unwrap()),
            Err(CardError::PinBlocked)
        );
        assert_eq!(
            prove_possession(&mut card, &profile, &cert),
            Err(CardError::SecurityStatusNotSatisfied)
        );
        assert!(CardError::PinBlocked.message_fr().contains("Carte bloquée"));
    }

    #[test]
    fn tries_left_can_be_asked_without_spending_one() {
        use crate::card::profile::pin_tries_left;
        let profile = CardProfile::default();
        let (mut card, _) = card(profile.clone());
        read_certificate(&mut card, &profile).unwrap();
        assert_eq!(pin_tries_left(&mut card, &profile).unwrap(), Some(3));
        assert_eq!(pin_tries_left(&mut card, &profile).unwrap(), Some(3));
        let wrong = Pin::new("0000").unwrap();
        for _ in 0..3 {
            let _ = verify_pin(&mut card, &profile, &wrong);
        }
        assert_eq!(pin_tries_left(&mut card, &profile).unwrap(), Some(0));
    }

    #[test]
    fn a_good_pin_resets_the_counter_and_power_loss_forgets_verification() {
        let profile = CardProfile::default();
        let (mut card, cert) = card(profile.clone());
        read_certificate(&mut card, &profile).unwrap();
        assert!(verify_pin(&mut card, &profile, &Pin::new("9999").unwrap()).is_err());
        verify_pin(&mut card, &profile, &Pin::new("1234").unwrap()).unwrap();
        assert_eq!(card.tries_left(), PIN_TRIES);
        card.power_cycle();
        read_certificate(&mut card, &profile).unwrap();
        assert_eq!(
            prove_possession(&mut card, &profile, &cert),
            Err(CardError::SecurityStatusNotSatisfied)
        );
    }

    #[test]
    fn a_pin_typed_on_the_emulated_pin_pad_verifies_and_wrong_entries_count() {
        use crate::card::profile::verify_pin_on_pad;
        let profile = CardProfile::default();
        let (mut card, cert) = card(profile.clone());
        assert!(matches!(
            verify_pin_on_pad(&mut card, &profile),
            Err(CardError::PinPadUnavailable(_))
        ));
        read_certificate(&mut card, &profile).unwrap();
        card.set_pin_pad(Some("9999"));
        assert_eq!(
            verify_pin_on_pad(&mut card, &profile),
            Err(CardError::WrongPin { tries_left: 2 })
        );
        card.set_pin_pad(Some("12"));
        assert_eq!(
            verify_pin_on_pad(&mut card, &profile),
            Err(CardError::PinPadCancelled)
        );
        card.set_pin_pad(Some("1234"));
        verify_pin_on_pad(&mut card, &profile).unwrap();
        prove_possession(&mut card, &profile, &cert).unwrap();
        assert_eq!(card.tries_left(), PIN_TRIES);
    }

    #[test]
    fn a_card_whose_key_does_not_match_its_certificate_is_caught() {
        let ca = Authority::new("test CPS CA").unwrap();
        let genuine = CardIdentity::generate(
            &ca,
            &CardHolder::physician("810002813839", "A", "B"),
            (-1, 365),
        )
        .unwrap();
        let other = CardIdentity::generate(
            &ca,
            &CardHolder::physician("810002813840", "C", "D"),
            (-1, 365),
        )
        .unwrap();
        let profile = CardProfile::default();
        let mut card = EmulatedCard::new(
            profile.clone(),
            CardIdentity::mismatched(&genuine, &other),
            "1234",
        )
        .unwrap();
        let cert = read_certificate(&mut card, &profile).unwrap();
        verify_pin(&mut card, &profile, &Pin::new("1234").unwrap()).unwrap();
        assert_eq!(
            prove_possession(&mut card, &profile, &cert),
            Err(CardError::SignatureMismatch)
        );
    }

    #[test]
    fn garbage_answers_are_a_clear_error() {
        let profile = CardProfile::default();
        let (mut card, _) = card(profile.clone());
        card.set_fault(Fault::Garbage);
        assert!(matches!(
            read_certificate(&mut card, &profile),
            Err(CardError::Malformed(_))
        ));
    }

    #[test]
    fn pins_are_validated_and_never_printed() {
        assert!(Pin::new("12a4").is_err());
        assert!(Pin::new("123").is_err());
        assert_eq!(format!("{:?}", Pin::new("1234").unwrap()), "Pin(****)");
        let err = Pin::new("98765432109").unwrap_err().to_string();
        assert!(!err.contains("98765"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_commands_never_panic_the_card(apdus in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..20)) {
            let (mut card, _) = card(CardProfile::default());
            for apdu in apdus {
                proptest::prop_assert!(card.process(&apdu).len() >= 2);
            }
        }
    }

    /// A held card session signs with either key, for its own session only, and says when
    /// it ends (the DMP's TLS connections close on that); the profile's PSS scheme is the
    /// authentication key's.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_held_session_signs_with_both_keys_for_itself_only_and_says_when_it_ends() {
        use crate::card::worker::{CardKey, CardWorker};
        use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256};
        let profile = CardProfile {
            signature: SignatureScheme::PssSha256,
            ..CardProfile::default()
        };
        let (card, auth) = card(profile.clone());
        let (events, _inbox) = tokio::sync::mpsc::unbounded_channel();
        let worker =
            CardWorker::start_virtual("R0".into(), Box::new(card), profile, events).unwrap();
        assert!(matches!(
            worker.session("R0").await,
            Err(CardError::NoSession)
        ));
        let held = worker
            .login(
                "R0".into(),
                crate::card::worker::PinSource::Typed(Pin::new("1234").unwrap()),
                auth.clone(),
                false,
            )
            .await
            .unwrap();
        let session = worker.session("R0").await.unwrap();
        assert_eq!(session.id, held, "the login names the session it opened");
        assert_eq!(session.authentication_certificate, auth);
        let public_key = |der: &[u8]| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            cert.public_key().subject_public_key.data.to_vec()
        };
        // The handshake's signature, as rustls asks for it (synchronously, bound to the
        // session), and the VIHF's.
        let tls = worker
            .sign_blocking(
                "R0",
                CardKey::Authentication,
                Some(session.id),
                b"handshake".to_vec(),
                std::time::Duration::from_secs(5),
            )
            .unwrap();
        ring::signature::UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, public_key(&auth))
            .verify(b"handshake", &tls)
            .unwrap();
        let vihf = worker
            .sign("R0", CardKey::Signature, None, b"vihf".to_vec())
            .await
            .unwrap();
        ring::signature::UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            public_key(&session.signature_certificate),
        )
        .verify(b"vihf", &vihf)
        .unwrap();
        // A signer bound to another session is refused.
        assert!(matches!(
            worker
                .sign(
                    "R0",
                    CardKey::Authentication,
                    Some(session.id + 1),
                    b"x".to_vec()
                )
                .await,
            Err(CardError::NoSession)
        ));
        // The session ends: its holders learn it, and nothing more is signed.
        worker.end("R0");
        tokio::time::timeout(std::time::Duration::from_secs(2), session.ended())
            .await
            .expect("the end of the session is told");
        assert!(matches!(
            worker.sign_blocking(
                "R0",
                CardKey::Authentication,
                Some(session.id),
                b"x".to_vec(),
                std::time::Duration::from_secs(5),
            ),
            Err(CardError::NoSession)
        ));
    }

    /// A card that stops answering mid-login: the login gives up at its deadline with a
    /// clear error, and when the card answers after all, the session it opened is not
    /// kept (nobody waits for it); the next login works.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_login_past_its_deadline_is_refused_and_leaves_no_session() {
        use crate::card::worker::{CardWorker, PinSource};
        /// The card, its first VERIFY held until the gate opens.
        struct Stalling {
            card: EmulatedCard,
            gate: std::sync::mpsc::Receiver<()>,
        }
        impl Transport for Stalling {
            fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
                // A VERIFY carrying a PIN (the login's), not the tries-left query the
                // card's reading makes first.
                if apdu.get(1) == Some(&0x20) && apdu.len() > 5 {
                    let _ = self.gate.recv();
                }
                Ok(self.card.process(apdu))
            }
        }
        let profile = CardProfile::default();
        let (card, auth) = card(profile.clone());
        let (open, gate) = std::sync::mpsc::channel();
        let (events, _inbox) = tokio::sync::mpsc::unbounded_channel();
        let deadline = std::time::Duration::from_millis(300);
        let worker = CardWorker::start_virtual(
            "R0".into(),
            Box::new(Stalling { card, gate }),
            profile,
            events,
        )
        .unwrap()
        .with_login_timeout(deadline);
        let login = || {
            worker.login(
                "R0".into(),
                PinSource::Typed(Pin::new("1234").unwrap()),
                auth.clone(),
                false,
            )
        };
        let started = std::time::Instant::now();
        let outcome = login().await;
        assert!(
            matches!(outcome, Err(CardError::Unresponsive { .. })),
            "{outcome:?}"
        );
        assert!(started.elapsed() < deadline * 10, "{:?}", started.elapsed());
        assert!(
            CardError::Unresponsive { seconds: 20 }
                .message_fr()
                .contains("ne répond pas")
        );
        // The card answers at last (and from now on at once): the late login opened
        // nothing.
        open.send(()).unwrap();
        drop(open);
        assert!(matches!(
            worker.session("R0").await,
            Err(CardError::NoSession)
        ));
        let held = login().await.unwrap();
        assert_eq!(worker.session("R0").await.unwrap().id, held);
    }
}
