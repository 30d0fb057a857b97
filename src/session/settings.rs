//! The `[cards]` section and each `[[desks]]` entry: what sessions and logins are configured
//! with. `config` assembles and validates them; this module never reads the configuration
//! file.

use serde::{Deserialize, Serialize};

/// CPS card login.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardsConfig {
    /// Identifiers and formats of the card generation in use (defaults: CPS3, see
    /// `card::profile` for which values are public facts and which are assumptions).
    #[serde(default)]
    pub profile: crate::card::profile::CardProfile,
    /// Trust anchors, intermediates, CRLs and the stale-CRL policy.
    pub trust: crate::card::trust::TrustConfig,
    /// PIN attempts allowed per desk per minute (beyond the card's own 3 tries).
    #[serde(default = "defaults::pin_attempts_per_minute")]
    pub pin_attempts_per_minute: u32,
    /// How long a login may wait on the card, in seconds (its reading, the PIN's check,
    /// the challenge's signature); a PIN typed on the reader's keypad has its 30 s of entry
    /// on top. Past it the physician is told the card does not answer.
    #[serde(default = "defaults::login_timeout_secs")]
    pub login_timeout_secs: u64,
    /// Professions (subject `title` of the card certificate, code or label) that may
    /// open a session; empty allows every profession.
    #[serde(default = "defaults::allowed_professions")]
    pub allowed_professions: Vec<String>,
    /// A session ends after this many minutes without a request using it.
    #[serde(default = "defaults::session_idle_minutes")]
    pub session_idle_minutes: u64,
    /// A session ends after this many hours in all (the longest shift).
    #[serde(default = "defaults::session_max_hours")]
    pub session_max_hours: u64,
    /// How cards are reached: `apdu` (the profile above, through pcscd) or `pkcs11` (a
    /// PKCS#11 module: the ANS's Cryptolib CPS, OpenSC). Presence and removal are watched
    /// through pcscd either way.
    #[serde(default)]
    pub backend: crate::card::backend::BackendKind,
    /// The PKCS#11 module file (`backend = "pkcs11"`), e.g.
    /// `/opt/santesocial/CPS/lib/libcps3_pkcs11_lux.so`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11_module: Option<std::path::PathBuf>,
    /// Labels of the token's objects (defaults: the Cryptolib CPS's).
    #[serde(default)]
    pub pkcs11_labels: crate::card::pkcs11::Pkcs11Labels,
}

impl CardsConfig {
    /// Card login trusting `trust`, every other setting at its default.
    pub fn new(trust: crate::card::trust::TrustConfig) -> Self {
        Self {
            profile: crate::card::profile::CardProfile::default(),
            trust,
            pin_attempts_per_minute: defaults::pin_attempts_per_minute(),
            login_timeout_secs: defaults::login_timeout_secs(),
            allowed_professions: defaults::allowed_professions(),
            session_idle_minutes: defaults::session_idle_minutes(),
            session_max_hours: defaults::session_max_hours(),
            backend: crate::card::backend::BackendKind::default(),
            pkcs11_module: None,
            pkcs11_labels: crate::card::pkcs11::Pkcs11Labels::default(),
        }
    }

    /// The longest `session_max_hours` accepted (a day and night shift, twice).
    pub const LONGEST_SESSION_HOURS: u64 = 48;

    /// When sessions end on their own.
    pub fn expiry(&self) -> crate::session::Expiry {
        crate::session::Expiry {
            idle: std::time::Duration::from_secs(self.session_idle_minutes.max(1) * 60),
            max: std::time::Duration::from_secs(self.session_max_hours.max(1) * 3600),
        }
    }
}

/// One regulation desk.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeskConfig {
    /// Stable identifier used in audit records and URLs (`[a-z0-9_-]`).
    pub id: String,
    /// Name shown to people, e.g. "Régulation 1".
    pub name: String,
    /// PC/SC reader name wired to this desk, as `pcsc_scan` prints it.
    pub reader: String,
    /// Subject CN of the workstation certificate allowed to act for this desk.
    pub workstation_cn: String,
    /// Optional pin: SHA-256 of that certificate (hex, colons allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workstation_sha256: Option<String>,
    /// Where the physician types the PIN.
    #[serde(default)]
    pub pin_entry: PinEntry,
    /// With `[cards] backend = "pkcs11"` and a module whose slots are not named after the
    /// readers (a software token): the label of this desk's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11_token: Option<String>,
}

/// Where a desk's PIN is typed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PinEntry {
    /// On the workstation's keyboard; sent in the login request, zeroized after use.
    #[default]
    Keyboard,
    /// On the reader's own keypad (secure PIN entry, `FEATURE_VERIFY_PIN_DIRECT`): the PIN
    /// never reaches software.
    Pinpad,
}

mod defaults {
    pub(super) fn pin_attempts_per_minute() -> u32 {
        5
    }
    pub(super) fn login_timeout_secs() -> u64 {
        crate::card::worker::LOGIN_TIMEOUT.as_secs()
    }
    /// Physicians: code `10` and its label, since which of the two real CPS certificates
    /// carry in `title` is still to be confirmed (see `card::profile`).
    pub(super) fn allowed_professions() -> Vec<String> {
        vec![crate::card::trust::PHYSICIAN.into(), "Médecin".into()]
    }
    pub(super) fn session_idle_minutes() -> u64 {
        30
    }
    pub(super) fn session_max_hours() -> u64 {
        14
    }
}
