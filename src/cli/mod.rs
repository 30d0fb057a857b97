//! The command line. The only place that uses `anyhow` and decides exit codes:
//! 0 ok, 64 bad usage or configuration (EX_USAGE), 1 runtime failure, 141 when standard
//! output's reader went away (as SIGPIPE would).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_PATH};
use crate::http::probe::Probe;
use crate::service::{self, Prepared};
use crate::telemetry;
use crate::tls::load_certs;

/// `println!` for a command's results. A reader that went away (`| head`, `| grep -q`) ends
/// the command quietly, with the status a shell gives a command killed by SIGPIPE, instead
/// of a panic: Rust ignores SIGPIPE, so the write fails with EPIPE. `serve` writes nothing
/// here (its logs go to stderr).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!`'s counterpart of [`out!`].
macro_rules! out_raw {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

mod audit_cli;
mod cache_cli;
mod card_cli;
#[cfg(feature = "dev-tools")]
mod dev_cli;
mod dmp_cli;
#[cfg(feature = "dev-tools")]
mod emulate_cli;
mod summary_cli;
use audit_cli::AuditCommand;
use cache_cli::CacheCommand;
use card_cli::CardCommand;
use dmp_cli::DmpCommand;
use summary_cli::SummaryCommand;

pub(crate) const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 64;
/// 128 + SIGPIPE: what a shell reports for a command whose reader went away.
const EXIT_BROKEN_PIPE: u8 = 141;

/// Writes a command's results to standard output (see [`out!`]).
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        exit_on_write_error(&e);
    }
}

/// Standard output for commands that stream their results (`audit list`, `audit
/// export`): a failed write ends the process as [`out!`] does.
pub(crate) struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    pub(crate) fn lock() -> Self {
        Self(std::io::stdout().lock())
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).or_else(|e| exit_on_write_error(&e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().or_else(|e| exit_on_write_error(&e))
    }
}

fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_BROKEN_PIPE.into());
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(EXIT_RUNTIME.into())
}

/// Break-glass gateway to critical patient summaries for a SAMU regulation centre.
#[derive(Debug, Parser)]
#[command(name = "samu-gateway", version, propagate_version = true)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "SAMU_GATEWAY_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (under systemd: Type=notify).
    Serve,
    /// Run a self-contained demo: throwaway PKI, embedded configuration, loopback listener.
    #[cfg(feature = "dev-tools")]
    Demo {
        /// Directory for the demo's files (default: a fresh temporary directory, kept).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Port on 127.0.0.1 (0 picks a free one; demo.json tells which).
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// The record service: the national record's protocol (the virtual card signs the
        /// access assertions) or the FHIR stand-in.
        #[arg(long, value_enum, default_value = "dmp")]
        upstream: crate::demo::samples::DemoUpstream,
        /// Send the sample case (case.json) to the card's desk once started, as the
        /// regulation software would; the printout has the curl line to send it by hand.
        #[arg(long)]
        case: bool,
    },
    /// Check the configuration and every file it names; bind and open nothing. Run as
    /// root, also check that the service user can read each file and write in the state
    /// directory.
    Configtest {
        /// The user the unit runs the service as, whose access a check run as root
        /// verifies; empty: not checked (a gateway not run by the packaged unit).
        #[arg(long, env = "SAMU_GATEWAY_SERVICE_USER", default_value = crate::config::SERVICE_USER)]
        service_user: String,
    },
    /// Ask the running gateway for /healthz and /readyz; exit 0 only if both answer 200.
    Healthcheck {
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Print the version and build facts.
    Version,
    /// Write the manual pages (roff, one per command) and the bash, zsh and fish
    /// completions into a directory: the Debian package ships them.
    #[command(hide = true)]
    Manual {
        /// Directory to write into (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Card readers and cards: list readers, probe a card, run a virtual card.
    Card {
        #[command(subcommand)]
        command: CardCommand,
    },
    /// Audit trail tools: verify, list, export, keys, retention.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A stand-in for the national record service (demo, tests, install checks): HTTPS
    /// with mutual TLS, access assertions verified, patients and bundles from a data file.
    #[cfg(feature = "dev-tools")]
    DevUpstream(crate::dev_upstream::DevUpstreamOptions),
    /// A stand-in for the national record (DMP) over SOAP with mutual TLS (demo, tests,
    /// install checks): every VIHF verified, document sets from a data file.
    #[cfg(feature = "dev-tools")]
    DevDmp(crate::dev_dmp::DevDmpOptions),
    /// The summary cache: master key, counts, purge.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Critical summaries: show what the gateway extracts from an IPS bundle file.
    Summary {
        #[command(subcommand)]
        command: SummaryCommand,
    },
    /// The national record (DMP): the signed VIHF assertion the gateway would send, and
    /// what the gateway reads in a saved DMP message.
    Dmp {
        #[command(subcommand)]
        command: DmpCommand,
    },
}

pub(crate) enum Failure {
    /// A command-line argument is wrong: each line names it.
    Usage(Vec<String>),
    /// The configuration is: each line names the key.
    Configuration(Vec<String>),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Configuration(e.lines())
    }
}

