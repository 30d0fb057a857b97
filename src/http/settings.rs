//! The `[centre]`, `[server]` and `[tls]` sections: what the HTTP layer is configured with.
//! `config` assembles and validates them; this module never reads the configuration file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::card::trust::StaleCrlPolicy;
use crate::secret::SecretPath;

/// The centre's identity as the national record knows it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CentreConfig {
    /// Structure identifier (VIHF `Identifiant_Structure`), e.g. `1` + FINESS number.
    pub structure_id: String,
    /// Human-readable name, shown on screens and in audit records.
    pub name: String,
}

/// The HTTPS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `IP:PORT` to listen on.
    pub listen: String,
    /// Loopback `IP:PORT` of the management listener (plain HTTP: `/healthz`, `/readyz`,
    /// `/metrics`), which the watchdog and `healthcheck` use.
    pub management_listen: String,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub shutdown_grace_secs: u64,
    /// Bound on a TLS handshake, and from accept to the first request head.
    pub handshake_timeout_secs: u64,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_secs: u64,
    /// Concurrent connections accepted; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Concurrent connections from one source address; further ones are closed at once.
    pub max_connections_per_address: usize,
    /// Concurrent HTTP/2 streams on one connection.
    pub max_streams_per_connection: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".into(),
            management_listen: "127.0.0.1:8444".into(),
            shutdown_grace_secs: 10,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 512,
            max_connections_per_address: 64,
            max_streams_per_connection: 16,
        }
    }
}

/// Certificate and key files. Keys may be systemd credentials (`credential:NAME`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM chain presented by the listener (leaf first).
    pub server_cert: PathBuf,
    /// PEM private key of the listener: mode 0600/0640 at most.
    pub server_key: SecretPath,
    /// PEM certificate(s) of the CA that issues workstation client certificates.
    pub workstation_ca: PathBuf,
    /// CRLs of the workstation CA (PEM or DER): a revoked workstation certificate fails the
    /// handshake. Reread every `workstation_crl_refresh_secs`.
    #[serde(default)]
    pub workstation_crls: Vec<PathBuf>,
    /// A workstation CRL past its next update: `refuse` every workstation certificate's
    /// handshake until a fresh one is in place, or `accept_and_flag` (accept, and log the
    /// stale list at each reload), as for cards.
    #[serde(default = "defaults::workstation_stale_crl")]
    pub workstation_stale_crl: StaleCrlPolicy,
    /// How often the workstation CRLs are reread, seconds.
    #[serde(default = "defaults::workstation_crl_refresh_secs")]
    pub workstation_crl_refresh_secs: u64,
}

mod defaults {
    use crate::card::trust::StaleCrlPolicy;

    pub(super) fn workstation_stale_crl() -> StaleCrlPolicy {
        StaleCrlPolicy::Refuse
    }
    pub(super) fn workstation_crl_refresh_secs() -> u64 {
        3600
    }
}
