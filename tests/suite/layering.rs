//! The crate's top-level modules are layered: this test reads `src/`, builds the graph of
//! `crate::` references between top-level modules (outside `#[cfg(test)]` code), and fails
//! on a cycle, on a reference to a higher or equal layer, on a module placed in no layer,
//! and on a third-party crate used outside the one module allowed to use it.
//! ARCHITECTURE.md ("Layers") draws the same table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Leaves: helpers and vocabulary, using nothing else from the crate.
    &[
        "access_mode",
        "build",
        "clock",
        "encoding",
        "ins_oid",
        "problem",
        "secret",
        "xml",
    ],
    &[
        "random",
        "xmldsig",
        "tls",
        "limit",
        "patient",
        "summary",
        "telemetry",
        "case",
    ],
    &["audit"],
    &["card", "cache"],
    &["session", "upstream"],
    &["access", "state"],
    &["http"],
    // Development tools: the throwaway PKI, the stand-in record service, the virtual card.
    &["dev_pki", "dev_upstream"],
    &["dev_card", "dev_dmp"],
    // Assembles every module's section; nothing below reads the configuration file.
    &["config"],
    &["service", "demo"],
    &["cli"],
];

/// Third-party crates only one module may use: the compiler cannot say "only `card`
/// speaks to cards", this can. (pattern, the modules allowed separated by `|`, why)
const CONFINED: &[(&str, &str, &str)] = &[
    ("pcsc::", "card", "only card talks to cards"),
    (
        "cryptoki::",
        "card|dev_card",
        "only card talks to cards (dev_card writes the virtual card into a software token)",
    ),
    (
        "redb::",
        "audit",
        "only audit reads and writes the audit store",
    ),
    (
        "sled::",
        "cache",
        "only cache reads and writes the summary cache",
    ),
    (
        "ring::rand",
        "random",
        "one random generator, one failure policy",
    ),
    (
        "reqwest::Client",
        "upstream",
        "only upstream sends requests to the record service",
    ),
];