/// Parses the command line, runs the command, returns the process exit code.
pub fn main() -> ExitCode {
    crate::telemetry::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Under systemd these lines go to the journal, often before logging is set up (a
    // configuration `serve` refuses): marked as errors, `journalctl -p err` shows them.
    let error = if crate::telemetry::stderr_is_journal() {
        "<3>"
    } else {
        ""
    };
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Configuration(lines)) => {
            for line in lines {
                eprintln!("{error}configuration error: {line}");
            }
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Usage(lines)) => {
            for line in lines {
                eprintln!("{error}usage error: {line}");
            }
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(e)) => {
            tracing::error!(error = format!("{e:#}"), "exiting on failure");
            eprintln!("{error}error: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Audit { command } => audit_cli::run(&cli.config, command),
        Command::Card { command } => card_cli::run(&cli.config, command),
        Command::Summary { command } => summary_cli::run(command),
        Command::Dmp { command } => dmp_cli::run(&cli.config, command),
        Command::Cache { command } => cache_cli::run(&cli.config, command),
        #[cfg(feature = "dev-tools")]
        Command::DevUpstream(options) => dev_cli::dev_upstream(options),
        #[cfg(feature = "dev-tools")]
        Command::DevDmp(options) => dev_cli::dev_dmp(options),
        Command::Serve => {
            let config = Config::load(&cli.config)?;
            let lists = revocation_lists(&config);
            serve(Prepared::from_config(config).map_err(|e| serve_refusal(e, &lists))?)
        }
        #[cfg(feature = "dev-tools")]
        Command::Demo {
            dir,
            port,
            upstream,
            case,
        } => dev_cli::run_demo(dir, port, upstream, case),
        Command::Configtest { service_user } => configtest(&cli.config, &service_user),
        Command::Healthcheck { timeout_secs } => {
            healthcheck(&cli.config, Duration::from_secs(timeout_secs))
        }
        Command::Manual { out } => manual(&out),
        Command::Version => {
            out!("samu-gateway {}", crate::build::describe());
            out!("tls: rustls (ring provider), TLS 1.2 and 1.3");
            out!(
                "development tools (demo, card emulator, stand-in record services): {}",
                if cfg!(feature = "dev-tools") {
                    "built in"
                } else {
                    "not built in"
                }
            );
            out!(
                "stores: audit trail in redb (format {}), summary cache in sled (format {})",
                crate::audit::FORMAT_VERSION,
                crate::cache::FORMAT_VERSION
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // The unit's TasksMax=512 must never stop the pool from growing: 128 blocking
        // threads (file reads, sled, redb readers) are far more than two cores use.
        .max_blocking_threads(128)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The revocation list files the configuration names (workstation and card), or `None`
/// when a list it needs is empty.
fn revocation_lists(config: &Config) -> Option<Vec<std::path::PathBuf>> {
    let mut files = config.tls.workstation_crls.clone();
    if let Some(cards) = &config.cards {
        if cards.trust.crls.is_empty() {
            return None;
        }
        files.extend(cards.trust.crls.iter().cloned());
    }
    Some(files)
}

/// Why `serve` does not start. A revocation list is data a timer refreshes, not
/// configuration: one that is there but cannot be used at this moment (being rewritten, cut
/// short) is a failure systemd retries (exit 1), not a configuration it must never restart
/// on (64). A list missing, or none given, is the configuration's (64). `configtest`
/// reports both as problems.
fn serve_refusal(e: ConfigError, lists: &Option<Vec<std::path::PathBuf>>) -> Failure {
    let revocation =
        |key: &str| key.starts_with("tls.workstation_crls") || key.starts_with("cards.trust.crls");
    let all_there = lists
        .as_ref()
        .is_some_and(|files| files.iter().all(|f| f.is_file()));
    match &e {
        ConfigError::Invalid(problems)
            if all_there && !problems.is_empty() && problems.iter().all(|p| revocation(&p.key)) =>
        {
            Failure::Runtime(anyhow::anyhow!(
                "a revocation list cannot be used (the service is restarted to try again): {}",
                e.lines().join("; ")
            ))
        }
        _ => e.into(),
    }
}

fn serve(prepared: Prepared) -> Result<ExitCode, Failure> {
    // Checked here, not by `configtest`: a shell's limit is not the unit's.
    service::file_budget(prepared.config.server.max_connections)
        .map_err(|problem| Failure::Configuration(vec![problem.to_string()]))?;
    telemetry::init(&prepared.config.log).context("cannot start logging")?;
    runtime()?
        .block_on(service::run(prepared, |_| {}))
        .context("gateway stopped on an error")?;
    Ok(ExitCode::SUCCESS)
}

/// The manual pages and shell completions, generated from the command line's own
/// definition, so they never drift from it.
fn manual(out: &std::path::Path) -> Result<ExitCode, Failure> {
    use clap::CommandFactory;
    let written = |what: &str| format!("cannot write the {what} into {}", out.display());
    std::fs::create_dir_all(out).with_context(|| written("directory"))?;
    let command = Cli::command();
    clap_mangen::generate_to(command.clone(), out).with_context(|| written("manual pages"))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut command.clone(), "samu-gateway", out)
            .with_context(|| written("completions"))?;
    }
    out!("manual pages and completions written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn configtest(path: &std::path::Path, service_user: &str) -> Result<ExitCode, Failure> {
    let prepared = Prepared::load(path)?;
    let config = &prepared.config;
    // Read by the `audit` commands only: checked here, not by `serve`.
    audit_cli::add_earlier(config, &mut crate::audit::TrustedKeys::default())?;
    // Root reads every file: what passes here may still be closed to the service.
    let as_root = rustix::process::geteuid().is_root();
    let checked_as = if !as_root || service_user.is_empty() {
        None
    } else if let Some(user) = crate::config::ServiceUser::lookup(service_user) {
        let (verdict, warnings) = config.check_service_user(path, &user);
        for warning in warnings {
            out!("WARNING: {warning}");
        }
        verdict?;
        Some(user.name)
    } else {
        out!(
            "note: no user {service_user} on this system: the files were checked as root reads them, not as the service will"
        );
        None
    };
    out!(
        "configuration OK: {} (centre {}, {} desk(s), listen {}, state {})",
        path.display(),
        config.centre.structure_id,
        config.desks.len(),
        config.server.listen,
        config.storage.state_dir.display(),
    );
    if let Some(name) = checked_as {
        out!("files: readable by the service user {name}, state directory writable by it");
    }
    // Data, not configuration, so not a refusal; but under `refuse` no desk can connect.
    if let Some(policy) = prepared.tls.stale_crls() {
        out!(
            "WARNING: a workstation CRL is past its next update ({}): publish a fresh one",
            match policy {
                crate::card::trust::StaleCrlPolicy::Refuse =>
                    "workstation_stale_crl = \"refuse\": every desk's connection is refused until then",
                crate::card::trust::StaleCrlPolicy::AcceptAndFlag =>
                    "workstation_stale_crl = \"accept_and_flag\": desks connect, revocation unchecked",
            }
        );
    }
    // Say where `credential:NAME` keys were read, so that a check from a shell is known to
    // be the check of what the unit will load.
    if config.to_toml().is_ok_and(|t| t.contains("\"credential:")) {
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => out!(
                "credentials: read from systemd's credentials ({})",
                std::path::Path::new(&dir).display()
            ),
            None => out!(
                "credentials: read from the credential store {} (the files the unit loads)",
                crate::secret::credential_store()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn healthcheck(path: &std::path::Path, timeout: Duration) -> Result<ExitCode, Failure> {
    let config = Config::read(path)?;
    let addr = config.listen_addr()?;
    let management = Probe::management(config.management_addr()?, timeout);
    let mut problems = Vec::new();
    let leaf = load_certs(&config.tls.server_cert, "tls.server_cert", &mut problems)
        .into_iter()
        .next()
        .ok_or(ConfigError::Invalid(problems))?;
    let public = Probe::new(addr, leaf, timeout).context("cannot build the probe")?;
    let runtime = runtime()?;
    let mut healthy = true;
    // The management listener answers for the process; the public one is checked too,
    // since that is what desks reach.
    for (probe, endpoint, name) in [
        (&management, "/healthz", "management /healthz"),
        (&management, "/readyz", "management /readyz"),
        (&public, "/healthz", "public /healthz"),
    ] {
        match runtime.block_on(probe.get(endpoint)) {
            Ok((status, body)) => {
                out!("{name}: {status} {}", body.trim());
                healthy &= status == 200;
            }
            Err(e) => {
                out!("{name}: {e}");
                healthy = false;
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    })
}
