//! The card profile and the login sequence the gateway runs against a CPS card.
//!
//! Sequence: SELECT the authentication application by AID; SELECT and READ BINARY the
//! authentication certificate (before any PIN: the desk can show whose card it is); VERIFY
//! the PIN; MSE SET the authentication key; have the card sign a fresh random challenge
//! (INTERNAL AUTHENTICATE over a PKCS#1 v1.5 DigestInfo, or PSO COMPUTE DIGITAL SIGNATURE
//! for RSA-PSS); verify that signature with ring against the certificate's public key.
//!
//! Card generations differ, so every identifier is configuration. Provenance of defaults:
//! - `aid` `E828BD080F8025000001FF0010`: the CPS3 IAS application, as the open-source card
//!   drivers select it (docs/domain.md §3). Public source.
//! - MSE SET `00 22 41 A4`, INTERNAL AUTHENTICATE `00 88 00 00`, PSO CDS `00 2A 9E 9A`:
//!   from the same drivers (docs/domain.md §3). Public source.
//! - PIN tries 3: docs/domain.md §3. Public source.
//! - `certificate_file` `D002`, `pin_reference` `01`, `key_reference` `81`, PIN padded with
//!   `FF` to 8 bytes, and the signature key pair's `signature_certificate_file` `D003` and
//!   `signature_key_reference` `82`: **assumptions** modelled on IAS-ECC conventions, to
//!   confirm against a real CPS3/CPS4 card before production (`samu-gateway card probe`
//!   shows what a card answers; the PKCS#11 path of issue 19 finds the keys by label).

use ring::signature::{self, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::CardError;
use super::apdu::{Command, Transport, exchange};
use crate::encoding::decode_hex;

/// How the card proves possession of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// INTERNAL AUTHENTICATE over a SHA-256 DigestInfo; PKCS#1 v1.5 (CPS3).
    Pkcs1Sha256,
    /// PSO COMPUTE DIGITAL SIGNATURE over a SHA-256 hash; RSA-PSS (CPS4).
    PssSha256,
}

/// Identifiers and formats of one card generation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardProfile {
    /// Authentication application AID (hex).
    pub aid: String,
    /// File id of the authentication certificate (hex, 2 bytes).
    pub certificate_file: String,
    /// PIN reference for VERIFY (P2).
    pub pin_reference: u8,
    /// PIN block length: the PIN's ASCII digits padded to this many bytes (0: no padding).
    pub pin_block_length: usize,
    /// Padding byte of the PIN block.
    pub pin_padding: u8,
    /// Key reference for MSE SET.
    pub key_reference: u8,
    /// Signature scheme of the authentication key.
    pub signature: SignatureScheme,
    /// File id of the signature certificate (hex, 2 bytes).
    pub signature_certificate_file: String,
    /// Key reference of the signature key for MSE SET (it signs the VIHF, PKCS#1 v1.5
    /// over a SHA-256 DigestInfo).
    pub signature_key_reference: u8,
}

impl Default for CardProfile {
    fn default() -> Self {
        Self {
            aid: "E828BD080F8025000001FF0010".into(),
            certificate_file: "D002".into(),
            pin_reference: 0x01,
            pin_block_length: 8,
            pin_padding: 0xFF,
            key_reference: 0x81,
            signature: SignatureScheme::Pkcs1Sha256,
            signature_certificate_file: "D003".into(),
            signature_key_reference: 0x82,
        }
    }
}

