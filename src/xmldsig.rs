//! Enveloped XML signatures of one profile, the one the national record requires of its
//! access assertions (docs/dmp.md, "The VIHF assertion"): exclusive canonicalisation
//! without comments, SHA-256 digest, RSA PKCS#1 v1.5 with SHA-256, the certificate in
//! `KeyInfo/X509Data`. Anything else is refused on verification rather than half
//! supported. A leaf: it holds no key; the signer (a software key, a card) signs the
//! bytes [`Unsigned::to_sign`] gives and hands the signature back.
//!
//! Canonicalisation runs on roxmltree's tree (no DTD, bounded nodes), iteratively (no
//! recursion on hostile depth), and is checked against the reference implementation,
//! `xmlsec1`, in `tests/suite/dmp_vihf.rs` both ways.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use roxmltree::{Document, Node, NodeId};

/// The XML-DSig namespace.
pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// Nodes a signed message may hold; an assertion has a few hundred.
const MAX_NODES: u32 = 100_000;

/// Why a document could not be signed or its signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlDsigError {
    /// Not well-formed, a DTD, or too large.
    #[error("XML refused: {0}")]
    Xml(String),
    /// The signed element is missing, or its ID is missing or not unique.
    #[error("signed element: {0}")]
    Reference(String),
    /// The signature is not of the one supported profile.
    #[error("signature not of the supported profile: {0}")]
    Profile(String),
    /// The digest of the signed element does not match: it was altered.
    #[error("the signed element was altered (digest mismatch)")]
    DigestMismatch,
    /// The signature value does not verify with the certificate's key.
    #[error("the signature does not verify with the certificate in KeyInfo")]
    BadSignature,
    /// The certificate in KeyInfo cannot be read, or its key is not RSA.
    #[error("KeyInfo certificate: {0}")]
    Certificate(String),
}

fn parse(xml: &str) -> Result<Document<'_>, XmlDsigError> {
    crate::xml::parse(xml, MAX_NODES).map_err(|e| XmlDsigError::Xml(e.to_string()))
}

/// The exclusive canonical form (without comments, no inclusive prefixes) of the subtree
/// at `apex`, leaving out the subtree at `omit` (the enveloped signature).
pub fn exclusive_c14n(apex: Node<'_, '_>, omit: Option<NodeId>) -> Vec<u8> {
    let source = apex.document().input_text();
    let mut out = String::new();
    // Per open element: the prefixes it rendered a declaration for; per prefix, the URIs
    // the open elements rendered for it, innermost last. The element's own check reads
    // the last one, in constant time: a scan of every open level per element would be
    // quadratic in a hostile document's depth.
    let mut rendered: Vec<Vec<&str>> = Vec::new();
    let mut in_force: Rendered<'_> = HashMap::new();
    // An explicit stack rather than recursion: depth is the document's to choose.
    enum Step<'a, 'i> {
        Open(Node<'a, 'i>),
        Close(Node<'a, 'i>),
    }
    let mut stack = vec![Step::Open(apex)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Open(node) if Some(node.id()) == omit => {}
            Step::Open(node) if node.is_element() => {
                let declared = open_element(&mut out, source, node, &in_force);
                let prefixes = declared
                    .into_iter()
                    .map(|(prefix, uri)| {
                        in_force.entry(prefix).or_default().push(uri);
                        prefix
                    })
                    .collect();
                rendered.push(prefixes);
                stack.push(Step::Close(node));
                let children: Vec<_> = node.children().collect();
                stack.extend(children.into_iter().rev().map(Step::Open));
            }
            Step::Open(node) => {
                if node.is_text() {
                    escape_text(&mut out, node.text().unwrap_or_default());
                } else if let Some(pi) = node.pi() {
                    out.push_str("<?");
                    out.push_str(pi.target);
                    if let Some(value) = pi.value {
                        out.push(' ');
                        out.push_str(value);
                    }
                    out.push_str("?>");
                }
            }
            Step::Close(node) => {
                for prefix in rendered.pop().unwrap_or_default() {
                    if let Some(uris) = in_force.get_mut(prefix) {
                        uris.pop();
                    }
                }
                out.push_str("</");
                out.push_str(qname(source, node));
                out.push('>');
            }
        }
    }
    out.into_bytes()
}

