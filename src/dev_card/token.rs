//! A CPS-like token in a software PKCS#11 module (SoftHSM2 in the tests and install
//! checks): the virtual card's two key pairs and certificates written into a fresh token
//! under the labels the Cryptolib CPS gives a real card's objects, so that the gateway's
//! PKCS#11 path runs against a real module exactly as against a card.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, CertificateType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use rsa::RsaPrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};

use super::emulator::CardIdentity;
use crate::card::CardError;
use crate::card::pkcs11::Pkcs11Labels;

/// What to write, and where.
pub(crate) struct TokenSpec<'a> {
    /// The module file.
    pub module: &'a Path,
    /// The token's label.
    pub label: &'a str,
    /// The security officer's PIN (initialises the token).
    pub so_pin: &'a str,
    /// The user's PIN.
    pub pin: &'a str,
    /// The objects' labels.
    pub labels: &'a Pkcs11Labels,
    /// The holder's practice situations, written as `CPS_ACTIVITY_01_PS`… (private).
    pub activities: &'a [crate::card::cps_data::CardActivity],
    /// The holder's idNat and specialty, written as a `CPS_INFO_PS` object (public) that
    /// ends with the specialty.
    pub specialty: Option<(&'a str, &'a str)>,
}

fn failed(what: &str) -> impl Fn(cryptoki::error::Error) -> CardError + '_ {
    move |e| CardError::Module(format!("{what}: {e}"))
}

/// Initialises the first slot without an initialised token as `spec.label` and writes
/// `identity` into it: both private keys (sign only, never extractable), both
/// certificates, their key ids 0x02 (authentication) and 0x01 (signature) as on a CPS3.
pub(crate) fn provision(spec: &TokenSpec<'_>, identity: &CardIdentity) -> Result<u64, CardError> {
    let context = Pkcs11::new(spec.module).map_err(failed("cannot load the module"))?;
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(failed("cannot initialise the module"))?;
    let slot = context
        .get_slots_with_token()
        .map_err(failed("cannot list slots"))?
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|t| !t.token_initialized())
        })
        .ok_or_else(|| CardError::Module("no free slot to initialise a token in".into()))?;
    let so_pin = AuthPin::new(spec.so_pin.into());
    context
        .init_token(slot, &so_pin, spec.label)
        .map_err(failed("cannot initialise the token"))?;
    let pin = AuthPin::new(spec.pin.into());
    {
        let session = context
            .open_rw_session(slot)
            .map_err(failed("cannot open a session"))?;
        session
            .login(UserType::So, Some(&so_pin))
            .map_err(failed("security officer login"))?;
        session
            .init_pin(&pin)
            .map_err(failed("cannot set the user PIN"))?;
    }
    let session = context
        .open_rw_session(slot)
        .map_err(failed("cannot open a session"))?;
    session
        .login(UserType::User, Some(&pin))
        .map_err(failed("user login"))?;
    let (authentication, signature) = identity.private_keys();
    for (key, certificate, key_label, certificate_label, id) in [
        (
            authentication,
            &identity.certificate_der,
            &spec.labels.authentication_key,
            &spec.labels.authentication_certificate,
            0x02u8,
        ),
        (
            signature,
            &identity.signature_certificate_der,
            &spec.labels.signature_key,
            &spec.labels.signature_certificate,
            0x01u8,
        ),
    ] {
        session
            .create_object(&private_key(key, key_label, id)?)
            .map_err(failed("cannot write a private key"))?;
        let subject = x509_parser::parse_x509_certificate(certificate)
            .map_err(|e| CardError::Certificate(e.to_string()))?
            .1
            .subject()
            .as_raw()
            .to_vec();
        session
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(certificate_label.as_bytes().to_vec()),
                Attribute::Id(vec![id]),
                Attribute::Subject(subject),
                Attribute::Value(certificate.clone()),
            ])
            .map_err(failed("cannot write a certificate"))?;
    }
    if let Some((id_nat, specialty)) = spec.specialty {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Application(b"CPS".to_vec()),
                Attribute::Label(b"CPS_INFO_PS".to_vec()),
                Attribute::Value(format!("{id_nat}{specialty}").into_bytes()),
            ])
            .map_err(failed("cannot write the holder's information"))?;
    }
    for (n, activity) in spec.activities.iter().enumerate() {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Application(b"CPS".to_vec()),
                Attribute::Label(format!("CPS_ACTIVITY_{:02}_PS", n + 1).into_bytes()),
                Attribute::Value(crate::card::cps_data::encode_activity(activity)),
            ])
            .map_err(failed("cannot write a practice situation"))?;
    }
    Ok(slot.id())
}

fn private_key(key: &RsaPrivateKey, label: &str, id: u8) -> Result<Vec<Attribute>, CardError> {
    let missing = || CardError::Certificate("the card key lacks its CRT parts".into());
    let primes = key.primes();
    let (Some(p), Some(q)) = (primes.first(), primes.get(1)) else {
        return Err(missing());
    };
    let (Some(dp), Some(dq), Some(qinv)) = (key.dp(), key.dq(), key.crt_coefficient()) else {
        return Err(missing());
    };
    Ok(vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(vec![id]),
        Attribute::Modulus(key.n().to_bytes_be()),
        Attribute::PublicExponent(key.e().to_bytes_be()),
        Attribute::PrivateExponent(key.d().to_bytes_be()),
        Attribute::Prime1(p.to_bytes_be()),
        Attribute::Prime2(q.to_bytes_be()),
        Attribute::Exponent1(dp.to_bytes_be()),
        Attribute::Exponent2(dq.to_bytes_be()),
        Attribute::Coefficient(qinv.to_bytes_be()),
    ])
}
