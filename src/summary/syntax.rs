//! JSON parsing that names the defect: FHIR servers and files are written by others, and
//! "expected value at line 3" does not tell centre IT what is wrong. The classification
//! looks at serde_json's error and at the byte where it stopped; it never quotes content
//! (a FHIR file holds health data), only positions and punctuation.

use serde_json::Value;

use super::SummaryError;

/// Parses `bytes` as JSON, or says precisely what is wrong and where.
pub fn parse(bytes: &[u8]) -> Result<Value, SummaryError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SummaryError::Syntax {
        line: line_of(bytes, e.valid_up_to()),
        column: 0,
        defect: "the file is not UTF-8 text".into(),
    })?;
    serde_json::from_str(text).map_err(|e| SummaryError::Syntax {
        line: e.line(),
        column: e.column(),
        defect: defect(text, &e),
    })
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

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }
    }
}
