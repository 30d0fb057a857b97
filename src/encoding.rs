//! Hex and digests, as fingerprints, hashes and keys are written in configuration files,
//! logs and records; where a JSON text breaks, said without quoting it; and a peer's
//! names and codes made fit to print. A leaf: it uses nothing else from the crate.

/// Fewer consecutive digits than this pass in a peer's name; a longer run (an INS or NIR
/// has 13 to 15, a birth date 8, a phone number 10) is masked.
const DIGIT_RUN_SHOWN: usize = 4;

/// A name or code a peer sent (an element name, a resource type, a fault code, a
/// content type), fit for a log line or an error text: its first `max_chars` characters,
/// ASCII letters, digits and those in `also` kept, any other replaced by `other` (or
/// dropped when `None`); then every run of more than four digits replaced by one `#`, so
/// that a hostile peer cannot have an identifier written into the logs through a name.
pub fn peer_token(value: &str, max_chars: usize, also: &str, other: Option<char>) -> String {
    let kept = value.chars().take(max_chars).filter_map(|c| {
        if c.is_ascii_alphanumeric() || also.contains(c) {
            Some(c)
        } else {
            other
        }
    });
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() > DIGIT_RUN_SHOWN {
            out.push('#');
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in kept {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Whether `c` prints as nothing or changes how the text around it prints: the soft
/// hyphen, zero-width spaces and joiners, direction marks, embeddings, overrides and
/// isolates, word joiners and invisible operators, the byte-order mark.
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// An identifier as copied from anywhere, bare: spaces and invisible characters dropped,
/// ASCII letters in capitals (an INS's `2a` is `2A`, an OID's `urn:oid:` is `URN:OID:`).
pub fn bare_identifier(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && !invisible(*c))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Where `e` found a JSON text wrong, and what kind of wrong, never what it read there:
/// serde_json's own message quotes the offending value (`invalid type: string "…"`),
/// which in a stored record or a peer's document may be an INS or clinical text.
pub fn json_error_position(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {}, column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Parses a SHA-256 fingerprint written as 64 hex digits, optionally separated by colons.
pub fn parse_sha256(text: &str) -> Result<[u8; 32], NotSha256> {
    // Verification parses every record's `prev` with this: it decodes in place, without
    // gathering the digits into a string first (that showed in `audit verify`'s profile).
    let mut out = [0u8; 32];
    let mut digits = 0usize;
    for byte in text.bytes().filter(|b| *b != b':') {
        let (Some(value), Some(slot)) = (hex_value(byte), out.get_mut(digits / 2)) else {
            return Err(NotSha256(text.to_owned()));
        };
        *slot |= if digits.is_multiple_of(2) {
            value << 4
        } else {
            value
        };
        digits += 1;
    }
    if digits == 64 {
        Ok(out)
    } else {
        Err(NotSha256(text.to_owned()))
    }
}

/// The value of one hex digit, either case.
fn hex_value(digit: u8) -> Option<u8> {
    // A table rather than a match on ranges: digits and letters come in no order a branch
    // predictor can follow, and the mispredictions showed in `audit verify`'s profile.
    match HEX_VALUES[usize::from(digit)] {
        NOT_HEX => None,
        value => Some(value),
    }
}

const NOT_HEX: u8 = 0xff;

/// Each byte's value as a hex digit, or [`NOT_HEX`].
const HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A value that is not a SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a SHA-256 fingerprint: expected 64 hex digits")]
pub struct NotSha256(pub String);

/// Decodes hex digits (even count, no separators); `None` for anything else.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
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

/// SHA-1 of `bytes`, lowercase hex: only where a peer's format names it (an XDS
/// registry's document `hash`), never for the gateway's own integrity.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref())
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
    fn peer_tokens_keep_names_and_codes_but_no_long_digit_runs() {
        assert_eq!(
            peer_token("OPPOSITION_ACCES_URGENCE", 64, "_", None),
            "OPPOSITION_ACCES_URGENCE"
        );
        assert_eq!(
            peer_token("urn:oid:1.2.250.1.213", 64, ":.", None),
            "urn:oid:1.2.250.1.213"
        );
        assert_eq!(peer_token("a b\n<c>", 64, "", Some('?')), "a?b??c?");
        assert_eq!(peer_token("a b", 64, "", None), "ab");
        // An INS, a birth date, digits split by dropped characters: masked.
        assert_eq!(
            peer_token("Patient269054958815780", 64, "", None),
            "Patient#"
        );
        assert_eq!(peer_token("x19800101y", 64, "", None), "x#y");
        assert_eq!(peer_token("2 69 05 49 588 157", 64, "", None), "#");
        assert_eq!(peer_token("2690549588157", 64, "", Some('?')), "#");
        assert_eq!(peer_token("abcdef", 3, "", None), "abc");
    }

    #[test]
    fn hex_round_trips_and_fingerprints_take_colons() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex("00abff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        let colons = (0..32).map(|_| "ab").collect::<Vec<_>>().join(":");
        assert_eq!(parse_sha256(&colons), Ok([0xab; 32]));
        assert!(parse_sha256("ab").is_err());
        let upper = "AB".repeat(32);
        assert_eq!(parse_sha256(&upper), Ok([0xab; 32]));
        let digits = hex(&sha256(b"x"));
        assert_eq!(parse_sha256(&digits).map(|h| hex(&h)), Ok(digits.clone()));
        // One digit too many or too few, a stray character, a sign: all refused.
        assert!(parse_sha256(&format!("{digits}0")).is_err());
        assert!(parse_sha256(&digits[1..]).is_err());
        assert!(parse_sha256(&format!("{}g", &digits[1..])).is_err());
        assert!(parse_sha256(&format!("+{}", &digits[1..])).is_err());
        assert!(parse_sha256("").is_err());
        assert_eq!(decode_hex("+f"), None);
        assert_eq!(decode_hex("é"), None);
        assert_eq!(hex(&sha256(b"")[..4]), "e3b0c442");
    }
}
