//! SOAP 1.2 with WS-Addressing, as the DMP speaks it: requests written with quick-xml,
//! the signed VIHF placed whole in `wsse:Security` (its signature covers only itself, so
//! the envelope around it does not disturb it), answers read with roxmltree (no DTD,
//! bounded), faults turned into a typed error whose text never echoes the peer's words
//! (docs/dmp.md, "Transport").

use std::io::Write as _;

use quick_xml::Writer;
use quick_xml::events::BytesText;
use roxmltree::{Document, Node};

use super::DmpError;

/// SOAP 1.2.
pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing 1.0.
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
/// WS-Security 1.0 extension.
pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
/// Nodes an answer may hold: a document list of a few hundred entries has tens of
/// thousands; a retrieved CDA travels as a separate MIME part or as one text node. The
/// bound keeps a hostile answer's tree under ~80 MB.
const MAX_NODES: u32 = 500_000;

/// What the header of one request says.
#[derive(Debug, Clone, Copy)]
pub struct Addressing<'a> {
    /// `wsa:Action`.
    pub action: &'a str,
    /// `wsa:To`: the service's URL.
    pub to: &'a str,
    /// `wsa:MessageID` (`urn:uuid:…`).
    pub message_id: &'a str,
}

/// A request envelope: the addressing headers, the signed assertion in `wsse:Security`,
/// and the body `body` writes.
pub fn envelope(
    addressing: Addressing<'_>,
    assertion: &str,
    body: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>,
) -> Result<String, DmpError> {
    let assertion = assertion
        .trim()
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>").map(|(_, after)| after.trim_start()))
        .unwrap_or(assertion.trim());
    let mut w = Writer::new(Vec::new());
    let written = w
        .create_element("soap:Envelope")
        .with_attribute(("xmlns:soap", SOAP))
        .with_attribute(("xmlns:wsa", WSA))
        .write_inner_content(|w| {
            w.create_element("soap:Header").write_inner_content(|w| {
                w.create_element("wsa:Action")
                    .with_attribute(("soap:mustUnderstand", "true"))
                    .write_text_content(BytesText::new(addressing.action))?;
                w.create_element("wsa:MessageID")
                    .write_text_content(BytesText::new(addressing.message_id))?;
                w.create_element("wsa:ReplyTo").write_inner_content(|w| {
                    w.create_element("wsa:Address")
                        .write_text_content(BytesText::new(ANONYMOUS))?;
                    Ok(())
                })?;
                w.create_element("wsa:To")
                    .with_attribute(("soap:mustUnderstand", "true"))
                    .write_text_content(BytesText::new(addressing.to))?;
                w.create_element("wsse:Security")
                    .with_attribute(("xmlns:wsse", WSSE))
                    .with_attribute(("soap:mustUnderstand", "true"))
                    .write_inner_content(|w| {
                        // Written as signed: re-serialising would be another document.
                        w.get_mut().write_all(assertion.as_bytes())
                    })?;
                Ok(())
            })?;
            w.create_element("soap:Body").write_inner_content(body)?;
            Ok(())
        });
    written.map_err(|e| DmpError::Request(format!("cannot write the envelope: {e}")))?;
    String::from_utf8(w.into_inner())
        .map_err(|_| DmpError::Request("the envelope is not UTF-8".into()))
}

/// Parses an answer: well-formed, no DTD, bounded (`crate::xml`).
pub fn parse(xml: &str) -> Result<Document<'_>, DmpError> {
    crate::xml::parse(xml, MAX_NODES).map_err(|e| DmpError::Answer(e.to_string()))
}

/// A SOAP fault, as the DMP sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Fault {
    /// `env:Code/env:Value` (`env:Sender`, `env:Receiver`…), local part.
    pub code: String,
    /// `env:Subcode/env:Value`s, outermost first: where the DMP puts its own codes.
    pub subcodes: Vec<String>,
    /// `env:Reason/env:Text`, as sent: for `dmp inspect`, never logged (it may name the
    /// patient).
    pub reason: String,
}

redacted_debug!(Fault);

impl Fault {
    /// The most specific code: the innermost subcode, or the code.
    pub fn most_specific(&self) -> &str {
        self.subcodes.last().unwrap_or(&self.code)
    }
}

