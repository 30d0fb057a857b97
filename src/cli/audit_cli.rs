//! `samu-gateway audit …`: the compliance team's and the operator's tools on the trail.
//!
//! Reading commands (`verify`, `list`, `export`, `backup`) open the store read-only and work
//! while the service runs. `prune` and `restore` write, so they need the service stopped
//! (the store says so if not).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::{EXIT_RUNTIME, Failure};
use crate::audit::export::{self, Filter, FilterSpec, Format};
use crate::audit::store::ReadStore;
use crate::audit::{AuditLog, AuditReader, AuditStore, Signer, TrustedKeys};
use crate::config::{Config, ConfigError};
use crate::problem::ConfigProblem;
use crate::state::AUDIT_FILE;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Check the whole chain and every checkpoint signature; exit 2 naming what is wrong
    /// (1: it could not be checked).
    Verify {
        /// Verify this JSONL export instead of the configured store.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Trusted public key (hex, or a file holding it); repeatable. Default: the
        /// configured signing key's; given, only those are trusted.
        // A value starting with '-' (PEM text pasted by mistake) is taken as the value, so
        // the refusal never quotes it (clap's "unexpected argument" error would).
        #[arg(long = "public-key", allow_hyphen_values = true)]
        public_keys: Vec<String>,
    },
    /// Anomalies since a time: outside shift, many patients, PIN failures, refusals by
    /// patients, stale copies and CRLs, call ids, unusual volume; each with its records.
    Report {
        /// RFC 3339 time, or a number of hours back (`24h`).
        #[arg(long, default_value = "24h")]
        since: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Break-glass accesses still to review (no decision, or "to investigate"), oldest first.
    Pending {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List records matching the filters, oldest first.
    List {
        #[command(flatten)]
        filter: FilterSpec,
        /// At most this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the stored JSON records instead of one summary line each.
        #[arg(long)]
        json: bool,
    },
    /// Export records matching the filters (JSONL exports without filters verify offline).
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        #[command(flatten)]
        filter: FilterSpec,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Create a checkpoint signing key (mode 0600; never overwrites) and PATH.pub beside it.
    Keygen {
        /// Where to write the PKCS#8 PEM key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of the configured signing key (give it to the compliance team).
    PublicKey,
    /// Delete records past `audit.retention_days` that were shipped, before a checkpoint.
    /// Needs the service stopped.
    Prune,
    /// Copy the whole store, as one consistent snapshot, to a new file (owner-only, never
    /// overwritten); works while the service runs. The copy is verified before it counts.
    Backup {
        /// The backup file to create.
        #[arg(long)]
        output: PathBuf,
        /// A key the trail's older checkpoints were signed with (hex, or a file holding
        /// it), trusted besides the configured one; repeatable (after a key rotation).
        // A value starting with '-' (PEM text pasted by mistake) is taken as the value, so
        // the refusal never quotes it (clap's "unexpected argument" error would).
        #[arg(long = "public-key", allow_hyphen_values = true)]
        public_keys: Vec<String>,
    },
    /// Put a backup made by `audit backup` in place of the store, keeping the replaced store
    /// beside it; the trail continues on a new epoch. Needs the service stopped.
    Restore {
        /// The backup file.
        #[arg(long)]
        input: PathBuf,
        /// A key the backup's older checkpoints were signed with (hex, or a file holding
        /// it), trusted besides the configured one; repeatable (after a key rotation, or a
        /// key lost with the disk and replaced).
        // A value starting with '-' (PEM text pasted by mistake) is taken as the value, so
        // the refusal never quotes it (clap's "unexpected argument" error would).
        #[arg(long = "public-key", allow_hyphen_values = true)]
        public_keys: Vec<String>,
    },
}

fn to_filter(spec: &FilterSpec) -> Result<Filter, Failure> {
    spec.to_filter()
        .map_err(|(field, why)| Failure::Usage(vec![format!("--{field}: {why}")]))
}

pub(super) fn run(config_path: &Path, command: AuditCommand) -> Result<ExitCode, Failure> {
    match command {
        AuditCommand::Keygen { out } => {
            // Both checked before either is written: the `.pub` of a key being rotated out
            // is what verifies the checkpoints it signed.
            let public = PathBuf::from(format!("{}.pub", out.display()));
            for path in [&out, &public] {
                if path.symlink_metadata().is_ok() {
                    return Err(Failure::Usage(vec![format!(
                        "{} exists: move it away first (an earlier key's public half verifies the checkpoints it signed)",
                        path.display()
                    )]));
                }
            }
            let signer = Signer::generate(&out).context("cannot create the key")?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&public)
                .and_then(|mut file| {
                    std::io::Write::write_all(
                        &mut file,
                        format!("{}\n", signer.public_key_hex()).as_bytes(),
                    )
                })
                .with_context(|| format!("cannot write {}", public.display()))?;
            out!("created {} (key id {})", out.display(), signer.key_id());
            out!(
                "public key: {} (also in {})",
                signer.public_key_hex(),
                public.display()
            );
            out!(
                "give the public key to the compliance team: `audit verify --public-key {}`",
                public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::PublicKey => {
            let signer = configured_signer(&Config::read(config_path)?)?;
            out!("{}", signer.public_key_hex());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { file, public_keys } => {
            verify(config_path, file.as_deref(), &public_keys)
        }
        AuditCommand::Report { since, json } => {
            let config = crate::config::Config::load(config_path)?;
            let since_ms = parse_since(&since)?;
            let reader = reader(config_path)?;
            let flags =
                crate::audit::report::report(&reader, since_ms, &config.compliance.thresholds())
                    .map_err(anyhow::Error::msg)?;
            if json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(&flags).context("cannot encode")?
                );
            } else {
                out!("{:<20} {:>7}  description (records)", "anomaly", "records");
                for flag in &flags {
                    let shown: Vec<String> =
                        flag.records.iter().take(10).map(u64::to_string).collect();
                    let more = flag.records.len().saturating_sub(10);
                    out!(
                        "{:<20} {:>7}  {} ({}{})",
                        flag.kind,
                        flag.records.len(),
                        flag.description,
                        shown.join(" "),
                        if more > 0 {
                            format!(" +{more}")
                        } else {
                            String::new()
                        }
                    );
                }
                out!("{} anomaly flag(s)", flags.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Pending { json } => {
            let reader = reader(config_path)?;
            let pending =
                crate::audit::review::pending(&reader).context("cannot read the trail")?;
            for access in &pending {
                if json {
                    out!(
                        "{}",
                        serde_json::to_string(access).context("cannot encode")?
                    );
                } else {
                    out!(
                        "{:>8}  {}  professional={} desk={} patient={} call={} reason={}{}",
                        access.seq,
                        access.time,
                        access.professional.as_deref().unwrap_or("-"),
                        access.desk.as_deref().unwrap_or("-"),
                        access.ins.as_deref().unwrap_or("-"),
                        access.call_id.as_deref().unwrap_or("-"),
                        access.reason_code.as_deref().unwrap_or("-"),
                        if access.last_decision.is_some() {
                            " (to investigate)"
                        } else {
                            ""
                        },
                    );
                }
            }
            if !json {
                out!("{} access(es) to review", pending.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::List {
            filter,
            limit,
            json,
        } => {
            let reader = reader(config_path)?;
            let txn = reader.snapshot().context("cannot read the audit store")?;
            let selection =
                export::select(&txn, &to_filter(&filter)?, limit).context("cannot list")?;
            let mut out = super::Stdout::lock();
            for selected in &selection.records {
                let line = if json {
                    String::from_utf8_lossy(&selected.bytes).into_owned()
                } else {
                    export::list_line(selected)
                };
                writeln!(out, "{line}").context("cannot write")?;
            }
            eprintln!("{} record(s)", selection.records.len());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            format,
            filter,
            output,
        } => {
            let reader = reader(config_path)?;
            let txn = reader.snapshot().context("cannot read the audit store")?;
            let filter = to_filter(&filter)?;
            let count = match &output {
                Some(path) => {
                    // Owner-only and never over an existing file: an export holds patients'
                    // identities, and a mistyped path must not truncate anything (the live
                    // store included), as `audit backup`. Written beside it under a
                    // temporary name (0600), made durable, then linked into place: the
                    // name never holds a partial export (a failure or a crash leaves
                    // nothing under it; a CSV cut short cannot be told from a whole one).
                    let refused = || {
                        format!(
                            "cannot create {} (an export never replaces an existing file)",
                            path.display()
                        )
                    };
                    if path.symlink_metadata().is_ok() {
                        return Err(anyhow::anyhow!("{}: it exists", refused()).into());
                    }
                    let dir = match path.parent() {
                        Some(dir) if !dir.as_os_str().is_empty() => dir,
                        _ => Path::new("."),
                    };
                    let temporary = tempfile::Builder::new()
                        .prefix(".audit-export-")
                        .tempfile_in(dir)
                        .with_context(refused)?;
                    let mut file = std::io::BufWriter::new(temporary);
                    let count = export::export(&txn, &filter, format, &mut file)
                        .context("export failed")?;
                    let temporary = file
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .context("cannot write the export")?;
                    temporary
                        .as_file()
                        .sync_all()
                        .context("cannot write the export")?;
                    temporary
                        .persist_noclobber(path)
                        .map_err(|e| e.error)
                        .with_context(refused)?;
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .with_context(|| format!("cannot make {} durable", path.display()))?;
                    count
                }
                None => export::export(&txn, &filter, format, &mut super::Stdout::lock())
                    .context("export failed")?,
            };
            eprintln!("exported {count} record(s)");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prune => prune(config_path),
        AuditCommand::Backup {
            output,
            public_keys,
        } => backup(config_path, &output, &public_keys),
        AuditCommand::Restore { input, public_keys } => restore(config_path, &input, &public_keys),
    }
}

/// What the configured writer leaves unsigned at most (see `export::UnsignedTail`).
fn unsigned_tail(config: &Config) -> export::UnsignedTail {
    export::UnsignedTail::of(&config.audit.settings())
}

fn store_path(config_path: &Path) -> Result<PathBuf, Failure> {
    Ok(Config::read(config_path)?
        .storage
        .state_dir
        .join(AUDIT_FILE))
}

fn reader(config_path: &Path) -> Result<AuditReader, Failure> {
    Ok(AuditReader::open_recovering(&store_path(config_path)?)
        .context("cannot open the audit store")?)
}

fn configured_signer(config: &Config) -> Result<Signer, Failure> {
    let problem = |reason: &dyn std::fmt::Display| {
        Failure::from(ConfigError::Invalid(vec![ConfigProblem::new(
            "audit.signing_key",
            reason,
        )]))
    };
    let path = config
        .audit
        .signing_key
        .resolve()
        .map_err(|e| problem(&e))?;
    Signer::load(&path).map_err(|e| problem(&e))
}

/// The keys checkpoints must be signed with: those given, else the configured signing
/// key's and the earlier ones the configuration lists. An auditor verifying an export
/// away from the appliance has no configuration: the refusal then says what to pass.
fn trusted_keys(
    config_path: &Path,
    given: &[String],
    offline: bool,
) -> Result<TrustedKeys, Failure> {
    let mut trusted = TrustedKeys::default();
    for key in given {
        let text = if Path::new(key).is_file() {
            std::fs::read_to_string(key).with_context(|| format!("cannot read {key}"))?
        } else if !key.chars().all(|c| c.is_ascii_hexdigit()) {
            // Neither a file nor hex. A path is quoted back (a typing mistake to see); any
            // other text is not, since it may be a key pasted by mistake (PEM's base64
            // holds '/' too, so a '/' alone does not make a path).
            let path_like =
                (key.starts_with('/') || key.starts_with("./") || key.starts_with("../"))
                    && !key.contains(char::is_whitespace)
                    && !key.contains('+')
                    && !key.contains('=');
            return Err(Failure::Usage(vec![
                if path_like || key.ends_with(".pub") {
                    format!("--public-key: no such file: {key}")
                } else {
                    "--public-key: neither a file nor a key in hex (as `samu-gateway audit public-key` prints it); the text given is not repeated here, as it may be a key".into()
                },
            ]));
        } else {
            key.clone()
        };
        trusted
            .add_hex(&text)
            .map_err(|e| Failure::Usage(vec![format!("--public-key: {e}")]))?;
    }
    if trusted.is_empty() {
        let config = match Config::read(config_path) {
            Ok(config) => config,
            Err(e) if offline => {
                return Err(Failure::Usage(vec![format!(
                    "no trusted public key: pass --public-key HEX (or a file holding it): the gateway's checkpoint key, which `samu-gateway audit public-key` prints on the appliance (no configuration here: {e})"
                )]));
            }
            Err(e) => return Err(e.into()),
        };
        add_configured(&config, &mut trusted)?;
    }
    Ok(trusted)
}

/// The configured signing key's public half, and the earlier keys the configuration lists
/// (`audit.earlier_public_keys`: a trail kept across a rotation).
fn add_configured(config: &Config, trusted: &mut TrustedKeys) -> Result<(), Failure> {
    let signer = configured_signer(config)?;
    trusted
        .add_hex(signer.public_key_hex())
        .context("configured key")?;
    add_earlier(config, trusted)?;
    Ok(())
}

/// The earlier keys `audit.earlier_public_keys` lists, each read and parsed. `configtest`
/// checks them so; `serve` does not, since the service never reads them.
pub(super) fn add_earlier(config: &Config, trusted: &mut TrustedKeys) -> Result<(), ConfigError> {
    let problems: Vec<ConfigProblem> = config
        .audit
        .earlier_public_keys
        .iter()
        .enumerate()
        .filter_map(|(i, path)| {
            let read = std::fs::read_to_string(path)
                .map_err(|e| format!("{} cannot be read: {e}", path.display()))
                .and_then(|text| {
                    trusted.add_hex(&text).map_err(|e| {
                        format!(
                            "{} is not a public key as `samu-gateway audit public-key` prints it: {e}",
                            path.display()
                        )
                    })
                });
            read.err()
                .map(|reason| ConfigProblem::new(format!("audit.earlier_public_keys[{i}]"), reason))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// The configured signing key's, the earlier ones the configuration lists, and those
/// given: a trail kept across a key rotation carries checkpoints signed by the earlier key.
fn configured_and_given(config_path: &Path, given: &[String]) -> Result<TrustedKeys, Failure> {
    let mut trusted = trusted_keys(config_path, given, false)?;
    if !given.is_empty() {
        add_configured(&Config::read(config_path)?, &mut trusted)?;
    }
    Ok(trusted)
}

/// `audit verify`'s verdict that the trail was checked and is not intact, apart from 1
/// (it could not be checked: a file missing, unreadable, a store that does not open), so
/// that a script tells a tampered trail from a wrong path.
const EXIT_NOT_INTACT: u8 = 2;

fn verify(
    config_path: &Path,
    file: Option<&Path>,
    public_keys: &[String],
) -> Result<ExitCode, Failure> {
    let trusted = trusted_keys(config_path, public_keys, file.is_some())?;
    let (what, report) = match file {
        Some(file) => (
            file.display().to_string(),
            export::verify_file(file, &trusted).context("cannot verify the file")?,
        ),
        None => {
            let config = Config::read(config_path)?;
            let path = config.storage.state_dir.join(AUDIT_FILE);
            let reader =
                AuditReader::open_recovering(&path).context("cannot open the audit store")?;
            (
                path.display().to_string(),
                export::verify_store_within(&reader, &trusted, unsigned_tail(&config))
                    .context("cannot verify the store")?,
            )
        }
    };
    let range = report
        .range
        .map_or("none".to_owned(), |(a, b)| format!("{a} to {b}"));
    let last = report
        .last_checkpoint
        .map_or("none".to_owned(), |c| c.to_string());
    let epochs = if report.epochs.len() > 1 {
        let starts: Vec<String> = report
            .epochs
            .iter()
            .map(|(epoch, from)| format!("epoch {epoch} from seq {from}"))
            .collect();
        format!(
            "; restored from backups: {} (records of the same seq in two epochs are different records)",
            starts.join(", ")
        )
    } else {
        String::new()
    };
    if report.is_intact() {
        out!(
            "audit trail intact: {what}: {} record(s) (seq {range}), {} checkpoint signature(s) verified, last checkpoint at {last}{epochs}",
            report.records,
            report.checkpoints_verified
        );
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "audit trail NOT intact: {what}: {} problem(s)",
        report.findings.len()
    );
    for finding in &report.findings {
        out!("  - {finding}");
    }
    out!(
        "({} record(s) read, seq {range}, last checkpoint at {last})",
        report.records
    );
    Ok(ExitCode::from(EXIT_NOT_INTACT))
}

fn prune(config_path: &Path) -> Result<ExitCode, Failure> {
    // Validated as the service's: a retention of 0 days (read as "keep forever") must
    // be refused, not prune everything shipped.
    let config = Config::load(config_path)?;
    let signer = configured_signer(&config)?;
    let path = config.storage.state_dir.join(AUDIT_FILE);
    let store = AuditStore::open(&path)
        .context("cannot open the audit store for writing (stop the service first)")?;
    let log = AuditLog::start(std::sync::Arc::new(store), signer, config.audit.settings())
        .context("cannot start the audit writer")?;
    let cutoff = crate::clock::now()
        .1
        .saturating_sub(config.audit.retention_days * 86_400_000);
    let repositories = config
        .audit
        .receivers
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let report = log.prune(cutoff, repositories).context("prune failed")?;
    log.close().context("cannot close the audit trail")?;
    // Run as root, the writer may have created the journal: the service must open it.
    crate::state::hand_to_owner(&config.storage.state_dir).with_context(|| {
        format!(
            "cannot give {} back to its owner",
            config.storage.state_dir.display()
        )
    })?;
    match report.through {
        Some(through) => out!(
            "pruned {} record(s); the trail now starts after checkpoint {through}",
            report.records
        ),
        None => out!(
            "nothing to prune: no checkpointed segment is both older than {} days and shipped",
            config.audit.retention_days
        ),
    }
    if let Some(seq) = report.held_by_review {
        out!(
            "the break-glass access of record {seq} is not reviewed yet (or under investigation): nothing from it on is pruned until a decision closes it (audit pending)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn backup(config_path: &Path, output: &Path, older_keys: &[String]) -> Result<ExitCode, Failure> {
    let config = Config::read(config_path)?;
    let trusted = configured_and_given(config_path, older_keys)?;
    let source = AuditReader::open_recovering(&config.storage.state_dir.join(AUDIT_FILE))
        .context("cannot open the audit store")?;
    let copied = crate::audit::store::backup(&source, output, crate::clock::now().1)
        .context("backup failed")?;
    // A backup that does not verify is no backup: say so now, not on the day it is needed.
    let copy = AuditReader::open(output).context("cannot reopen the backup")?;
    let report = export::verify_store_within(&copy, &trusted, unsigned_tail(&config))
        .context("cannot verify the backup")?;
    if !report.is_intact() {
        eprintln!(
            "backup written to {} but it does NOT verify ({} problem(s)); after a key rotation, give the earlier public key with --public-key; otherwise the store itself needs `audit verify`:",
            output.display(),
            report.findings.len()
        );
        for finding in &report.findings {
            eprintln!("  - {finding}");
        }
        return Ok(ExitCode::from(EXIT_RUNTIME));
    }
    out!(
        "backup of {} record(s) up to seq {} (epoch {}) written to {}; verified intact ({} checkpoint signature(s))",
        copied.records,
        copied.head,
        copied.epoch,
        output.display(),
        report.checkpoints_verified
    );
    out!(
        "restore with `samu-gateway audit restore --input {}` while the service is stopped",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A file removed when dropped, unless taken out first.
struct Removed(Option<PathBuf>);

impl Drop for Removed {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The sequence number a backup's marker gives, once the copy `partial` of the backup
/// `input` is shown to be one made by `audit backup` that verifies against `trusted`.
fn check_backup(
    partial: &Path,
    input: &Path,
    trusted: &TrustedKeys,
    config: &Config,
) -> Result<u64, Failure> {
    let backup = AuditReader::open(partial)
        .with_context(|| format!("cannot open the backup {}", input.display()))?;
    let marked = crate::audit::store::meta(
        &backup.snapshot().context("cannot read the backup")?,
        crate::audit::store::Meta::BackupHead,
    )
    .context("cannot read the backup")?;
    let Some(marked) = marked else {
        return Err(anyhow::anyhow!(
            "{} is not a backup made by `samu-gateway audit backup`: putting it in place would reuse record identities the repositories already hold",
            input.display()
        )
        .into());
    };
    let report = export::verify_store_within(&backup, trusted, unsigned_tail(config))
        .context("cannot verify the backup")?;
    if !report.is_intact() {
        let findings: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
        return Err(anyhow::anyhow!(
            "the backup {} does not verify against the configured signing key (and those given with --public-key): {}",
            input.display(),
            findings.join("; ")
        )
        .into());
    }
    Ok(marked)
}

/// Checks the backup, moves the current store aside (never deleting it), installs a copy of
/// the backup durably with the replaced store's owner, and opens it once so that the new
/// epoch is recorded and signed before the service starts.
fn restore(config_path: &Path, input: &Path, older_keys: &[String]) -> Result<ExitCode, Failure> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let config = Config::read(config_path)?;
    let signer = configured_signer(&config)?;
    let trusted = configured_and_given(config_path, older_keys)?;
    let state = &config.storage.state_dir;
    let target = state.join(AUDIT_FILE);
    // The service's user owns the store (or, when the disk was lost, the state directory);
    // read before anything here, run as root, creates a file.
    let owner = std::fs::metadata(&target)
        .or_else(|_| std::fs::metadata(state))
        .map(|m| (m.uid(), m.gid()))
        .with_context(|| format!("cannot read {}", state.display()))?;
    // Holding the current store's lock proves the service is stopped; a store too damaged
    // to open (the usual reason to restore) cannot be held, and cannot be in use either.
    // No store at all (a lost disk) is not opened: that would create an empty one.
    let held = if target.exists() {
        match AuditStore::open(&target) {
            Ok(store) => Some(store),
            Err(e @ crate::audit::AuditError::Locked { .. }) => {
                return Err(anyhow::Error::new(e)
                    .context("stop the service before restoring")
                    .into());
            }
            Err(_) => None,
        }
    } else {
        None
    };
    // The copy is what is checked, then installed: checking the backup and copying it
    // after would install whatever the file had become in between, unchecked.
    let partial = state.join(format!("{AUDIT_FILE}.restoring"));
    let _ = std::fs::remove_file(&partial);
    // Removed on every way out until it is installed: a copy of a wrong or huge file must
    // not stay on the state directory's disk.
    let mut copy = Removed(Some(partial.clone()));
    {
        let mut from = std::fs::File::open(input)
            .with_context(|| format!("cannot read {}", input.display()))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        std::io::copy(&mut from, &mut to).context("cannot copy the backup")?;
        to.sync_all().context("cannot sync the copy")?;
    }
    let marked = check_backup(&partial, input, &trusted, &config)?;

    std::os::unix::fs::chown(&partial, Some(owner.0), Some(owner.1))
        .with_context(|| format!("cannot give {} to the store's owner", partial.display()))?;
    let replaced_at = crate::clock::now().1;
    let aside = state.join(format!("{AUDIT_FILE}.replaced-{replaced_at}"));
    if target.exists() {
        std::fs::rename(&target, &aside)
            .with_context(|| format!("cannot move the current store to {}", aside.display()))?;
    }
    // The replaced store's journal goes with it: the backup must not take in its frames.
    let journal = crate::audit::journal_path(&target);
    if journal.exists() {
        let journal_aside = aside.with_file_name(format!(
            "{}.replaced-{replaced_at}",
            journal
                .file_name()
                .map_or("audit.journal".into(), |n| n.to_string_lossy())
        ));
        std::fs::rename(&journal, &journal_aside).with_context(|| {
            format!(
                "cannot move the current journal to {}",
                journal_aside.display()
            )
        })?;
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot install {}", target.display()))?;
    copy.0 = None;
    std::fs::File::open(state)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", state.display()))?;
    drop(held);

    let store = AuditStore::open(&target).context("cannot open the restored store")?;
    let log = AuditLog::start(std::sync::Arc::new(store), signer, config.audit.settings())
        .context("cannot start the trail's new epoch")?;
    log.close().context("cannot close the audit trail")?;
    // Starting the new epoch, as root, created the journal: the service's user must be
    // able to open every audit file, or the service cannot start.
    for file in [target.clone(), crate::audit::journal_path(&target)] {
        if file.exists() {
            std::os::unix::fs::chown(&file, Some(owner.0), Some(owner.1))
                .with_context(|| format!("cannot give {} to the store's owner", file.display()))?;
        }
    }
    let installed = export::verify_store_within(
        &AuditReader::open(&target).context("cannot reopen the restored store")?,
        &trusted,
        unsigned_tail(&config),
    )
    .context("cannot verify the restored store")?;
    if !installed.is_intact() {
        let findings: Vec<String> = installed.findings.iter().map(ToString::to_string).collect();
        let kept = if aside.exists() {
            format!("; the replaced store is kept at {}", aside.display())
        } else {
            String::new()
        };
        return Err(anyhow::anyhow!(
            "the restored store {} does not verify: {}{kept}",
            target.display(),
            findings.join("; ")
        )
        .into());
    }
    out!(
        "restored {} (records up to seq {}); the trail continues on epoch {}",
        input.display(),
        marked,
        installed.epochs.last().map_or(0, |e| e.0)
    );
    if aside.exists() {
        out!(
            "the replaced store is kept at {}: keep it with the incident's evidence",
            aside.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `24h` (hours back) or an RFC 3339 time, as Unix milliseconds.
fn parse_since(text: &str) -> Result<u64, Failure> {
    crate::audit::report::parse_since(text).ok_or_else(|| {
        Failure::Usage(vec![format!(
            "--since: '{text}' is neither a number of hours (24h) nor an RFC 3339 time"
        )])
    })
}
