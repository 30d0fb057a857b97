//! Narrative XHTML → plain text. The summary never passes markup on: a section's `text.div`
//! is written by others and may hold `<script>`, styles, entities or broken tags, so it is
//! reduced to text (script and style content dropped, entities decoded, blocks on their own
//! lines), bounded in size, and every consumer displays it as text.

/// Longest narrative kept per section, in characters.
const MAX_CHARS: usize = 20_000;

/// Elements whose content is never text for a reader.
const DROPPED: &[&str] = &["script", "style", "head", "title", "iframe", "object"];
/// Elements that start a new line.
const BLOCKS: &[&str] = &[
    "p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
];

/// A narrative reduced to text.
#[derive(Clone, PartialEq, Eq)]
pub struct Narrative {
    /// The readable text.
    pub text: String,
    /// The markup held a declaration (`<!DOCTYPE`, `<!ENTITY`…): never legal in a FHIR
    /// narrative, ignored here (no entity is ever expanded), counted as a defect.
    pub declaration: bool,
    /// The text was longer than the bound: what is kept ends with `…`, and the rest,
    /// which may be the allergy line, is not shown (`docs/summary.md`, §5).
    pub cut: bool,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(Narrative);

/// The readable text of an XHTML fragment.
pub fn to_text(xhtml: &str) -> String {
    read(xhtml).text
}

/// The readable text of an XHTML fragment, and whether it held a declaration.
///
/// One pass, no backtracking: every construct is skipped by searching forward from where
/// it starts, so the cost stays linear in the input whatever its nesting (`docs/summary.md`).
pub fn read(xhtml: &str) -> Narrative {
    let mut out = String::new();
    let mut declaration = false;
    let mut cut = false;
    let mut rest = xhtml;
    while let Some(open) = rest.find('<') {
        push_text(&mut out, &rest[..open]);
        let markup = &rest[open..];
        rest = if let Some(comment) = markup.strip_prefix("<!--") {
            after(comment, "-->")
        } else if let Some(cdata) = markup.strip_prefix("<![CDATA[") {
            let end = cdata.find("]]>").unwrap_or(cdata.len());
            out.push_str(&cdata[..end]);
            after(&cdata[end..], "]]>")
        } else if let Some(body) = markup.strip_prefix("<!") {
            declaration = true;
            skip_declaration(body)
        } else if let Some(instruction) = markup.strip_prefix("<?") {
            after(instruction, "?>")
        } else {
            let Some((tag, remaining)) = split_tag(&markup[1..]) else {
                rest = "";
                break;
            };
            let name = tag_name(tag);
            let closing = tag.starts_with('/');
            if DROPPED.contains(&name.as_str()) && !closing && !tag.ends_with('/') {
                skip_element(remaining, &name)
            } else {
                if BLOCKS.contains(&name.as_str()) {
                    out.push('\n');
                } else if (name == "td" || name == "th") && !closing {
                    out.push_str(" | ");
                }
                remaining
            }
        };
        if out.len() > MAX_CHARS * 4 {
            cut = holds_text(rest);
            rest = "";
            break;
        }
    }
    push_text(&mut out, rest);
    let (mut text, bounded) = bound(tidy(&out));
    // Stopped before its end (a long or padded text: what came after may be the allergy
    // line): said, never shown as the whole text.
    if cut && !text.ends_with('…') {
        text.push('…');
    }
    Narrative {
        text,
        declaration,
        cut: cut || bounded,
    }
}

/// `text` within the bound, and whether it had to be cut: then it ends with `…`.
pub fn bound(mut text: String) -> (String, bool) {
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => {
            text.truncate(at);
            text.push('…');
            (text, true)
        }
        None => (text, false),
    }
}

/// Whether any text is left in `rest` outside its tags (closing tags alone lose nothing).
/// Text inside a dropped element counts: erring on the side of saying a text was cut.
fn holds_text(rest: &str) -> bool {
    let mut in_tag = false;
    rest.chars().any(|c| match c {
        '<' => {
            in_tag = true;
            false
        }
        '>' => {
            in_tag = false;
            false
        }
        c => !in_tag && !c.is_whitespace(),
    })
}

