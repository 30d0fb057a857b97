//! `samu-gateway card …`: what centre IT uses to check readers and cards, and (with the
//! `dev-tools` feature, `emulate_cli`) the virtual card that lets them (and the tests)
//! check an install without a real CPS card.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::Failure;
#[cfg(feature = "dev-tools")]
use super::emulate_cli::{EmulateArgs, EmulateTokenArgs, emulate_card, emulate_token};
use crate::card::pkcs11::Pkcs11Module;
use crate::card::profile::{CardProfile, read_certificate};
use crate::card::reader::{PcscCard, list_readers};
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
    #[cfg(feature = "dev-tools")]
    Emulate(EmulateArgs),
    /// Write the virtual card into a new token of a software PKCS#11 module (SoftHSM2),
    /// as a CPS-like token for the PKCS#11 path.
    #[cfg(feature = "dev-tools")]
    EmulateToken(EmulateTokenArgs),
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

/// The card profile and PKCS#11 labels of `config`'s `[cards]` (what the gateway reads the
/// cards with), else the defaults: a probe that read the card otherwise would prove
/// nothing of the configured profile.
fn configured_reading(
    config: &std::path::Path,
) -> (
    crate::card::profile::CardProfile,
    crate::card::pkcs11::Pkcs11Labels,
) {
    match crate::config::Config::read(config) {
        Ok(read) => read
            .cards
            .map(|cards| (cards.profile, cards.pkcs11_labels))
            .unwrap_or_default(),
        // Said, so that a probe passing on the defaults is not taken for a check of the
        // configured profile.
        Err(e) => {
            eprintln!(
                "note: the configuration was not read ({e}): the card is read with the default profile and labels"
            );
            Default::default()
        }
    }
}

pub(super) fn run(config: &std::path::Path, command: CardCommand) -> Result<ExitCode, Failure> {
    let configured = || configured_pkcs11(config);
    // Read for a probe only (it may say it could not read the configuration).
    let reading = || configured_reading(config);
    match command {
        CardCommand::List { pkcs11_module } => {
            let pkcs11_module = pkcs11_module.or_else(|| configured().map(|(module, _)| module));
            match list_readers() {
                Ok(readers) if readers.is_empty() => {
                    out!("no reader (is pcscd running, are the readers plugged in?)");
                }
                Ok(readers) => {
                    for reader in readers {
                        let card = reader.atr.as_deref().map_or_else(
                            || "no card".to_owned(),
                            |atr| format!("card present, ATR {}", hex(atr)),
                        );
                        out!("{}\t{card}", reader.name);
                    }
                }
                // The module's slots are still worth listing.
                Err(e) if pkcs11_module.is_some() => out!("PC/SC: {e}"),
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
        } => probe_token(&reader, &module, token.as_deref(), &reading().1),
        CardCommand::Probe {
            reader,
            pkcs11_module: None,
            ..
        } => match configured() {
            Some((module, tokens)) => probe_token(
                &reader,
                &module,
                tokens.get(&reader).map(String::as_str),
                &reading().1,
            ),
            None => probe(&reader, &reading().0),
        },
        #[cfg(feature = "dev-tools")]
        CardCommand::Emulate(args) => emulate_card(args),
        #[cfg(feature = "dev-tools")]
        CardCommand::EmulateToken(args) => emulate_token(args),
    }
}

/// The module's slots and their tokens, as the module describes them (no PIN).
fn list_slots(path: &std::path::Path) -> Result<(), Failure> {
    let module = Pkcs11Module::load(path).map_err(anyhow::Error::from)?;
    out!(
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
        out!("slot {}\t{}\t{token}", slot.id, slot.description);
    }
    Ok(())
}

/// The holder of the card in `reader`, read through a PKCS#11 module (no PIN).
fn probe_token(
    reader: &str,
    path: &std::path::Path,
    token: Option<&str>,
    labels: &crate::card::pkcs11::Pkcs11Labels,
) -> Result<ExitCode, Failure> {
    let module = Pkcs11Module::load(path).map_err(anyhow::Error::from)?;
    let slot = module
        .slot_for(reader, token)
        .context("no card for this reader in the module")?;
    let session = module
        .open(slot, labels)
        .context("cannot read the card's certificates")?;
    print_holder(reader, &session.authentication_certificate)?;
    out!(
        "signature:  certificate present ({} bytes)",
        session.signature_certificate.len()
    );
    out!(
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

fn probe(reader: &str, profile: &CardProfile) -> Result<ExitCode, Failure> {
    let mut card = PcscCard::connect(reader).context("cannot reach the card")?;
    // In a transaction (the gateway's commands do not interleave with these), and left
    // without a reset: a reset would end the verified PIN of the physician whose session
    // the gateway holds on this card.
    let der = card.in_transaction(|card| read_certificate(card, profile));
    card.leave();
    let der = der.context("cannot read the card's certificate")?;
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
    out!("reader:     {reader}");
    out!("idNat (CN): {}", attribute(&OID_X509_COMMON_NAME));
    out!(
        "name:       {} {}",
        attribute(&OID_X509_GIVEN_NAME),
        attribute(&OID_X509_SURNAME)
    );
    out!("issuer:     {}", cert.issuer());
    out!(
        "valid:      {} to {} ({})",
        validity.not_before,
        validity.not_after,
        if validity.is_valid() {
            "valid now"
        } else {
            "NOT valid now"
        }
    );
    out!("sha256:     {}", hex(&crate::encoding::sha256(der)));
    Ok(())
}
