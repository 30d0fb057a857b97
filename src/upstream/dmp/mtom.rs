//! MTOM/XOP answers (`multipart/related; type="application/xop+xml"`): the SOAP envelope
//! in the root part, each retrieved document in a part of its own, found by the
//! Content-ID the envelope's `xop:Include` names. Split by multer, bounded in size.

use std::collections::HashMap;

use super::DmpError;

/// An answer split into its parts.
pub struct Parts {
    /// The root part: the SOAP envelope.
    pub envelope: String,
    /// The other parts, by Content-ID (without angle brackets).
    pub attachments: HashMap<String, Vec<u8>>,
}

redacted_debug!(Parts);

/// The boundary of a `multipart/related` Content-Type, and its root part's Content-ID.
pub fn boundary(content_type: &str) -> Result<(String, Option<String>), DmpError> {
    let mime: mime::Mime = content_type
        .parse()
        .map_err(|_| DmpError::Answer("unreadable Content-Type".into()))?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != "related" {
        return Err(DmpError::Answer(format!(
            "Content-Type {}/{} where multipart/related was expected",
            super::soap::token(mime.type_().as_str()),
            super::soap::token(mime.subtype().as_str())
        )));
    }
    let boundary = mime
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| DmpError::Answer("multipart/related without a boundary".into()))?;
    let start = mime
        .get_param("start")
        .map(|s| s.as_str().trim_matches(|c| c == '<' || c == '>').to_owned());
    Ok((boundary, start))
}

/// Splits `body` at `boundary`; the root is the part `start` names, else the first.
/// At most `max_parts` parts.
pub async fn split(
    body: Vec<u8>,
    boundary: &str,
    start: Option<&str>,
    max_parts: usize,
) -> Result<Parts, DmpError> {
    let size = body.len() as u64;
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
    });
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(size));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut root = None;
    let mut root_id = None;
    let mut attachments = HashMap::new();
    let mut count = 0;
    loop {
        let field = multipart.next_field().await.map_err(multipart_error)?;
        let Some(field) = field else { break };
        count += 1;
        if count > max_parts {
            return Err(DmpError::Answer(format!(
                "multipart answer with more than {max_parts} parts"
            )));
        }
        let id = field
            .headers()
            .get("content-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches(|c| c == '<' || c == '>').to_owned());
        // A part sent base64 or quoted-printable would fail its hash check unexplained:
        // refused by name (MTOM sends binary).
        let encoding = field
            .headers()
            .get("content-transfer-encoding")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        if encoding
            .as_deref()
            .is_some_and(|e| !matches!(e, "binary" | "8bit" | "7bit"))
        {
            return Err(DmpError::Answer(
                "a multipart part is not sent as binary (Content-Transfer-Encoding)".into(),
            ));
        }
        // Taken over without a copy when multer holds the only reference.
        let bytes = Vec::from(field.bytes().await.map_err(multipart_error)?);
        let is_root = match (start, &id) {
            (Some(start), Some(id)) => start == id,
            (Some(_), None) => false,
            (None, _) => root.is_none(),
        };
        if is_root && root.is_none() {
            root = Some(bytes);
            root_id = id;
        } else if let Some(id) = id {
            // Two parts under one name (the root's too): which one a reference means is
            // the sender's secret, so neither is read.
            if root_id.as_ref() == Some(&id) || attachments.insert(id, bytes).is_some() {
                return Err(DmpError::Answer(
                    "the multipart answer names two parts alike".into(),
                ));
            }
        }
    }
    let root =
        root.ok_or_else(|| DmpError::Answer("the multipart answer has no root part".into()))?;
    let envelope = String::from_utf8(root)
        .map_err(|_| DmpError::Answer("the SOAP part is not UTF-8".into()))?;
    Ok(Parts {
        envelope,
        attachments,
    })
}

