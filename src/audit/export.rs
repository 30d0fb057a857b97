//! Reading the trail back: filtered selection through the secondary indexes, exports, and
//! verification of the store or of an exported file.
//!
//! The JSONL export is the verifiable form: a header line (`{"export":…}`: node, head,
//! pruned anchor), the checkpoints (`{"checkpoint":…}`), every record as its exact stored
//! bytes (so hashes recompute), and a closing line (`{"end":…}`). CSV and FHIR exports carry
//! seq, prev and hash, to be matched against a verified JSONL export.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use redb::ReadTransaction;
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::chain::{self, TrustedKeys};
use super::event::{EventKind, Record};
use super::store::{self, Index, Meta, ReadStore};
use super::verify::{self, Expect, Report, Verifier};
use super::{dicom, fhir};
use crate::encoding::hex;

/// Which records to select. Every field narrows the selection.
#[derive(Clone, Default)]
pub struct Filter {
    /// From this time (Unix ms), inclusive.
    pub since_ms: Option<u64>,
    /// Until this time (Unix ms), inclusive.
    pub until_ms: Option<u64>,
    /// Professional idNat.
    pub professional: Option<String>,
    /// Patient INS.
    pub patient: Option<String>,
    /// Desk id.
    pub desk: Option<String>,
    /// Emergency call id.
    pub call: Option<String>,
    /// Event kind.
    pub kind: Option<EventKind>,
    /// `success`, `refused` or `failed`.
    pub outcome: Option<String>,
    /// Only records after this sequence number (paging).
    pub after_seq: Option<u64>,
    /// No record after this sequence number: where a whole-trail export stops, at the
    /// checkpoint signed for it (records appended meanwhile, under no signature yet,
    /// made the file fail its own verification). Not a narrowing: an export bounded so
    /// is still whole up to its end, and its header's `head_seq` says where that is.
    pub through_seq: Option<u64>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(Filter);

/// A filter as people write it, on the command line (`audit list|export`) or in a
/// compliance request body: times as RFC 3339, the rest as stored.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// From this time (RFC 3339, e.g. 2026-11-01T00:00:00Z), inclusive.
    #[arg(long)]
    pub since: Option<String>,
    /// Until this time (RFC 3339), inclusive.
    #[arg(long)]
    pub until: Option<String>,
    /// Professional idNat.
    #[arg(long)]
    pub professional: Option<String>,
    /// Patient INS.
    #[arg(long)]
    pub patient: Option<String>,
    /// Desk id.
    #[arg(long)]
    pub desk: Option<String>,
    /// Emergency call id.
    #[arg(long)]
    pub call: Option<String>,
    /// Event kind.
    #[arg(long, value_enum)]
    pub kind: Option<EventKind>,
    /// Outcome: `success`, `refused` or `failed`.
    #[arg(long, value_parser = ["success", "refused", "failed"])]
    pub outcome: Option<String>,
    /// Only records after this sequence number (to page through a long list).
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(FilterSpec);

impl FilterSpec {
    /// The filter, or the field that does not read and why.
    pub fn to_filter(&self) -> Result<Filter, (&'static str, String)> {
        let time = |field: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    crate::clock::parse_time(v)
                        // The value is not echoed: a refusal never quotes what was sent.
                        .ok_or_else(|| (field, "is not an RFC 3339 time".to_owned()))
                })
                .transpose()
        };
        if let Some(outcome) = &self.outcome
            && !["success", "refused", "failed"].contains(&outcome.as_str())
        {
            return Err(("outcome", "is success, refused or failed".into()));
        }
        // An INS is 15 letters and digits (Corsica's 2A/2B): nothing else is one, and what
        // an officer looks up is named on the record of their search. Written as records
        // hold it (capitals, no spaces): `2a` typed in lower case must find the records
        // of `2A`, not answer that the patient was never accessed.
        let patient = self.patient.as_ref().map(|ins| {
            ins.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase()
        });
        if let Some(ins) = &patient
            && !(ins.len() == 15 && ins.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(("patient", "is not an INS (15 characters)".into()));
        }
        Ok(Filter {
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            professional: self.professional.clone(),
            patient,
            desk: self.desk.clone(),
            call: self.call.clone(),
            kind: self.kind,
            outcome: self.outcome.clone(),
            after_seq: self.after,
            through_seq: None,
        })
    }
}

