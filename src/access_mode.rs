//! Why a record is consulted: the national access modes (docs/domain.md §2). The same value
//! travels in the upstream assertion, the audit record and the grant. A leaf.

use serde::{Deserialize, Serialize};

/// Access mode (TRE_R248_ModeAcces, `1.2.250.1.213.1.1.4.248`): why the record is
/// consulted. The same type travels in the upstream assertion and in the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AccessMode {
    /// Access by the medical regulation centre (the SAMU regulator).
    #[serde(rename = "centre_15")]
    Centre15,
    /// Break-glass access: a patient unable to consent, immediate risk.
    #[serde(rename = "bris_de_glace")]
    BrisDeGlace,
}

impl AccessMode {
    /// The TRE_R248 code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Centre15 => "centre_15",
            Self::BrisDeGlace => "bris_de_glace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_mode_uses_the_national_codes() {
        assert_eq!(
            serde_json::to_string(&AccessMode::Centre15).unwrap(),
            "\"centre_15\""
        );
        assert_eq!(
            serde_json::to_string(&AccessMode::BrisDeGlace).unwrap(),
            "\"bris_de_glace\""
        );
    }
}