/// Whether `text` holds something that looks like markup (`<b`, `</`, `<!`, `<?`): a human
/// name or a code should never.
pub fn has_markup(text: &str) -> bool {
    text.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'/' | b'!' | b'?')))
}

/// Whether an XHTML fragment holds a declaration (`<!DOCTYPE`, `<!ENTITY`…), without
/// reducing it to text.
pub fn has_declaration(xhtml: &str) -> bool {
    xhtml.match_indices("<!").any(|(at, _)| {
        let rest = &xhtml[at + 2..];
        !rest.starts_with("--") && !rest.starts_with("[CDATA[")
    })
}

/// What follows the first `end` in `text`, or nothing when it never comes.
fn after<'a>(text: &'a str, end: &str) -> &'a str {
    text.find(end).map_or("", |at| &text[at + end.len()..])
}

/// The tag's inside and what follows its `>`; a `>` inside a quoted attribute value does
/// not end the tag (unless the quotes never close: then the first `>` does).
fn split_tag(text: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    for (at, byte) in text.bytes().enumerate() {
        match (quote, byte) {
            (None, b'>') => return Some((&text[..at], &text[at + 1..])),
            (None, b'"' | b'\'') => quote = Some(byte),
            (Some(q), b) if q == b => quote = None,
            _ => {}
        }
    }
    let gt = text.find('>')?;
    Some((&text[..gt], &text[gt + 1..]))
}

/// Past a declaration's end, its internal subset (`[ … ]`) included.
fn skip_declaration(body: &str) -> &str {
    match body.find(['[', '>']) {
        Some(at) if body.as_bytes()[at] == b'[' => {
            let subset = &body[at..];
            match subset.find(']') {
                Some(close) => after(&subset[close..], ">"),
                None => "",
            }
        }
        Some(at) => &body[at + 1..],
        None => "",
    }
}

fn tag_name(tag: &str) -> String {
    tag.trim_start_matches('/')
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap_or("")
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Skips past `</name>` (case-insensitive), or to the end. Each `</` is looked at once.
fn skip_element<'a>(rest: &'a str, name: &str) -> &'a str {
    let bytes = rest.as_bytes();
    let mut from = 0;
    while let Some(found) = rest[from..].find("</") {
        let at = from + found + 2;
        let candidate = bytes.get(at..at + name.len());
        let next = bytes.get(at + name.len()).copied();
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes()))
            && next.is_none_or(|b| b == b'>' || b == b'/' || b.is_ascii_whitespace())
        {
            return after(&rest[at..], ">");
        }
        from = at;
    }
    ""
}

fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        // An entity name is short: looking further for its ';' would make a text of many
        // '&' quadratic.
        match after.bytes().take(11).position(|b| b == b';') {
            Some(semi) => {
                match entity(&after[..semi]) {
                    Some(c) => out.push(c),
                    None => out.push('\u{FFFD}'),
                }
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

fn entity(name: &str) -> Option<char> {
    let number = |digits: &str, radix| u32::from_str_radix(digits, radix).ok();
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                number(hex, 16)
            } else {
                number(name.strip_prefix('#')?, 10)
            }?;
            char::from_u32(code).filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        }
    }
}