/// A selected record: its stored bytes, parsed form and hash.
#[derive(Clone)]
pub struct Selected {
    /// Exact stored bytes.
    pub bytes: Vec<u8>,
    /// Parsed record.
    pub record: Record,
    /// Hash (hex) of the bytes.
    pub hash: String,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(Selected);

/// A selection and how many records were read to make it.
#[derive(Debug, Default)]
pub struct Selection {
    /// Matching records in sequence order.
    pub records: Vec<Selected>,
    /// Records read: with an indexed filter, only those its index lists (from the page's
    /// start on, until the page is full).
    pub examined: u64,
}

/// Selects records. One indexed filter names the records read (a patient or a call, else
/// the time range, else a professional or a desk), so a lookup by patient costs that
/// patient's records, not the whole log, and a page of a list costs its own.
pub fn select(
    txn: &ReadTransaction,
    filter: &Filter,
    limit: Option<usize>,
) -> Result<Selection, AuditError> {
    let limit = limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(Selection {
            records: Vec::new(),
            examined: 0,
        });
    }
    let mut records = Vec::new();
    let examined = visit(txn, filter, |selected| {
        records.push(selected);
        if records.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(Selection { records, examined })
}

/// Hands each record `filter` selects to `f`, in sequence order, until `f` breaks; returns
/// how many records were read. Nothing is kept: exports of any size stream through here.
pub fn visit(
    txn: &ReadTransaction,
    filter: &Filter,
    f: impl FnMut(Selected) -> ControlFlow<()>,
) -> Result<u64, AuditError> {
    visit_records(txn, filter, None, f)
}

/// As [`visit`], but a damaged record is passed over and its sequence number pushed on
/// `damaged`: for reads that must go on whatever they meet (start-up's own bookkeeping,
/// which would otherwise keep the gateway from starting), and say what they passed over.
pub fn visit_past_damage(
    txn: &ReadTransaction,
    filter: &Filter,
    damaged: &mut Vec<u64>,
    f: impl FnMut(Selected) -> ControlFlow<()>,
) -> Result<u64, AuditError> {
    visit_records(txn, filter, Some(damaged), f)
}

fn visit_records(
    txn: &ReadTransaction,
    filter: &Filter,
    mut passed_over: Option<&mut Vec<u64>>,
    mut f: impl FnMut(Selected) -> ControlFlow<()>,
) -> Result<u64, AuditError> {
    let mut examined = 0u64;
    let mut damaged = None;
    let through = filter.through_seq.unwrap_or(u64::MAX);
    let mut keep = |seq: u64, bytes: &[u8]| -> ControlFlow<()> {
        if seq > through {
            return ControlFlow::Break(());
        }
        examined += 1;
        match super::event::read_record(seq, bytes) {
            Ok(record) if matches(filter, &record) => f(Selected {
                bytes: bytes.to_vec(),
                hash: hex(&chain::hash(bytes)),
                record,
            }),
            Ok(_) => ControlFlow::Continue(()),
            Err(_) if passed_over.is_some() => {
                if let Some(list) = passed_over.as_mut() {
                    list.push(seq);
                }
                ControlFlow::Continue(())
            }
            // Whether it matches cannot be told: an export or a search going on without it
            // would look whole.
            Err(e) => {
                damaged = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    let from = filter.after_seq.map_or(0, |a| a.saturating_add(1));
    // One index drives the walk; `matches` checks the rest. A patient's or a call's list is
    // short and walked lazily from `from`, so a page costs the records it reads (building
    // the intersection of every index first made each page cost them all). A time range
    // comes before a professional's or a desk's list, which can hold millions (a desk's
    // January reads January's records, not the desk's whole history).
    let narrow = [
        (Index::Patient, &filter.patient),
        (Index::Call, &filter.call),
    ];
    let broad = [
        (Index::Professional, &filter.professional),
        (Index::Desk, &filter.desk),
    ];
    let timed = filter.since_ms.is_some() || filter.until_ms.is_some();
    fn pick<'a>(list: &[(Index, &'a Option<String>)]) -> Option<(Index, &'a str)> {
        list.iter()
            .find_map(|(index, key)| key.as_deref().map(|key| (*index, key)))
    }
    let driver = pick(&narrow).or_else(|| if timed { None } else { pick(&broad) });
    if let Some((index, key)) = driver {
        store::index_walk(txn, index, key, from, |seq| {
            Ok(match store::record(txn, seq)? {
                Some(bytes) => keep(seq, &bytes),
                None => ControlFlow::Continue(()),
            })
        })?;
    } else if timed {
        let mut seqs = store::time_range(
            txn,
            filter.since_ms.unwrap_or(0),
            filter.until_ms.unwrap_or(u64::MAX),
        )?;
        seqs.sort_unstable();
        seqs.dedup();
        for seq in seqs.into_iter().filter(|s| *s >= from) {
            if let Some(bytes) = store::record(txn, seq)?
                && keep(seq, &bytes).is_break()
            {
                break;
            }
        }
    } else {
        store::for_each_record(txn, from, &mut keep)?;
    }
    damaged.map_or(Ok(examined), Err)
}

fn matches(filter: &Filter, record: &Record) -> bool {
    let event = &record.event;
    let actor = event.actor.as_ref();
    let time = || crate::clock::parse_time(&record.time).unwrap_or(0);
    filter.kind.is_none_or(|k| event.kind == k)
        && filter
            .outcome
            .as_deref()
            .is_none_or(|o| event.outcome.status() == o)
        && filter.patient.as_deref().is_none_or(|p| {
            event
                .patient
                .iter()
                .chain(&event.candidates)
                .any(|x| x.ins == p)
        })
        && filter
            .professional
            .as_deref()
            .is_none_or(|p| actor.and_then(|a| a.id_nat.as_deref()) == Some(p))
        && filter
            .desk
            .as_deref()
            .is_none_or(|d| actor.and_then(|a| a.desk.as_deref()) == Some(d))
        && filter
            .call
            .as_deref()
            .is_none_or(|c| event.call.as_ref().is_some_and(|x| x.call_id == c))
        && filter.since_ms.is_none_or(|s| time() >= s)
        && filter.until_ms.is_none_or(|u| time() <= u)
}

/// One human-readable line per record, for `audit list`.
pub fn list_line(selected: &Selected) -> String {
    let r = &selected.record;
    let e = &r.event;
    let actor = e.actor.clone().unwrap_or_default();
    format!(
        "{:>8}  {}  {:<22} {:<8} desk={} professional={} patient={} call={}{}",
        r.seq,
        r.time,
        e.kind.as_str(),
        e.outcome.status(),
        actor.desk.as_deref().unwrap_or("-"),
        actor.id_nat.as_deref().unwrap_or("-"),
        e.patient.as_ref().map_or("-", |p| p.ins.as_str()),
        e.call.as_ref().map_or("-", |c| c.call_id.as_str()),
        e.outcome
            .reason()
            .map(|r| format!(" reason={r}"))
            .unwrap_or_default(),
    )
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Verifiable: header, checkpoints, exact record bytes, closing line.
    Jsonl,
    /// One row per record with the chain fields.
    Csv,
    /// A FHIR R4 Bundle of AuditEvent resources.
    Fhir,
    /// DICOM audit messages (the IHE ATNA syslog payload), one per line.
    Dicom,
}

impl Format {
    /// The media type of an export in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jsonl => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Fhir => "application/fhir+json",
            // One XML message per line: not one XML document.
            Self::Dicom => "text/plain; charset=utf-8",
        }
    }

