//! `samu-gateway card …`: what centre IT uses to check readers and cards, and the virtual
//! card that lets them (and the tests) check an install without a real CPS card.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use rustls::pki_types::pem::PemObject;

use super::Failure;
use crate::card::pkcs11::Pkcs11Module;
use crate::card::profile::{CardProfile, read_certificate};
use crate::card::reader::{PcscCard, list_readers};
use crate::dev_card::emulator::{CardIdentity, EmulatedCard, Fault};
use crate::dev_card::vpcd;
use crate::dev_pki::{Authority, CardHolder, write_file};
use crate::encoding::hex;

#[derive(Debug, Subcommand)]
pub(super) enum CardCommand {
    /// List the PC/SC readers pcscd knows, whether a card is present, and its ATR; with a
    /// PKCS#11 module (given, or `[cards] backend = "pkcs11"` in --config), its slots and
    /// tokens too.
    List {
        /// The PKCS#11 module (the Cryptolib CPS's `libcps3_pkcs11_lux.so`, OpenSC's
        /// `opensc-pkcs11.so`).
        #[arg(long)]
        pkcs11_module: Option<PathBuf>,
    },
    /// Read the authentication certificate of the card in a reader (no PIN) and show whose
    /// it is: through the PKCS#11 module given, or the one --config sets, else APDUs.
    Probe {
        /// Reader name, as `card list` prints it.
        #[arg(long)]
        reader: String,
        /// Read it through this PKCS#11 module instead of APDUs.
        #[arg(long)]
        pkcs11_module: Option<PathBuf>,
        /// With a module whose slots are not named after the readers (a software token):
        /// the token's label.
        #[arg(long, requires = "pkcs11_module")]
        token: Option<String>,
    },
    /// Run a virtual CPS card inserted into a vsmartcard-vpcd reader of a real pcscd.
    Emulate(EmulateArgs),
    /// Write the virtual card into a new token of a software PKCS#11 module (SoftHSM2),
    /// as a CPS-like token for the PKCS#11 path.
    EmulateToken(EmulateTokenArgs),
}

