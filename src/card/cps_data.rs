//! The CPS card's data objects, read through PKCS#11: its practice situations
//! (`CPS_ACTIVITY_01_PS` … `_16_PS`, after the PIN): where the professional practises;
//! and the holder's specialty at the end of `CPS_INFO_PS` (readable without a PIN). Their layout is not
//! public; what is known (docs/domain.md §3) is a BER-TLV container `EE` holding the
//! structure's name (`84`), its national id (`85`) and the activity sector (`86`). The
//! reader walks TLV generally, keeps those three when they are well-formed text, ignores
//! every other tag, and refuses nothing: a situation it cannot read is simply absent.

/// One practice situation of the card's holder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardActivity {
    /// The structure's name (raison sociale).
    pub structure_name: Option<String>,
    /// The structure's national id (e.g. `1` + FINESS).
    pub structure_id: Option<String>,
    /// The activity sector code (`SA01`, `SA07`…).
    pub sector: Option<String>,
}

/// Largest value read: a situation is a few hundred bytes.
const MAX_VALUE: usize = 4096;

/// One TLV: (tag, value, rest). Tags of one or more bytes, definite lengths up to 4
/// bytes; `None` on anything malformed or truncated.
fn tlv(input: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    let (&first, mut rest) = input.split_first()?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        // Multi-byte tag: continuation bytes have their top bit set; at most 3 more.
        for _ in 0..3 {
            let (&b, after) = rest.split_first()?;
            rest = after;
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&len, after) = rest.split_first()?;
    rest = after;
    let length = if len & 0x80 == 0 {
        usize::from(len)
    } else {
        let count = usize::from(len & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if length > rest.len() || length > MAX_VALUE {
        return None;
    }
    let (value, rest) = rest.split_at(length);
    Some((tag, value, rest))
}

/// Printable text, trimmed, at most 128 characters; `None` otherwise.
fn text(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.trim();
    (!text.is_empty() && text.len() <= 128 && !text.chars().any(char::is_control))
        .then(|| text.to_owned())
}

/// The situation a `CPS_ACTIVITY_xx_PS` value describes, if it reads as one.
pub fn parse_activity(value: &[u8]) -> Option<CardActivity> {
    let mut rest = value;
    while !rest.is_empty() {
        let (tag, inner, after) = tlv(rest)?;
        rest = after;
        if tag != 0xEE {
            continue;
        }
        let mut activity = CardActivity::default();
        let mut fields = inner;
        while !fields.is_empty() {
            let Some((tag, value, after)) = tlv(fields) else {
                break;
            };
            fields = after;
            match tag {
                0x84 => activity.structure_name = text(value),
                0x85 => {
                    activity.structure_id = text(value).filter(|id| {
                        id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
                    })
                }
                0x86 => {
                    activity.sector = text(value)
                        .filter(|s| s.len() <= 16 && s.chars().all(|c| c.is_ascii_alphanumeric()))
                }
                _ => {}
            }
        }
        return (activity != CardActivity::default()).then_some(activity);
    }
    None
}

/// The holder's specialty (TRE_R38, e.g. `SM26`) ending a `CPS_INFO_PS` value, as the
/// public reports read it (its last four characters); only a code of that form (two
/// capital letters, two digits) is taken.
pub fn parse_specialty(value: &[u8]) -> Option<String> {
    let tail = value.get(value.len().checked_sub(4)?..)?;
    let code = std::str::from_utf8(tail).ok()?;
    let bytes = code.as_bytes();
    (bytes[..2].iter().all(u8::is_ascii_uppercase) && bytes[2..].iter().all(u8::is_ascii_digit))
        .then(|| code.to_owned())
}

/// Writes a situation in the same layout (for the virtual card's token).
pub fn encode_activity(activity: &CardActivity) -> Vec<u8> {
    let mut inner = Vec::new();
    for (tag, value) in [
        (0x84u8, &activity.structure_name),
        (0x85, &activity.structure_id),
        (0x86, &activity.sector),
    ] {
        if let Some(value) = value {
            inner.push(tag);
            push_length(&mut inner, value.len());
            inner.extend_from_slice(value.as_bytes());
        }
    }
    let mut out = vec![0xEE];
    push_length(&mut out, inner.len());
    out.extend(inner);
    out
}

fn push_length(out: &mut Vec<u8>, length: usize) {
    match length {
        0..=0x7F => out.push(length as u8),
        0x80..=0xFF => out.extend([0x81, length as u8]),
        _ => out.extend([0x82, (length >> 8) as u8, length as u8]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hospital() -> CardActivity {
        CardActivity {
            structure_name: Some("CENTRE HOSPITALIER DE TEST".into()),
            structure_id: Some("1750000000".into()),
            sector: Some("SA01".into()),
        }
    }

    #[test]
    fn a_situation_reads_back_and_unknown_tags_are_skipped() {
        assert_eq!(
            parse_activity(&encode_activity(&hospital())),
            Some(hospital())
        );
        // Another tag first, an unknown field inside, a long-form length.
        let mut value = vec![0x5F, 0x20, 0x01, 0x00];
        let mut inner = vec![0x99, 0x01, 0xFF];
        inner.extend([0x85, 0x81, 0x0A]);
        inner.extend(b"1750000000");
        value.push(0xEE);
        value.push(inner.len() as u8);
        value.extend(inner);
        assert_eq!(
            parse_activity(&value),
            Some(CardActivity {
                structure_id: Some("1750000000".into()),
                ..CardActivity::default()
            })
        );
    }

    #[test]
    fn the_specialty_is_the_code_ending_the_holders_information() {
        assert_eq!(
            parse_specialty(b"\x01\x0a810002813839SM59"),
            Some("SM59".into())
        );
        assert_eq!(parse_specialty(b"SM26"), Some("SM26".into()));
        for none in [
            &b""[..],
            b"SM2",
            b"sm26",
            b"SM2X",
            b"xxxx\xff\xfe26",
            b"12SM",
        ] {
            assert_eq!(parse_specialty(none), None, "{none:?}");
        }
    }

    #[test]
    fn malformed_values_are_absent_situations_never_a_panic() {
        for bad in [
            &b""[..],
            &[0xEE],
            &[0xEE, 0x05, 0x85, 0x01],
            &[0xEE, 0x85, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            &[0x1F, 0xFF, 0xFF, 0xFF, 0xFF],
            &[0xEE, 0x03, 0x85, 0x01, b'\n'],
        ] {
            assert_eq!(parse_activity(bad), None, "{bad:02x?}");
        }
        // A structure id that is not an id is left out.
        let odd = encode_activity(&CardActivity {
            structure_id: Some("17500 00000".into()),
            sector: Some("SA07".into()),
            ..CardActivity::default()
        });
        assert_eq!(parse_activity(&odd).unwrap().structure_id, None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_activity(&bytes);
        }
    }
}