    /// Its name (`jsonl`, `csv`, `fhir`, `dicom`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Fhir => "fhir",
            Self::Dicom => "dicom",
        }
    }

    /// The file name extension of such an export.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Fhir => "fhir.json",
            Self::Dicom => "dicom.txt",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    v: u32,
    node: Option<String>,
    head_seq: u64,
    pruned_through: u64,
    exported_at: String,
    filtered: bool,
}

#[derive(Serialize, Deserialize)]
struct End {
    records: u64,
}

/// Writes an export of the records `filter` selects, one record at a time (a long trail
/// never sits in memory); returns how many records were written.
pub fn export(
    txn: &ReadTransaction,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let io = |e: std::io::Error| AuditError::Storage(format!("cannot write the export: {e}"));
    prologue(txn, filter, format, out).map_err(io)?;
    let mut written = 0u64;
    let mut failed = None;
    visit(txn, filter, |selected| {
        match item(&selected, format, written, out) {
            Ok(()) => {
                written += 1;
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(io(e));
    }
    epilogue(format, written, out).map_err(io)?;
    Ok(written)
}

/// The columns an officer reads a record by in a spreadsheet: after a restore, `epoch` tells
/// two records of one seq apart; `grant` ties an access's records together; `candidates`
/// (INS, space-separated) finds the searches that returned a patient; a decision says which
/// access (`review_of`), what, and which earlier decision it replaces. The free texts (a
/// justification, a comment) and the identity traits a search was made with (names, birth
/// date: [`csv_detail`]) are in the JSONL export only: a spreadsheet travels further.
const CSV_HEADER: &str = "seq,time,node,epoch,kind,outcome,reason,desk,professional,professional_name,patient_ins,patient_oid,candidates,call_id,reason_code,access_mode,source,grant,detail,review_of,decision,replaces,alert,alert_records,prev,hash";

/// What comes before the records: the JSONL header and checkpoints, the CSV header row,
/// the opening of the FHIR Bundle.
fn prologue(
    txn: &ReadTransaction,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        Format::Jsonl => jsonl_header(txn, filter, out),
        Format::Csv => writeln!(out, "{CSV_HEADER}"),
        Format::Fhir => writeln!(
            out,
            "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"timestamp\":{},\"entry\":[",
            serde_json::Value::String(crate::clock::now().0)
        ),
        Format::Dicom => Ok(()),
    }
}

/// One record, the `index`-th written, in `format`.
fn item(
    selected: &Selected,
    format: Format,
    index: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        Format::Jsonl => {
            out.write_all(&selected.bytes)?;
            out.write_all(b"\n")
        }
        Format::Csv => writeln!(out, "{}", csv_row(selected)),
        Format::Dicom => writeln!(
            out,
            "{}",
            dicom::audit_message(&selected.record, &selected.hash)
        ),
        Format::Fhir => {
            if index > 0 {
                out.write_all(b",")?;
            }
            let entry = serde_json::json!({"resource": fhir::audit_event(&selected.record, &selected.hash)});
            serde_json::to_writer(&mut *out, &entry).map_err(std::io::Error::from)?;
            out.write_all(b"\n")
        }
    }
}

/// What comes after the records: the JSONL closing line, the end of the FHIR Bundle.
fn epilogue(format: Format, written: u64, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Jsonl => writeln!(
            out,
            "{}",
            serde_json::json!({ "end": End { records: written } })
        ),
        Format::Fhir => writeln!(out, "]}}"),
        Format::Csv | Format::Dicom => Ok(()),
    }
}

