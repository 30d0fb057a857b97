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

/// The readable text of an XHTML fragment.
pub fn to_text(xhtml: &str) -> String {
    let mut out = String::new();
    let mut rest = xhtml;
    while let Some(open) = rest.find('<') {
        push_text(&mut out, &rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = &after[..close];
        rest = &after[close + 1..];
        let name = tag_name(tag);
        if DROPPED.contains(&name.as_str()) && !tag.starts_with('/') && !tag.ends_with('/') {
            rest = skip_element(rest, &name);
        } else if BLOCKS.contains(&name.as_str()) {
            out.push('\n');
        } else if (name == "td" || name == "th") && !tag.starts_with('/') {
            out.push_str(" | ");
        }
        if out.len() > MAX_CHARS * 4 {
            break;
        }
    }
    push_text(&mut out, rest);
    tidy(&out)
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

/// Skips past `</name>` (case-insensitive), or to the end.
fn skip_element<'a>(rest: &'a str, name: &str) -> &'a str {
    let lower = rest.to_ascii_lowercase();
    let end = format!("</{name}");
    match lower.find(&end) {
        Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
        None => "",
    }
}

fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match after.find(';').filter(|semi| *semi <= 10) {
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

/// One space between words, no blank lines, bounded length.
fn tidy(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let mut joined = lines.join("\n");
    if joined.chars().count() > MAX_CHARS {
        joined = joined.chars().take(MAX_CHARS).collect();
        joined.push('…');
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

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

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = to_text(&text);
        }
    }
}