/// The body's first element, or the fault the body holds.
pub fn body<'a, 'i>(doc: &'a Document<'i>) -> Result<Node<'a, 'i>, DmpError> {
    let root = doc.root_element();
    if !root.has_tag_name((SOAP, "Envelope")) {
        return Err(DmpError::Answer(format!(
            "the root element is {} in namespace {}, not a SOAP 1.2 Envelope",
            token(root.tag_name().name()),
            token(root.tag_name().namespace().unwrap_or("(none)"))
        )));
    }
    let body = root
        .children()
        .find(|n| n.has_tag_name((SOAP, "Body")))
        .ok_or_else(|| DmpError::Answer("the envelope has no Body".into()))?;
    let first = body
        .children()
        .find(Node::is_element)
        .ok_or_else(|| DmpError::Answer("the Body is empty".into()))?;
    if first.has_tag_name((SOAP, "Fault")) {
        return Err(DmpError::Fault(read_fault(first)));
    }
    Ok(first)
}

fn soap_child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name((SOAP, name)))
}

fn read_fault(fault: Node<'_, '_>) -> Fault {
    let child = soap_child;
    let value = |node: Node<'_, '_>| {
        child(node, "Value")
            .and_then(|v| v.text())
            .map(|t| token(local(t.trim())))
            .unwrap_or_default()
    };
    let code_node = child(fault, "Code");
    let code = code_node.map(value).unwrap_or_default();
    let mut subcodes = Vec::new();
    let mut at = code_node.and_then(|c| child(c, "Subcode"));
    // Subcodes nest; a hostile depth is cut at a sane bound.
    while let Some(sub) = at {
        if subcodes.len() == 8 {
            break;
        }
        subcodes.push(value(sub));
        at = child(sub, "Subcode");
    }
    let reason = child(fault, "Reason")
        .and_then(|r| child(r, "Text"))
        .and_then(|t| t.text())
        .map(|t| t.trim().chars().take(1_000).collect())
        .unwrap_or_default();
    Fault {
        code,
        subcodes,
        reason,
    }
}

/// The local part of a QName value (`soap:Sender` → `Sender`).
fn local(qname: &str) -> &str {
    qname.rsplit_once(':').map_or(qname, |(_, l)| l)
}

/// A peer's token, safe to log: ASCII letters, digits and `_.-:`, at most 64 characters;
/// anything else is replaced, and long digit runs masked (`encoding::peer_token`).
pub fn token(value: &str) -> String {
    crate::encoding::peer_token(value, 64, "_.-:", Some('?'))
}

/// The request an answer says it answers: its header's `wsa:RelatesTo`, if it has one.
pub fn relates_to<'a>(doc: &'a Document<'_>) -> Option<&'a str> {
    let header = soap_child(doc.root_element(), "Header")?;
    child_text(header, WSA, "RelatesTo")
}

/// To whom an answer says it is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressed {
    /// Its `wsa:RelatesTo` names the request it answers.
    ToThisRequest,
    /// A fault naming no request: a front end's fault may carry no addressing, but it may
    /// as well be another request's, crossed on the way. What it says of a patient (an
    /// opposition, a closed record) is not known to be about this one.
    ToNoRequest,
}

/// Whether an answer is the one to the request `message_id`: an answer naming another
/// request is refused, and so is one naming none unless it is a fault, which is read
/// but said to be unaddressed ([`Addressed::ToNoRequest`]).
pub fn check_relates_to(doc: &Document<'_>, message_id: &str) -> Result<Addressed, DmpError> {
    let fault = soap_child(doc.root_element(), "Body")
        .and_then(|b| b.children().find(Node::is_element))
        .is_some_and(|first| first.has_tag_name((SOAP, "Fault")));
    match relates_to(doc) {
        Some(id) if id == message_id => Ok(Addressed::ToThisRequest),
        Some(_) => Err(DmpError::Answer(
            "the answer relates to another request (wsa:RelatesTo)".into(),
        )),
        None if fault => Ok(Addressed::ToNoRequest),
        None => Err(DmpError::Answer(
            "the answer does not say which request it answers (no wsa:RelatesTo)".into(),
        )),
    }
}