/// One space between words, no blank lines.
fn tidy(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text padded past the reading bound (empty cells, here) stops there, and says so:
    /// what came after may be the allergy line. Before, it ended silently (here, empty).
    #[test]
    fn a_text_cut_short_says_so() {
        let padded = format!(
            "<div>{}<p>Allergie pénicilline</p></div>",
            "<tr><td></td></tr>".repeat(27_000)
        );
        let cut = read(&padded);
        assert!(
            cut.cut && cut.text.ends_with('…'),
            "{:?}",
            &cut.text[..cut.text.len().min(80)]
        );
        let whole = read("<div><p>Allergie pénicilline</p></div>");
        assert_eq!(whole.text, "Allergie pénicilline");
        assert!(!whole.cut);
        // Padding followed only by closing tags loses nothing: not said to be cut.
        let closed = read(&format!(
            "<div><p>Allergie pénicilline</p>{}</div>\n</body>",
            "<tr><td></td></tr>".repeat(27_000)
        ));
        assert!(
            !closed.cut,
            "{:?}",
            &closed.text[..closed.text.len().min(80)]
        );
    }

    /// A text longer than the bound keeps its first characters, ends with `…` and says it
    /// was cut; one exactly at the bound is whole.
    #[test]
    fn a_long_text_is_cut_at_the_bound_on_a_character() {
        let at_bound = "é".repeat(MAX_CHARS);
        assert_eq!(bound(at_bound.clone()), (at_bound.clone(), false));
        let (text, cut) = bound(format!("{at_bound}Allergie"));
        assert!(cut);
        assert_eq!(text, format!("{at_bound}…"));
        let long = read(&format!(
            "<p>{}</p><p>Allergie pénicilline</p>",
            "mot ".repeat(6_000)
        ));
        assert!(long.cut && long.text.ends_with('…') && !long.text.contains("Allergie"));
        assert_eq!(long.text.chars().count(), MAX_CHARS + 1);
    }

    #[test]
    fn markup_scripts_and_entities_become_plain_text() {
        let html = r#"<div xmlns="http://www.w3.org/1999/xhtml"><h3>Allergies</h3><script>alert('x')</script><SCRIPT type="x">evil()</SCRIPT><table><tr><td>Penicillin</td><td>high &amp; confirmed</td></tr></table><p onclick="x()">&lt;b&gt; &#233;t&#xE9; &bogus; a &amp b</p><style>p{}</style></div>"#;
        let text = to_text(html);
        assert_eq!(
            text,
            "Allergies\nPenicillin | high & confirmed\n<b> été \u{FFFD} a &amp b"
        );
        assert!(!text.contains("alert") && !text.contains("evil"));
    }

    #[test]
    fn broken_markup_never_panics_and_stays_bounded() {
        for html in [
            "<",
            "<div",
            "&",
            "&#xFFFFFFFF;",
            "<script>never closed",
            "a<b>c</",
            "é<é>é&é;",
        ] {
            let _ = to_text(html);
        }
        let long = "<p>word </p>".repeat(10_000);
        assert!(to_text(&long).chars().count() <= MAX_CHARS + 1);
    }

    #[test]
    fn comments_declarations_cdata_and_quoted_brackets() {
        let html = r#"<div><!-- a > b -->A<?pi x > y?><p title="x>y">B</p><![CDATA[<C>]]><!DOCTYPE d [<!ENTITY e "<script>">]>D</div>"#;
        let read = read(html);
        assert_eq!(read.text, "A\nB\n<C>D");
        assert!(read.declaration);
        assert!(!super::read("<div>plain &amp; simple</div>").declaration);
        assert_eq!(to_text("<div><!ENTITY x 'y'>after</div>"), "after");
    }

    #[test]
    fn dropped_elements_close_only_on_their_own_end_tag() {
        assert_eq!(
            to_text("<script>a</scriptx></b></SCRIPT >kept<style/>also"),
            "keptalso"
        );
        assert_eq!(to_text("<script>never closed</p>"), "");
    }

    #[test]
    fn markup_in_plain_text_is_recognised() {
        assert!(has_markup("DUPONT <b>Jean</b>"));
        assert!(has_markup("x</"));
        assert!(!has_markup("a < b and 3<4"));
        assert!(!has_markup("Élodie"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = to_text(&text);
        }

        #[test]
        fn markup_soup_never_panics(parts in proptest::collection::vec(proptest::sample::select(vec![
            "<", ">", "</", "<!--", "-->", "<![CDATA[", "]]>", "<!DOCTYPE", "[", "]", "<?", "?>",
            "<script", "</script", "<STYLE", "</style", "&", ";", "&#x", "é", "\u{0301}", "\"", "'", "/", " ",
        ]), 0..60)) {
            let _ = read(&parts.concat());
        }
    }
}
