//! Configuration: `/etc/samu-gateway/gateway.toml` plus `SAMU_GATEWAY__SECTION__KEY`
//! environment overrides, deserialized into typed structs that reject unknown keys, then
//! validated as a whole so that every problem is reported at once, with its key path.
//!
//! Nothing here binds a socket or opens a store: `configtest` runs exactly this code.

mod service_user;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::http::{CentreConfig, ServerConfig, TlsConfig};
use crate::problem::ConfigProblem;
use crate::secret::SecretPath;
use crate::session::{CardsConfig, DeskConfig};
use crate::telemetry::LogConfig;

pub(crate) use service_user::{SERVICE_USER, ServiceUser};

/// Where `serve` and the other subcommands look for the file unless told otherwise.
pub(crate) const DEFAULT_PATH: &str = "/etc/samu-gateway/gateway.toml";
/// Environment variables starting with this prefix and `__` override file keys,
/// e.g. `SAMU_GATEWAY__SERVER__LISTEN=127.0.0.1:9443`.
pub(crate) const ENV_PREFIX: &str = "SAMU_GATEWAY";
/// The list-valued keys the environment may set (comma-separated).
const ENV_LIST_KEYS: [&str; 1] = ["dmp.document_types"];

/// The whole configuration of one gateway (one SAMU regulation centre).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The regulation centre this appliance serves.
    pub centre: CentreConfig,
    /// The HTTPS listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Certificates and keys of the listener and of the workstation CA.
    pub tls: TlsConfig,
    /// Where the stores live.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// CPS card login: card profile and certificate trust. Without it, no one can log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cards: Option<CardsConfig>,
    /// The regulation software's integration certificate: who may replace the roster and
    /// send cases. Without it, neither is possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<IntegrationConfig>,
    /// The on-duty roster. Without it, any professional with a trusted card may log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roster: Option<RosterConfig>,
    /// The record service. Without it, no summary can be fetched (the desk API says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::UpstreamConfig>,
    /// The national record (DMP) over SOAP/XDS.b: where it is and what the VIHF says of
    /// the centre and the software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmp: Option<crate::upstream::dmp::DmpConfig>,
    /// Compliance officers: who may review the trail through the API.
    #[serde(default)]
    pub compliance: ComplianceConfig,
    /// Break-glass grants and reasons.
    #[serde(default)]
    pub break_glass: crate::access::BreakGlassConfig,
    /// Rate limits on patient access and searches.
    #[serde(default)]
    pub limits: crate::limit::LimitsConfig,
    /// The encrypted summary cache.
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    /// Cases the regulation software sends to desks (SAMU Hub RS-EDA).
    #[serde(default)]
    pub cases: crate::case::CaseConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// The regulation desks, each with its card reader and workstation certificate.
    #[serde(default)]
    pub desks: Vec<DeskConfig>,
}

/// `[compliance]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Subject CNs of the compliance officers' certificates (workstation CA, no desk).
    #[serde(default)]
    pub officer_cns: Vec<String>,
    /// SHA-256 pins of the officers' certificates: when any is set, an officer's
    /// certificate must also match one of them (a CN alone can be reissued by the CA).
    #[serde(default)]
    pub officer_sha256: Vec<String>,
    /// Anomaly report and real-time alert: more distinct patients per professional per
    /// hour is flagged.
    #[serde(default = "defaults::max_patients_per_hour")]
    pub max_patients_per_hour: usize,
    /// Anomaly report and real-time alert: this many PIN failures at one desk within ten
    /// minutes is flagged.
    #[serde(default = "defaults::pin_failures")]
    pub pin_failures: usize,
    /// Anomaly report: the regular expression call ids of the regulation software match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id_pattern: Option<String>,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        Self {
            officer_cns: Vec::new(),
            officer_sha256: Vec::new(),
            max_patients_per_hour: defaults::max_patients_per_hour(),
            pin_failures: defaults::pin_failures(),
            call_id_pattern: None,
        }
    }
}

