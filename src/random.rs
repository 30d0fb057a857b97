//! Random values from the kernel (ring's `SystemRandom`): identifiers, tokens, nonces and
//! keys. One policy everywhere: when the kernel's generator fails, the caller gets an error
//! and refuses what needed the value. Nothing ever proceeds with a predictable value (an
//! all-zero id, an empty token). A leaf.

use ring::rand::{SecureRandom, SystemRandom};

/// The kernel's random generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomUnavailable;

/// Fills `buf` with random bytes.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), RandomUnavailable> {
    SystemRandom::new().fill(buf).map_err(|_| RandomUnavailable)
}

/// `N` random bytes as lower-case hex (`2N` characters): ids and tokens.
pub(crate) fn hex_id<const N: usize>() -> Result<String, RandomUnavailable> {
    let mut bytes = [0u8; N];
    fill(&mut bytes)?;
    Ok(crate::encoding::hex(&bytes))
}

/// A new Ed25519 key pair, PKCS#8 (checkpoint and assertion signing keys).
pub(crate) fn ed25519_pkcs8() -> Result<ring::pkcs8::Document, RandomUnavailable> {
    ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| RandomUnavailable)
}

/// An RSA PKCS#1 v1.5 SHA-256 signature (ring blinds the private operation with random
/// values: the same failure policy applies).
pub(crate) fn rsa_sha256(
    key: &ring::signature::RsaKeyPair,
    message: &[u8],
) -> Result<Vec<u8>, RandomUnavailable> {
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|_| RandomUnavailable)?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_of_the_asked_length_and_differ() {
        let a = hex_id::<16>().unwrap();
        let b = hex_id::<16>().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