fn jsonl_header(
    txn: &ReadTransaction,
    filter: &Filter,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    // Every record of a store has the same node: the first one's says it.
    let mut node = None;
    store::for_each_record(txn, 0, |_, bytes| {
        node = serde_json::from_slice::<Record>(bytes).ok().map(|r| r.node);
        ControlFlow::Break(())
    })
    .map_err(std::io::Error::other)?;
    let head = store::meta(txn, Meta::HeadSeq).ok().flatten().unwrap_or(0);
    let header = Header {
        v: 1,
        node,
        head_seq: filter.through_seq.map_or(head, |through| through.min(head)),
        pruned_through: store::meta(txn, Meta::PrunedThrough)
            .ok()
            .flatten()
            .unwrap_or(0),
        exported_at: crate::clock::now().0,
        filtered: !is_unfiltered(filter),
    };
    writeln!(out, "{}", serde_json::json!({ "export": header }))?;
    // The checkpoints over what the file holds (a later one signs records it leaves out).
    let through = filter.through_seq.unwrap_or(u64::MAX);
    for bytes in store::checkpoints(txn)
        .map_err(std::io::Error::other)?
        .range(..=through)
        .map(|(_, bytes)| bytes)
    {
        out.write_all(b"{\"checkpoint\":")?;
        out.write_all(bytes)?;
        out.write_all(b"}\n")?;
    }
    Ok(())
}