/// multer's error, without what it quotes (a header or field name is the peer's choice,
/// and the text goes to logs): its kind only.
fn multipart_error(e: multer::Error) -> DmpError {
    use multer::Error as E;
    let what = match e {
        E::UnknownField { .. } => "an unexpected part",
        E::IncompleteFieldData { .. } => "a part cut short",
        E::IncompleteHeaders => "a part's headers cut short",
        E::ReadHeaderFailed(_) | E::DecodeHeaderName { .. } | E::DecodeHeaderValue { .. } => {
            "a part's headers unreadable"
        }
        E::IncompleteStream => "the answer cut short",
        E::FieldSizeExceeded { .. } | E::StreamSizeExceeded { .. } => "a part too large",
        E::StreamReadFailed(_) => "the answer could not be read",
        E::LockFailure => "internal lock failure",
        E::NoMultipart | E::DecodeContentType(_) | E::NoBoundary => "not a multipart answer",
        _ => "malformed multipart",
    };
    DmpError::Answer(format!("multipart answer: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_root_part_and_the_documents_are_found_by_their_ids() {
        let body = "--uuid:b1\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\nContent-ID: <root@x>\r\n\r\n<e/>\r\n--uuid:b1\r\nContent-Type: text/xml\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <doc1@x>\r\n\r\n<ClinicalDocument/>\r\n--uuid:b1--\r\n";
        let (boundary, start) = boundary(
            "multipart/related; type=\"application/xop+xml\"; boundary=\"uuid:b1\"; start=\"<root@x>\"; start-info=\"application/soap+xml\"",
        )
        .unwrap();
        assert_eq!(boundary, "uuid:b1");
        let parts = split(body.as_bytes().to_vec(), &boundary, start.as_deref(), 8)
            .await
            .unwrap();
        assert_eq!(parts.envelope, "<e/>");
        assert_eq!(parts.attachments["doc1@x"], b"<ClinicalDocument/>");
        // Too many parts, no closing boundary, another type: named.
        assert!(
            split(body.as_bytes().to_vec(), &boundary, None, 1)
                .await
                .is_err()
        );
        assert!(
            split(b"--uuid:b1\r\n\r\nx".to_vec(), &boundary, None, 8)
                .await
                .is_err()
        );
        // Two parts under one Content-ID: neither is read.
        let twice = body.replace(
            "--uuid:b1--",
            "--uuid:b1\r\nContent-Type: text/xml\r\nContent-ID: <doc1@x>\r\n\r\n<Other/>\r\n--uuid:b1--",
        );
        let err = split(twice.into_bytes(), &boundary, start.as_deref(), 8)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("two parts alike"), "{err}");
        // A part in base64: refused by name, not left to fail its hash check.
        let encoded = body.replace(
            "Content-Transfer-Encoding: binary",
            "Content-Transfer-Encoding: base64",
        );
        let err = split(encoded.into_bytes(), &boundary, start.as_deref(), 8)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("Content-Transfer-Encoding"), "{err}");
        // A part named as the root: which one a reference means is as unclear.
        let twin = body.replace(
            "--uuid:b1--",
            "--uuid:b1\r\nContent-Type: text/xml\r\nContent-ID: <root@x>\r\n\r\n<Other/>\r\n--uuid:b1--",
        );
        let err = split(twin.into_bytes(), &boundary, start.as_deref(), 8)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("two parts alike"), "{err}");
        // A part cut short: its kind, never a header it quotes.
        let cut = split(
            b"--uuid:b1\r\nContent-ID: <r@x>\r\nX-Secret-185057800608491: v\r\n".to_vec(),
            &boundary,
            None,
            8,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(!cut.contains("185057800608491"), "{cut}");
        assert!(boundary_err("multipart/form-data; boundary=x").contains("multipart/related"));
        assert!(boundary_err("application/soap+xml").contains("multipart/related"));
    }

    fn boundary_err(content_type: &str) -> String {
        boundary(content_type).unwrap_err().to_string()
    }
}
