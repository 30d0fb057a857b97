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

// Parsed once per run: the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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
        #[arg(long, required_unless_present = "pkcs11_module", requires = "cert")]
        key: Option<PathBuf>,
        /// Its certificate (PEM), put in the signature's KeyInfo.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Sign with a card's (or token's) signature key through this PKCS#11 module.
        #[arg(long, conflicts_with_all = ["key", "cert"], requires = "slot")]
        pkcs11_module: Option<PathBuf>,
        /// The card: its reader's name (the slot description), its token's label, or the
        /// module's slot number.
        #[arg(long, requires = "pkcs11_module")]
        slot: Option<String>,
        /// A file holding the PIN (`-`: standard input), readable by its owner (and group)
        /// only; without it, the PIN is asked for at the terminal, not echoed. Never on
        /// the command line. A card whose reader has a PIN pad asks for it there.
        #[arg(long, requires = "pkcs11_module")]
        pin_file: Option<PathBuf>,
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
    // One byte past the limit tells a message that is too large from one that fits: a
    // truncated message would be inspected as if it were whole.
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_MESSAGE_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(MAX_MESSAGE_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    if bytes.len() as u64 > MAX_MESSAGE_BYTES {
        return Err(anyhow::anyhow!(
            "{} is larger than {} MiB: not a record service message this gateway would read",
            file.display(),
            MAX_MESSAGE_BYTES >> 20
        )
        .into());
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
        out!("{text}");
    } else {
        out_raw!("{}", human(&inspected));
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
        pkcs11_module,
        slot,
        pin_file,
    } = command
    else {
        return Err(Failure::Usage(vec!["not a signing command".into()]));
    };
    // Only what the assertion needs is checked: this runs outside the unit, without the
    // gateway's other credentials.
    let config = Config::read(config_path)?;
    let dmp = config.dmp.as_ref().ok_or_else(|| {
        Failure::Configuration(vec![format!(
            "{}: no [dmp] section: the assertion's fields come from it",
            config_path.display()
        )])
    })?;
    let problems: Vec<String> = dmp.problems().into_iter().map(|p| p.to_string()).collect();
    if !problems.is_empty() {
        return Err(Failure::Configuration(problems));
    }
    let ins = Ins::parse(
        &ins,
        &ins_oid,
        InsPolicy {
            accept_test_oids: true,
        },
    )
    .map_err(|e| Failure::Usage(vec![format!("--ins: {e}")]))?;
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
    let settings = dmp.vihf_settings(&config.centre.structure_id);
    let subject = VihfSubject {
        professional: &professional,
        mode: match mode {
            Mode::Centre15 => AccessMode::Centre15,
            Mode::BrisDeGlace => AccessMode::BrisDeGlace,
        },
        patient: Some(&ins),
    };
    let assertion = match (key, cert, pkcs11_module, slot) {
        (Some(key), Some(cert), None, _) => SoftwareSigner::load(&key, &cert)
            .context("cannot load the signing key")?
            .vihf(&settings, subject)
            .context("cannot sign the assertion")?,
        (None, None, Some(module), Some(slot)) => {
            sign_with_token(&module, &slot, pin_file.as_deref(), &settings, subject)?
        }
        _ => {
            return Err(Failure::Usage(vec![
                "sign with --key and --cert, or with --pkcs11-module and --slot".into(),
            ]));
        }
    };
    out!("{assertion}");
    Ok(ExitCode::SUCCESS)
}

/// The assertion signed by the signature key of the card (token) in `slot`, after its PIN.
fn sign_with_token(
    module: &Path,
    slot: &str,
    pin_file: Option<&Path>,
    settings: &crate::upstream::dmp::vihf::VihfSettings,
    subject: VihfSubject<'_>,
) -> Result<String, Failure> {
    use crate::card::pkcs11::{Pkcs11Labels, Pkcs11Module, TokenKey};
    let module = Pkcs11Module::load(module).map_err(anyhow::Error::from)?;
    let found = module.find_slot(slot).map_err(anyhow::Error::from)?;
    let token = module
        .open(found, &Pkcs11Labels::default())
        .context("cannot read the card's certificates")?;
    let pin = if module.pin_pad(found).map_err(anyhow::Error::from)? {
        eprintln!("type the PIN on the reader");
        None
    } else {
        Some(read_pin(pin_file)?)
    };
    token
        .login(&module, pin.as_ref())
        .context("the card refused the PIN")?;
    crate::upstream::dmp::signed_vihf(settings, subject, &token.signature_certificate, |message| {
        token
            .sign(TokenKey::Signature, message)
            .map_err(|e| crate::upstream::dmp::DmpError::Signer(e.to_string()))
    })
    .context("cannot sign the assertion")
    .map_err(Failure::from)
}

/// The PIN from `file` (`-`: standard input; its first line), or asked for at the
/// terminal without echo.
fn read_pin(file: Option<&Path>) -> Result<crate::card::profile::Pin, Failure> {
    let text = zeroize::Zeroizing::new(match file {
        Some(path) if path == Path::new("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the PIN from standard input")?;
            line
        }
        Some(path) => {
            // A PIN file is a secret like a key file: others may not read it.
            crate::secret::check_key_file_mode(path).map_err(anyhow::Error::from)?;
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
        None => rpassword::prompt_password("PIN: ").context("cannot ask for the PIN")?,
    });
    crate::card::profile::Pin::new(text.trim())
        .map_err(|e| Failure::Usage(vec![format!("PIN: {e}")]))
}