/// The names of the filters set (`since,patient`), or `none`: what an officer asked for,
/// without the values.
pub fn describe(filter: &Filter) -> String {
    let set = [
        ("since", filter.since_ms.is_some()),
        ("until", filter.until_ms.is_some()),
        ("professional", filter.professional.is_some()),
        ("patient", filter.patient.is_some()),
        ("desk", filter.desk.is_some()),
        ("call", filter.call.is_some()),
        ("kind", filter.kind.is_some()),
        ("outcome", filter.outcome.is_some()),
        ("after", filter.after_seq.is_some()),
    ];
    let names: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Whether `filter` selects the whole trail (up to `through_seq`, if set).
pub fn is_unfiltered(filter: &Filter) -> bool {
    matches!(
        filter,
        Filter {
            since_ms: None,
            until_ms: None,
            professional: None,
            patient: None,
            desk: None,
            call: None,
            kind: None,
            outcome: None,
            after_seq: None,
            through_seq: _,
        }
    )
}

/// A record's `detail` for the CSV export: a search by identity traits says only that it
/// was one (its traits, a patient's names and birth date, stay in the JSONL export).
fn csv_detail(e: &super::Event) -> String {
    match e.detail.as_deref() {
        Some(detail) if detail.starts_with("traits:") => "traits (in the JSONL export)".into(),
        detail => detail.unwrap_or_default().to_owned(),
    }
}

/// One CSV row (the columns of `CSV_HEADER`).
fn csv_row(s: &Selected) -> String {
    let r = &s.record;
    let e = &r.event;
    let actor = e.actor.clone().unwrap_or_default();
    let mode = e.access_mode.map(code).unwrap_or_default();
    let source = e.source.map(code).unwrap_or_default();
    let joined = |items: Vec<String>| items.join(" ");
    let fields = [
        r.seq.to_string(),
        r.time.clone(),
        r.node.clone(),
        r.epoch.to_string(),
        e.kind.as_str().to_owned(),
        e.outcome.status().to_owned(),
        e.outcome.reason().unwrap_or_default().to_owned(),
        actor.desk.unwrap_or_default(),
        actor.id_nat.unwrap_or_default(),
        actor.name.unwrap_or_default(),
        e.patient
            .as_ref()
            .map(|p| p.ins.clone())
            .unwrap_or_default(),
        e.patient
            .as_ref()
            .map(|p| p.oid.clone())
            .unwrap_or_default(),
        joined(e.candidates.iter().map(|p| p.ins.clone()).collect()),
        e.call
            .as_ref()
            .map(|c| c.call_id.clone())
            .unwrap_or_default(),
        e.call
            .as_ref()
            .and_then(|c| c.reason_code.clone())
            .unwrap_or_default(),
        mode,
        source,
        e.grant.clone().unwrap_or_default(),
        csv_detail(e),
        e.review
            .as_ref()
            .map(|v| v.of.to_string())
            .unwrap_or_default(),
        e.review
            .as_ref()
            .map(|v| code(v.decision))
            .unwrap_or_default(),
        e.review
            .as_ref()
            .and_then(|v| v.replaces)
            .map(|r| r.to_string())
            .unwrap_or_default(),
        e.alert
            .as_ref()
            .map(|a| a.kind.as_str().to_owned())
            .unwrap_or_default(),
        joined(
            e.alert
                .as_ref()
                .map(|a| a.records.iter().map(u64::to_string).collect())
                .unwrap_or_default(),
        ),
        r.prev.clone(),
        s.hash.clone(),
    ];
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    line.join(",")
}

/// The serialized name of a unit enum value (`bris_de_glace`).
fn code(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// RFC 4180 quoting; a leading formula character is neutralised so a spreadsheet opening
/// the export cannot be made to run a formula planted in a justification.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// How much of a store's tail its writer may leave unsigned: it signs a checkpoint once
/// `checkpoint_every_records` records or `checkpoint_every` have passed, checked after each
/// batch (a crash may leave the last batch unsigned).
#[derive(Debug, Clone, Copy)]
pub struct UnsignedTail {
    /// Records after the last checkpoint, at most.
    pub records: u64,
    /// Time between the first of them and the last record, at most.
    pub span: std::time::Duration,
}

impl UnsignedTail {
    /// Whether records `from` to `last` of `txn`, under no signature, are more (or span
    /// longer) than this bound.
    pub(super) fn exceeded_by(&self, txn: &ReadTransaction, from: u64, last: u64) -> bool {
        let time_of = |seq: u64| {
            store::record(txn, seq)
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
                .and_then(|record| crate::clock::parse_time(&record.time))
        };
        let span_ms = match (time_of(from), time_of(last)) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let longest_ms = u64::try_from(self.span.as_millis()).unwrap_or(u64::MAX);
        last.saturating_sub(from).saturating_add(1) > self.records || span_ms > longest_ms
    }

    /// The bound of a writer running with `settings`, with a margin for clock steps.
    pub fn of(settings: &super::Settings) -> Self {
        Self {
            records: settings
                .checkpoint_every_records
                .saturating_add(u64::try_from(settings.batch_max_records).unwrap_or(u64::MAX)),
            span: settings.checkpoint_every + std::time::Duration::from_secs(5 * 60),
        }
    }
}

/// Verifies the whole trail held in a store (live or stopped), whatever its unsigned tail
/// (tests of other properties; `audit verify`, `backup` and `restore` bound it:
/// [`verify_store_within`]).
pub fn verify_store(store: &impl ReadStore, trusted: &TrustedKeys) -> Result<Report, AuditError> {
    let any = UnsignedTail {
        records: u64::MAX,
        span: std::time::Duration::MAX,
    };
    verify_store_within(store, trusted, any)
}

/// Verifies the whole trail held in a store (live or stopped). A tail after the last
/// checkpoint longer than `tail` is a finding (`Unsigned`): a writer never leaves one, so
/// it says checkpoints were removed (the records they signed could be forged).
pub fn verify_store_within(
    store: &impl ReadStore,
    trusted: &TrustedKeys,
    tail: UnsignedTail,
) -> Result<Report, AuditError> {
    let txn = store.snapshot()?;
    // Records a repository was sent are records the store had: a store ending before
    // them was cut short, even if its own count was lowered to match.
    let shipped = store::highest_shipped(&txn)?;
    let head_seq = match store::meta(&txn, Meta::HeadSeq)? {
        Some(head) => Some(head.max(shipped)),
        None => (shipped > 0).then_some(shipped),
    };
    let expect = Expect {
        head_seq,
        pruned_through: store::meta(&txn, Meta::PrunedThrough)?.unwrap_or(0),
    };
    let mut verifier = Verifier::new(trusted, expect, store::checkpoints(&txn)?);
    verify_records(&mut verifier, |record| {
        store::for_each_record(&txn, 0, |_, bytes| record(bytes))
    })?;
    let mut report = verifier.finish();
    if let Some((first, last)) = report.range {
        let from = report
            .signed_through
            .map_or(first, |s| s.saturating_add(1).max(first));
        if from <= last && tail.exceeded_by(&txn, from, last) {
            report
                .findings
                .push(super::verify::Finding::Unsigned { from, to: last });
        }
    }
    Ok(report)
}

/// Runs `verifier` over the records `read` hands over, in order. This thread reads, in
/// chunks; one thread per core digests chunks (parse and hash: the costly part,
/// independent per record); one thread applies the digests in the order read, where the
/// chain checks need it.
///
/// Memory is bounded whatever the threads' relative speed: the reader takes a credit for
/// each chunk and the applying thread returns it once the chunk's digests are applied, so
/// at most `4 × workers` chunks (each at most about [`VERIFY_CHUNK_BYTES`]) are read and
/// not yet applied, counting those queued, being digested, and digested but waiting for
/// an earlier chunk. Without the credits, a digesting thread held up (descheduled on a
/// busy appliance) let the others fill the reordering map with the rest of the trail.
fn verify_records(
    verifier: &mut Verifier,
    read: impl FnOnce(&mut dyn FnMut(&[u8]) -> ControlFlow<()>) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    verify_records_in(verifier, read, workers, workers * 4)
}

fn verify_records_in(
    verifier: &mut Verifier,
    read: impl FnOnce(&mut dyn FnMut(&[u8]) -> ControlFlow<()>) -> Result<(), AuditError>,
    workers: usize,
    in_flight: usize,
) -> Result<(), AuditError> {
    let (chunks, chunk_rx) = std::sync::mpsc::sync_channel::<(u64, Chunk)>(in_flight);
    let chunk_rx = std::sync::Mutex::new(chunk_rx);
    let (digested, digest_rx) = std::sync::mpsc::channel::<(u64, Vec<verify::Digest>)>();
    // Deadlock-free: the oldest chunk in flight is always queued or being digested (the
    // digesting threads never wait on anyone but the queue), and the applying thread only
    // ever waits for digests, so that chunk is applied and its credit returned.
    let (credit, credit_back) = std::sync::mpsc::sync_channel::<()>(in_flight.max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (chunk_rx, digested) = (&chunk_rx, digested.clone());
            scope.spawn(move || {
                loop {
                    let next = chunk_rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some((index, chunk)) = next else { break };
                    let digests = chunk.records().map(verify::digest).collect();
                    if digested.send((index, digests)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(digested);
        scope.spawn(move || {
            let mut next = 0;
            let mut early = std::collections::BTreeMap::new();
            for (index, digests) in digest_rx {
                early.insert(index, digests);
                while let Some(digests) = early.remove(&next) {
                    digests.into_iter().for_each(|d| verifier.apply(d));
                    next += 1;
                    // Always there: the reader takes one before each chunk it sends.
                    let _ = credit_back.try_recv();
                }
            }
        });
        let mut chunk = Chunk::default();
        let mut index = 0;
        let read = read(&mut |bytes| {
            chunk.push(bytes);
            if chunk.ends.len() == VERIFY_CHUNK || chunk.bytes.len() >= VERIFY_CHUNK_BYTES {
                let capacity = chunk.bytes.len().min(VERIFY_CHUNK_BYTES);
                let full = std::mem::replace(&mut chunk, Chunk::with_capacity(capacity));
                if credit.send(()).is_err() || chunks.send((index, full)).is_err() {
                    return ControlFlow::Break(());
                }
                index += 1;
            }
            ControlFlow::Continue(())
        });
        if !chunk.ends.is_empty() && credit.send(()).is_ok() {
            let _ = chunks.send((index, chunk));
        }
        drop(chunks);
        read
    })
}

/// Records per chunk handed to a verification thread...
const VERIFY_CHUNK: usize = 1024;
/// ...or fewer, once they hold this many bytes: a file or store made of huge entries then
/// holds a few MiB in flight, not a thousand of them per chunk.
const VERIFY_CHUNK_BYTES: usize = 1 << 20;

/// Records read for verification, end to end in one buffer: one allocation per chunk
/// rather than per record (allocating on the reading thread and freeing on another made
/// the allocator's locks a tenth of `audit verify`'s profile).
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Chunk {
    fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(VERIFY_CHUNK),
        }
    }

    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| self.bytes.get(start..end).unwrap_or_default())
    }
}

/// Verifies an unfiltered JSONL export (two passes: checkpoints, then records).
pub fn verify_file(path: &std::path::Path, trusted: &TrustedKeys) -> Result<Report, AuditError> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| AuditError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    };
    let read_err = |e: std::io::Error| AuditError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut expect = Expect::default();
    let mut checkpoints = Vec::new();
    let (mut checkpoint_bytes, mut too_many_checkpoints) = (0usize, false);
    let mut ended = false;
    let mut header_seen = false;
    let mut filtered = false;
    let mut n = 0u64;
    for_each_line(open()?, |line| {
        n += 1;
        let Some(line) = line else {
            return ControlFlow::Continue(());
        };
        if line.starts_with(b"{\"export\":") {
            let value: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
            if let Ok(header) = serde_json::from_value::<Header>(value["export"].clone()) {
                if header.filtered {
                    filtered = true;
                    return ControlFlow::Break(());
                }
                expect = Expect {
                    head_seq: Some(header.head_seq),
                    pruned_through: header.pruned_through,
                };
                header_seen = true;
            }
        } else if let Some(rest) = line.strip_prefix(b"{\"checkpoint\":") {
            // Held for the whole verification: a checkpoint is a few hundred bytes, and a
            // hostile file's long ones are cut (then unreadable, a finding) and counted, so
            // that they cannot fill memory.
            let rest = rest.strip_suffix(b"}").unwrap_or(rest);
            let kept = &rest[..rest.len().min(MAX_CHECKPOINT_BYTES)];
            // What holding it costs, an empty one included.
            checkpoint_bytes =
                checkpoint_bytes.saturating_add(kept.len() + std::mem::size_of::<(u64, Vec<u8>)>());
            if checkpoint_bytes > MAX_CHECKPOINTS_BYTES {
                too_many_checkpoints = true;
                return ControlFlow::Break(());
            }
            checkpoints.push((n, kept.to_vec()));
        } else if line.starts_with(b"{\"end\":") {
            ended = true;
        }
        ControlFlow::Continue(())
    })
    .map_err(read_err)?;
    if filtered {
        return Err(AuditError::Unreadable {
            path: path.to_owned(),
            reason: "a filtered export cannot be verified as a whole trail; export without filters"
                .into(),
        });
    }
    if too_many_checkpoints {
        return Err(AuditError::Unreadable {
            path: path.to_owned(),
            reason: format!(
                "more than {} MiB of checkpoints: no trail this gateway writes holds so many",
                MAX_CHECKPOINTS_BYTES >> 20
            ),
        });
    }
    if !header_seen {
        return Err(AuditError::Unreadable {
            path: path.to_owned(),
            reason: "not a samu-gateway JSONL audit export (no header line)".into(),
        });
    }
    let mut verifier = Verifier::new(trusted, expect, checkpoints);
    verify_records(&mut verifier, |record| {
        for_each_line(open()?, |line| match line {
            // Too long to be a record: an empty entry, which verification names unreadable.
            None => record(b""),
            Some(line)
                if line.starts_with(b"{\"export\":")
                    || line.starts_with(b"{\"checkpoint\":")
                    || line.starts_with(b"{\"end\":")
                    || line.is_empty() =>
            {
                ControlFlow::Continue(())
            }
            Some(line) => record(line),
        })
        .map_err(read_err)
    })?;
    let mut report = verifier.finish();
    if !ended {
        report.findings.push(super::verify::Finding::ExportCutShort);
    }
    // An export's checkpoints are lines anyone can delete: a record no signature covers
    // proves nothing (a pruned prefix is covered by its anchor, checked above).
    if let Some((first, last)) = report.range {
        let from = report
            .signed_through
            .map_or(first, |s| s.saturating_add(1).max(first));
        if from <= last {
            report
                .findings
                .push(super::verify::Finding::Unsigned { from, to: last });
        }
    }
    Ok(report)
}