impl CardProfile {
    /// What is wrong with this profile, as `(key, problem)` with keys relative to
    /// `[cards.profile]`; `pinpad` when a desk types PINs on its reader. Checked before
    /// the service starts: a bad identifier would otherwise fail every card insertion.
    pub fn problems(&self, pinpad: bool) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut note = |key, result: Result<(), CardError>| {
            if let Err(CardError::Profile(why)) = result {
                out.push((key, why));
            }
        };
        note("aid", self.aid_bytes().map(drop));
        note("certificate_file", self.certificate_fid().map(drop));
        note(
            "signature_certificate_file",
            self.signature_certificate_fid().map(drop),
        );
        if self.pin_block_length > 64 {
            out.push((
                "pin_block_length",
                format!("{} is over 64 bytes", self.pin_block_length),
            ));
        } else if pinpad && !(8..=15).contains(&self.pin_block_length) {
            // A PIN-pad reader fills a block of fixed size (up to 8 digits, padded): a
            // shorter block here would make the keypad's VERIFY differ from the keyboard's,
            // and the card would count a right PIN as wrong.
            out.push((
                "pin_block_length",
                format!(
                    "{} does not suit a PIN-pad desk: its reader fills a padded block of 8 to 15 bytes",
                    self.pin_block_length
                ),
            ));
        }
        out
    }

    /// The AID bytes.
    pub fn aid_bytes(&self) -> Result<Vec<u8>, CardError> {
        decode_hex(&self.aid)
            .filter(|a| (5..=16).contains(&a.len()))
            .ok_or_else(|| {
                CardError::Profile(format!("aid '{}' is not 5 to 16 hex bytes", self.aid))
            })
    }

    /// The certificate file id.
    pub fn certificate_fid(&self) -> Result<[u8; 2], CardError> {
        decode_hex(&self.certificate_file)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .ok_or_else(|| {
                CardError::Profile(format!(
                    "certificate_file '{}' is not 2 hex bytes",
                    self.certificate_file
                ))
            })
    }

    /// The signature certificate's file id.
    pub fn signature_certificate_fid(&self) -> Result<[u8; 2], CardError> {
        decode_hex(&self.signature_certificate_file)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .ok_or_else(|| {
                CardError::Profile(format!(
                    "signature_certificate_file '{}' is not 2 hex bytes",
                    self.signature_certificate_file
                ))
            })
    }

    /// The PIN block VERIFY sends.
    pub fn pin_block(&self, pin: &Pin) -> Zeroizing<Vec<u8>> {
        // Sized once: growing it would leave an unwiped copy of the PIN behind.
        let mut block = Zeroizing::new(Vec::with_capacity(pin.0.len().max(self.pin_block_length)));
        block.extend_from_slice(&pin.0);
        while block.len() < self.pin_block_length {
            block.push(self.pin_padding);
        }
        block
    }
}

/// A PIN as typed: 4 to 8 ASCII digits, wiped from memory when dropped, never printed.
pub struct Pin(Zeroizing<Vec<u8>>);

impl Pin {
    /// Checks the format; the error never repeats the input.
    pub fn new(text: &str) -> Result<Self, CardError> {
        if !(4..=8).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::Profile("a PIN is 4 to 8 digits".into()));
        }
        Ok(Self(Zeroizing::new(text.as_bytes().to_vec())))
    }

    /// The digits (for the emulator's comparison).
    pub fn digits(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(****)")
    }
}

/// SELECTs the application and reads the authentication certificate (DER), no PIN needed.
pub fn read_certificate(
    card: &mut dyn Transport,
    profile: &CardProfile,
) -> Result<Vec<u8>, CardError> {
    exchange(
        card,
        &Command::new(0x00, 0xA4, 0x04, 0x0C).with_data(profile.aid_bytes()?),
    )?
    .into_data()?;
    read_certificate_file(card, profile.certificate_fid()?)
}

/// The signature certificate, from the application already selected (selecting it again
/// would end the PIN's verified state on cards that reset it).
pub fn read_signature_certificate(
    card: &mut dyn Transport,
    profile: &CardProfile,
) -> Result<Vec<u8>, CardError> {
    read_certificate_file(card, profile.signature_certificate_fid()?)
}

/// SELECT FILE `fid` then READ BINARY until the DER certificate is whole.
fn read_certificate_file(card: &mut dyn Transport, fid: [u8; 2]) -> Result<Vec<u8>, CardError> {
    exchange(
        card,
        &Command::new(0x00, 0xA4, 0x02, 0x0C).with_data(fid.to_vec()),
    )?
    .into_data()?;
    let mut der = Vec::new();
    loop {
        // P1's top bit would name a short file id: offsets stop below 32 KiB.
        let offset = u16::try_from(der.len())
            .ok()
            .filter(|o| *o < 0x8000)
            .ok_or_else(|| CardError::Certificate("certificate larger than 32 KiB".into()))?;
        let [hi, lo] = offset.to_be_bytes();
        // Once the certificate's length is known, only what is left of it is asked for: a
        // file sized exactly to it would answer a read past its end with an error (or a
        // warning with the rest), and the card would be refused at every insertion.
        let asked =
            der_length(&der).map_or(256, |total| total.saturating_sub(der.len()).clamp(1, 256));
        let chunk =
            exchange(card, &Command::new(0x00, 0xB0, hi, lo).with_le(asked))?.into_data()?;
        let done = chunk.len() < asked;
        der.extend_from_slice(&chunk);
        if let Some(total) = der_length(&der)
            && der.len() >= total
        {
            der.truncate(total);
            return Ok(der);
        }
        if done || chunk.is_empty() {
            return Err(CardError::Certificate(format!(
                "certificate file ends after {} bytes",
                der.len()
            )));
        }
    }
}