impl ComplianceConfig {
    /// The anomaly report's thresholds.
    pub fn thresholds(&self) -> crate::audit::report::Thresholds {
        crate::audit::report::Thresholds {
            max_patients_per_hour: self.max_patients_per_hour,
            pin_failures: self.pin_failures,
            call_id_pattern: self.call_id_pattern.clone(),
        }
    }
}

/// Where the embedded stores live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// State directory holding the audit trail (redb) and the summary cache (sled).
    pub state_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/samu-gateway"),
        }
    }
}

/// The regulation software (LRM), by its integration certificate: issued by the workstation
/// CA, mapped to no desk. It alone replaces the roster and sends cases to desks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Subject CN of the integration certificate.
    pub cn: String,
    /// SHA-256 pin of the integration certificate: when set, the certificate must match it
    /// as well as the CN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The on-duty roster: with it, only professionals on duty may log in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RosterConfig {
    /// Minutes before a shift starts and after it ends during which its professional may
    /// still log in (and keeps the session).
    #[serde(default = "defaults::roster_grace_minutes")]
    pub grace_minutes: u64,
    /// Where the integration certificate's CN was before `[integration]`: read only so
    /// that `configtest` can say where it moved.
    #[serde(default, skip_serializing)]
    pub integration_cn: Option<String>,
    /// As `integration_cn`, for the pin.
    #[serde(default, skip_serializing)]
    pub integration_sha256: Option<String>,
}

/// The audit trail: signing, batching, checkpoints, retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// PKCS#8 PEM Ed25519 key signing checkpoints (mode 0600/0640 at most), or
    /// `credential:NAME`. Create one with `samu-gateway audit keygen`.
    pub signing_key: SecretPath,
    /// Files holding the public keys (hex, as `audit keygen` writes `KEY.pub`) of earlier
    /// signing keys whose checkpoints the trail still holds after a rotation: the `audit`
    /// commands (`verify` without `--public-key`, `backup`, `restore`, the package's backup
    /// before an upgrade) trust them beside the configured key; `configtest` reads them too.
    /// The service never does: its validation checks only that the paths are absolute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_public_keys: Vec<std::path::PathBuf>,
    /// Node id written in every record; default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Group commit: a batch commits at this many records...
    #[serde(default = "defaults::batch_max_records")]
    pub batch_max_records: usize,
    /// ...or this many milliseconds after its first record.
    #[serde(default = "defaults::batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// A signed checkpoint every this many records...
    #[serde(default = "defaults::checkpoint_every_records")]
    pub checkpoint_every_records: u64,
    /// ...or every this many seconds when records were added.
    #[serde(default = "defaults::checkpoint_every_secs")]
    pub checkpoint_every_secs: u64,
    /// Records older than this may be pruned, once shipped upstream.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u64,
    /// Audit repositories every record is shipped to (syslog over TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<crate::audit::ship::ReceiverConfig>,
    /// `/readyz` reports shipping degraded when a receiver's oldest unshipped record is
    /// older than this (seconds).
    #[serde(default = "defaults::ship_alert_seconds")]
    pub ship_alert_seconds: u64,
}

impl AuditConfig {
    /// Defaults with the given signing key.
    pub fn with_key(signing_key: SecretPath) -> Self {
        Self {
            signing_key,
            earlier_public_keys: Vec::new(),
            node_id: None,
            batch_max_records: defaults::batch_max_records(),
            batch_max_wait_ms: defaults::batch_max_wait_ms(),
            checkpoint_every_records: defaults::checkpoint_every_records(),
            checkpoint_every_secs: defaults::checkpoint_every_secs(),
            retention_days: defaults::retention_days(),
            receivers: Vec::new(),
            ship_alert_seconds: defaults::ship_alert_seconds(),
        }
    }