/// The longest line of an export read whole: four times the largest record, which is also
/// far more than a checkpoint or the header takes.
const MAX_LINE_BYTES: usize = 4 * super::log::MAX_RECORD_BYTES;
/// A checkpoint line's JSON is a few hundred bytes; more is kept only this far.
const MAX_CHECKPOINT_BYTES: usize = 16 * 1024;
/// The checkpoints of an export, all held while it is verified: about a million at the
/// size the gateway writes them, a checkpoint per thousand records or more.
const MAX_CHECKPOINTS_BYTES: usize = 512 * 1024 * 1024;

/// Calls `visit` with each line of `reader`, without its line end (`\n` or `\r\n`). A line
/// longer than [`MAX_LINE_BYTES`] is passed as `None` and read past in bounded steps: a
/// hostile file cannot make verification hold one huge line in memory.
fn for_each_line(
    mut reader: impl BufRead,
    mut visit: impl FnMut(Option<&[u8]>) -> ControlFlow<()>,
) -> std::io::Result<()> {
    let limit = u64::try_from(MAX_LINE_BYTES + 1).unwrap_or(u64::MAX);
    let mut line = Vec::new();
    loop {
        line.clear();
        if std::io::Read::take(&mut reader, limit).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let whole = if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Some(line.as_slice())
        } else if line.len() > MAX_LINE_BYTES {
            skip_line(&mut reader)?;
            None
        } else {
            // The last line, without a line end.
            Some(line.as_slice())
        };
        if visit(whole).is_break() {
            return Ok(());
        }
    }
}