/// Per prefix, the URIs the open output elements declared for it, innermost last.
type Rendered<'a> = HashMap<&'a str, Vec<&'a str>>;

/// The element's name as written (with its prefix), read from the source: roxmltree
/// keeps the resolved namespace, canonical XML needs the prefix too.
fn qname<'a>(source: &'a str, node: Node<'_, '_>) -> &'a str {
    let start = node.range().start + 1;
    let rest = source.get(start..).unwrap_or_default();
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
}

fn prefix_of(qname: &str) -> &str {
    qname.split_once(':').map_or("", |(prefix, _)| prefix)
}

/// Writes the start tag: the namespaces this element visibly uses that no output
/// ancestor rendered with the same URI, sorted by prefix, then the attributes sorted by
/// namespace URI and local name. Returns the declarations it rendered.
fn open_element<'a>(
    out: &mut String,
    source: &'a str,
    node: Node<'a, 'a>,
    rendered: &Rendered<'a>,
) -> Vec<(&'a str, &'a str)> {
    let name = qname(source, node);
    let in_scope = |prefix: &str| -> &'a str {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        node.lookup_namespace_uri(prefix).unwrap_or_default()
    };
    let mut used: Vec<(&'a str, &'a str)> = vec![(prefix_of(name), in_scope(prefix_of(name)))];
    let mut attributes = Vec::new();
    for attribute in node.attributes() {
        let attribute_qname = source.get(attribute.range_qname()).unwrap_or_default();
        let prefix = prefix_of(attribute_qname);
        // Unprefixed attributes are in no namespace; `xml:` is never declared.
        if !prefix.is_empty() && prefix != "xml" {
            used.push((prefix, in_scope(prefix)));
        }
        attributes.push((
            attribute.namespace().unwrap_or_default(),
            attribute.name(),
            attribute_qname,
            attribute.value(),
        ));
    }
    used.sort_unstable();
    used.dedup();
    let last_rendered = |prefix: &str| rendered.get(prefix).and_then(|uris| uris.last().copied());
    let mut declared = Vec::new();
    out.push('<');
    out.push_str(name);
    for (prefix, uri) in used {
        // The default namespace "in no namespace" needs saying only to undo one rendered
        // above.
        let already = last_rendered(prefix).unwrap_or_default();
        if already == uri {
            continue;
        }
        if prefix.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            let _ = write!(out, " xmlns:{prefix}=\"");
        }
        escape_attribute(out, uri);
        out.push('"');
        declared.push((prefix, uri));
    }
    attributes.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, written, value) in attributes {
        out.push(' ');
        out.push_str(written);
        out.push_str("=\"");
        escape_attribute(out, value);
        out.push('"');
    }
    out.push('>');
    declared
}

fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attribute(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The one element whose `ID` attribute is `id`: none or several is refused (several is
/// how signature-wrapping attacks begin).
fn element_by_id<'a, 'i>(doc: &'a Document<'i>, id: &str) -> Result<Node<'a, 'i>, XmlDsigError> {
    let mut found = doc
        .descendants()
        .filter(|n| n.is_element() && n.attribute("ID") == Some(id));
    let first = found
        .next()
        .ok_or_else(|| XmlDsigError::Reference(format!("no element with ID {id}")))?;
    if found.next().is_some() {
        return Err(XmlDsigError::Reference(format!(
            "several elements carry ID {id}"
        )));
    }
    Ok(first)
}

/// A document with its signature in place but no signature value yet. Its `Debug` shows
/// nothing of the document (an assertion names the patient and the professional).
#[derive(Clone)]
pub struct Unsigned {
    xml: String,
    /// Where the signature value goes in `xml`.
    value_at: usize,
    to_sign: Vec<u8>,
    certificate: Vec<u8>,
}

redacted_debug!(Unsigned);

impl Unsigned {
    /// Prepares an enveloped signature of the element whose `ID` is `id` in
    /// `before` + `after`, the signature going between them (where the element's schema
    /// wants it: after a SAML assertion's `Issuer`), with `certificate` (DER) in
    /// `KeyInfo`.
    pub fn prepare(
        before: &str,
        after: &str,
        id: &str,
        certificate: &[u8],
    ) -> Result<Self, XmlDsigError> {
        let unsigned = format!("{before}{after}");
        let digest = {
            let doc = parse(&unsigned)?;
            b64(&sha256(&exclusive_c14n(element_by_id(&doc, id)?, None)))
        };
        let head = format!(
            "<ds:Signature xmlns:ds=\"{DS}\"><ds:SignedInfo>\
             <ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/>\
             <ds:SignatureMethod Algorithm=\"{RSA_SHA256}\"/>\
             <ds:Reference URI=\"#{id}\"><ds:Transforms>\
             <ds:Transform Algorithm=\"{ENVELOPED}\"/><ds:Transform Algorithm=\"{EXC_C14N}\"/>\
             </ds:Transforms><ds:DigestMethod Algorithm=\"{SHA256}\"/>\
             <ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>\
             <ds:SignatureValue>"
        );
        let tail = format!(
            "</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}\
             </ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
            b64(certificate)
        );
        let xml = format!("{before}{head}{tail}{after}");
        let to_sign = {
            let doc = parse(&xml)?;
            let signed_info = doc
                .descendants()
                .find(|n| n.has_tag_name((DS, "SignedInfo")))
                .ok_or_else(|| XmlDsigError::Reference("SignedInfo not found".into()))?;
            exclusive_c14n(signed_info, None)
        };
        Ok(Self {
            xml,
            value_at: before.len() + head.len(),
            to_sign,
            certificate: certificate.to_vec(),
        })
    }

    /// The bytes to sign (RSA PKCS#1 v1.5, SHA-256): the canonical `SignedInfo`.
    pub fn to_sign(&self) -> &[u8] {
        &self.to_sign
    }

    /// The signed document, once `signature` verifies with the certificate: a signature
    /// made by another key (a card holding two, the wrong one chosen) never leaves.
    pub fn finish(mut self, signature: &[u8]) -> Result<String, XmlDsigError> {
        rsa_sha256_verify(&self.certificate, &self.to_sign, signature)?;
        self.xml.insert_str(self.value_at, &b64(signature));
        Ok(self.xml)
    }
}

fn rsa_sha256_verify(
    certificate: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), XmlDsigError> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|e| XmlDsigError::Certificate(e.to_string()))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(XmlDsigError::Certificate("the key is not RSA".into()));
    }
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        spki.subject_public_key.data.as_ref(),
    )
    .verify(message, signature)
    .map_err(|_| XmlDsigError::BadSignature)
}

/// What a verified signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signer's certificate (DER), from `KeyInfo`: the caller decides whether to
    /// trust it and whether it is the right key (signature, not authentication).
    pub certificate: Vec<u8>,
}

/// Verifies the enveloped signature of `doc`'s root element: see [`verify_element`].
pub fn verify_root(doc: &Document<'_>) -> Result<Verified, XmlDsigError> {
    verify_element(doc, doc.root_element())
}

