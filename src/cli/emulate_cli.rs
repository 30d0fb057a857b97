//! `samu-gateway card emulate` and `card emulate-token`: the virtual CPS card that lets
//! centre IT (and the tests) check an install without a real card. Development tools:
//! built only with the `dev-tools` feature (default on; the Debian package is built
//! without it, so the installed binary carries no card emulator and no throwaway PKI).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use rustls::pki_types::pem::PemObject;

use super::Failure;
use crate::card::profile::CardProfile;
use crate::dev_card::emulator::{CardIdentity, EmulatedCard, Fault};
use crate::dev_card::vpcd;
use crate::dev_pki::{Authority, CardHolder, write_file};
use crate::encoding::hex;

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
    /// Issue the card from an intermediate authority under the CA, as IGC-Santé does:
    /// `card-intermediate.pem` and its CRL `card-intermediate.crl` (the one that lists the
    /// card when `--revoked`, dated by `--crl-age-days`) are written too, and
    /// `card-ca.crl` is then the root's own list. Only for a new card: a card saved in
    /// `--dir` keeps the chain it was made with.
    #[arg(long)]
    intermediate: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum FaultArg {
    /// Behaves.
    None,
    /// Answers every command with garbage.
    Garbage,
    /// Signs with a key that is not its certificate's.
    WrongKey,
    /// Never answers a PIN check (VERIFY): a card that stops answering mid-login.
    SilentOnVerify,
}

/// Creates the virtual card (CA, certificate, CRL in `--dir`), or reuses the card saved
/// there by an earlier run, and serves it.
pub(super) fn emulate_card(args: EmulateArgs) -> Result<ExitCode, Failure> {
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
        FaultArg::SilentOnVerify => Fault::SilentOnVerify,
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
pub(super) fn emulate_token(args: EmulateTokenArgs) -> Result<ExitCode, Failure> {
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
    out!(
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
    let issuer = if args.intermediate {
        let issuer = ca
            .intermediate("samu-gateway virtual CPS personnes CA")
            .context("cannot create the intermediate CA")?;
        write_file(&dir.join("card-intermediate.pem"), issuer.cert_pem(), 0o644)
            .context("cannot write the intermediate CA")?;
        Some(issuer)
    } else {
        None
    };
    let validity = if args.expired { (-30, -1) } else { (-1, 365) };
    let identity = CardIdentity::generate(issuer.as_ref().unwrap_or(&ca), &holder(args), validity)
        .context("cannot create the card")?;
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
    let crl = match &issuer {
        Some(issuer) => {
            let own = issuer
                .crl(&serials, args.crl_age_days, 7)
                .context("cannot issue the intermediate's CRL")?;
            write_file(&dir.join("card-intermediate.crl"), &own, 0o644)
                .context("cannot write the intermediate's CRL")?;
            ca.crl(&[], 0, 7).context("cannot issue the CRL")?
        }
        None => ca
            .crl(&serials, args.crl_age_days, 7)
            .context("cannot issue the CRL")?,
    };
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
        out!("virtual card of {id_nat}: inserting into vpcd port {port}");
        match vpcd::serve(card, port, delay, &mut || out!("card reset by the reader")) {
            Ok(()) => {
                out!("vpcd closed the connection; reinserting");
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
