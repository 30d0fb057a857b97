//! CPS cards through a PKCS#11 module (the ANS "Cryptolib CPS", OpenSC's module), the way
//! the ANS supports them (docs/domain.md §3, "PKCS#11"): the module finds the card in its
//! reader, the gateway asks it for the login steps only: the holder's certificates
//! (readable without a PIN), `C_Login` (or the reader's PIN pad when the token says it
//! has a protected authentication path), proof of possession, and signatures with the
//! authentication key (the DMP's TLS handshake) and the signature key (the VIHF).
//!
//! Objects are found by label (a private key, failing that, by its certificate's
//! `CKA_ID`, which the two share on a CPS). The defaults are the Cryptolib CPS's labels, as its
//! published source and the ANS's own PKCS#11 tests name them; OpenSC reads the same
//! PKCS#15 files of a CPS3 card. Every signature is checked against its certificate
//! before it is used, as on the APDU path.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::RawAuthPin;
use ring::signature::{self, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::CardError;
use super::profile::{Pin, SHA256_DIGEST_INFO_PREFIX, SignatureScheme, rsa_public_key};

/// Labels of the objects the gateway uses on a token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pkcs11Labels {
    /// The authentication certificate (`CKO_CERTIFICATE`).
    pub authentication_certificate: String,
    /// The signature certificate.
    pub signature_certificate: String,
    /// The authentication private key (visible after login).
    pub authentication_key: String,
    /// The signature private key.
    pub signature_key: String,
}

impl Default for Pkcs11Labels {
    fn default() -> Self {
        Self {
            authentication_certificate: "Certificat d'Authentification CPS".into(),
            signature_certificate: "Certificat de Signature CPS".into(),
            authentication_key: "CPS_PRIV_AUT".into(),
            signature_key: "CPS_PRIV_SIG".into(),
        }
    }
}

/// A slot as the module lists it, for `card list` and the reader mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    /// The module's slot id.
    pub id: u64,
    /// The slot description (the Cryptolib writes the PC/SC reader's name there).
    pub description: String,
    /// The token in it, if any.
    pub token: Option<TokenView>,
}

/// A token as the module describes it (no PIN needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenView {
    /// Label (`CPS3v3-…`, `CPS4v1-…` with the Cryptolib).
    pub label: String,
    /// Model (`IAS ECC`, `ChipDoc`).
    pub model: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Serial number.
    pub serial: String,
    /// The PIN is typed on the reader (protected authentication path).
    pub pin_pad: bool,
    /// PIN tries left, when the token says (0: blocked, 1: last try).
    pub pin_tries_left: Option<u8>,
    /// A wrong PIN was typed since the last good one (the token's "count low" flag).
    pub pin_count_low: bool,
}

/// A loaded PKCS#11 module.
pub struct Pkcs11Module {
    context: Pkcs11,
    path: PathBuf,
}

fn module_error(e: impl std::fmt::Display) -> CardError {
    CardError::Module(e.to_string())
}

/// What a PKCS#11 error means for a login.
fn card_error(e: Pkcs11Error) -> CardError {
    match e {
        Pkcs11Error::Pkcs11(rv, _) => match rv {
            RvError::PinLocked => CardError::PinBlocked,
            RvError::UserNotLoggedIn => CardError::SecurityStatusNotSatisfied,
            RvError::TokenNotPresent
            | RvError::DeviceRemoved
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceError
            | RvError::TokenNotRecognized => CardError::Transport(format!("PKCS#11: {rv:?}")),
            RvError::FunctionCanceled => CardError::PinPadCancelled,
            other => CardError::Module(format!("PKCS#11: {other:?}")),
        },
        other => CardError::Module(other.to_string()),
    }
}

/// The PIN tries a token reports through its flags: `Some(0)` locked, `Some(1)` final
/// try, `None` otherwise (PKCS#11 says no more).
fn tries_left(info: &TokenInfo) -> Option<u8> {
    tries_from_flags(info.user_pin_locked(), info.user_pin_final_try())
}

