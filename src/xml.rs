//! Parsing XML from peers that may be hostile (the record service's SOAP answers, CDA
//! documents, signed messages): roxmltree with DTDs refused and a node limit, after one
//! linear pass that bounds what roxmltree handles in more than linear time.
//!
//! roxmltree checks each attribute of an element against the element's earlier ones, and
//! gives every element that declares a namespace a copy of all the namespaces in scope,
//! each checked against its own declarations. Neither is a node, so `nodes_limit` does
//! not bound them: one element with a hundred thousand attributes (under a megabyte) costs
//! billions of comparisons, and thousands of declarations in scope copied into thousands of
//! elements cost gigabytes. No real document comes near the bounds below
//! (docs/dmp.md, "Hostile answers").

use quick_xml::events::Event;
use roxmltree::{Document, ParsingOptions};

/// Attributes of one element, namespace declarations apart. The richest CDA elements
/// carry about ten (`code`, `codeSystem`, `displayName`, `xsi:type`…).
pub const MAX_ATTRIBUTES: usize = 64;
/// Namespace declarations on one element.
pub const MAX_ELEMENT_NAMESPACES: usize = 32;
/// Namespace declarations in scope at any element (its own and its ancestors').
pub const MAX_NAMESPACES_IN_SCOPE: usize = 128;
/// Namespace declarations in a whole document: SOAP stacks that declare them again on
/// every entry of a long list stay far below.
pub const MAX_NAMESPACES: usize = 4096;

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed, a DTD, or more nodes than allowed (roxmltree's or quick-xml's
    /// words: positions and names, never text content).
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    /// Past one of the bounds above.
    #[error("XML refused at byte {at}: {what}")]
    TooComplex {
        /// Where the offending element starts.
        at: u64,
        /// Which bound.
        what: &'static str,
    },
}

/// Parses `text`: well-formed, no DTD, at most `nodes_limit` nodes, within the bounds
/// above.
pub fn parse(text: &str, nodes_limit: u32) -> Result<Document<'_>, XmlError> {
    // Attributes are not nodes, and each costs roxmltree more memory than its text: a
    // flat document of many-attribute elements is bounded by the same number.
    check_bounds(text, usize::try_from(nodes_limit).unwrap_or(usize::MAX))?;
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).map_err(|e| XmlError::Malformed(tree_error(&e)))
}

/// Texts from this size on take a turn ([`turn`]).
const LARGE_TEXT_BYTES: usize = 1 << 20;
/// Large texts parsed (and their trees held) at once.
const LARGE_AT_ONCE: usize = 2;

/// Large texts being parsed or read now, and the wait for a turn.
static LARGE: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