/// Has the card sign `message` with its **signature** key (RSA PKCS#1 v1.5 over a
/// SHA-256 DigestInfo, as an XML signature's RSA-SHA256 wants), the PIN verified
/// earlier in the same card session; the signature is checked against
/// `signature_certificate` before it is returned.
pub fn sign_with_signature_key(
    card: &mut dyn Transport,
    profile: &CardProfile,
    message: &[u8],
    signature_certificate: &[u8],
) -> Result<Vec<u8>, CardError> {
    exchange(
        card,
        &Command::new(0x00, 0x22, 0x41, 0xA4).with_data(vec![
            0x84,
            0x01,
            profile.signature_key_reference,
        ]),
    )?
    .into_data()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, message);
    let mut digest_info = SHA256_DIGEST_INFO_PREFIX.to_vec();
    digest_info.extend_from_slice(digest.as_ref());
    let signature = exchange(
        card,
        &Command::new(0x00, 0x88, 0x00, 0x00)
            .with_data(digest_info)
            .with_le(256),
    )?
    .into_data()?;
    UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        rsa_public_key(signature_certificate)?,
    )
    .verify(message, &signature)
    .map_err(|_| CardError::SignatureMismatch)?;
    Ok(signature)
}

/// Total length of a DER SEQUENCE from its header (tag 30, definite length), once known.
fn der_length(der: &[u8]) -> Option<usize> {
    match der {
        [0x30, len @ 0..=0x7F, ..] => Some(2 + usize::from(*len)),
        [0x30, 0x81, len, ..] => Some(3 + usize::from(*len)),
        [0x30, 0x82, hi, lo, ..] => Some(4 + usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// PIN tries left, asked with a VERIFY without data (ISO 7816-4): never consumes a try.
/// `Some(0)` for a blocked PIN; `None` when the card does not say (already verified, or no
/// support for the query).
pub fn pin_tries_left(
    card: &mut dyn Transport,
    profile: &CardProfile,
) -> Result<Option<u8>, CardError> {
    let answer = exchange(card, &Command::new(0x00, 0x20, 0x00, profile.pin_reference))?;
    Ok(match super::apdu::check_status(answer.sw) {
        Err(CardError::WrongPin { tries_left }) => Some(tries_left),
        Err(CardError::PinBlocked) => Some(0),
        _ => None,
    })
}

/// VERIFY: `Ok` once the PIN is accepted; `WrongPin { tries_left }` or `PinBlocked` else.
pub fn verify_pin(
    card: &mut dyn Transport,
    profile: &CardProfile,
    pin: &Pin,
) -> Result<(), CardError> {
    let block = profile.pin_block(pin);
    match exchange(
        card,
        &Command::new(0x00, 0x20, 0x00, profile.pin_reference).with_data(block.to_vec()),
    )?
    .into_data()
    {
        Ok(_) => Ok(()),
        // To a VERIFY, "verification failed" without a counter is a wrong PIN.
        Err(CardError::Status(0x6300)) => Err(CardError::WrongPinTriesUnknown),
        Err(other) => Err(other),
    }
}

/// VERIFY with the PIN typed on the reader's own keypad: the PIN never reaches software.
pub fn verify_pin_on_pad(card: &mut dyn Transport, profile: &CardProfile) -> Result<(), CardError> {
    let template = super::pinpad::VerifyTemplate::for_profile(profile)?;
    let answer = card.verify_pin_on_pad(&template.encode())?;
    super::pinpad::outcome(&answer)
}

/// Has the card sign a fresh random challenge and checks the signature against the
/// certificate's public key: proves the card holds the certificate's private key.
pub fn prove_possession(
    card: &mut dyn Transport,
    profile: &CardProfile,
    certificate_der: &[u8],
) -> Result<(), CardError> {
    let mut challenge = [0u8; 32];
    crate::random::fill(&mut challenge).map_err(|e| CardError::Transport(e.to_string()))?;
    sign_with_authentication_key(card, profile, &challenge, certificate_der).map(drop)
}

/// Has the card sign `message` with its **authentication** key, in the profile's scheme
/// (PKCS#1 v1.5 or PSS, SHA-256), the PIN verified earlier in the same card session: the
/// proof of possession at login, and the TLS client's handshake signature to the DMP.
/// The signature is checked against `certificate_der` before it is returned.
pub fn sign_with_authentication_key(
    card: &mut dyn Transport,
    profile: &CardProfile,
    message: &[u8],
    certificate_der: &[u8],
) -> Result<Vec<u8>, CardError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, message);
    exchange(
        card,
        &Command::new(0x00, 0x22, 0x41, 0xA4).with_data(vec![0x84, 0x01, profile.key_reference]),
    )?
    .into_data()?;
    let (command, algorithm): (Command, &dyn signature::VerificationAlgorithm) =
        match profile.signature {
            SignatureScheme::Pkcs1Sha256 => {
                let mut digest_info = SHA256_DIGEST_INFO_PREFIX.to_vec();
                digest_info.extend_from_slice(digest.as_ref());
                (
                    Command::new(0x00, 0x88, 0x00, 0x00)
                        .with_data(digest_info)
                        .with_le(256),
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                )
            }
            SignatureScheme::PssSha256 => (
                Command::new(0x00, 0x2A, 0x9E, 0x9A)
                    .with_data(digest.as_ref().to_vec())
                    .with_le(256),
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
        };
    let signature = exchange(card, &command)?.into_data()?;
    let public_key = rsa_public_key(certificate_der)?;
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, &signature)
        .map_err(|_| CardError::SignatureMismatch)?;
    Ok(signature)
}

/// DER prefix of a SHA-256 DigestInfo (PKCS#1 v1.5, RFC 8017 §9.2 note 1).
pub const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The RSAPublicKey DER inside the certificate's SubjectPublicKeyInfo.
pub(crate) fn rsa_public_key(certificate_der: &[u8]) -> Result<Vec<u8>, CardError> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate_der)
        .map_err(|e| CardError::Certificate(e.to_string()))?;
    let spki = &cert.tbs_certificate.subject_pki;
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(CardError::Certificate(
            "the authentication key is not RSA".into(),
        ));
    }
    Ok(spki.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every command with one status word.
    struct Answering(u16);

    impl Transport for Answering {
        fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, CardError> {
            Ok(self.0.to_be_bytes().to_vec())
        }
    }

    /// A card whose certificate file is exactly the certificate's size, and which refuses
    /// to read past its end (`6B00` from beyond it, `6282` with the rest when asked for
    /// more than is left), as ISO 7816-4 lets a card do.
    struct SizedFile(Vec<u8>);

    impl Transport for SizedFile {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
            if apdu[1] == 0xA4 {
                return Ok(vec![0x90, 0x00]);
            }
            let offset = usize::from(u16::from_be_bytes([apdu[2], apdu[3]]));
            let asked = match apdu[4] {
                0 => 256,
                n => usize::from(n),
            };
            let Some(rest) = self.0.get(offset..).filter(|r| !r.is_empty()) else {
                return Ok(vec![0x6B, 0x00]);
            };
            let mut answer = rest[..asked.min(rest.len())].to_vec();
            answer.extend_from_slice(if asked > rest.len() {
                &[0x62, 0x82]
            } else {
                &[0x90, 0x00]
            });
            Ok(answer)
        }
    }

    /// The certificate is read whole from a file sized exactly to it: its last read asks
    /// for what is left, never past the end. Before, the last read asked for 256 bytes and
    /// such a card was refused at every insertion.
    #[test]
    fn a_certificate_file_sized_to_the_certificate_is_read_whole() {
        let (_, certificate) = crate::dev_card::emulator::test_card(CardProfile::default());
        assert!(
            certificate.len() % 256 != 0,
            "a last read shorter than 256 bytes"
        );
        let mut card = SizedFile(certificate.clone());
        assert_eq!(
            read_certificate_file(&mut card, [0xC0, 0x00]).unwrap(),
            certificate
        );
    }

    /// What a card's answer to a VERIFY means for the physician (and the record).
    #[test]
    fn verify_answers_map_to_what_happened_to_the_pin() {
        let profile = CardProfile::default();
        let pin = Pin::new("1234").unwrap();
        let verify = |sw| verify_pin(&mut Answering(sw), &profile, &pin);
        assert_eq!(verify(0x9000), Ok(()));
        assert_eq!(verify(0x63C2), Err(CardError::WrongPin { tries_left: 2 }));
        // The attempt that used the last try blocked the card.
        assert_eq!(verify(0x63C0), Err(CardError::PinBlocked));
        assert_eq!(verify(0x6983), Err(CardError::PinBlocked));
        // A card without a counter: a wrong PIN all the same.
        assert_eq!(verify(0x6300), Err(CardError::WrongPinTriesUnknown));
        assert_eq!(
            pin_tries_left(&mut Answering(0x63C0), &profile),
            Ok(Some(0))
        );
    }
}