#[derive(Debug, clap::Args)]
pub(super) struct EmulateArgs {
    /// The vpcd reader's TCP port on 127.0.0.1 (see hardware/README.md).
    #[arg(long)]
    vpcd_port: u16,
    #[command(flatten)]
    card: CardArgs,
    /// Fault mode.
    #[arg(long, value_enum, default_value = "none")]
    fault: FaultArg,
    /// Delay before each answer, in milliseconds (a slow card).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Debug, clap::Args)]
pub(super) struct EmulateTokenArgs {
    #[command(flatten)]
    card: CardArgs,
    /// The software PKCS#11 module to write the token into (SoftHSM2's
    /// `/usr/lib/softhsm/libsofthsm2.so`).
    #[arg(long)]
    pkcs11_module: PathBuf,
    /// The new token's label.
    #[arg(long, default_value = "CPS3v3-VIRTUELLE")]
    token: String,
    /// A practice situation for the holder, written as a `CPS_ACTIVITY_xx_PS` object:
    /// `STRUCTURE_ID:SECTOR[:NAME]` (e.g. `1750000000:SA01:CH de test`); repeatable.
    #[arg(long = "activity")]
    activities: Vec<String>,
    /// The holder's specialty (TRE_R38, e.g. `SM59`), written at the end of a
    /// `CPS_INFO_PS` object.
    #[arg(long)]
    specialty: Option<String>,
}

/// The virtual card's holder and files.
#[derive(Debug, clap::Args)]
pub(super) struct CardArgs {
    /// Directory for the card's CA, certificates, keys and CRL (card-ca.pem, card.pem,
    /// card.key, card-sign.pem, card-sign.key, card-ca.crl); a card saved there by an
    /// earlier run is reused.
    #[arg(long)]
    dir: PathBuf,
    /// The card's PIN.
    #[arg(long, default_value = "1234")]
    pin: String,
    /// The professional's idNat (certificate CN).
    #[arg(long, default_value = "810002813839")]
    id_nat: String,
    /// Given name.
    #[arg(long, default_value = "Jeanne")]
    given_name: String,
    /// Surname.
    #[arg(long, default_value = "URGENTISTE")]
    surname: String,
    /// Profession in the certificate's subject `title` (`10`: physician); empty for none.
    #[arg(long, default_value = crate::card::trust::PHYSICIAN)]
    profession: String,
    /// Issue a certificate that expired yesterday.
    #[arg(long)]
    expired: bool,
    /// List the card's own certificate in the CRL written beside it.
    #[arg(long)]
    revoked: bool,
    /// Date the CRL this many days back (a stale CRL).
    #[arg(long, default_value_t = 0)]
    crl_age_days: i64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum FaultArg {
    /// Behaves.
    None,
    /// Answers every command with garbage.
    Garbage,
    /// Signs with a key that is not its certificate's.
    WrongKey,
}

/// The PKCS#11 module and desks' token labels (reader → label) the configuration at
/// `config` sets, when it reads and says `backend = "pkcs11"`: the tools then look
/// through it without being told. A configuration that does not read is left alone
/// (`configtest` is where it is judged).
fn configured_pkcs11(
    config: &std::path::Path,
) -> Option<(PathBuf, std::collections::HashMap<String, String>)> {
    let config = crate::config::Config::read(config).ok()?;
    let cards = config.cards.as_ref()?;
    if cards.backend != crate::card::backend::BackendKind::Pkcs11 {
        return None;
    }
    let tokens = config
        .desks
        .iter()
        .filter_map(|d| Some((d.reader.clone(), d.pkcs11_token.clone()?)))
        .collect();
    Some((cards.pkcs11_module.clone()?, tokens))
}

pub(super) fn run(config: &std::path::Path, command: CardCommand) -> Result<ExitCode, Failure> {
    let configured = || configured_pkcs11(config);
    match command {
        CardCommand::List { pkcs11_module } => {
            let pkcs11_module = pkcs11_module.or_else(|| configured().map(|(module, _)| module));
            match list_readers() {
                Ok(readers) if readers.is_empty() => {
                    println!("no reader (is pcscd running, are the readers plugged in?)");
                }
                Ok(readers) => {
                    for reader in readers {
                        let card = reader.atr.as_deref().map_or_else(
                            || "no card".to_owned(),
                            |atr| format!("card present, ATR {}", hex(atr)),
                        );
                        println!("{}\t{card}", reader.name);
                    }
                }
                // The module's slots are still worth listing.
                Err(e) if pkcs11_module.is_some() => println!("PC/SC: {e}"),
                Err(e) => return Err(anyhow::Error::new(e).context("cannot list readers").into()),
            }
            if let Some(path) = pkcs11_module {
                list_slots(&path)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Probe {
            reader,
            pkcs11_module: Some(module),
            token,
        } => probe_token(&reader, &module, token.as_deref()),
        CardCommand::Probe {
            reader,
            pkcs11_module: None,
            ..
        } => match configured() {
            Some((module, tokens)) => {
                probe_token(&reader, &module, tokens.get(&reader).map(String::as_str))
            }
            None => probe(&reader),
        },
        CardCommand::Emulate(args) => emulate_card(args),
        CardCommand::EmulateToken(args) => emulate_token(args),
    }
}

/// Creates the virtual card (CA, certificate, CRL in `--dir`), or reuses the card saved
/// there by an earlier run, and serves it.
fn emulate_card(args: EmulateArgs) -> Result<ExitCode, Failure> {
    let mut identity = card_identity(&args.card)?;
    if matches!(args.fault, FaultArg::WrongKey) {
        let ca = Authority::new("unrelated key").context("cannot create a key")?;
        let other = CardIdentity::generate(&ca, &holder(&args.card), (-1, 365))
            .context("cannot create the card")?;
        identity = CardIdentity::mismatched(&identity, &other);
    }
    let mut card = EmulatedCard::new(CardProfile::default(), identity, &args.card.pin)
        .context("cannot create the card")?;
    card.set_fault(match args.fault {
        FaultArg::None | FaultArg::WrongKey => Fault::None,
        FaultArg::Garbage => Fault::Garbage,
    });
    emulate(
        &mut card,
        args.vpcd_port,
        Duration::from_millis(args.delay_ms),
        &args.card.id_nat,
    )
}

/// The card saved in `args.dir`, or a new one written there.
fn card_identity(args: &CardArgs) -> Result<CardIdentity, Failure> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match saved_identity(dir)? {
        Some(identity) => Ok(identity),
        None => new_identity(args),
    }
}

/// Writes the virtual card (the one in `--dir`, made if need be) into a new token of a
/// software PKCS#11 module, under the Cryptolib CPS's labels: the PKCS#11 path runs
/// against it as against a card.
fn emulate_token(args: EmulateTokenArgs) -> Result<ExitCode, Failure> {
    let identity = card_identity(&args.card)?;
    let mut so_pin = [0u8; 8];
    crate::random::fill(&mut so_pin).context("no randomness")?;
    let so_pin = hex(&so_pin);
    let activities = args
        .activities
        .iter()
        .map(|text| {
            let mut parts = text.splitn(3, ':');
            crate::card::cps_data::CardActivity {
                structure_id: parts.next().map(str::to_owned),
                sector: parts.next().map(str::to_owned),
                structure_name: parts.next().map(str::to_owned),
            }
        })
        .collect::<Vec<_>>();
    crate::dev_card::token::provision(
        &crate::dev_card::token::TokenSpec {
            module: &args.pkcs11_module,
            label: &args.token,
            so_pin: &so_pin,
            pin: &args.card.pin,
            labels: &crate::card::pkcs11::Pkcs11Labels::default(),
            activities: &activities,
            specialty: args
                .specialty
                .as_deref()
                .map(|s| (args.card.id_nat.as_str(), s)),
        },
        &identity,
    )
    .context("cannot write the token")?;
    println!(
        "token '{}' written in {}: the card of {}",
        args.token,
        args.pkcs11_module.display(),
        args.card.id_nat
    );
    Ok(ExitCode::SUCCESS)
}

fn saved_identity(dir: &std::path::Path) -> Result<Option<CardIdentity>, Failure> {
    let files = [
        "card.pem",
        "card.key",
        "card-sign.pem",
        "card-sign.key",
        "card-ca.crl",
    ];
    if !files.iter().all(|f| dir.join(f).exists()) {
        return Ok(None);
    }
    let certificate = |name: &str| -> Result<Vec<u8>, Failure> {
        let path = dir.join(name);
        Ok(rustls::pki_types::CertificateDer::from_pem_file(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .to_vec())
    };
    let key = |name: &str| -> Result<zeroize::Zeroizing<String>, Failure> {
        let path = dir.join(name);
        Ok(zeroize::Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ))
    };
    let (auth_key, sign_key) = (key("card.key")?, key("card-sign.key")?);
    Ok(Some(
        CardIdentity::from_parts(
            (certificate("card.pem")?, &auth_key),
            (certificate("card-sign.pem")?, &sign_key),
        )
        .context("saved card unusable")?,
    ))
}

fn holder(args: &CardArgs) -> CardHolder {
    CardHolder {
        id_nat: args.id_nat.clone(),
        given_name: args.given_name.clone(),
        surname: args.surname.clone(),
        profession: Some(args.profession.clone()).filter(|p| !p.is_empty()),
    }
}

fn new_identity(args: &CardArgs) -> Result<CardIdentity, Failure> {
    let dir = &args.dir;
    let ca = Authority::new("samu-gateway virtual CPS CA").context("cannot create the CA")?;
    write_file(&dir.join("card-ca.pem"), ca.cert_pem(), 0o644).context("cannot write the CA")?;
    let validity = if args.expired { (-30, -1) } else { (-1, 365) };
    let identity =
        CardIdentity::generate(&ca, &holder(args), validity).context("cannot create the card")?;
    let (auth_key, sign_key) = identity.key_pems().context("cannot save the card keys")?;
    for (name, der, key) in [
        ("card", &identity.certificate_der, &auth_key),
        ("card-sign", &identity.signature_certificate_der, &sign_key),
    ] {
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        write_file(&dir.join(format!("{name}.pem")), &pem, 0o644)
            .context("cannot write a certificate")?;
        write_file(&dir.join(format!("{name}.key")), key, 0o600)
            .context("cannot write a card key")?;
    }
    let serials = if args.revoked {
        vec![serial(&identity.certificate_der)?]
    } else {
        Vec::new()
    };
    let crl = ca
        .crl(&serials, args.crl_age_days, 7)
        .context("cannot issue the CRL")?;
    // Written last: its presence tells scripts (and later runs) the card's files are complete.
    write_file(&dir.join("card-ca.crl"), &crl, 0o644).context("cannot write the CRL")?;
    Ok(identity)
}

fn serial(certificate: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(certificate).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cert.raw_serial().to_vec())
}

/// Serves the card to vpcd; reconnects with backoff when vpcd goes away (pcscd restart).
fn emulate(
    card: &mut EmulatedCard,
    port: u16,
    delay: Duration,
    id_nat: &str,
) -> Result<ExitCode, Failure> {
    let mut backoff = Duration::from_millis(100);
    loop {
        println!("virtual card of {id_nat}: inserting into vpcd port {port}");
        match vpcd::serve(card, port, delay) {
            Ok(()) => {
                println!("vpcd closed the connection; reinserting");
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                eprintln!("{e}; retrying in {} ms", backoff.as_millis());
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        std::thread::sleep(backoff);
    }
}

/// The module's slots and their tokens, as the module describes them (no PIN).
fn list_slots(path: &std::path::Path) -> Result<(), Failure> {
    let module = Pkcs11Module::load(path).map_err(anyhow::Error::from)?;
    println!(
        "PKCS#11 module {} ({})",
        path.display(),
        module.describe().context("PKCS#11")?
    );
    for slot in module.slots().context("PKCS#11")? {
        let token = slot.token.map_or_else(
            || "no initialised token".to_owned(),
            |t| {
                format!(
                    "token '{}' model '{}' by '{}' serial {}{}{}",
                    t.label,
                    t.model,
                    t.manufacturer,
                    t.serial,
                    if t.pin_pad { ", PIN on the reader" } else { "" },
                    match (t.pin_tries_left, t.pin_count_low) {
                        (Some(0), _) => ", PIN BLOCKED",
                        (Some(1), _) => ", last PIN try",
                        (_, true) => ", wrong PIN typed since the last good one",
                        _ => "",
                    }
                )
            },
        );
        println!("slot {}\t{}\t{token}", slot.id, slot.description);
    }
    Ok(())
}

/// The holder of the card in `reader`, read through a PKCS#11 module (no PIN).
fn probe_token(
    reader: &str,
    path: &std::path::Path,
    token: Option<&str>,
) -> Result<ExitCode, Failure> {
    let module = Pkcs11Module::load(path).map_err(anyhow::Error::from)?;
    let slot = module
        .slot_for(reader, token)
        .context("no card for this reader in the module")?;
    let session = module
        .open(slot, &crate::card::pkcs11::Pkcs11Labels::default())
        .context("cannot read the card's certificates")?;
    print_holder(reader, &session.authentication_certificate)?;
    println!(
        "signature:  certificate present ({} bytes)",
        session.signature_certificate.len()
    );
    println!(
        "PIN:        {}{}",
        if module.pin_pad(slot).context("PKCS#11")? {
            "typed on the reader"
        } else {
            "typed at the workstation"
        },
        match module.pin_tries_left(slot).context("PKCS#11")? {
            Some(0) => ", BLOCKED",
            Some(1) => ", last try",
            _ => "",
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn probe(reader: &str) -> Result<ExitCode, Failure> {
    let mut card = PcscCard::connect(reader).context("cannot reach the card")?;
    let der = read_certificate(&mut card, &CardProfile::default())
        .context("cannot read the card's certificate")?;
    print_holder(reader, &der)?;
    Ok(ExitCode::SUCCESS)
}

/// Whose certificate `der` is, and until when.
fn print_holder(reader: &str, der: &[u8]) -> Result<(), Failure> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("the card's certificate does not parse: {e}"))?;
    let attribute = |oid: &x509_parser::der_parser::oid::Oid| {
        cert.subject()
            .iter_attributes()
            .find(|a| a.attr_type() == oid)
            .and_then(|a| a.as_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    use x509_parser::oid_registry::{OID_X509_COMMON_NAME, OID_X509_GIVEN_NAME, OID_X509_SURNAME};
    let validity = cert.validity();
    println!("reader:     {reader}");
    println!("idNat (CN): {}", attribute(&OID_X509_COMMON_NAME));
    println!(
        "name:       {} {}",
        attribute(&OID_X509_GIVEN_NAME),
        attribute(&OID_X509_SURNAME)
    );
    println!("issuer:     {}", cert.issuer());
    println!(
        "valid:      {} to {} ({})",
        validity.not_before,
        validity.not_after,
        if validity.is_valid() {
            "valid now"
        } else {
            "NOT valid now"
        }
    );
    println!("sha256:     {}", hex(&crate::encoding::sha256(der)));
    Ok(())
}