thread_local! {
    /// Whether this thread holds a turn: a reading that parses a second text within the
    /// first (a document inside an answer) goes on without waiting for itself.
    static HOLDS_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A turn to parse a large text and read its tree, given back when dropped, on the thread
/// that took it (its flag is that thread's: not `Send`).
pub struct Turn(bool, std::marker::PhantomData<*const ()>);

impl Drop for Turn {
    fn drop(&mut self) {
        if self.0 {
            HOLDS_TURN.with(|held| held.set(false));
            let (count, freed) = &LARGE;
            let mut count = count
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *count = count.saturating_sub(1);
            freed.notify_one();
        }
    }
}

/// Waits for a turn before parsing a text of `len` bytes, when it is large: a tree costs
/// 70 to 80 bytes per node or attribute, so a hostile 16 MiB document's can reach about
/// 80 MB, and several desks at once must not take the service past its memory limit. A
/// small text, or a thread that already holds a turn, goes on at once. Call it on a
/// blocking thread (it waits), and keep the turn while the tree lives.
pub fn turn(len: usize) -> Turn {
    if len < LARGE_TEXT_BYTES || HOLDS_TURN.with(std::cell::Cell::get) {
        return Turn(false, std::marker::PhantomData);
    }
    let (count, freed) = &LARGE;
    let mut count = count
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while *count >= LARGE_AT_ONCE {
        count = freed
            .wait(count)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    *count += 1;
    HOLDS_TURN.with(|held| held.set(true));
    Turn(true, std::marker::PhantomData)
}

/// roxmltree's error, without the names it quotes: a document's element, prefix and
/// entity names are its author's choice, and the text goes to logs.
fn tree_error(e: &roxmltree::Error) -> String {
    use roxmltree::Error as E;
    let what = match e {
        E::DuplicatedNamespace(..) => "a namespace prefix declared twice",
        E::UnknownNamespace(..) => "an undeclared namespace prefix",
        E::UnexpectedCloseTag(..) => "a closing tag that does not match its opening tag",
        E::UnknownEntityReference(..) => "an unknown entity reference",
        E::DuplicatedAttribute(..) => "a duplicated attribute",
        E::EntityResolver(..) => "an entity that cannot be resolved",
        // The others carry a position or a fixed text only.
        other => return other.to_string(),
    };
    format!("{what} at {}", e.pos())
}

/// quick-xml's error, without the names it quotes (as [`tree_error`]).
fn reader_error(e: &quick_xml::Error) -> String {
    use quick_xml::Error as E;
    match e {
        // Unit variants: what was left unclosed.
        E::Syntax(syntax) => syntax.to_string(),
        E::IllFormed(_) => "ill-formed: tags that do not match, or a bad declaration".into(),
        E::InvalidAttr(_) => "a malformed attribute".into(),
        E::Encoding(_) => "text not valid in its encoding".into(),
        E::Escape(_) => "a malformed character or entity reference".into(),
        E::Namespace(_) => "a malformed namespace declaration".into(),
        E::Io(_) => "unreadable".into(),
    }
}

/// The linear pass: counts attributes and namespace declarations per element, in scope
/// and in all. quick-xml reads attributes without its own duplicate check, which is
/// itself quadratic; roxmltree makes that check afterwards, within the bounds.
fn check_bounds(text: &str, attributes_limit: usize) -> Result<(), XmlError> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut all_attributes = 0usize;
    // Declarations per open element, to know how many are in scope.
    let mut open: Vec<usize> = Vec::new();
    let (mut in_scope, mut total) = (0usize, 0usize);
    loop {
        let at = reader.buffer_position();
        let too_complex = |what| XmlError::TooComplex { at, what };
        let event = reader.read_event().map_err(|e| {
            XmlError::Malformed(format!(
                "at byte {}: {}",
                reader.error_position(),
                reader_error(&e)
            ))
        })?;
        let (element, is_empty) = match event {
            Event::Start(element) => (element, false),
            Event::Empty(element) => (element, true),
            Event::End(_) => {
                in_scope = in_scope.saturating_sub(open.pop().unwrap_or(0));
                continue;
            }
            Event::DocType(_) => return Err(XmlError::Malformed("a DTD is not allowed".into())),
            Event::Eof => return Ok(()),
            _ => continue,
        };
        let (mut attributes, mut declared) = (0usize, 0usize);
        for attribute in element.attributes().with_checks(false) {
            let attribute = attribute.map_err(|_| {
                XmlError::Malformed(format!(
                    "at byte {}: a malformed attribute",
                    reader.buffer_position()
                ))
            })?;
            let key = attribute.key.as_ref();
            if key == "xmlns" || key.starts_with("xmlns:") {
                declared += 1;
                if declared > MAX_ELEMENT_NAMESPACES {
                    return Err(too_complex(
                        "too many namespace declarations on one element",
                    ));
                }
            } else {
                attributes += 1;
                if attributes > MAX_ATTRIBUTES {
                    return Err(too_complex("too many attributes on one element"));
                }
                all_attributes += 1;
                if all_attributes > attributes_limit {
                    return Err(too_complex("too many attributes"));
                }
            }
        }
        total += declared;
        if total > MAX_NAMESPACES {
            return Err(too_complex("too many namespace declarations"));
        }
        if in_scope + declared > MAX_NAMESPACES_IN_SCOPE {
            return Err(too_complex("too many namespace declarations in scope"));
        }
        if !is_empty {
            in_scope += declared;
            open.push(declared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element_with(attributes: usize, prefix: &str) -> String {
        let list: String = (0..attributes)
            .map(|i| format!(" {prefix}a{i}=\"u{i}\""))
            .collect();
        format!("<r{list}/>")
    }

    #[test]
    fn real_shapes_parse() {
        let doc = parse(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"urn:s\" xmlns=\"urn:d\"><s:Body a=\"1\"><x xmlns:y=\"urn:y\"><y:z b='2'/></x><!-- c --><![CDATA[<t>]]></s:Body></s:Envelope>",
            1000,
        )
        .unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "Envelope");
        // At the bounds exactly.
        parse(&element_with(MAX_ATTRIBUTES, ""), 1000).unwrap();
        parse(&element_with(MAX_ELEMENT_NAMESPACES, "xmlns:"), 1000).unwrap();
    }

    #[test]
    fn each_bound_is_named_past_it() {
        let refused = |text: &str| parse(text, 1_000_000).unwrap_err().to_string();
        let many = refused(&element_with(MAX_ATTRIBUTES + 1, ""));
        assert!(
            many.contains("too many attributes on one element"),
            "{many}"
        );
        let declared = refused(&element_with(MAX_ELEMENT_NAMESPACES + 1, "xmlns:"));
        assert!(declared.contains("on one element"), "{declared}");
        // Nested declarations, each element within its own bound.
        let depth = MAX_NAMESPACES_IN_SCOPE / 8 + 1;
        let open: String = (0..depth)
            .map(|d| {
                let ns: String = (0..8).map(|i| format!(" xmlns:p{d}x{i}=\"u\"")).collect();
                format!("<e{ns}>")
            })
            .collect();
        let close: String = (0..depth).map(|_| "</e>").collect();
        let scope = refused(&format!("{open}{close}"));
        assert!(scope.contains("in scope"), "{scope}");
        // Siblings release their declarations: the same count in sequence is fine.
        let siblings: String = (0..depth)
            .map(|d| {
                let ns: String = (0..8).map(|i| format!(" xmlns:p{d}x{i}=\"u\"")).collect();
                format!("<e{ns}></e>")
            })
            .collect();
        parse(&format!("<r>{siblings}</r>"), 1_000_000).unwrap();
        // The attack on roxmltree's copies: many elements each declaring one namespace.
        let children: String = (0..MAX_NAMESPACES + 1)
            .map(|_| "<b xmlns:z=\"u\"/>")
            .collect();
        let all = refused(&format!("<r>{children}</r>"));
        assert!(all.ends_with(": too many namespace declarations"), "{all}");
        // Attributes in all, bounded like the nodes: many elements of many attributes
        // each (each element within its own bound).
        let flat: String = (0..20).map(|_| element_with(10, "")).collect();
        let flat = format!("<r>{}</r>", flat.replace("<r", "<e"));
        parse(&flat, 200).unwrap();
        let attributes = parse(&flat, 199).unwrap_err().to_string();
        assert!(
            attributes.ends_with(": too many attributes"),
            "{attributes}"
        );
        // A DTD, and text that is not XML.
        assert!(refused("<!DOCTYPE r [<!ENTITY e \"x\">]><r>&e;</r>").contains("DTD"));
        assert!(matches!(
            parse("<r><a></r>", 100),
            Err(XmlError::Malformed(_))
        ));
    }

    /// The names a document chose never reach an error text: they could be a patient's
    /// name or INS.
    #[test]
    fn errors_never_quote_the_documents_names() {
        let name = "Dupont269054958815780";
        for text in [
            format!("<r><{name}></r>"),
            format!("<r></{name}>"),
            format!("<r><a {name}=\"1\" {name}=\"2\"/></r>"),
            format!("<r><x:{name}/></r>"),
            format!("<r>&{name};</r>"),
            format!("<r xmlns:{name}=\"u\" xmlns:{name}=\"v\"/>"),
            format!("<r><a></{name}></r>"),
        ] {
            let Err(XmlError::Malformed(why)) = parse(&text, 100) else {
                panic!("accepted: {text}");
            };
            assert!(!why.contains("Dupont") && !why.contains("2690549"), "{why}");
        }
    }

    /// A hundred thousand attributes (about a megabyte: five billion comparisons in
    /// roxmltree) are refused at the 65th, whatever follows.
    #[test]
    fn the_quadratic_inputs_are_refused_early() {
        let text = element_with(100_000, "");
        assert!(matches!(
            parse(&text, 4_000_000),
            Err(XmlError::TooComplex { at: 0, .. })
        ));
        let declarations = element_with(100_000, "xmlns:");
        assert!(parse(&declarations, 4_000_000).is_err());
    }

    /// Two large texts are parsed at once, a third waits for a turn to be given back;
    /// small texts, and a thread already holding a turn, never wait.
    #[test]
    fn large_texts_take_turns() {
        let first = turn(LARGE_TEXT_BYTES);
        // The same thread again (a document read within an answer): at once.
        let nested = turn(LARGE_TEXT_BYTES);
        assert!(!nested.0);
        // Another thread takes the second turn and keeps it until told.
        let (took, taken) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let second = std::thread::spawn(move || {
            let turn = turn(LARGE_TEXT_BYTES);
            took.send(turn.0).unwrap();
            let _ = released.recv();
        });
        assert!(taken.recv().unwrap());
        let (got, waiting) = std::sync::mpsc::channel();
        let third = std::thread::spawn(move || {
            let turn = turn(LARGE_TEXT_BYTES);
            got.send(()).unwrap();
            drop(turn);
        });
        // A small text goes on meanwhile.
        assert!(!turn(LARGE_TEXT_BYTES - 1).0);
        assert!(
            waiting
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(nested);
        drop(first);
        waiting
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a turn given back is taken");
        third.join().unwrap();
        release.send(()).unwrap();
        second.join().unwrap();
    }
}