    /// The writer's batching and checkpoint settings.
    pub fn settings(&self) -> crate::audit::Settings {
        crate::audit::Settings {
            node: self.node(),
            batch_max_records: self.batch_max_records,
            batch_max_wait: std::time::Duration::from_millis(self.batch_max_wait_ms),
            checkpoint_every_records: self.checkpoint_every_records,
            checkpoint_every: std::time::Duration::from_secs(self.checkpoint_every_secs),
        }
    }

    /// The node id: configured, else the host name.
    pub fn node(&self) -> String {
        self.node_id.clone().unwrap_or_else(host_name)
    }
}

/// The host name, from uname(2). Not from `/proc/sys/kernel/hostname`: the unit's
/// `ProcSubset=pid` hides `/proc/sys`, and every appliance then recorded and shipped its
/// trail as node "samu-gateway", while the CLI, run from a shell, used the real name.
fn host_name() -> String {
    let uname = rustix::system::uname();
    uname
        .nodename()
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map_or_else(|| "samu-gateway".into(), str::to_owned)
}

mod defaults {
    pub(super) fn roster_grace_minutes() -> u64 {
        15
    }
    pub(super) fn batch_max_records() -> usize {
        64
    }
    /// No wait: the writer commits whatever is queued as soon as the previous commit ends
    /// (records arriving during an fsync form the next batch). `benches/audit.rs` measured
    /// a 2 ms wait to cost 5x in throughput for a single appender (README).
    pub(super) fn batch_max_wait_ms() -> u64 {
        0
    }
    pub(super) fn checkpoint_every_records() -> u64 {
        1000
    }
    pub(super) fn checkpoint_every_secs() -> u64 {
        60
    }
    pub(super) fn max_patients_per_hour() -> usize {
        10
    }
    pub(super) fn pin_failures() -> usize {
        3
    }
    pub(super) fn ship_alert_seconds() -> u64 {
        900
    }
    pub(super) fn retention_days() -> u64 {
        365
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("{path}: cannot read configuration file: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is not TOML.
    #[error("{path}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The TOML or an environment override does not fit the schema (unknown key, wrong type,
    /// missing section).
    #[error("{0}")]
    Schema(String),
    /// Values parsed but are unacceptable; every problem found is listed.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// One line per problem, for `configtest` and start-up errors.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn join_lines(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads `path`, applies `SAMU_GATEWAY__*` overrides from the process environment and
    /// validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config = Self::read_with_env(path, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and deserializes without the whole-configuration checks: for tools that need
    /// only a few keys (`healthcheck` runs outside the unit, without the key credential).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        Self::read_with_env(path, std::env::vars())
    }

    fn read_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let file = check_toml_syntax(path, &text)?;
        let mut env: std::collections::HashMap<String, String> = env.into_iter().collect();
        check_env_sections(&file, &env)?;
        // Lists given in the environment are comma-separated; taken out here, as the
        // `config` crate splits lists only when it also turns every number-like string
        // into a number and back ("3.0" into "3", "007" into "7"). Numbers and booleans
        // are read from their strings when deserialized anyway.
        let mut lists = Vec::new();
        for key in ENV_LIST_KEYS {
            let name = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
            if let Some(value) = env.remove(&name) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect();
                lists.push((key, items));
            }
        }
        let env_source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env));
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(env_source);
        for (key, items) in lists {
            builder = builder
                .set_override(key, items)
                .map_err(|e| ConfigError::Schema(describe_schema_error(path, &e)))?;
        }
        let config: Config = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError::Schema(describe_schema_error(path, &e)))?;
        Ok(config)
    }

    /// Checks every value, collecting all problems rather than stopping at the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Whether `user` (the one the unit runs the service as) can read the configuration
    /// file `source`, every file it names, and write in its state directory; for
    /// `configtest` run as root, which reads everything. Every problem together; what
    /// depends on the unit as installed comes back as warnings.
    pub(crate) fn check_service_user(
        &self,
        source: &Path,
        user: &ServiceUser,
    ) -> (Result<(), ConfigError>, Vec<ConfigProblem>) {
        let found = service_user::check(self, source, user);
        let verdict = if found.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(found.problems))
        };
        (verdict, found.warnings)
    }

    /// The management listen address; valid once [`Config::validate`] has passed.
    pub fn management_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        validate::parse_listen(&self.server.management_listen).map_err(|reason| {
            ConfigError::Invalid(vec![ConfigProblem::new("server.management_listen", reason)])
        })
    }

    /// The listen address; valid once [`Config::validate`] has passed.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        validate::parse_listen(&self.server.listen).map_err(|reason| {
            ConfigError::Invalid(vec![ConfigProblem::new("server.listen", reason)])
        })
    }

    /// The configuration as TOML, as `demo` writes it for later subcommands.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Schema(e.to_string()))
    }
}

