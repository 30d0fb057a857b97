//! Checks of DICOM audit messages against both editions the gateway promises (docs/audit.md,
//! "DICOM editions"): DICOM 2017c, and the current edition (2024 and later).
//!
//! The schemas are third-party files, read from `../shared/fixtures/audit/` and never copied
//! here. When the current edition's schema (`dicom20NN*.xsd`, NN ≥ 24) is not there, the
//! current edition is checked with the one rule it adds to 2017c's content model (CP-2399:
//! a participant object's name or query is required), in two independent ways: 2017c's
//! schema with that relaxation removed, built in a temp dir, and an XPath count that needs
//! no schema at all. Either way the result names which check ran.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/audit")
}

/// What 2017c allows and the current edition does not: an optional name-or-query choice.
const RELAXED_CHOICE: &str = "<xs:choice minOccurs=\"0\">";

/// One schema to validate against, and what it stands for.
pub(crate) struct Schema {
    pub edition: String,
    pub path: PathBuf,
}

/// The schemas found beside the repository (2017c, and the current edition's, taken as is or
/// derived from 2017c), in a temp dir that lives as long as the returned guard. Empty, with a
/// loud message, when `../shared/fixtures/audit` is absent.
pub(crate) fn schemas() -> (Vec<Schema>, tempfile::TempDir) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = fixtures();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        super::skipped(&format!(
            "DICOM schemas: {} is absent; DICOM messages were checked with the XPath rule only, \
             not with the published schemas",
            dir.display()
        ));
        return (found, scratch);
    };
    let mut current = None;
    let mut old = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(edition) = name
            .strip_prefix("dicom")
            .and_then(|rest| rest.strip_suffix(".xsd"))
        else {
            continue;
        };
        let year: u32 = edition.get(..4).and_then(|y| y.parse().ok()).unwrap_or(0);
        if year >= 2024 {
            current = Some(Schema {
                edition: edition.to_owned(),
                path: entry.path(),
            });
        } else if edition == "2017c" {
            old = Some(Schema {
                edition: edition.to_owned(),
                path: entry.path(),
            });
        }
    }
    let Some(old) = old else {
        super::skipped(&format!(
            "DICOM schemas: no dicom2017c.xsd in {}; the 2017c schema check did not run",
            dir.display()
        ));
        return (found, scratch);
    };
    let current = current.unwrap_or_else(|| {
        super::skipped(&format!(
            "DICOM current edition: no dicom2024*.xsd in {}; checked with 2017c's schema minus \
             the CP-2399 relaxation instead of the published one",
            dir.display()
        ));
        let text = std::fs::read_to_string(&old.path).expect("read 2017c schema");
        assert_eq!(
            text.matches(RELAXED_CHOICE).count(),
            1,
            "2017c's schema no longer has the one relaxation this harness removes"
        );
        let path = scratch.path().join("dicom-current-derived.xsd");
        std::fs::write(&path, text.replace(RELAXED_CHOICE, "<xs:choice>")).expect("write");
        Schema {
            edition: "current (derived from 2017c)".into(),
            path,
        }
    });
    found.push(old);
    found.push(current);
    (found, scratch)
}

/// Validates `files` against `schema` with xmllint; the report on failure.
pub(crate) fn validate(schema: &Schema, files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema.path)
        .args(files)
        .output()
        .expect("xmllint (apt-get install libxml2-utils)");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || report.matches(" validates").count() != files.len() {
        return Err(format!("DICOM {}: {report}", schema.edition));
    }
    Ok(())
}

/// Participant objects in `messages` that break the current edition's rule: right after the
/// ID type code, exactly one name or query. Counted by XPath, with no schema.
pub(crate) fn participant_objects_without_name_or_query(
    messages: &[&str],
    scratch: &Path,
) -> usize {
    let path = scratch.join("all-messages.xml");
    let mut document = String::from("<messages>");
    for message in messages {
        document.push_str(message);
    }
    document.push_str("</messages>");
    std::fs::write(&path, document).expect("write");
    let out = Command::new("xmllint")
        .arg("--xpath")
        .arg(
            "count(//ParticipantObjectIdentification[\
               not(*[2][self::ParticipantObjectName or self::ParticipantObjectQuery]) \
               or count(ParticipantObjectName | ParticipantObjectQuery) != 1])",
        )
        .arg(&path)
        .output()
        .expect("xmllint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}