fn tries_from_flags(locked: bool, final_try: bool) -> Option<u8> {
    match (locked, final_try) {
        (true, _) => Some(0),
        (false, true) => Some(1),
        (false, false) => None,
    }
}

/// What a refused `C_Login` means, given the PIN tries the token reports after it.
fn refused_pin(tries_left: Option<u8>) -> CardError {
    match tries_left {
        Some(0) => CardError::PinBlocked,
        Some(n) => CardError::WrongPin { tries_left: n },
        None => CardError::WrongPinTriesUnknown,
    }
}

/// A PKCS#11 text field: blank- (and, for some modules, NUL-) padded.
fn field(text: &str) -> String {
    text.trim_end_matches([' ', '\0']).to_owned()
}

/// Whether slot `description` is reader `reader`'s. The Cryptolib writes the reader's
/// name, cut to 64 bytes as its first 30, "...", and its last 31 when longer.
pub fn describes_reader(description: &str, reader: &str) -> bool {
    let description = field(description);
    if description == reader {
        return true;
    }
    let chars: Vec<char> = reader.chars().collect();
    chars.len() > 64 && {
        let head: String = chars[..30].iter().collect();
        let tail: String = chars[chars.len() - 31..].iter().collect();
        description == format!("{head}...{tail}")
    }
}

impl Pkcs11Module {
    /// Loads and initialises the module at `path` (its own threads and locks).
    pub fn load(path: &Path) -> Result<Self, CardError> {
        if !path.is_file() {
            return Err(CardError::Module(format!(
                "{}: no such module file",
                path.display()
            )));
        }
        let context = Pkcs11::new(path)
            .map_err(|e| CardError::Module(format!("{}: cannot load: {e}", path.display())))?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| {
                CardError::Module(format!("{}: cannot initialise: {e}", path.display()))
            })?;
        Ok(Self {
            context,
            path: path.to_owned(),
        })
    }

    /// Finalises the module (`C_Finalize`): loaded only to be checked, it is let go
    /// cleanly, so that loading it again later in the same process starts afresh.
    pub fn close(self) -> Result<(), CardError> {
        self.context.finalize().map_err(module_error)
    }

    /// The module's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The module's own name for itself (manufacturer, description).
    pub fn describe(&self) -> Result<String, CardError> {
        let info = self.context.get_library_info().map_err(module_error)?;
        Ok(format!(
            "{} {}",
            field(info.manufacturer_id()),
            field(info.library_description())
        ))
    }

    /// Every slot, with its token when one is present.
    pub fn slots(&self) -> Result<Vec<SlotView>, CardError> {
        let mut all = Vec::new();
        for slot in self.context.get_all_slots().map_err(module_error)? {
            let info = self.context.get_slot_info(slot).map_err(module_error)?;
            let token = if info.token_present() {
                self.context
                    .get_token_info(slot)
                    .ok()
                    .filter(TokenInfo::token_initialized)
                    .map(|t| TokenView {
                        label: field(t.label()),
                        model: field(t.model()),
                        manufacturer: field(t.manufacturer_id()),
                        serial: field(t.serial_number()),
                        pin_pad: t.protected_authentication_path(),
                        pin_tries_left: tries_left(&t),
                        pin_count_low: t.user_pin_count_low(),
                    })
            } else {
                None
            };
            all.push(SlotView {
                id: slot.id(),
                description: field(info.slot_description()),
                token,
            });
        }
        Ok(all)
    }

    /// The slot holding `reader`'s card: the slot whose description is the reader's name
    /// (the Cryptolib's), else the one whose token has label `token` when configured.
    pub fn slot_for(&self, reader: &str, token: Option<&str>) -> Result<Slot, CardError> {
        let slots = self.context.get_all_slots().map_err(module_error)?;
        for slot in &slots {
            let info = self.context.get_slot_info(*slot).map_err(module_error)?;
            if describes_reader(info.slot_description(), reader) {
                return Ok(*slot);
            }
        }
        if let Some(wanted) = token {
            for slot in self.context.get_slots_with_token().map_err(module_error)? {
                let info = self.context.get_token_info(slot).map_err(module_error)?;
                if field(info.label()) == wanted {
                    return Ok(slot);
                }
            }
        }
        Err(CardError::Transport(format!(
            "the PKCS#11 module has no slot for reader '{reader}'"
        )))
    }

    /// The slot `spec` names, for tools: a reader's name (slot description), a token's
    /// label, or the module's slot number.
    pub fn find_slot(&self, spec: &str) -> Result<Slot, CardError> {
        if let Ok(slot) = self.slot_for(spec, Some(spec)) {
            return Ok(slot);
        }
        let number: Option<u64> = spec.parse().ok();
        self.context
            .get_all_slots()
            .map_err(module_error)?
            .into_iter()
            .find(|slot| Some(slot.id()) == number)
            .ok_or_else(|| {
                CardError::Transport(format!(
                    "no slot '{spec}' (a reader name, token label or slot number)"
                ))
            })
    }

    /// Whether `slot`'s token reads the PIN on the reader itself.
    pub fn pin_pad(&self, slot: Slot) -> Result<bool, CardError> {
        Ok(self
            .context
            .get_token_info(slot)
            .map_err(card_error)?
            .protected_authentication_path())
    }

    /// PIN tries left on `slot`'s token, as far as its flags tell.
    pub fn pin_tries_left(&self, slot: Slot) -> Result<Option<u8>, CardError> {
        Ok(tries_left(
            &self.context.get_token_info(slot).map_err(card_error)?,
        ))
    }

    /// Opens a session on `slot`'s token and reads its two certificates (no PIN).
    pub fn open(&self, slot: Slot, labels: &Pkcs11Labels) -> Result<TokenSession, CardError> {
        let session = self.context.open_ro_session(slot).map_err(card_error)?;
        let (authentication_certificate, authentication_id) =
            certificate(&session, &labels.authentication_certificate)?;
        let (signature_certificate, signature_id) =
            certificate(&session, &labels.signature_certificate)?;
        Ok(TokenSession {
            session,
            slot,
            labels: labels.clone(),
            authentication_certificate,
            signature_certificate,
            ids: [authentication_id, signature_id],
        })
    }

    /// After a failed `C_Login`, what the token says of the PIN now.
    fn wrong_pin(&self, slot: Slot) -> CardError {
        refused_pin(self.pin_tries_left(slot).ok().flatten())
    }
}

fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, CardError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(card_error)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(CardError::Certificate(format!(
            "several objects labelled '{label}' on the token"
        ))),
    }
}

fn value_of(session: &Session, object: ObjectHandle) -> Result<Vec<u8>, CardError> {
    let attributes = session
        .get_attributes(object, &[AttributeType::Value])
        .map_err(card_error)?;
    attributes
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| CardError::Malformed("a token object without a value".into()))
}

/// The certificate labelled `label` (DER) and its `CKA_ID`, which its private key shares.
fn certificate(session: &Session, label: &str) -> Result<(Vec<u8>, Vec<u8>), CardError> {
    let object = find_one(session, ObjectClass::CERTIFICATE, label)?.ok_or_else(|| {
        CardError::Certificate(format!("no certificate labelled '{label}' on the token"))
    })?;
    let der = value_of(session, object)?;
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CardError::Certificate(format!("'{label}': {e}")))?;
    let id = session
        .get_attributes(object, &[AttributeType::Id])
        .map_err(card_error)?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .unwrap_or_default();
    Ok((der, id))
}

/// A session on one token: its certificates, then, after [`Self::login`], its keys.
pub struct TokenSession {
    session: Session,
    slot: Slot,
    labels: Pkcs11Labels,
    /// The authentication certificate (DER).
    pub authentication_certificate: Vec<u8>,
    /// The signature certificate (DER).
    pub signature_certificate: Vec<u8>,
    /// The certificates' `CKA_ID`s (authentication, signature): their keys share them.
    ids: [Vec<u8>; 2],
}

/// Which key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKey {
    /// The authentication key (proof of possession, TLS), in `scheme`.
    Authentication(SignatureScheme),
    /// The signature key (the VIHF): PKCS#1 v1.5 with SHA-256.
    Signature,
}

