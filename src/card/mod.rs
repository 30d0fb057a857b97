//! CPS smart cards: the only code that speaks APDUs.
//!
//! - [`apdu`]: ISO 7816-4 encoding, status words, T=0 GET RESPONSE / wrong-Le handling.
//! - [`profile`]: the card profile (AID, files, PIN format, signature scheme) and the login
//!   sequence the gateway runs against a card: select, read the certificate, verify the
//!   PIN, have the card sign a fresh challenge, check that signature.
//! - [`emulator`]: the card side of the same profile, for tests, the demo and install checks;
//!   [`vpcd`] plugs it into a real pcscd through vsmartcard-vpcd.
//! - [`pinpad`]: secure PIN entry on PIN-pad readers (`FEATURE_VERIFY_PIN_DIRECT`).
//! - [`reader`]: PC/SC through pcscd and the `pcsc` crate.
//! - [`backend`]: the login steps as the worker runs them, over APDUs or PKCS#11.
//! - [`pkcs11`]: the same login steps through a PKCS#11 module (the ANS Cryptolib CPS,
//!   OpenSC), the way the ANS supports CPS3 and CPS4 cards.
//!
//! The reader monitor, certificate trust and sessions come next (issue "Physician login by
//! CPS smart card").

pub mod apdu;
pub mod backend;
pub mod cps_data;
pub mod pinpad;
pub mod pkcs11;
pub mod profile;
pub mod reader;
pub mod trust;
pub mod worker;

/// What went wrong talking to a card. Messages carry no PIN and no patient data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The reader or the link to the card failed.
    #[error("card transport failed: {0}")]
    Transport(String),
    /// A command could not be encoded within ISO 7816-4 limits.
    #[error("cannot encode the command: {0}")]
    Encoding(String),
    /// The card answered something that is not a valid APDU response, or too much.
    #[error("malformed card answer: {0}")]
    Malformed(String),
    /// `63Cx`: wrong PIN, `x` tries left.
    #[error("wrong PIN ({tries_left} tries left)")]
    WrongPin {
        /// Tries left before the PIN blocks.
        tries_left: u8,
    },
    /// `6983`: the PIN is blocked.
    #[error("PIN blocked")]
    PinBlocked,
    /// `6982`: the operation needs a verified PIN.
    #[error("security status not satisfied (PIN not verified)")]
    SecurityStatusNotSatisfied,
    /// `6A82`: file or application not found.
    #[error("file or application not found on the card")]
    FileNotFound,
    /// `6A88`: referenced data (key, PIN reference) not found.
    #[error("referenced data not found on the card")]
    ReferencedDataNotFound,
    /// `6985`: conditions of use not satisfied.
    #[error("conditions of use not satisfied")]
    ConditionsNotSatisfied,
    /// `6984`: reference data not usable.
    #[error("reference data not usable")]
    ReferenceDataNotUsable,
    /// `6700`: wrong length.
    #[error("wrong length")]
    WrongLength,
    /// `6A80`, `6A86`, `6B00`: wrong data or parameters.
    #[error("wrong data or parameters (SW {0:04X})")]
    WrongParameters(u16),
    /// `6D00`: instruction not supported.
    #[error("instruction not supported by the card")]
    InstructionNotSupported,
    /// `6E00`: class not supported.
    #[error("class not supported by the card")]
    ClassNotSupported,
    /// Any other status word.
    #[error("card refused the command (SW {0:04X})")]
    Status(u16),
    /// The card's certificate could not be read or parsed.
    #[error("card certificate unusable: {0}")]
    Certificate(String),
    /// The card in the reader is not the one whose certificate the desk showed (swapped
    /// between the reading and the PIN).
    #[error("the card in the reader changed")]
    CardChanged,
    /// The card's signature over the challenge does not verify with its certificate.
    #[error("the card's signature does not match its certificate")]
    SignatureMismatch,
    /// The desk is set for PIN-pad entry but its reader cannot collect a PIN.
    #[error("secure PIN entry unavailable: {0}")]
    PinPadUnavailable(String),
    /// No card session is open at that reader (no login, or it ended): nothing to sign
    /// with.
    #[error("no card session open at this reader")]
    NoSession,
    /// Nobody typed the PIN on the reader in time.
    #[error("PIN entry on the reader timed out")]
    PinPadTimeout,
    /// The PIN entry was cancelled on the reader.
    #[error("PIN entry cancelled on the reader")]
    PinPadCancelled,
    /// The card profile in configuration is invalid.
    #[error("card profile: {0}")]
    Profile(String),
    /// Wrong PIN; the token does not say how many tries are left (PKCS#11 tells only the
    /// last one and the lock).
    #[error("wrong PIN")]
    WrongPinTriesUnknown,
    /// The card did not finish the login within its deadline (a card or reader that
    /// stopped answering).
    #[error("the card did not answer within {seconds} s")]
    Unresponsive {
        /// The deadline it missed.
        seconds: u64,
    },
    /// The PKCS#11 module is missing, does not load, or fails.
    #[error("PKCS#11 module: {0}")]
    Module(String),
    /// The card said, just before its PIN was to be sent, that one try is left, and the
    /// login did not confirm spending it: no PIN was sent.
    #[error("the card has one PIN try left and spending it was not confirmed")]
    LastTryUnconfirmed,
}

impl CardError {
    /// The message for the physician's screen, in French.
    pub fn message_fr(&self) -> String {
        match self {
            Self::WrongPin { tries_left: 1 } => "Code erroné. Attention : dernier essai avant blocage de la carte.".into(),
            Self::WrongPin { tries_left } => format!("Code erroné. Il reste {tries_left} essais."),
            Self::WrongPinTriesUnknown => "Code erroné.".into(),
            Self::Module(_) => "Le logiciel de lecture des cartes (module PKCS#11) ne répond pas. Contactez l'informatique du centre.".into(),
            Self::PinBlocked => "Carte bloquée : trop de codes erronés. Utilisez le code de déblocage ou une autre carte.".into(),
            Self::SignatureMismatch | Self::Certificate(_) => "Carte non reconnue : son certificat n'est pas valide.".into(),
            Self::CardChanged => "La carte a changé pendant la connexion : recommencez avec la carte présente dans le lecteur.".into(),
            Self::Transport(_) => "Lecteur de carte injoignable. Vérifiez la carte et le lecteur.".into(),
            Self::PinPadUnavailable(_) => "Ce lecteur ne permet pas la saisie du code sur son clavier. Contactez l'informatique du centre.".into(),
            Self::PinPadTimeout => "Délai dépassé : saisissez votre code sur le lecteur puis validez.".into(),
            Self::PinPadCancelled => "Saisie du code annulée sur le lecteur.".into(),
            Self::Unresponsive { .. } => "La carte ne répond pas. Retirez-la, réinsérez-la et recommencez ; si cela se reproduit, essayez un autre lecteur.".into(),
            Self::NoSession => "Votre session carte est terminée : reconnectez-vous avec votre carte.".into(),
            Self::LastTryUnconfirmed => "Dernier essai avant blocage de la carte : confirmez pour l'utiliser.".into(),
            _ => "La carte n'a pas répondu comme attendu. Retirez-la et réinsérez-la.".into(),
        }
    }
}
