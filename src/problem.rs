//! A configuration problem, attached to the key it concerns: what every module's validation
//! of its own section reports, and what `configtest` prints. A leaf.

use std::fmt;

/// One thing wrong with a configuration, attached to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `tls.server_key` or `desks[1].reader`.
    pub key: String,
    /// Why the value is refused, in English, with what is expected.
    pub reason: String,
}

impl ConfigProblem {
    /// A problem with `key`; `reason` is any error or message.
    pub fn new(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}
