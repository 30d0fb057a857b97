//! `samu-gateway dmp …`: tools for integrators of the national record (DMP). `dmp vihf`
//! prints the signed assertion the gateway would send for an access, for the DMP's
//! integration tests and for checking a structure's key and certificate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use super::Failure;
use crate::access_mode::AccessMode;
use crate::card::trust::Professional;
use crate::config::Config;
use crate::patient::{Ins, InsPolicy, OID_NIR};
use crate::upstream::dmp::SoftwareSigner;
use crate::upstream::dmp::vihf::VihfSubject;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Mode {
    /// Access by the medical regulation centre.
    #[value(name = "centre_15")]
    Centre15,
    /// Break-glass access.
    #[value(name = "bris_de_glace")]
    BrisDeGlace,
}

#[derive(Debug, Subcommand)]
pub(super) enum DmpCommand {
    /// Print a signed VIHF assertion for an access to a patient's record: the fields of
    /// `[dmp]` and `[centre]` from --config, the professional and the patient from here.
    Vihf {
        /// The patient's INS (NIR or NIA, 15 characters).
        #[arg(long)]
        ins: String,
        /// The INS's OID (test and demo OIDs are accepted: this signs, it reads nothing).
        #[arg(long, default_value = OID_NIR)]
        ins_oid: String,
        /// Why the record is consulted.
        #[arg(long, value_enum)]
        mode: Mode,
        /// The professional's national id (idNat_PS).
        #[arg(long)]
        professional: String,
        /// The professional's name (`subject-id`); the idNat when absent.
        #[arg(long)]
        name: Option<String>,
        /// The professional's profession code (TRE_G15; `10`: physician).
        #[arg(long, default_value = "10")]
        profession: String,
        /// RSA private key signing the assertion (PEM, PKCS#8 or PKCS#1, mode 0600).
        #[arg(long)]
        key: PathBuf,
        /// Its certificate (PEM), put in the signature's KeyInfo.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Read a saved DMP message (TD3.1/TD3.2 request or answer, an MTOM body whose first
    /// line is its boundary, a SOAP fault) and print what the gateway understands of it.
    Inspect {
        /// The message file ("-" reads stdin).
        file: PathBuf,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(config_path: &Path, command: DmpCommand) -> Result<ExitCode, Failure> {
    match command {
        DmpCommand::Inspect { file, json } => inspect(&file, json),
        vihf => sign(config_path, vihf),
    }
}

/// Largest message read: a retrieval of several documents.
const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;

fn inspect(file: &Path, json: bool) -> Result<ExitCode, Failure> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_MESSAGE_BYTES)
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(MAX_MESSAGE_BYTES)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let inspected = super::runtime()?.block_on(crate::upstream::dmp::inspect::inspect(bytes));
    let inspected = match inspected {
        Ok(inspected) => inspected,
        Err(e) => {
            eprintln!("refused: {}: {e}", file.display());
            return Ok(ExitCode::from(super::EXIT_RUNTIME));
        }
    };
    if json {
        let text = serde_json::to_string_pretty(&inspected).context("cannot encode")?;
        println!("{text}");
    } else {
        print!("{}", human(&inspected));
    }
    Ok(ExitCode::SUCCESS)
}

fn human(i: &crate::upstream::dmp::inspect::Inspection) -> String {
    let mut out = format!("message: {}", i.message);
    if let Some(action) = &i.action {
        out.push_str(&format!(" (action {action})"));
    }
    if let Some(status) = i.status {
        out.push_str(&format!(", status {status:?}"));
    }
    out.push('\n');
    for d in i.documents.iter().flatten() {
        let code = |c: &Option<crate::upstream::dmp::xds::Coded>| {
            c.as_ref().map_or("-".to_owned(), |c| c.code.clone())
        };
        let confidentiality: Vec<&str> =
            d.confidentiality.iter().map(|c| c.code.as_str()).collect();
        out.push_str(&format!(
            "  document {} (repository {}): type {}, format {}, created {}, confidentiality {}\n",
            d.unique_id,
            d.repository_unique_id,
            code(&d.type_code),
            code(&d.format_code),
            d.creation_time.as_deref().unwrap_or("-"),
            confidentiality.join("+"),
        ));
    }
    for d in i.retrieved.iter().flatten() {
        out.push_str(&format!(
            "  retrieved {} (repository {}): {}, {} bytes, sha256 {}\n",
            d.unique_id, d.repository_unique_id, d.mime_type, d.bytes, d.sha256
        ));
    }
    for (name, value) in i.requested.iter().flatten() {
        out.push_str(&format!("  requested {name} = {value}\n"));
    }
    if let Some(e) = &i.existence {
        out.push_str(&format!(
            "  record {}{}, authorisation {}, treating physician {}, oppositions {}\n",
            if e.found { "found" } else { "NOT FOUND" },
            if e.closed { " (CLOSED)" } else { "" },
            e.authorisation.as_deref().unwrap_or("-"),
            e.treating_physician
                .map_or("-", |t| if t { "yes" } else { "no" }),
            if e.oppositions.is_empty() {
                "none".to_owned()
            } else {
                e.oppositions.join("+")
            },
        ));
    }
    for c in i.candidates.iter().flatten() {
        out.push_str(&format!(
            "  candidate {} ({}): {}% {} born {} {}{}\n",
            c.ins.as_deref().unwrap_or("-"),
            c.oid.as_deref().unwrap_or("-"),
            c.match_percent.map_or("?".to_owned(), |p| p.to_string()),
            c.names.join(" / "),
            c.birth_date.as_deref().unwrap_or("-"),
            c.gender.as_deref().unwrap_or("-"),
            if c.oppositions.is_empty() {
                String::new()
            } else {
                format!(", oppositions {}", c.oppositions.join("+"))
            },
        ));
    }
    for e in &i.errors {
        out.push_str(&format!("  registry error {} ({})\n", e.code, e.severity));
    }
    if let Some(f) = &i.fault {
        out.push_str(&format!(
            "  fault {} ({}): {}\n",
            f.code,
            f.codes.join(" / "),
            f.reason
        ));
    }
    out
}

fn sign(config_path: &Path, command: DmpCommand) -> Result<ExitCode, Failure> {
    let DmpCommand::Vihf {
        ins,
        ins_oid,
        mode,
        professional,
        name,
        profession,
        key,
        cert,
    } = command
    else {
        return Err(Failure::Usage(vec!["not a signing command".into()]));
    };
    // Only what the assertion needs is checked: this runs outside the unit, without the
    // gateway's other credentials.
    let config = Config::read(config_path)?;
    let dmp = config.dmp.as_ref().ok_or_else(|| {
        Failure::Usage(vec![format!(
            "{}: no [dmp] section: the assertion's fields come from it",
            config_path.display()
        )])
    })?;
    let problems: Vec<String> = dmp.problems().into_iter().map(|p| p.to_string()).collect();
    if !problems.is_empty() {
        return Err(Failure::Usage(problems));
    }
    let ins = Ins::parse(
        &ins,
        &ins_oid,
        InsPolicy {
            accept_test_oids: true,
        },
    )
    .map_err(|e| Failure::Usage(vec![format!("--ins: {e}")]))?;
    let signer = SoftwareSigner::load(&key, &cert).context("cannot load the signing key")?;
    let (given_name, surname) = match name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => (None, Some(name.to_owned())),
        _ => (None, None),
    };
    let professional = Professional {
        id_nat: professional,
        id_nat_key_ok: true,
        given_name,
        surname,
        title: Some(profession),
        certificate_sha256: String::new(),
    };
    let assertion = signer
        .vihf(
            &dmp.vihf_settings(&config.centre.structure_id),
            VihfSubject {
                professional: &professional,
                mode: match mode {
                    Mode::Centre15 => AccessMode::Centre15,
                    Mode::BrisDeGlace => AccessMode::BrisDeGlace,
                },
                patient: Some(&ins),
            },
        )
        .context("cannot sign the assertion")?;
    println!("{assertion}");
    Ok(ExitCode::SUCCESS)
}
