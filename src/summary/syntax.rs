//! JSON parsing that names the defect: FHIR servers and files are written by others, and
//! "expected value at line 3" does not tell centre IT what is wrong. The classification
//! looks at serde_json's error and at the byte where it stopped; it never quotes content
//! (a FHIR file holds health data), only positions and punctuation.
//!
//! Stricter than plain JSON where FHIR is: an object naming one property twice is refused
//! (two readers may disagree on which value wins: an allergy could differ between the
//! gateway and the sender's own viewer). A leading UTF-8 byte-order mark is accepted, as
//! the reference validator accepts it; other leading bytes are named.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::SummaryError;

/// What the parsed document may take in memory, estimated as it is built: ten times the
/// largest bundle accepted. A parsed value weighs far more than its text (an object is a
/// tree node of some 600 bytes, `{"a":0}` is 7 bytes), so a hostile document of small
/// objects within the size limit would otherwise take gigabytes; real bundles weigh 4 to
/// 8 times their text.
const MAX_PARSED_BYTES: usize = 10 * super::MAX_BUNDLE_BYTES;
const TOO_HEAVY: &str = "the document holds too many objects and arrays to be read";
/// Estimated weights: an object's first tree node, each of its properties (key and
/// value), an array, each of its items.
const OBJECT_BYTES: usize = 640;
const PROPERTY_BYTES: usize = 56;
const ARRAY_BYTES: usize = 24;
const ITEM_BYTES: usize = 32;

const DUPLICATE_KEY: &str = "a property name appears twice in one object (FHIR JSON forbids it)";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses `bytes` as JSON, or says precisely what is wrong and where.
pub fn parse(bytes: &[u8]) -> Result<Value, SummaryError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if let Some(error) = leading(bytes) {
        return Err(error);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SummaryError::Syntax {
        line: line_of(bytes, e.valid_up_to()),
        column: 0,
        defect: "the file is not UTF-8 text".into(),
    })?;
    let budget = Cell::new(MAX_PARSED_BYTES);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Strict(&budget)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_HEAVY) {
                return SummaryError::TooLarge(format!(
                    "{TOO_HEAVY} (more than {} MiB once parsed, line {})",
                    MAX_PARSED_BYTES >> 20,
                    e.line()
                ));
            }
            SummaryError::Syntax {
                line: e.line(),
                column: e.column(),
                defect: defect(text, &e),
            }
        })
}

/// What the document starts with, when it cannot be JSON at all.
fn leading(bytes: &[u8]) -> Option<SummaryError> {
    let at = |offset: usize, defect: String| {
        let line = line_of(bytes, offset);
        let line_start = bytes[..offset].iter().rposition(|b| *b == b'\n');
        let column = offset - line_start.map_or(0, |s| s + 1) + 1;
        Some(SummaryError::Syntax {
            line,
            column,
            defect,
        })
    };
    let encoding = |name: &str| {
        format!(
            "the file is {name} text (it starts with a {name} byte-order mark): a FHIR JSON document is UTF-8"
        )
    };
    if bytes.starts_with(b"\x00\x00\xFE\xFF") || bytes.starts_with(b"\xFF\xFE\x00\x00") {
        return at(0, encoding("UTF-32"));
    }
    if bytes.starts_with(b"\xFE\xFF") || bytes.starts_with(b"\xFF\xFE") {
        return at(0, encoding("UTF-16"));
    }
    if bytes.starts_with(b"\x1F\x8B") {
        return at(0, "the file is gzip-compressed data, not JSON text".into());
    }
    if bytes.starts_with(b"%PDF") {
        return at(0, "the file is a PDF document, not JSON text".into());
    }
    let offset = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let first = bytes[offset];
    let defect = match first {
        // JSON, or a comment that the parser names as such.
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' | b'/' => return None,
        b'<' => "the document starts with '<': it is XML or HTML, not JSON".to_owned(),
        0 => "the document starts with a NUL byte: binary data, or UTF-16 text without a byte-order mark".to_owned(),
        b if b.is_ascii_graphic() => format!(
            "the document starts with '{}' where '{{' opens a FHIR resource",
            b as char
        ),
        b => format!(
            "the document starts with byte 0x{b:02X} where '{{' opens a FHIR resource"
        ),
    };
    at(offset, defect)
}

