//! # Layout
//!
//! samu-gateway gives a SAMU regulating physician a patient's critical summary during an
//! emergency call, and records every such access where nobody can erase it. Modules, one
//! per concept, each owning its data and its error type:
//!
//! | module      | owns |
//! |-------------|------|
//! | [`config`]  | `gateway.toml` + `SAMU_GATEWAY__*` overrides, typed and validated as a whole |
//! | [`http`]    | the HTTPS API and the pages: TLS, client certificate → desk attribution, routes, the physician's and compliance pages (embedded), desk events (SSE), CSRF, metrics, OpenAPI, accept loop and drain |
//! | [`card`]    | CPS cards: APDUs, the card profile and login sequence (the only code speaking APDUs) |
//! | [`session`] | physician sessions bound to desk and card; login attempts; card events → audit |
//! | [`audit`]   | the audit trail in redb (the only writer of audit records), shipping, review, report, real-time alerts |
//! | [`patient`] | INS (NIR/NIA, key, OIDs) and identity traits; never printed |
//! | [`upstream`] | the record service: trait, FHIR client over mutual TLS, access assertion, outcomes (the only code talking to it) |
//! | [`dev_upstream`] | the stand-in record service for the demo and the tests |
//! | [`dev_dmp`] | the stand-in national record (DMP) over SOAP, checking each VIHF |
//! | [`dev_pki`] | throwaway certificate authorities and certificates for the demo, the virtual card and the tests |
//! | [`dev_card`] | the virtual CPS card (card side of the profile) and its vpcd plug, for the demo and the tests |
//! | [`summary`] | IPS bundle → critical summary, with explicit "none known" / "not recorded" and defects named |
//! | [`cache`]   | the summary cache in sled: sealed entries, expiry, purge (disposable) |
//! | [`access`]  | break-glass access: order of steps, grants, single-flight, stale policy |
//! | [`case`]    | cases from the regulation software (the Hub's RS-EDA): read, bounded, held per desk |
//! | [`limit`]   | rate limits (governor) per professional, desk, gateway and search |
//! | [`state`]   | the state directory: its exclusive lock and both stores |
//! | [`service`] | lifecycle: prepare (= `configtest`), run, systemd notify and watchdog, signals |
//! | [`telemetry`] | logging (JSON or human), with the no-patient-data rule |
//! | [`demo`]    | the self-contained demo (embedded configuration, in-process virtual card and record service) |
//! | [`cli`]     | subcommands and exit codes (the only user of `anyhow`) |
//!
//! Leaves, which use nothing else from the crate: [`access_mode`] (the national access
//! modes), [`encoding`] (hex, SHA-256, JSON error positions, printable peer names), [`clock`] (record time), [`secret`] (secret file
//! paths, key file permissions, Ed25519 and RSA keys), [`problem`] (a configuration problem at a
//! key), [`xml`] (XML from peers: DTDs refused, nodes, attributes and namespaces bounded),
//! [`ins_oid`] (the OIDs an INS is issued under), [`build`] (which build this binary is).
//! Just above them: [`random`] (ids, tokens and keys from the kernel, one failure
//! policy), [`tls`] (the ring provider, certificate loading, mutual-TLS client
//! configurations) and [`xmldsig`] (enveloped XML signatures of the DMP's profile:
//! canonical form, verification). ARCHITECTURE.md draws every layer; `tests/suite/layering.rs` checks them.
//!
//! See ARCHITECTURE.md for the invariants.

// One audited exception: `audit::outq` (a kernel getter no safe crate wraps).
#![deny(unsafe_code)]
#![warn(missing_docs)]
// Input from the network, the card or the upstream must never panic: no unwrap/expect in
// library code (tests are exempt through clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

/// `Debug` that names the type and shows none of its content, for types holding health data
/// or a patient's identity: such values must never reach a log line, a panic message or an
/// error through `{:?}`.
macro_rules! redacted_debug {
    ($($t:ident),* $(,)?) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { .. }"))
            }
        }
    )*};
}

pub(crate) mod access;
pub(crate) mod access_mode;
pub mod audit;
pub(crate) mod build;
pub mod cache;
pub mod card;
pub(crate) mod case;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod ins_oid;
// Development tools (the demo, the virtual card, the stand-in record services and their
// throwaway PKI): the `dev-tools` feature, default on, off in the Debian package.
#[cfg(feature = "dev-tools")]
pub(crate) mod demo;
#[cfg(feature = "dev-tools")]
pub(crate) mod dev_card;
#[cfg(feature = "dev-tools")]
pub(crate) mod dev_dmp;
#[cfg(feature = "dev-tools")]
pub mod dev_pki;
#[cfg(feature = "dev-tools")]
pub(crate) mod dev_upstream;
pub mod encoding;
pub(crate) mod http;
pub(crate) mod limit;
pub mod patient;
pub(crate) mod problem;
pub(crate) mod random;
pub(crate) mod secret;
pub mod service;
pub(crate) mod session;
pub(crate) mod state;
pub mod summary;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub mod upstream;
pub mod xml;
pub mod xmldsig;
