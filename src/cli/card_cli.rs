//! `samu-gateway card …`: what centre IT uses to check readers and cards, and the virtual
//! card that lets them (and the tests) check an install without a real CPS card.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use rustls::pki_types::pem::PemObject;

use super::Failure;
use crate::card::profile::{CardProfile, read_certificate};
use crate::card::reader::{PcscCard, list_readers};
use crate::dev_card::emulator::{CardIdentity, EmulatedCard, Fault};
use crate::dev_card::vpcd;
use crate::dev_pki::{Authority, CardHolder, write_file};
use crate::encoding::hex;

#[derive(Debug, Subcommand)]
pub(super) enum CardCommand {
    /// List the PC/SC readers pcscd knows, whether a card is present, and its ATR.
    List,
    /// Read the authentication certificate of the card in a reader (no PIN) and show whose it is.
    Probe {
        /// Reader name, as `card list` prints it.
        #[arg(long)]
        reader: String,
    },
    /// Run a virtual CPS card inserted into a vsmartcard-vpcd reader of a real pcscd.
    Emulate(EmulateArgs),
}

#[derive(Debug, clap::Args)]
pub(super) struct EmulateArgs {
    /// The vpcd reader's TCP port on 127.0.0.1 (see hardware/README.md).
    #[arg(long)]
    vpcd_port: u16,
    /// Directory for the card's CA, certificate, key and CRL (card-ca.pem, card.pem,
    /// card.key, card-ca.crl); a card saved there by an earlier run is reused.
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
    /// Fault mode.
    #[arg(long, value_enum, default_value = "none")]
    fault: FaultArg,
    /// Delay before each answer, in milliseconds (a slow card).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
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

pub(super) fn run(command: CardCommand) -> Result<ExitCode, Failure> {
    match command {
        CardCommand::List => {
            let readers = list_readers().context("cannot list readers")?;
            if readers.is_empty() {
                println!("no reader (is pcscd running, are the readers plugged in?)");
            }
            for reader in readers {
                let card = reader.atr.as_deref().map_or_else(
                    || "no card".to_owned(),
                    |atr| format!("card present, ATR {}", hex(atr)),
                );
                println!("{}\t{card}", reader.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Probe { reader } => probe(&reader),
        CardCommand::Emulate(args) => emulate_card(args),
    }
}

/// Creates the virtual card (CA, certificate, CRL in `--dir`), or reuses the card saved
/// there by an earlier run, and serves it.
fn emulate_card(args: EmulateArgs) -> Result<ExitCode, Failure> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut identity = match saved_identity(dir)? {
        Some(identity) => identity,
        None => new_identity(&args)?,
    };
    if matches!(args.fault, FaultArg::WrongKey) {
        let ca = Authority::new("unrelated key").context("cannot create a key")?;
        let other = CardIdentity::generate(&ca, &holder(&args), (-1, 365))
            .context("cannot create the card")?;
        identity = CardIdentity::mismatched(&identity, &other);
    }
    let mut card = EmulatedCard::new(CardProfile::default(), identity, &args.pin)
        .context("cannot create the card")?;
    card.set_fault(match args.fault {
        FaultArg::None | FaultArg::WrongKey => Fault::None,
        FaultArg::Garbage => Fault::Garbage,
    });
    emulate(
        &mut card,
        args.vpcd_port,
        Duration::from_millis(args.delay_ms),
        &args.id_nat,
    )
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

fn holder(args: &EmulateArgs) -> CardHolder {
    CardHolder {
        id_nat: args.id_nat.clone(),
        given_name: args.given_name.clone(),
        surname: args.surname.clone(),
        profession: Some(args.profession.clone()).filter(|p| !p.is_empty()),
    }
}

fn new_identity(args: &EmulateArgs) -> Result<CardIdentity, Failure> {
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

fn probe(reader: &str) -> Result<ExitCode, Failure> {
    let mut card = PcscCard::connect(reader).context("cannot reach the card")?;
    let der = read_certificate(&mut card, &CardProfile::default())
        .context("cannot read the card's certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
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
    println!("sha256:     {}", hex(&crate::encoding::sha256(&der)));
    Ok(ExitCode::SUCCESS)
}