/// Verifies the enveloped signature of `element` (a SAML assertion inside a SOAP header,
/// say): a `ds:Signature` child of the element, of the supported profile, whose one
/// reference is the element's `ID` (unique in the whole document). The caller then reads
/// `element`, never another element found by searching, so that what it reads is what
/// was signed.
pub fn verify_element(doc: &Document<'_>, element: Node<'_, '_>) -> Result<Verified, XmlDsigError> {
    let root = element;
    let id = root
        .attribute("ID")
        .ok_or_else(|| XmlDsigError::Reference("the signed element has no ID".into()))?;
    if element_by_id(doc, id)?.id() != root.id() {
        return Err(XmlDsigError::Reference(
            "the ID is not the signed element's".into(),
        ));
    }
    let mut signatures = root
        .children()
        .filter(|n| n.has_tag_name((DS, "Signature")));
    let signature = signatures
        .next()
        .ok_or_else(|| XmlDsigError::Profile("no ds:Signature in the signed element".into()))?;
    if signatures.next().is_some() {
        return Err(XmlDsigError::Profile(
            "several ds:Signature elements".into(),
        ));
    }
    let algorithm = |parent: Node<'_, '_>, name: &str, expected: &str| {
        let node = only(parent, name)?;
        match node.attribute("Algorithm") {
            Some(a) if a == expected && !node.has_children() => Ok(()),
            Some(a) if a == expected => {
                Err(XmlDsigError::Profile(format!("ds:{name} with parameters")))
            }
            other => Err(XmlDsigError::Profile(format!(
                "ds:{name} {} (expected {expected})",
                other.unwrap_or("without Algorithm")
            ))),
        }
    };
    let signed_info = only(signature, "SignedInfo")?;
    algorithm(signed_info, "CanonicalizationMethod", EXC_C14N)?;
    algorithm(signed_info, "SignatureMethod", RSA_SHA256)?;
    let reference = only(signed_info, "Reference")?;
    if reference.attribute("URI") != Some(&format!("#{id}")) {
        return Err(XmlDsigError::Reference(
            "the reference is not the signed element's ID".into(),
        ));
    }
    let transforms: Vec<_> = only(reference, "Transforms")?
        .children()
        .filter(Node::is_element)
        .collect();
    let expected = [ENVELOPED, EXC_C14N];
    if transforms.len() != expected.len()
        || transforms.iter().zip(expected).any(|(t, e)| {
            !t.has_tag_name((DS, "Transform"))
                || t.attribute("Algorithm") != Some(e)
                || t.has_children()
        })
    {
        return Err(XmlDsigError::Profile(
            "transforms other than enveloped-signature then exclusive c14n".into(),
        ));
    }
    algorithm(reference, "DigestMethod", SHA256)?;
    let digest = decode(only(reference, "DigestValue")?)?;
    if digest != sha256(&exclusive_c14n(root, Some(signature.id()))) {
        return Err(XmlDsigError::DigestMismatch);
    }
    let value = decode(only(signature, "SignatureValue")?)?;
    let certificate = decode(only(
        only(only(signature, "KeyInfo")?, "X509Data")?,
        "X509Certificate",
    )?)?;
    rsa_sha256_verify(&certificate, &exclusive_c14n(signed_info, None), &value)?;
    Ok(Verified { certificate })
}

/// The one `ds:{name}` child of `parent`.
fn only<'a, 'i>(parent: Node<'a, 'i>, name: &str) -> Result<Node<'a, 'i>, XmlDsigError> {
    let mut found = parent.children().filter(|n| n.has_tag_name((DS, name)));
    match (found.next(), found.next()) {
        (Some(node), None) => Ok(node),
        (None, _) => Err(XmlDsigError::Profile(format!("no ds:{name}"))),
        (Some(_), Some(_)) => Err(XmlDsigError::Profile(format!("several ds:{name}"))),
    }
}

