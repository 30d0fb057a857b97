//! Cases from the regulation software: the SAMU Hub's RS-EDA "create case" message
//! (`hub`), read into the project's own types, and the case each desk currently holds
//! (`board`), in memory only: a case names patients (docs/case.md).

pub(crate) mod board;
pub(crate) mod hub;

use serde::{Deserialize, Serialize};

/// The `[cases]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaseConfig {
    /// How long a desk keeps a case the regulation software sent, unless it is closed or
    /// replaced first.
    #[serde(default = "defaults::ttl_minutes")]
    pub ttl_minutes: u64,
}

impl Default for CaseConfig {
    fn default() -> Self {
        Self {
            ttl_minutes: defaults::ttl_minutes(),
        }
    }
}

mod defaults {
    pub(super) fn ttl_minutes() -> u64 {
        120
    }
}

/// Why a case message was refused. The texts name fields, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CaseError {
    /// Larger than the gateway takes.
    #[error("the message is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not JSON at all.
    #[error("the message is not valid JSON")]
    NotJson,
    /// The envelope is not a distribution of one new case.
    #[error("wrong envelope: {0}")]
    Envelope(&'static str),
    /// A field is missing, of the wrong type, or outside what the Hub's schema allows.
    #[error("{field}: {problem}")]
    Field {
        /// Its path in the message.
        field: String,
        /// What is wrong, without the value.
        problem: String,
    },
}