/// Source with comments, string and character literals blanked (same length, so positions
/// and line numbers hold).
fn blank(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to.min(bytes.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = source[i..].find('\n').map_or(bytes.len(), |n| i + n);
                wipe(&mut out, i, end);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = source[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
                wipe(&mut out, i, end);
                i = end;
            }
            b'r' if bytes.get(i + 1) == Some(&b'#') || bytes.get(i + 1) == Some(&b'"') => {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                if bytes.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let closing = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = source[start..]
                    .find(&closing)
                    .map_or(bytes.len(), |n| start + n + closing.len());
                wipe(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                wipe(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\''), not a lifetime ('a).
                let end = if bytes.get(i + 1) == Some(&b'\\') {
                    source[i + 2..].find('\'').map(|n| i + 2 + n + 1)
                } else {
                    let c = source[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (bytes.get(i + 1 + c) == Some(&b'\'')).then_some(i + 1 + c + 1)
                };
                match end {
                    Some(end) => {
                        wipe(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8: it only replaces whole literals")
}

/// `text` without the items that follow `#[cfg(test)]` (a block or a `mod x;`), and the
/// names of the modules declared as test-only that way.
fn without_tests(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut test_modules = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let brace = after.find('{');
        let semicolon = after.find(';');
        match (brace, semicolon) {
            (_, Some(semi)) if brace.is_none_or(|b| semi < b) => {
                if let Some(name) = after[..semi].trim_end().rsplit(' ').next()
                    && after[..semi].contains("mod ")
                {
                    test_modules.push(name.to_owned());
                }
                rest = &after[semi + 1..];
            }
            (Some(open), _) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, b) in after.bytes().enumerate().skip(open) {
                    match b {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    (out, test_modules)
}

/// The top-level modules `text` names through `crate::` (including `use crate::{a, b::c}`).
fn references(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        if at > 0 {
            let before = text.as_bytes()[at - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue; // `$crate::` or `some_crate::`
            }
        }
        let line = text[..at].matches('\n').count() + 1;
        let after = text[at + "crate::".len()..].trim_start();
        if let Some(list) = after.strip_prefix('{') {
            // Top-level names of a use list, skipping nested groups.
            let mut depth = 0usize;
            let mut start = true;
            for (k, c) in list.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && !c.is_whitespace() => {
                        found.push((ident(&list[k..]), line));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((ident(after), line));
        }
    }
    found
}

/// Every non-test `.rs` file under `src`, with the top-level module it belongs to.
fn sources(src: &Path) -> Vec<(String, PathBuf, String)> {
    let mut files = Vec::new();
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut stack = vec![src.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push(path);
            }
        }
    }
    all.sort();
    let mut texts = BTreeMap::new();
    for path in &all {
        let text = blank(&std::fs::read_to_string(path).expect("read"));
        let (kept, tests) = without_tests(&text);
        // `mod x;` in a/mod.rs or lib.rs is a/x.rs; in a/b.rs it is a/b/x.rs.
        let stem = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let base = if stem == "mod" || stem == "lib" || stem == "main" {
            path.parent().expect("parent").to_path_buf()
        } else {
            path.with_extension("")
        };
        for name in tests {
            test_only.insert(base.join(format!("{name}.rs")));
            test_only.insert(base.join(&name).join("mod.rs"));
        }
        texts.insert(path.clone(), kept);
    }
    for (path, text) in texts {
        if test_only.contains(&path)
            || test_only.iter().any(|t| {
                t.file_name().is_some_and(|f| f == "mod.rs")
                    && path.starts_with(t.parent().expect("parent"))
            })
        {
            continue;
        }
        let relative = path.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        files.push((module, path, text));
    }
    files
}

/// from → to → where (file:line, first one seen).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn graph(src: &Path) -> (BTreeSet<String>, Graph) {
    let files = sources(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut edges: Graph = BTreeMap::new();
    for (module, path, text) in &files {
        edges.entry(module.clone()).or_default();
        for (target, line) in references(text) {
            if target != *module && modules.contains(&target) {
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| {
                        format!(
                            "{}:{line}",
                            path.strip_prefix(src).expect("under src").display()
                        )
                    });
            }
        }
    }
    (modules, edges)
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(edges: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flat_map(|t| t.keys()) {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.index[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// Everything wrong with the tree at `src` against `layers` and `confined`.
fn problems(src: &Path, layers: &[&[&str]], confined: &[(&str, &str, &str)]) -> Vec<String> {
    let (modules, edges) = graph(src);
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut out = Vec::new();
    for module in &modules {
        if layer_of(module).is_none() {
            out.push(format!(
                "module `{module}` is in no layer: place it in LAYERS (tests/suite/layering.rs) and ARCHITECTURE.md"
            ));
        }
    }
    for component in cycles(&edges) {
        let example: Vec<String> = component
            .iter()
            .flat_map(|from| {
                edges[from]
                    .iter()
                    .filter(|(to, _)| component.contains(to))
                    .map(move |(to, at)| format!("{from} -> {to} ({at})"))
            })
            .collect();
        out.push(format!(
            "cycle between {}: {}",
            component.join(", "),
            example.join("; ")
        ));
    }
    for (from, targets) in &edges {
        for (to, at) in targets {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
                && a <= b
            {
                out.push(format!(
                    "`{from}` (layer {a}) uses `{to}` (layer {b}) at {at}: a module may use lower layers only"
                ));
            }
        }
    }
    for (module, path, text) in sources(src) {
        for (pattern, allowed, why) in confined {
            if !allowed.split('|').any(|a| a == module) && text.contains(pattern) {
                out.push(format!(
                    "{} uses `{pattern}`: {why}",
                    path.strip_prefix(src).expect("under src").display()
                ));
            }
        }
    }
    out
}

#[test]
fn top_level_modules_form_layers_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = problems(&src, LAYERS, CONFINED);
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}

/// The checker itself, on a small tree with one wrong-way reference of each kind it must
/// catch, and the code it must not mistake for references.
#[test]
fn the_checker_catches_a_wrong_way_reference_and_ignores_tests_comments_and_strings() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("high")).unwrap();
    std::fs::write(
        src.join("low.rs"),
        "//! Mentions crate::high in a comment only.\n\
         pub fn f() -> &'static str { \"crate::high::g\" }\n\
         #[cfg(test)]\nmod tests { use crate::high::g; }\n\
         #[cfg(test)]\nmod more;\n",
    )
    .unwrap();
    std::fs::create_dir_all(src.join("low")).unwrap();
    std::fs::write(src.join("low/more.rs"), "use crate::high::g;\n").unwrap();
    std::fs::write(
        src.join("high/mod.rs"),
        "use crate::{low::f, leaf::{a, b}};\npub fn g() { let _ = '{'; f(); }\n",
    )
    .unwrap();
    std::fs::write(src.join("leaf.rs"), "pub fn a() {}\npub fn b() {}\n").unwrap();
    let layers: &[&[&str]] = &[&["leaf"], &["low"], &["high"]];
    assert_eq!(problems(src, layers, &[]), Vec::<String>::new());
    let (_, edges) = graph(src);
    assert_eq!(
        edges["high"].keys().collect::<Vec<_>>(),
        ["leaf", "low"],
        "grouped imports are read"
    );

    // One wrong-way reference: a cycle, and a layer violation.
    std::fs::remove_file(src.join("low/more.rs")).unwrap();
    std::fs::write(src.join("low.rs"), "pub fn f() { crate::high::g(); }\n").unwrap();
    let found = problems(src, layers, &[("pcsc::", "high", "only high")]);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("cycle between high, low")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("`low` (layer 1) uses `high` (layer 2) at low.rs:1")),
        "{found:?}"
    );
    // A new module placed nowhere, and a confined crate used elsewhere.
    std::fs::write(
        src.join("stray.rs"),
        "fn x() { pcsc::Context::establish(); }\n",
    )
    .unwrap();
    let found = problems(src, layers, &[("pcsc::", "high", "only high")]);
    assert!(
        found
            .iter()
            .any(|p| p.contains("module `stray` is in no layer")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("stray.rs uses `pcsc::`: only high")),
        "{found:?}"
    );
}
