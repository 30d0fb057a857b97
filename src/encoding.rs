//! Hex and digests, as fingerprints, hashes and keys are written in configuration files,
//! logs and records. A leaf: it uses nothing else from the crate.

/// Parses a SHA-256 fingerprint written as 64 hex digits, optionally separated by colons.
pub fn parse_sha256(text: &str) -> Result<[u8; 32], NotSha256> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    decode_hex(&digits)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| NotSha256(text.to_owned()))
}

/// A value that is not a SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a SHA-256 fingerprint: expected 64 hex digits")]
pub struct NotSha256(pub String);

/// Decodes hex digits (even count, no separators); `None` for anything else.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Lower-case hex, as fingerprints are shown in logs and API answers.
pub fn hex(bytes: &[u8]) -> String {
    // Each record's `prev` and each receipt is hex: a `format!` per byte showed in profiles.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_fingerprints_take_colons() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex("00abff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        let colons = (0..32).map(|_| "ab").collect::<Vec<_>>().join(":");
        assert_eq!(parse_sha256(&colons), Ok([0xab; 32]));
        assert!(parse_sha256("ab").is_err());
        assert_eq!(hex(&sha256(b"")[..4]), "e3b0c442");
    }
}