/// Reads past the rest of a line.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let len = available.len();
                reader.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FilterSpec, MAX_LINE_BYTES, csv_field, for_each_line};
    use std::ops::ControlFlow;

    /// An INS looked up is read as records hold it: capitals, no spaces.
    #[test]
    fn an_ins_filter_is_read_as_records_hold_it() {
        let spec = |ins: &str| FilterSpec {
            patient: Some(ins.into()),
            ..FilterSpec::default()
        };
        for typed in [
            "2a0175000000134",
            "2A 01 75 000 000 134",
            " 2A0175000000134",
        ] {
            assert_eq!(
                spec(typed)
                    .to_filter()
                    .ok()
                    .and_then(|f| f.patient)
                    .as_deref(),
                Some("2A0175000000134"),
                "{typed}"
            );
        }
        assert!(spec("2A01750000001").to_filter().is_err());
        assert!(spec("2A01750000001-4").to_filter().is_err());
    }

    #[test]
    fn lines_are_read_without_their_ends_and_an_overlong_one_is_skipped() {
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        let fits = "y".repeat(MAX_LINE_BYTES);
        let text = format!("a\r\nb\n\n{long}\n{fits}\nc");
        let mut seen = Vec::new();
        for_each_line(text.as_bytes(), |line| {
            seen.push(line.map(|l| String::from_utf8(l.to_vec()).unwrap()));
            ControlFlow::Continue(())
        })
        .unwrap();
        let expected: Vec<Option<String>> = vec![
            Some("a".into()),
            Some("b".into()),
            Some(String::new()),
            None,
            Some(fits),
            Some("c".into()),
        ];
        assert_eq!(seen, expected);
        // An overlong last line, without a line end; and a stop asked for.
        let mut count = 0;
        for_each_line(format!("{long}{long}").as_bytes(), |line| {
            assert!(line.is_none());
            count += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(count, 1);
        let mut count = 0;
        for_each_line("a\nb\nc\n".as_bytes(), |_| {
            count += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(count, 1);
    }

    /// A whole-trail export bounded at its checkpoint (`through_seq`) holds the records
    /// that checkpoint signs, says so in its header, and verifies intact; unbounded, the
    /// records appended after the checkpoint are under no signature and it does not (the
    /// API's export signed a checkpoint, then took its snapshot: a record appended in
    /// between made the officer's file fail its own verification).
    #[tokio::test(flavor = "multi_thread")]
    async fn an_export_bounded_at_its_checkpoint_verifies_whole() {
        use crate::audit::store::ReadStore as _;
        use crate::audit::{AuditLog, Event, EventKind, Outcome, Signer, TrustedKeys};
        let dir = tempfile::tempdir().unwrap();
        let (store, audit) = AuditLog::for_tests(dir.path());
        let event = || Event::new(EventKind::UserLogin, Outcome::Success);
        for _ in 0..3 {
            let _receipt = audit.append(event()).await.unwrap();
        }
        audit.checkpoint().unwrap();
        let signed = {
            let txn = store.snapshot().unwrap();
            *super::store::checkpoints(&txn)
                .unwrap()
                .keys()
                .last()
                .unwrap()
        };
        for _ in 0..2 {
            let _receipt = audit.append(event()).await.unwrap();
        }
        let mut trusted = TrustedKeys::default();
        trusted
            .add_hex(
                Signer::load(&dir.path().join("audit-signing.key"))
                    .unwrap()
                    .public_key_hex(),
            )
            .unwrap();
        let verified = |through: Option<u64>| {
            let filter = super::Filter {
                through_seq: through,
                ..super::Filter::default()
            };
            let path = dir.path().join(format!("export-{through:?}.jsonl"));
            let mut file = std::fs::File::create(&path).unwrap();
            let txn = store.settled_snapshot().unwrap();
            let written = super::export(&txn, &filter, super::Format::Jsonl, &mut file).unwrap();
            (written, super::verify_file(&path, &trusted).unwrap())
        };
        let (written, report) = verified(Some(signed));
        assert_eq!(written, signed);
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.range, Some((1, signed)));
        let (written, report) = verified(None);
        assert_eq!(written, signed + 2);
        assert!(!report.is_intact(), "an unsigned tail is no proof");
    }

    /// The parallel verification finds what applying each record in order finds, even with
    /// a single chunk in flight (the tightest bound: no deadlock) and records spread over
    /// many chunks, some of them tampered with, missing or repeated.
    #[test]
    fn parallel_verification_agrees_with_the_sequential_one_at_any_bound() {
        use crate::audit::verify::{self, Expect, Verifier};
        use crate::audit::{EventKind, TrustedKeys};
        let kinds = vec![(0, EventKind::PatientSearch); 5_000];
        let mut trail = verify::tests::trail(&kinds);
        trail[1_500] = String::from_utf8(trail[1_500].clone())
            .unwrap()
            .replace("patient_search", "user_login")
            .into_bytes();
        trail.remove(3_000);
        let repeated = trail[4_000].clone();
        trail.insert(4_100, repeated);
        let verifier = || Verifier::new(&TrustedKeys::default(), Expect::default(), []);
        let mut sequential = verifier();
        for bytes in &trail {
            sequential.apply(verify::digest(bytes));
        }
        let expected = format!("{:?}", sequential.finish());
        for finding in [
            "Modified { seq: 1501 }",
            "Deleted { from: 3001, to: 3001 }",
            "Inserted",
        ] {
            assert!(expected.contains(finding), "{finding} in {expected}");
        }
        for (workers, in_flight) in [(1, 1), (2, 1), (2, 2), (3, 8)] {
            let mut parallel = verifier();
            super::verify_records_in(
                &mut parallel,
                |record| {
                    for bytes in &trail {
                        if record(bytes).is_break() {
                            break;
                        }
                    }
                    Ok(())
                },
                workers,
                in_flight,
            )
            .unwrap();
            assert_eq!(format!("{:?}", parallel.finish()), expected);
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-12"), "-12");
    }

    /// A row carries what an officer reads a record by: its epoch (two records of one seq
    /// after a restore), the grant, the candidates of a search, a decision and which access
    /// it is on, an alert and its records; one cell per header column.
    #[test]
    fn a_csv_row_says_which_access_what_was_decided_and_who_was_found() {
        use super::super::event::{Alert, AlertKind, Decision, PatientRef, Review};
        use super::super::{Event, EventKind, Outcome, Record};
        let row = |event: Event| {
            let record = Record {
                v: 1,
                seq: 7,
                node: "gw".into(),
                epoch: 1_700_000_000_000,
                time: "2026-12-07T10:00:00.000Z".into(),
                run: "r".into(),
                mono_ns: 1,
                prev: "0".repeat(64),
                event,
            };
            let row = super::csv_row(&super::Selected {
                bytes: Vec::new(),
                record,
                hash: "h".into(),
            });
            let header: Vec<&str> = super::CSV_HEADER.split(',').collect();
            let cells: Vec<String> = row.split(',').map(str::to_owned).collect();
            assert_eq!(cells.len(), header.len(), "{row}");
            move |column: &str| cells[header.iter().position(|c| *c == column).unwrap()].clone()
        };
        let reviewed = row(Event {
            review: Some(Review {
                of: 3,
                decision: Decision::Unjustified,
                comment: "free text".into(),
                replaces: Some(7),
            }),
            grant: Some("g-1".into()),
            ..Event::new(EventKind::AccessReviewed, Outcome::Success)
        });
        assert_eq!(reviewed("epoch"), "1700000000000");
        assert_eq!(reviewed("review_of"), "3");
        assert_eq!(reviewed("decision"), "unjustified");
        assert_eq!(reviewed("replaces"), "7");
        assert_eq!(reviewed("grant"), "g-1");
        let search = row(Event {
            candidates: vec![
                PatientRef {
                    ins: "1".into(),
                    oid: "o".into(),
                },
                PatientRef {
                    ins: "2".into(),
                    oid: "o".into(),
                },
            ],
            detail: Some(
                "traits: birth_name=DUPONT first_names=Camille birth_date=1980-01-17 sex=Female"
                    .into(),
            ),
            ..Event::new(EventKind::PatientSearch, Outcome::Success)
        });
        assert_eq!(search("candidates"), "1 2");
        // The traits a search was made with stay out of the spreadsheet.
        assert_eq!(search("detail"), "traits (in the JSONL export)");
        let alert = row(Event {
            alert: Some(Alert {
                kind: AlertKind::ManyPatients,
                records: vec![4, 5],
            }),
            ..Event::new(EventKind::SecurityAlert, Outcome::Success)
        });
        assert_eq!(alert("alert"), "many_patients");
        assert_eq!(alert("alert_records"), "4 5");
    }
}