impl TokenSession {
    /// The module's slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// `C_Login` as the user with `pin`; `None` when the token reads the PIN on the
    /// reader's own keypad (protected authentication path: the PIN never reaches
    /// software).
    ///
    /// A token already logged in (the login is the application's, shared by all its
    /// sessions on the token: one this process still holds) is logged out and the PIN
    /// given again, so the PIN is always checked by the token: taking "already logged
    /// in" as a login let any PIN open a session on a token held by another.
    pub fn login(&self, module: &Pkcs11Module, pin: Option<&Pin>) -> Result<(), CardError> {
        let attempt = || match pin {
            Some(pin) => {
                let raw = RawAuthPin::new(Box::new(pin.digits().to_vec()));
                self.session.login_with_raw(UserType::User, &raw)
            }
            None => self.session.login(UserType::User, None),
        };
        let outcome = match attempt() {
            Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                // Its error only says no login was left to end.
                let _ = self.session.logout();
                attempt()
            }
            outcome => outcome,
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Err(CardError::Transport(
                "the PKCS#11 token stays logged in after a logout: the PIN cannot be checked"
                    .into(),
            )),
            Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => Err(module.wrong_pin(self.slot)),
            Err(e) => Err(card_error(e)),
        }
    }

    /// Signs a fresh random challenge with the authentication key and checks it against
    /// the authentication certificate.
    pub fn prove_possession(&self, scheme: SignatureScheme) -> Result<(), CardError> {
        let mut challenge = [0u8; 32];
        crate::random::fill(&mut challenge).map_err(|e| CardError::Transport(e.to_string()))?;
        self.sign(TokenKey::Authentication(scheme), &challenge)
            .map(drop)
    }

    /// Has the token sign `message` with `key` (SHA-256), the signature checked against
    /// that key's certificate before it is returned.
    pub fn sign(&self, key: TokenKey, message: &[u8]) -> Result<Vec<u8>, CardError> {
        let pss = PkcsPssParams {
            hash_alg: cryptoki::mechanism::MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        // A CPS3's authentication key takes only raw PKCS#1 v1.5 over a DigestInfo the
        // caller builds; its signature key hashes itself (SHA-256 with PKCS#1 v1.5).
        let (label, id, certificate, mechanism, input, algorithm): (
            &str,
            &[u8],
            &[u8],
            Mechanism,
            Vec<u8>,
            &dyn signature::VerificationAlgorithm,
        ) = match key {
            TokenKey::Authentication(SignatureScheme::Pkcs1Sha256) => {
                let mut digest_info = SHA256_DIGEST_INFO_PREFIX.to_vec();
                digest_info.extend_from_slice(digest.as_ref());
                (
                    &self.labels.authentication_key,
                    &self.ids[0],
                    &self.authentication_certificate,
                    Mechanism::RsaPkcs,
                    digest_info,
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                )
            }
            TokenKey::Authentication(SignatureScheme::PssSha256) => (
                &self.labels.authentication_key,
                &self.ids[0],
                &self.authentication_certificate,
                Mechanism::RsaPkcsPss(pss),
                digest.as_ref().to_vec(),
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            TokenKey::Signature => (
                &self.labels.signature_key,
                &self.ids[1],
                &self.signature_certificate,
                Mechanism::Sha256RsaPkcs,
                message.to_vec(),
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        };
        // By label (the Cryptolib's), else by its certificate's id (a module that labels
        // keys otherwise); private keys are visible only after the login.
        let private = match find_one(&self.session, ObjectClass::PRIVATE_KEY, label)? {
            Some(key) => key,
            None if !id.is_empty() => self
                .session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(id.to_vec()),
                ])
                .map_err(card_error)?
                .first()
                .copied()
                .ok_or_else(|| self.key_missing())?,
            None => return Err(self.key_missing()),
        };
        let signed = self
            .session
            .sign(&mechanism, private, &input)
            .map_err(card_error)?;
        UnparsedPublicKey::new(algorithm, rsa_public_key(certificate)?)
            .verify(message, &signed)
            .map_err(|_| CardError::SignatureMismatch)?;
        Ok(signed)
    }

    /// Why a private key is not found: the token no longer holds the login (private
    /// keys are visible only after it: the held session is lost), or it has no such key
    /// (a token or configuration fault, which ending the session would not mend).
    fn key_missing(&self) -> CardError {
        use cryptoki::session::SessionState;
        match self.session.get_session_info().map(|i| i.session_state()) {
            Ok(SessionState::RoUser | SessionState::RwUser) => CardError::ReferencedDataNotFound,
            _ => CardError::SecurityStatusNotSatisfied,
        }
    }

    /// The holder's practice situations the token shows (`CPS_ACTIVITY_01_PS` …
    /// `_16_PS`, visible after the PIN), those that read as one.
    pub fn activities(&self) -> Vec<super::cps_data::CardActivity> {
        (1..=16)
            .filter_map(|n| {
                self.data_object(&format!("CPS_ACTIVITY_{n:02}_PS"))
                    .ok()
                    .flatten()
            })
            .filter_map(|value| super::cps_data::parse_activity(&value))
            .collect()
    }

    /// The holder's specialty, from `CPS_INFO_PS`, when the token shows one that reads.
    pub fn specialty(&self) -> Option<String> {
        self.data_object("CPS_INFO_PS")
            .ok()
            .flatten()
            .and_then(|value| super::cps_data::parse_specialty(&value))
    }

    /// Logs out (the PIN must be given again); an error means the session is gone
    /// anyway.
    pub fn logout(&self) {
        let _ = self.session.logout();
    }

    /// The value of the data object labelled `label` (`CPS_INFO_PS`…), if the token has
    /// one visible now (some need the PIN).
    pub fn data_object(&self, label: &str) -> Result<Option<Vec<u8>>, CardError> {
        match find_one(&self.session, ObjectClass::DATA, label)? {
            Some(object) => value_of(&self.session, object).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PKCS#11 tells the last try and the lock, nothing else: a blocked token is "PIN
    /// blocked" (the page says so, the desk stops sending PINs), its last try says so.
    #[test]
    fn the_tokens_pin_flags_become_the_gateways_outcomes() {
        assert_eq!(tries_from_flags(true, false), Some(0));
        assert_eq!(tries_from_flags(true, true), Some(0));
        assert_eq!(tries_from_flags(false, true), Some(1));
        assert_eq!(tries_from_flags(false, false), None);
        assert_eq!(refused_pin(Some(0)), CardError::PinBlocked);
        assert_eq!(refused_pin(Some(1)), CardError::WrongPin { tries_left: 1 });
        assert_eq!(refused_pin(None), CardError::WrongPinTriesUnknown);
        assert_eq!(
            card_error(Pkcs11Error::Pkcs11(
                RvError::PinLocked,
                cryptoki::context::Function::Login
            )),
            CardError::PinBlocked
        );
        assert!(matches!(
            card_error(Pkcs11Error::Pkcs11(
                RvError::DeviceRemoved,
                cryptoki::context::Function::Sign
            )),
            CardError::Transport(_)
        ));
    }

    /// The Cryptolib's slot descriptions: the reader's name, or its first 30 and last 31
    /// characters around "..." when longer than 64.
    #[test]
    fn slots_are_matched_to_readers_as_the_cryptolib_names_them() {
        assert!(describes_reader(
            "Gemalto PC Twin Reader 00 00      ",
            "Gemalto PC Twin Reader 00 00"
        ));
        assert!(!describes_reader(
            "Gemalto PC Twin Reader 00 01",
            "Gemalto PC Twin Reader 00 00"
        ));
        let long =
            "Identiv uTrust 3700 F CL Reader [uTrust 3700 F CL Reader] (55041854208417) 00 00";
        let cut = format!("{}...{}", &long[..30], &long[long.len() - 31..]);
        assert!(describes_reader(&cut, long));
        assert!(!describes_reader(&long[..64], long));
    }
}