/// The text of the one child `name` in namespace `ns` of `node`, trimmed.
pub fn child_text<'a>(node: Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.has_tag_name((ns, name)))
        .and_then(|n| n.text())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_carries_the_assertion_as_signed() {
        let assertion = "<?xml version=\"1.0\"?>\n<Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_1\">&amp;</Assertion>";
        let xml = envelope(
            Addressing {
                action: "urn:ihe:iti:2007:RegistryStoredQuery",
                to: "https://dmp.example/registry?a=1&b=2",
                message_id: "urn:uuid:00000000-0000-4000-8000-000000000000",
            },
            assertion,
            |w| {
                w.create_element("x").write_empty()?;
                Ok(())
            },
        )
        .unwrap();
        assert!(xml.contains("<wsse:Security xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\" soap:mustUnderstand=\"true\"><Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_1\">&amp;</Assertion></wsse:Security>"), "{xml}");
        assert!(xml.contains("<wsa:To soap:mustUnderstand=\"true\">https://dmp.example/registry?a=1&amp;b=2</wsa:To>"), "{xml}");
        let doc = parse(&xml).unwrap();
        assert_eq!(body(&doc).unwrap().tag_name().name(), "x");
    }

    #[test]
    fn a_fault_gives_its_codes_and_keeps_its_text_out_of_the_error() {
        let xml = "<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:d=\"urn:dmp\"><env:Body><env:Fault>\
            <env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>d:DMPInvalidSignature</env:Value></env:Subcode></env:Code>\
            <env:Reason><env:Text xml:lang=\"fr\">Certificat de signature invalide pour DUPONT</env:Text></env:Reason>\
            </env:Fault></env:Body></env:Envelope>";
        let doc = parse(xml).unwrap();
        let Err(DmpError::Fault(fault)) = body(&doc) else {
            panic!("a fault")
        };
        assert_eq!(fault.code, "Sender");
        assert_eq!(fault.most_specific(), "DMPInvalidSignature");
        assert!(fault.reason.contains("DUPONT"));
        let shown = DmpError::Fault(fault.clone()).to_string();
        assert!(!shown.contains("DUPONT"), "{shown}");
        assert!(!format!("{fault:?}").contains("DUPONT"));
    }

    /// A fault naming no request is read, and said to be unaddressed (it was read as this
    /// request's, and its "patient opposed" as a fact about this patient); one naming
    /// this request is addressed; a success naming none, or an answer naming another
    /// request, is refused.
    #[test]
    fn an_answer_says_whether_it_is_addressed_to_this_request() {
        let answer = |header: &str, body: &str| {
            format!(
                "<env:Envelope xmlns:env=\"{SOAP}\" xmlns:wsa=\"{WSA}\"><env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>"
            )
        };
        let fault = "<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>DMPClosed</env:Value></env:Subcode></env:Code></env:Fault>";
        let ours = "<wsa:RelatesTo>urn:uuid:1</wsa:RelatesTo>";
        let theirs = "<wsa:RelatesTo>urn:uuid:2</wsa:RelatesTo>";
        let check = |xml: String| check_relates_to(&parse(&xml).unwrap(), "urn:uuid:1");
        assert_eq!(check(answer(ours, fault)), Ok(Addressed::ToThisRequest));
        assert_eq!(check(answer("", fault)), Ok(Addressed::ToNoRequest));
        assert_eq!(check(answer(ours, "<x/>")), Ok(Addressed::ToThisRequest));
        assert!(check(answer("", "<x/>")).is_err());
        assert!(check(answer(theirs, fault)).is_err());
    }

    #[test]
    fn what_is_not_a_soap_answer_is_named() {
        for (xml, said) in [
            ("<html><body>502</body></html>", "not a SOAP 1.2 Envelope"),
            (
                "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"/>",
                "not a SOAP 1.2 Envelope",
            ),
            (
                "<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"/>",
                "no Body",
            ),
            (
                "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>",
                "not well-formed XML",
            ),
        ] {
            let shown = match parse(xml) {
                Ok(doc) => body(&doc).unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(shown.contains(said), "{shown}");
        }
    }
}