/// The gateway's own variables beside the overrides.
const OWN_VARIABLES: [&str; 3] = [
    "SAMU_GATEWAY_CONFIG",
    "SAMU_GATEWAY_CREDENTIAL_STORE",
    "SAMU_GATEWAY_SERVICE_USER",
];

/// Sections whose presence switches a feature on: the file says whether they are there.
const OPTIONAL_SECTIONS: [&str; 5] = ["cards", "integration", "roster", "upstream", "dmp"];

/// An environment override sets values; it never brings in a section the file lacks
/// (the `config` crate would build one from a single variable, e.g. a fleet-wide
/// `SAMU_GATEWAY__ROSTER__GRACE_MINUTES` switching roster enforcement on with no roster).
fn check_env_sections(
    file: &toml::Table,
    env: &std::collections::HashMap<String, String>,
) -> Result<(), ConfigError> {
    // A variable of the gateway's that is neither an override (`SAMU_GATEWAY__…`, two
    // underscores) nor one of its own settings is a misspelt override: the `config` crate
    // would pass over it, and the setting meant would silently not apply.
    let mut misspelt: Vec<&str> = env
        .keys()
        .filter(|name| {
            let upper = name.to_uppercase();
            upper.starts_with(&format!("{ENV_PREFIX}_"))
                && !upper.starts_with(&format!("{ENV_PREFIX}__"))
                && !OWN_VARIABLES.contains(&upper.as_str())
        })
        .map(String::as_str)
        .collect();
    misspelt.sort_unstable();
    if let Some(first) = misspelt.first() {
        return Err(ConfigError::Invalid(vec![ConfigProblem::new(
            "environment",
            format!(
                "{first} is not an override: overrides are {ENV_PREFIX}__SECTION__KEY (two underscores after {ENV_PREFIX}); the setting it meant was not applied"
            ),
        )]));
    }
    let problems: Vec<ConfigProblem> = OPTIONAL_SECTIONS
        .iter()
        .filter(|section| !file.contains_key(**section))
        .filter_map(|section| {
            // The `config` crate matches names whatever their case.
            let prefix = format!("{ENV_PREFIX}__{}__", section.to_uppercase());
            let mut names: Vec<&str> = env
                .keys()
                .filter(|name| name.to_uppercase().starts_with(&prefix))
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            let first = names.first()?;
            Some(ConfigProblem::new(
                *section,
                format!(
                    "{first} sets a key of [{section}], which the file does not have: the environment overrides values and never switches a section on; add [{section}] to the file, or unset the variable"
                ),
            ))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Parses the raw text first so that syntax errors name a line and column on one line
/// (the `config` crate's own message spans several lines with a source excerpt).
fn check_toml_syntax(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let err = match text.parse::<toml::Table>() {
        Ok(table) => return Ok(table),
        Err(err) => err,
    };
    let offset = err.span().map_or(0, |span| span.start);
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Err(ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: err.message().trim().to_owned(),
    })
}

fn describe_schema_error(path: &Path, err: &config::ConfigError) -> String {
    let text = err.to_string();
    let text = text.lines().next().unwrap_or_default();
    format!("{}: {}", path.display(), text)
}

#[cfg(test)]
mod tests;