/// A JSON value read like `serde_json::Value`, except that an object naming one property
/// twice is an error instead of "the last one wins".
/// A value, read strictly, its estimated weight taken from the budget.
#[derive(Clone, Copy)]
struct Strict<'b>(&'b Cell<usize>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor(self.0))
    }
}

/// Takes `bytes` from `budget`, or fails once it is spent.
fn spend<E: de::Error>(budget: &Cell<usize>, bytes: usize) -> Result<(), E> {
    match budget.get().checked_sub(bytes) {
        Some(left) => {
            budget.set(left);
            Ok(())
        }
        None => Err(E::custom(TOO_HEAVY)),
    }
}

struct StrictVisitor<'b>(&'b Cell<usize>);

impl<'de> Visitor<'de> for StrictVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        spend(self.0, v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        spend(self.0, v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        spend(self.0, ARRAY_BYTES)?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(Strict(self.0))? {
            spend(self.0, ITEM_BYTES)?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        spend(self.0, OBJECT_BYTES)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            spend(self.0, PROPERTY_BYTES + key.len())?;
            let value = map.next_value_seed(Strict(self.0))?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(Value::Object(object))
    }
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// The byte at the error position and the last significant byte before it.
fn context(text: &str, line: usize, column: usize) -> (Option<u8>, Option<u8>) {
    let Some(row) = text.split('\n').nth(line.saturating_sub(1)) else {
        return (None, None);
    };
    let offset = text
        .split('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let at = offset + column.saturating_sub(1).min(row.len());
    let here = text.as_bytes().get(at).copied();
    let before = text.as_bytes()[..at.min(text.len())]
        .iter()
        .rev()
        .copied()
        .find(|b| !b.is_ascii_whitespace());
    (here, before)
}

fn defect(text: &str, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    if e.classify() == Category::Eof {
        return "the document ends before every object and array is closed".into();
    }
    let message = e.to_string();
    let (here, before) = context(text, e.line(), e.column());
    let char_name = |b: Option<u8>| match b {
        Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
        Some(_) => "a control or non-ASCII character".to_owned(),
        None => "the end of the line".to_owned(),
    };
    if here == Some(b'/') {
        return "comments are not allowed in JSON".into();
    }
    if message.starts_with("trailing comma") {
        return "an extra comma before a closing bracket or brace".into();
    }
    if message.starts_with("key must be a string") {
        return "a property name without quotes".into();
    }
    if message.starts_with("expected `,` or `}`") {
        return match here {
            Some(b'"') => "a comma is missing between two properties".into(),
            Some(b']') => "unexpected close marker ']' where '}' closes the object".into(),
            other => format!("unexpected {} inside an object", char_name(other)),
        };
    }
    if message.starts_with("expected `,` or `]`") {
        return match here {
            Some(b'"' | b'{' | b'[') => "a comma is missing between two array items".into(),
            Some(b'}') => "unexpected close marker '}' where ']' closes the array".into(),
            other => format!("unexpected {} inside an array", char_name(other)),
        };
    }
    if message.starts_with("expected value") || message.starts_with("expected ident") {
        return match (here, before) {
            (Some(b), _) if b.is_ascii_alphabetic() => "a value without quotes".into(),
            (other, _) => format!("unexpected {} where a value should be", char_name(other)),
        };
    }
    if message.starts_with("trailing characters") {
        return "content after the end of the JSON document".into();
    }
    if message.starts_with("control character") {
        return "a control character inside a string".into();
    }
    if message.starts_with("invalid escape") || message.starts_with("invalid unicode") {
        return "an invalid escape sequence inside a string".into();
    }
    if message.starts_with("recursion limit") {
        return "objects and arrays nested too deeply".into();
    }
    if message.starts_with(DUPLICATE_KEY) {
        return DUPLICATE_KEY.into();
    }
    if message.starts_with("number out of range") {
        return "a number out of range".into();
    }
    // serde_json's own wording, minus its position (reported separately).
    message
        .split(" at line ")
        .next()
        .unwrap_or("invalid JSON")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document of tiny objects weighs many times its text once parsed: it is refused
    /// as too large once its estimate passes the budget, instead of taking gigabytes.
    /// The same number of items as numbers (light) still parses.
    #[test]
    fn a_document_heavier_than_its_text_is_refused_before_it_fills_memory() {
        let items = 300_000;
        let heavy = format!("{{\"entry\":[{}{{\"a\":0}}]}}", "{\"a\":0},".repeat(items));
        assert!(heavy.len() < super::super::MAX_BUNDLE_BYTES);
        match parse(heavy.as_bytes()) {
            Err(SummaryError::TooLarge(why)) => assert!(why.contains("too many objects"), "{why}"),
            other => panic!("{other:?}"),
        }
        let light = format!("{{\"entry\":[{}0]}}", "0,".repeat(items));
        assert!(parse(light.as_bytes()).is_ok());
    }

    fn defect_of(text: &str) -> (usize, usize, String) {
        match parse(text.as_bytes()) {
            Err(SummaryError::Syntax {
                line,
                column,
                defect,
            }) => (line, column, defect),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn each_kind_of_defect_is_named_with_its_position() {
        assert_eq!(
            defect_of("{\n \"a\": 1\n \"b\": 2}").2,
            "a comma is missing between two properties"
        );
        assert_eq!(
            defect_of("{\"a\": [1,]}").2,
            "an extra comma before a closing bracket or brace"
        );
        assert_eq!(defect_of("{a: 1}").2, "a property name without quotes");
        assert_eq!(defect_of("{\"a\": b}").2, "a value without quotes");
        assert_eq!(
            defect_of("{\"a\": 1 // note\n}").2,
            "comments are not allowed in JSON"
        );
        assert_eq!(
            defect_of("{\"a\": [1}").2,
            "unexpected close marker '}' where ']' closes the array"
        );
        assert_eq!(
            defect_of("{\"a\": {\"b\": 1]").2,
            "unexpected close marker ']' where '}' closes the object"
        );
        assert_eq!(
            defect_of("{\"a\": [").2,
            "the document ends before every object and array is closed"
        );
        let (line, column, _) = defect_of("{\n\n  \"a\": #}");
        assert_eq!((line, column), (3, 8));
    }

    #[test]
    fn a_property_named_twice_is_refused_at_its_place() {
        let (line, _, defect) = defect_of("{\"a\": {\"b\": 1},\n \"c\": [{\"d\": 1, \"d\": 2}]}");
        assert_eq!(line, 2);
        assert_eq!(defect, DUPLICATE_KEY);
        // The same name in two objects is fine, and values come through as serde_json's.
        let text = "{\"a\": {\"d\": 1}, \"b\": {\"d\": [true, null, -2, 1.5, \"\\u00e9\"]}}";
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn a_utf8_byte_order_mark_is_accepted_other_leading_bytes_are_named() {
        assert!(parse(b"\xEF\xBB\xBF{\"a\": 1}").is_ok());
        assert!(defect_of("\u{FEFF}\u{FEFF}{}").2.contains("byte 0xEF"));
        let named = |bytes: &[u8]| match parse(bytes) {
            Err(SummaryError::Syntax { defect, .. }) => defect,
            other => panic!("{other:?}"),
        };
        assert!(named(b"\xFF\xFE{\x00}\x00").contains("UTF-16"));
        assert!(named(b"\xFE\xFF\x00{").contains("UTF-16"));
        assert!(named(b"\xFF\xFE\x00\x00{\x00\x00\x00").contains("UTF-32"));
        assert!(named(b"  <?xml version=\"1.0\"?><ClinicalDocument/>").contains("XML"));
        assert!(named(b"\x00{").contains("NUL"));
        assert!(named(b"\x1F\x8B\x08").contains("gzip"));
        assert!(named(b"%PDF-1.7").contains("PDF"));
        assert_eq!(
            named(b"\n  x{}"),
            "the document starts with 'x' where '{' opens a FHIR resource"
        );
        assert!(matches!(
            parse(b"\n\n   ="),
            Err(SummaryError::Syntax {
                line: 3,
                column: 4,
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }
    }
}