/// An element's base64 text (line breaks and spaces allowed, as signers and MTOM-less
/// answers wrap it), or `None` when it is not base64. Text only: a comment or an element
/// inside would split it, and reading its first piece alone would truncate the value
/// (`AAAA<!--x-->BBBB` read as `AAAA`).
pub fn base64_text(node: Node<'_, '_>) -> Option<Vec<u8>> {
    if node.children().any(|c| !c.is_text()) {
        return None;
    }
    let text: String = node
        .children()
        .filter_map(|c| c.text())
        .flat_map(str::chars)
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn decode(node: Node<'_, '_>) -> Result<Vec<u8>, XmlDsigError> {
    base64_text(node).ok_or_else(|| {
        XmlDsigError::Profile(format!("ds:{} is not base64", node.tag_name().name()))
    })
}

/// Parses `xml` as a signed message: no DTD, bounded.
pub fn parse_signed(xml: &str) -> Result<Document<'_>, XmlDsigError> {
    parse(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base64 split by a comment or an element is refused, not read up to the split (a
    /// document truncated there); wrapped text and CDATA read whole.
    #[test]
    fn base64_is_read_whole_or_not_at_all() {
        let read = |xml: &str| {
            let doc = roxmltree::Document::parse(xml).unwrap();
            base64_text(doc.root_element())
        };
        assert_eq!(read("<d>QUFB\n QkJC</d>"), Some(b"AAABBB".to_vec()));
        assert_eq!(
            read("<d>QUFB<![CDATA[QkJC]]></d>"),
            Some(b"AAABBB".to_vec())
        );
        assert_eq!(read("<d>QUFB<!--x-->QkJC</d>"), None);
        assert_eq!(read("<d>QUFB<x/>QkJC</d>"), None);
        assert_eq!(read("<d>QUFB<?pi?></d>"), None);
    }

    fn c14n(xml: &str) -> String {
        let doc = parse(xml).unwrap();
        String::from_utf8(exclusive_c14n(doc.root_element(), None)).unwrap()
    }

    /// The rules of exclusive canonicalisation, one per line, on hand-written inputs.
    #[test]
    fn canonical_form_follows_the_exclusive_rules() {
        // Empty elements opened and closed; attributes sorted; quotes normalised.
        assert_eq!(
            c14n("<a b='2' a=\"1\"><e/></a>"),
            "<a a=\"1\" b=\"2\"><e></e></a>"
        );
        // Only namespaces used are rendered, once, at the first element using them.
        assert_eq!(
            c14n("<p:a xmlns:p=\"urn:p\" xmlns:q=\"urn:q\"><p:b><q:c/></p:b></p:a>"),
            "<p:a xmlns:p=\"urn:p\"><p:b><q:c xmlns:q=\"urn:q\"></q:c></p:b></p:a>"
        );
        // A prefixed attribute uses its namespace; sorted by URI then local name.
        assert_eq!(
            c14n("<a xmlns:z=\"urn:a\" xmlns:y=\"urn:b\" y:k=\"1\" z:k=\"2\" k=\"0\"/>"),
            "<a xmlns:y=\"urn:b\" xmlns:z=\"urn:a\" k=\"0\" z:k=\"2\" y:k=\"1\"></a>"
        );
        // Escaping in text and attributes; comments dropped; CDATA as text.
        assert_eq!(
            c14n("<a t=\"&lt;&amp;&quot;&#9;&#10;\">x&gt;&amp;<!-- c --><![CDATA[<y>]]></a>"),
            "<a t=\"&lt;&amp;&quot;&#x9;&#xA;\">x&gt;&amp;&lt;y&gt;</a>"
        );
        // The default namespace, undone inside.
        assert_eq!(
            c14n("<a xmlns=\"urn:d\"><b xmlns=\"\"/></a>"),
            "<a xmlns=\"urn:d\"><b xmlns=\"\"></b></a>"
        );
    }

    #[test]
    fn a_subtree_renders_the_namespaces_of_its_ancestors_it_uses() {
        let doc =
            parse("<r xmlns:ds=\"urn:ds\" xmlns:o=\"urn:o\"><ds:S o:x=\"1\"><ds:T/></ds:S></r>")
                .unwrap();
        let s = doc.root_element().first_element_child().unwrap();
        assert_eq!(
            String::from_utf8(exclusive_c14n(s, None)).unwrap(),
            "<ds:S xmlns:ds=\"urn:ds\" xmlns:o=\"urn:o\" o:x=\"1\"><ds:T></ds:T></ds:S>"
        );
    }

    /// A prefix bound again below, then left: inside, the new binding is declared; after
    /// its element closes, the outer one is in force again and is not declared twice.
    /// The same with the default namespace undone (`xmlns=""`) and restored.
    #[test]
    fn a_prefix_rebound_below_is_in_force_again_once_its_element_closes() {
        assert_eq!(
            c14n("<a xmlns:p=\"u1\"><p:b><c xmlns:p=\"u2\"><p:d/></c><p:e/></p:b></a>"),
            "<a><p:b xmlns:p=\"u1\"><c><p:d xmlns:p=\"u2\"></p:d></c><p:e></p:e></p:b></a>"
        );
        assert_eq!(
            c14n("<a xmlns=\"u1\"><b xmlns=\"\"><c/></b><d/></a>"),
            "<a xmlns=\"u1\"><b xmlns=\"\"><c></c></b><d></d></a>"
        );
    }

    #[test]
    fn ids_must_be_unique() {
        let doc = parse("<a ID=\"x\"><b ID=\"x\"/></a>").unwrap();
        assert!(matches!(
            element_by_id(&doc, "x"),
            Err(XmlDsigError::Reference(_))
        ));
    }

    #[test]
    fn deep_nesting_is_canonicalised_without_recursion() {
        let depth = 20_000;
        let xml = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert_eq!(c14n(&xml), xml);
    }
}
