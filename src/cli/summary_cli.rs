//! `samu-gateway summary show FILE [--json]`: the critical summary the gateway would extract
//! from a bundle file, or the precise reason it refuses the file (exit 1). For centre IT
//! checking upstream data, and for the tests. The summary goes to stdout (it is the point
//! of the command); nothing of it is logged.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::{EXIT_RUNTIME, Failure};
use crate::summary::{self, CriticalSummary, Section, SectionStatus};

#[derive(Debug, Subcommand)]
pub(super) enum SummaryCommand {
    /// Print the critical summary of a document file ("-" reads stdin): an IPS bundle
    /// (FHIR R4 JSON) or a CDA R2 document (XML), told apart by their content.
    Show {
        /// The document (FHIR R4 JSON or CDA R2 XML).
        file: PathBuf,
        /// Print the summary as the API returns it (JSON).
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(command: SummaryCommand) -> Result<ExitCode, Failure> {
    let SummaryCommand::Show { file, json } = command;
    let bytes = read(&file)?;
    match summary::extract(&bytes) {
        Ok(found) if json => {
            let text = serde_json::to_string_pretty(&found.without_content())
                .context("cannot encode the summary")?;
            out!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(found) => {
            out_raw!("{}", human(&found));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {}: {e}", file.display());
            Ok(ExitCode::from(EXIT_RUNTIME))
        }
    }
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let limit = summary::MAX_BUNDLE_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(bytes)
}

/// The summary as a physician would scan it: allergies first.
fn human(s: &CriticalSummary) -> String {
    let mut out = String::new();
    let doc = &s.document;
    out.push_str(&format!(
        "document: {} ({} {}{}), date {}, by {}{}\n",
        doc.title.as_deref().unwrap_or("untitled"),
        doc.format,
        doc.template.as_deref().unwrap_or("unrecognised"),
        if doc.bundle_type == "cda-unstructured" {
            ", unstructured"
        } else {
            ""
        },
        doc.date.as_deref().unwrap_or("unknown"),
        if doc.authors.is_empty() {
            "unknown".to_owned()
        } else {
            doc.authors.join(", ")
        },
        doc.custodian
            .as_deref()
            .map(|c| format!(", kept by {c}"))
            .unwrap_or_default(),
    ));
    section(&mut out, "ALLERGIES", &s.allergies, |a| {
        let mut line = a.substance.clone();
        if let Some(c) = &a.criticality {
            line.push_str(&format!(" [criticality {c}]"));
        }
        if !a.reactions.is_empty() {
            line.push_str(&format!(" reactions: {}", a.reactions.join("; ")));
        }
        line
    });
    if let Some(v) = &s.vigilance {
        section(&mut out, "POINTS OF VIGILANCE", v, |o| {
            format!("{}: {}", o.name, o.value.as_deref().unwrap_or("-"))
        });
    }
    section(&mut out, "MEDICATIONS", &s.medications, |m| {
        let dose = if m.dosage.is_empty() {
            String::new()
        } else {
            format!(" — {}", m.dosage.join("; "))
        };
        format!("{}{dose}", m.name)
    });
    if let Some(d) = &s.dispensations {
        section(
            &mut out,
            "DISPENSED (reimbursement history, not the current treatment)",
            d,
            |d| {
                format!(
                    "{}{}",
                    d.name,
                    d.date
                        .as_deref()
                        .map(|date| format!(" (dispensed {date})"))
                        .unwrap_or_default()
                )
            },
        );
    }
    section(&mut out, "PROBLEMS", &s.problems, |p| p.name.clone());
    section(&mut out, "PAST PROBLEMS", &s.past_problems, |p| {
        p.name.clone()
    });
    section(&mut out, "PROCEDURES", &s.procedures, |p| {
        format!(
            "{}{}",
            p.name,
            p.performed
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )
    });
    if let Some(a) = &s.advance_directives {
        section(&mut out, "ADVANCE DIRECTIVES", a, |o| {
            format!("{}: {}", o.name, o.value.as_deref().unwrap_or("-"))
        });
    }
    if let Some(i) = &s.immunizations {
        section(&mut out, "IMMUNIZATIONS", i, |i| i.vaccine.clone());
    }
    if let Some(d) = &s.devices {
        section(&mut out, "DEVICES", d, |d| d.name.clone());
    }
    if let Some(p) = &s.pregnancy {
        section(&mut out, "PREGNANCY", p, |o| {
            format!("{}: {}", o.name, o.value.as_deref().unwrap_or("-"))
        });
    }
    if let Some(body) = &s.unstructured {
        out.push_str(&format!(
            "UNSTRUCTURED DOCUMENT: {}, {} bytes{}\n",
            body.media_type,
            body.size,
            if body.by_reference {
                ", content only referenced"
            } else {
                ""
            }
        ));
        if let Some(text) = &body.text {
            for line in text.lines() {
                out.push_str(&format!("  | {line}\n"));
            }
        }
    }
    for other in &s.other_sections {
        out.push_str(&format!(
            "other section: {} ({} entries)\n",
            other.title.as_deref().unwrap_or("untitled"),
            other.entries
        ));
    }
    let d = &s.defects;
    let counts = [
        (
            d.duplicate_entries,
            "entries claiming another entry's identity",
        ),
        (
            d.other_person_entries,
            "entries about another person, left out",
        ),
        (d.unreadable_entries, "unreadable section entries"),
        (d.invalid_entries, "entries breaking FHIR structure rules"),
        (d.bad_attachments, "attachments whose data is not base64"),
        (d.names_with_markup, "names holding markup"),
        (d.narrative_declarations, "narratives holding a declaration"),
    ];
    for (count, what) in counts {
        if count > 0 {
            out.push_str(&format!("defects: {count} {what}\n"));
        }
    }
    for warning in &s.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

fn section<T>(out: &mut String, name: &str, section: &Section<T>, line: impl Fn(&T) -> String) {
    let status = match section.status {
        SectionStatus::Recorded => "recorded",
        SectionStatus::NoneKnown => "NONE KNOWN",
        SectionStatus::NotRecorded => "NOT RECORDED",
        SectionStatus::Unreadable => "UNREADABLE",
        SectionStatus::Conflicting => "CONFLICTING: the document contradicts itself",
    };
    out.push_str(&format!("{name}: {status} ({})\n", section.basis));
    for item in &section.items {
        out.push_str(&format!("  - {}\n", line(item)));
    }
    for item in &section.unlisted_items {
        out.push_str(&format!(
            "  - {} [not listed in the document's section]\n",
            line(item)
        ));
    }
    for statement in &section.statements {
        out.push_str(&format!("  * {statement}\n"));
    }
    let counts = [
        (section.unreadable_entries, "unreadable entries"),
        (
            section.duplicate_entries,
            "entries claimed by several different resources (all listed above)",
        ),
        (
            section.other_person_entries,
            "entries about another person, left out",
        ),
    ];
    for (count, what) in counts {
        if count > 0 {
            out.push_str(&format!("  ! {count} {what}\n"));
        }
    }
    // As on the page: when entries are missing or unreadable, the section's own text is
    // what the document says.
    if matches!(
        section.status,
        SectionStatus::NotRecorded | SectionStatus::Unreadable
    ) && let Some(text) = &section.narrative
    {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&format!("  | {line}\n"));
        }
        if section.narrative_cut {
            out.push_str("  ! text cut: too long to keep whole, the rest is not shown\n");
        }
    }
}
