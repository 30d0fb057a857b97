//! Sealed summary entries: short-lived and unreadable at rest, because the authorities
//! advise against keeping documents downloaded from the record (docs/domain.md §1).
//!
//! - Tree keys are HMAC-SHA256 of `OID|INS` under a key derived from the master key: the
//!   INS never reaches the disk, and without the master key one cannot even test whether
//!   a given patient is cached.
//! - Each entry is sealed with AES-256-GCM under its own random key; that key is wrapped
//!   (AES-256-GCM) by a wrapping key derived from the master key, as the index key is, so
//!   the master key itself serves one primitive only. Both seals authenticate the entry's
//!   version, the tree key and the fetch time, so an entry cannot be moved to another
//!   patient, made to look fresher or read as another format. Entries of versions 1 and
//!   2, from earlier builds, were wrapped by the master key itself without the version in
//!   the authenticated data; they still open (an upgrade keeps the copies that serve when
//!   the record service is down) and age out within the maximum stale age.
//! - Layout: `version | fetched_at_ms (8, BE) | wrap nonce (12) | wrapped key (48) |
//!   nonce (12) | ciphertext`. The fetch time is in clear so the purge needs no key.
//! - Plaintext, versions 2 and 3: `meta length (4, BE) | meta JSON | summary JSON`. The meta (the
//!   patient's record-service id, the clearances, the run that sealed it) is read; the
//!   summary is reached by its offset, never scanned. Version 1, from earlier builds, is the
//!   whole entry as one JSON object; it still opens, so an upgrade keeps the copies that
//!   serve when the record service is down.
//! - A hit hands the summary on as the JSON that was sealed when this process run sealed it
//!   ([`CachedSummary::Sealed`]): authenticated, written by this same build from a
//!   [`CriticalSummary`], so the answer splices it in without reading, parsing or writing
//!   it again (`access::Delivered::to_json`; README, "Performance: where the time goes").
//!   A copy sealed by an earlier run, maybe an earlier build whose summary had other
//!   fields, is parsed as before. Whether the summary holds an unstructured document's
//!   content, which never goes out with it, is sealed beside it, so only a copy that does
//!   is parsed to take it out.
//! - The master key is 32 random bytes, hex in a file (mode 0600/0640) or a systemd
//!   credential; `samu-gateway cache keygen` makes one.

use std::path::Path;
use std::time::Duration;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::CacheError;
use crate::access_mode::AccessMode;
use crate::patient::Ins;
use crate::summary::CriticalSummary;

/// Entries whose plaintext is one JSON object (builds before the framed plaintext).
const VERSION_JSON: u8 = 1;
/// Entries whose plaintext is framed: meta, then the summary at a known offset; wrapped
/// by the master key itself, version outside the authenticated data (earlier builds).
const VERSION_FRAMED: u8 = 2;
/// Framed as version 2; the data key is wrapped by a key derived from the master key for
/// that alone, and the version byte is authenticated with the tree key and fetch time.
const VERSION: u8 = 3;
const HEADER: usize = 1 + 8;
/// How far in the future a fetch time may be (clocks of one machine, read a moment
/// apart); beyond, the wall clock stepped back and the entry's age cannot be known.
const CLOCK_SKEW_MS: u64 = 60_000;
const WRAPPED: usize = 32 + 16;
const TREE: &str = "summaries";
/// Where the store notes which key sealed its copies (an HMAC under the key, which says
/// nothing of it).
const KEY_MARK: &[u8] = b"samu-gateway:key_mark";

/// How long entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Served as fresh up to this age.
    pub fresh: Duration,
    /// Kept (and served, labelled stale, only when the record service is unavailable) up to
    /// this age; purged after.
    pub max_stale: Duration,
}

/// A summary as the cache holds it. Either way it serialises as the summary's JSON.
#[derive(Clone)]
pub enum CachedSummary {
    /// A summary as a struct: composed from the record service's answer, or opened from a
    /// copy an earlier process run sealed.
    Parsed(Box<CriticalSummary>),
    /// The JSON this process run sealed from a [`CriticalSummary`], opened (authenticated)
    /// and not parsed again.
    Sealed {
        /// The summary's JSON.
        json: Box<str>,
        /// Whether it holds an unstructured document's content, as noted when it was
        /// sealed: a hit without one is handed on without a look inside.
        has_content: bool,
    },
}

impl CachedSummary {
    /// The summary as a struct (parsing a sealed one).
    pub fn parsed(&self) -> Result<std::borrow::Cow<'_, CriticalSummary>, CacheError> {
        match self {
            Self::Parsed(summary) => Ok(std::borrow::Cow::Borrowed(&**summary)),
            Self::Sealed { json, .. } => serde_json::from_str(json)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| unreadable(&e)),
        }
    }

    /// Whether it holds an unstructured document's content.
    fn has_content(&self) -> bool {
        match self {
            Self::Parsed(summary) => summary
                .unstructured
                .as_ref()
                .is_some_and(|body| body.content.is_some()),
            Self::Sealed { has_content, .. } => *has_content,
        }
    }

    /// Appends the summary's JSON to `out`: a sealed one as it is, without a look inside.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Self::Parsed(summary) => serde_json::to_writer(out, summary),
            Self::Sealed { json, .. } => {
                out.extend_from_slice(json.as_bytes());
                Ok(())
            }
        }
    }

    /// The summary without an unstructured document's content (it has its own route). A
    /// sealed summary is parsed only if it was sealed with that content.
    pub fn without_content(self) -> Self {
        match self {
            Self::Parsed(summary) => Self::Parsed(Box::new(summary.without_content())),
            sealed @ Self::Sealed {
                has_content: false, ..
            } => sealed,
            sealed @ Self::Sealed { .. } => match sealed.parsed().map(std::borrow::Cow::into_owned)
            {
                Ok(summary) => Self::Parsed(Box::new(summary.without_content())),
                // The JSON was written by this run from a summary and authenticated when
                // opened: this cannot happen short of a serde defect. Should it happen, the
                // copy goes out as it was sealed, content included: data the grant covers,
                // only larger.
                Err(e) => {
                    tracing::error!(error = %e, "a sealed summary with content is unreadable");
                    sealed
                }
            },
        }
    }
}

fn unreadable(e: &serde_json::Error) -> CacheError {
    CacheError::Storage(format!(
        "a sealed summary does not parse (line {}, column {})",
        e.line(),
        e.column()
    ))
}

impl From<CriticalSummary> for CachedSummary {
    fn from(summary: CriticalSummary) -> Self {
        Self::Parsed(Box::new(summary))
    }
}

impl Serialize for CachedSummary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Parsed(summary) => summary.serialize(serializer),
            // Answers splice sealed JSON in (`write_json`); any other serializer gets it
            // checked as JSON first, like any raw value.
            Self::Sealed { json, .. } => {
                let raw: &serde_json::value::RawValue =
                    serde_json::from_str(json).map_err(serde::ser::Error::custom)?;
                raw.serialize(serializer)
            }
        }
    }
}

/// Counts only (the summary's own `Debug`), or the size of sealed JSON: never its text.
impl std::fmt::Debug for CachedSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Parsed(summary) => summary.fmt(f),
            Self::Sealed { json, .. } => write!(f, "Sealed({} bytes)", json.len()),
        }
    }
}

/// What is cached for a patient.
#[derive(Clone, Serialize)]
pub struct Entry {
    /// The record service's id for the patient.
    pub patient_id: String,
    /// The summary.
    pub summary: CachedSummary,
    /// Professionals and access modes the record service cleared for this patient, each
    /// with when: oppositions are per mode and blocks per professional, so a copy is served
    /// only to them, and only while their own clearance is recent (another professional's
    /// fetch refreshes the copy, never someone else's clearance).
    #[serde(default)]
    pub cleared: Vec<Clearance>,
    /// The access mode and profession the record service composed this summary for: the
    /// DMP lists a document the patient masked only in the modes they allow, and by
    /// profession, so a copy fetched in one mode is never served in another (`None`:
    /// an entry from an earlier build, served to nobody).
    #[serde(default)]
    pub composed_for: Option<ComposedFor>,
    /// How the record service's answer was obtained (the fetch's transactions with their
    /// assertion ids, the documents retrieved): a read of the copy names it, so that the
    /// read can be matched to the fetch and to the record service's own log. Empty for an
    /// entry sealed by an earlier build.
    #[serde(default)]
    pub provenance: Vec<String>,
    /// The INS (`OID|value`) the answers know the patient by: the one the copy is cached
    /// under and those its document names (an NIA beside the NIR). A refusal under any of
    /// them drops the copy (`remove_patient`). Empty for an entry sealed by an earlier
    /// build. INS, so never printed.
    #[serde(skip)]
    pub identities: Vec<String>,
}

/// Whom the record service composed a summary for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComposedFor {
    /// The access mode.
    pub mode: AccessMode,
    /// The professional's profession, as their card certificate says it.
    pub profession: Option<String>,
}

/// The patient's record-service id never prints; the summary shows as counts.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("summary", &self.summary)
            .field("cleared", &self.cleared)
            .field("composed_for", &self.composed_for)
            .finish_non_exhaustive()
    }
}

/// One professional cleared in one mode, at one time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Clearance {
    /// The professional's idNat.
    pub id_nat: String,
    /// The access mode.
    pub mode: AccessMode,
    /// When the record service cleared them (wall-clock milliseconds).
    pub at_ms: u64,
}

impl Entry {
    /// An entry cleared for nobody yet, composed for `composed_for`.
    pub fn new(patient_id: String, summary: CriticalSummary, composed_for: ComposedFor) -> Self {
        Self {
            patient_id,
            identities: summary
                .patient_in_document
                .as_ref()
                .map(|p| p.ins.clone())
                .unwrap_or_default(),
            provenance: summary.provenance.clone(),
            summary: summary.into(),
            cleared: Vec::new(),
            composed_for: Some(composed_for),
        }
    }

    /// How long ago, at `now_ms`, the record service cleared `id_nat` in `mode`; `None` if
    /// it never did.
    pub fn clearance_age(&self, id_nat: &str, mode: AccessMode, now_ms: u64) -> Option<Duration> {
        self.cleared
            .iter()
            .find(|c| c.id_nat == id_nat && c.mode == mode)
            // A clearance from the future (the clock stepped back) is none: it would
            // otherwise count as fresh for as long as the step.
            .filter(|c| c.at_ms <= now_ms.saturating_add(CLOCK_SKEW_MS))
            .map(|c| Duration::from_millis(now_ms.saturating_sub(c.at_ms)))
    }

    /// Records that the record service cleared `id_nat` in `mode` at `now_ms`.
    pub fn clear(&mut self, id_nat: &str, mode: AccessMode, now_ms: u64) {
        self.cleared
            .retain(|c| !(c.id_nat == id_nat && c.mode == mode));
        self.cleared.push(Clearance {
            id_nat: id_nat.to_owned(),
            mode,
            at_ms: now_ms,
        });
    }
}

/// A version 1 entry (one JSON object), as opened: always sealed by an earlier build, so
/// its summary is parsed.
#[derive(Deserialize)]
struct OpenedJson {
    patient_id: String,
    summary: Box<CriticalSummary>,
    #[serde(default)]
    cleared: Vec<Clearance>,
    #[serde(default)]
    composed_for: Option<ComposedFor>,
}

/// What a version 2 entry holds beside its summary, marked with the run sealing it.
#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    patient_id: std::borrow::Cow<'a, str>,
    cleared: std::borrow::Cow<'a, [Clearance]>,
    #[serde(default)]
    composed_for: Option<ComposedFor>,
    sealed_by: u64,
    /// The fetch's provenance (absent from entries sealed before it was kept).
    #[serde(default)]
    provenance: std::borrow::Cow<'a, [String]>,
    /// [`Entry::identities`] (absent from entries sealed before they were kept).
    #[serde(default)]
    identities: std::borrow::Cow<'a, [String]>,
    /// Whether the summary holds an unstructured document's content (trusted only from
    /// this run, like the JSON itself).
    has_content: bool,
}

/// A cache hit.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The entry.
    pub entry: Entry,
    /// Its age.
    pub age: Duration,
    /// Within the fresh lifetime.
    pub fresh: bool,
}

/// Counts for `cache stats` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Entries stored.
    pub entries: u64,
    /// Their total size, bytes.
    pub bytes: u64,
    /// Age of the oldest, seconds.
    pub oldest_secs: u64,
}

/// Why a master key file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// Its path or permissions.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// It cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Not 64 hex characters.
    #[error("{0}: expected 64 hex characters (32 bytes)")]
    Malformed(String),
    /// No random key could be drawn.
    #[error(transparent)]
    Random(#[from] crate::random::RandomUnavailable),
}

/// The master key.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// Reads 64 hex characters from `path` (checked permissions).
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        crate::secret::check_key_file_mode(path)?;
        let io = |source| MasterKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let bytes = crate::encoding::decode_hex(text.trim())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| MasterKeyError::Malformed(path.display().to_string()))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    /// Writes a new random key to `path` (mode 0600, never overwriting).
    pub fn generate(path: &Path) -> Result<(), MasterKeyError> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        crate::random::fill(key.as_mut())?;
        let text = zeroize::Zeroizing::new(format!("{}\n", crate::encoding::hex(key.as_ref())));
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|source| MasterKeyError::Io {
                path: path.display().to_string(),
                source,
            })
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(****)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Sealed summaries in a sled tree.
pub struct SealedSummaries {
    tree: sled::Tree,
    /// Wraps data keys of entries up to version 2 (only opened now).
    master: LessSafeKey,
    /// Wraps data keys: derived from the master key, which then serves in one primitive
    /// only (HMAC), as the index key is derived too.
    wrap: LessSafeKey,
    index: hmac::Key,
    lifetimes: Lifetimes,
    clock: fn() -> u64,
    /// This process run's mark on what it seals: random, so that no earlier run (maybe
    /// another build) can have used it.
    run: u64,
    /// Set when a removal failed: a refused patient's copy may still be there, so nothing
    /// is served or written for the rest of the run, and the run's stop is not marked
    /// clean (the next start deletes every copy). Shared with the [`super::SummaryCache`].
    disabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    #[cfg(test)]
    fail_removals: std::sync::atomic::AtomicBool,
}

/// Wall-clock milliseconds (entries outlive restarts, so not a monotonic clock).
fn wall_ms() -> u64 {
    crate::clock::now().1
}

impl SealedSummaries {
    /// Opens the tree in `db` with `master`; `disabled` is the run's flag for a failed
    /// removal.
    pub(super) fn new(
        db: &sled::Db,
        master: &MasterKey,
        lifetimes: Lifetimes,
        disabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, CacheError> {
        let tree = db.open_tree(TREE).map_err(super::storage)?;
        let wrapping = UnboundKey::new(&AES_256_GCM, &master.0)
            .map_err(|_| CacheError::Storage("unusable master key".into()))?;
        let derive = hmac::Key::new(hmac::HMAC_SHA256, &master.0);
        // Copies sealed under another key cannot be found by patient, so a refusal in this
        // run could not withdraw them, and a later run under their key would serve them
        // (a key rotated, then rotated back): they go now. A store without the mark (an
        // earlier build's) is emptied once.
        let mark = hmac::sign(&derive, b"samu-gateway cache key mark v1");
        if db.get(KEY_MARK).map_err(super::storage)?.as_deref() != Some(mark.as_ref()) {
            purge(&tree, |_| true)?;
            tree.flush().map_err(super::storage)?;
            db.insert(KEY_MARK, mark.as_ref()).map_err(super::storage)?;
            db.flush().map_err(super::storage)?;
        }
        let index_key = hmac::sign(&derive, b"samu-gateway cache index key v1");
        let wrap_key = hmac::sign(&derive, b"samu-gateway cache wrapping key v3");
        let wrap = UnboundKey::new(&AES_256_GCM, wrap_key.as_ref())
            .map_err(|_| CacheError::Storage("unusable wrapping key".into()))?;
        Ok(Self {
            tree,
            master: LessSafeKey::new(wrapping),
            wrap: LessSafeKey::new(wrap),
            index: hmac::Key::new(hmac::HMAC_SHA256, index_key.as_ref()),
            lifetimes,
            clock: wall_ms,
            run: {
                let mut run = [0u8; 8];
                crate::random::fill(&mut run).map_err(|e| CacheError::Storage(e.to_string()))?;
                u64::from_le_bytes(run)
            },
            disabled,
            #[cfg(test)]
            fail_removals: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The same store reading time from `clock` (milliseconds): for expiry tests.
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    /// The lifetimes in force.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// The store's clock (wall-clock milliseconds), for clearances.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    fn key(&self, ins: &Ins) -> Vec<u8> {
        hmac::sign(&self.index, identity(ins).as_bytes())
            .as_ref()
            .to_vec()
    }

    fn nonce(&self) -> Result<[u8; NONCE_LEN], CacheError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce).map_err(|e| CacheError::Storage(e.to_string()))?;
        Ok(nonce)
    }

    fn disabled(&self) -> bool {
        self.disabled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stores `entry` for `ins`, fetched now.
    pub fn put(&self, ins: &Ins, entry: &Entry) -> Result<(), CacheError> {
        if self.disabled() {
            return Err(CacheError::Storage(
                "the cache is disabled since a removal failed".into(),
            ));
        }
        let key = self.key(ins);
        let fetched_at = (self.clock)();
        let unwritable = |e: serde_json::Error| CacheError::Storage(e.to_string());
        let mut identities = entry.identities.clone();
        identities.push(identity(ins));
        identities.sort();
        identities.dedup();
        let meta = zeroize::Zeroizing::new(
            serde_json::to_vec(&Meta {
                patient_id: entry.patient_id.as_str().into(),
                cleared: entry.cleared.as_slice().into(),
                composed_for: entry.composed_for.clone(),
                sealed_by: self.run,
                provenance: entry.provenance.as_slice().into(),
                identities: identities.as_slice().into(),
                has_content: entry.summary.has_content(),
            })
            .map_err(unwritable)?,
        );
        let meta_len = u32::try_from(meta.len())
            .map_err(|_| CacheError::Storage("a cache entry's meta is over 4 GiB".into()))?;
        let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(4 + meta.len() + 4096));
        plain.extend_from_slice(&meta_len.to_be_bytes());
        plain.extend_from_slice(&meta);
        entry.summary.write_json(&mut plain).map_err(unwritable)?;
        let value = self.seal(&key, fetched_at, &plain)?;
        self.tree.insert(key, value).map_err(super::storage)?;
        Ok(())
    }

    /// The key that wraps the data key of an entry of `version`, and what both seals of
    /// it authenticate. `None` for a version this build does not know.
    fn sealing(&self, version: u8, key: &[u8], fetched_at: u64) -> Option<(&LessSafeKey, Vec<u8>)> {
        let mut aad = Vec::with_capacity(1 + key.len() + 8);
        let wrapping = match version {
            VERSION_JSON | VERSION_FRAMED => &self.master,
            VERSION => {
                aad.push(version);
                &self.wrap
            }
            _ => return None,
        };
        aad.extend_from_slice(key);
        aad.extend_from_slice(&fetched_at.to_be_bytes());
        Some((wrapping, aad))
    }

    /// Seals `plain` as a current-version entry under a new data key, wrapped by the
    /// derived wrapping key; both seals authenticate what `sealing` says (the version, the
    /// tree key and the fetch time). Earlier versions are only ever opened.
    fn seal(&self, key: &[u8], fetched_at: u64, plain: &[u8]) -> Result<Vec<u8>, CacheError> {
        let mut data_key = zeroize::Zeroizing::new([0u8; 32]);
        crate::random::fill(data_key.as_mut()).map_err(|e| CacheError::Storage(e.to_string()))?;
        let (wrapping, aad) = self
            .sealing(VERSION, key, fetched_at)
            .ok_or_else(|| CacheError::Storage("unknown entry version".into()))?;
        let seal_error = |_| CacheError::Storage("sealing failed".into());
        let wrap_nonce = self.nonce()?;
        let mut wrapped = data_key.to_vec();
        wrapping
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(wrap_nonce),
                Aad::from(&aad),
                &mut wrapped,
            )
            .map_err(seal_error)?;
        let sealing =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key.as_ref()).map_err(seal_error)?);
        let nonce = self.nonce()?;
        let mut body = plain.to_vec();
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut body,
            )
            .map_err(seal_error)?;
        let mut value = Vec::with_capacity(HEADER + 12 + WRAPPED + 12 + body.len());
        value.push(VERSION);
        value.extend_from_slice(&fetched_at.to_be_bytes());
        value.extend_from_slice(&wrap_nonce);
        value.extend_from_slice(&wrapped);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&body);
        Ok(value)
    }

    /// The entry for `ins`, if one younger than the maximum stale age opens; older or
    /// unreadable entries are removed.
    pub fn get(&self, ins: &Ins) -> Result<Option<Hit>, CacheError> {
        if self.disabled() {
            return Ok(None);
        }
        let key = self.key(ins);
        let Some(value) = self.tree.get(&key).map_err(super::storage)? else {
            return Ok(None);
        };
        let now = (self.clock)();
        let opened = fetched_at(&value).and_then(|at| {
            // An entry from the future (the wall clock stepped back) is unusable: its age
            // would read as zero, fresh, for as long as the step.
            (at <= now.saturating_add(CLOCK_SKEW_MS)).then_some(())?;
            let age = Duration::from_millis(now.saturating_sub(at));
            (age <= self.lifetimes.max_stale).then_some(())?;
            Some((age, self.open(&key, at, &value)?))
        });
        match opened {
            Some((age, entry)) => Ok(Some(Hit {
                entry,
                age,
                fresh: age <= self.lifetimes.fresh,
            })),
            None => {
                // Only the value judged: a copy written meanwhile stays.
                remove_if_unchanged(&self.tree, &key, &value)?;
                Ok(None)
            }
        }
    }

    fn open(&self, key: &[u8], at: u64, value: &[u8]) -> Option<Entry> {
        let (wrapping, aad) = self.sealing(*value.first()?, key, at)?;
        let rest = value.get(HEADER..)?;
        let (wrap_nonce, rest) = rest.split_at_checked(NONCE_LEN)?;
        let (wrapped, rest) = rest.split_at_checked(WRAPPED)?;
        let (nonce, body) = rest.split_at_checked(NONCE_LEN)?;
        let mut data_key = zeroize::Zeroizing::new(wrapped.to_vec());
        let data_key = wrapping
            .open_in_place(
                Nonce::try_assume_unique_for_key(wrap_nonce).ok()?,
                Aad::from(&aad),
                &mut data_key,
            )
            .ok()?;
        let opening = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key).ok()?);
        let mut body = zeroize::Zeroizing::new(body.to_vec());
        let plain = opening
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(&aad),
                &mut body,
            )
            .ok()?;
        if value.first() == Some(&VERSION_JSON) {
            let opened: OpenedJson = serde_json::from_slice(plain).ok()?;
            return Some(Entry {
                patient_id: opened.patient_id,
                summary: CachedSummary::Parsed(opened.summary),
                cleared: opened.cleared,
                composed_for: opened.composed_for,
                provenance: Vec::new(),
                identities: Vec::new(),
            });
        }
        let (meta_len, rest) = plain.split_first_chunk::<4>()?;
        let meta_len = usize::try_from(u32::from_be_bytes(*meta_len)).ok()?;
        let (meta, json) = rest.split_at_checked(meta_len)?;
        let meta: Meta<'_> = serde_json::from_slice(meta).ok()?;
        let summary = if meta.sealed_by == self.run {
            CachedSummary::Sealed {
                json: std::str::from_utf8(json).ok()?.into(),
                has_content: meta.has_content,
            }
        } else {
            CachedSummary::Parsed(Box::new(serde_json::from_slice(json).ok()?))
        };
        Some(Entry {
            patient_id: meta.patient_id.into_owned(),
            summary,
            cleared: meta.cleared.into_owned(),
            composed_for: meta.composed_for,
            provenance: meta.provenance.into_owned(),
            identities: meta.identities.into_owned(),
        })
    }

    /// Forgets `ins` (after an opposition, a block or a closure: never served again), and
    /// writes the removal out at once (a process killed after it does not bring the copy
    /// back; a power loss is what `SummaryCache::start_run` is for). When it fails, the
    /// cache serves nothing more in this run.
    pub fn remove(&self, ins: &Ins) -> Result<(), CacheError> {
        #[cfg(test)]
        if self
            .fail_removals
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.disabled
                .store(true, std::sync::atomic::Ordering::Release);
            return Err(CacheError::Storage("removal failed (test)".into()));
        }
        let removed = self
            .tree
            .remove(self.key(ins))
            .and_then(|_| self.tree.flush())
            .map(drop)
            .map_err(super::storage);
        if removed.is_err() {
            self.disabled
                .store(true, std::sync::atomic::Ordering::Release);
        }
        removed
    }

    /// Forgets `ins` as [`Self::remove`] does, and every other copy of the same patient,
    /// cached under another identifier (an NIA before the NIR): a refusal is about the
    /// patient, whichever identifier asked. A copy is the same patient's when it names
    /// the refused INS among its identities, shares one with the refused copy, or has the
    /// refused copy's `patient_id` (the FHIR service's id; the DMP's is the INS asked
    /// for, so its copies are tied by identities). Whether or not `ins` had a copy, every
    /// entry is opened to look: refusals are rare and the cache small. Returns how many
    /// other copies went.
    pub fn remove_patient(&self, ins: &Ins) -> Result<usize, CacheError> {
        // Any failure on the way may leave a refused copy: the cache then serves nothing
        // more in this run.
        let removed = self.remove_patient_copies(ins);
        if removed.is_err() {
            self.disabled
                .store(true, std::sync::atomic::Ordering::Release);
        }
        removed
    }

    fn remove_patient_copies(&self, ins: &Ins) -> Result<usize, CacheError> {
        let key = self.key(ins);
        // Read before the removal (it names the patient), but removed whatever the read
        // gives: a failed read must not keep the refused copy.
        let read = self.tree.get(&key).map_err(super::storage);
        self.remove(ins)?;
        let refused = read?.and_then(|value| self.open(&key, fetched_at(&value)?, &value));
        let mut names: std::collections::HashSet<String> = refused
            .as_ref()
            .map(|entry| entry.identities.iter().cloned().collect())
            .unwrap_or_default();
        names.insert(identity(ins));
        let patient = refused.map(|entry| entry.patient_id);
        let mut others = Vec::new();
        for item in self.tree.iter() {
            let (other, value) = item.map_err(super::storage)?;
            let same = fetched_at(&value)
                .and_then(|at| self.open(&other, at, &value))
                .is_some_and(|entry| {
                    patient.as_ref() == Some(&entry.patient_id)
                        || entry.identities.iter().any(|i| names.contains(i))
                });
            if same {
                others.push((other, value));
            }
        }
        let mut removed = 0;
        for (other, value) in &others {
            removed += usize::from(remove_if_unchanged(&self.tree, other, value)?);
        }
        self.tree.flush().map_err(super::storage)?;
        Ok(removed)
    }

    /// Makes removals fail, as a full or failing disk would.
    #[cfg(test)]
    pub(crate) fn fail_removals_for_tests(&self) {
        self.fail_removals
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Deletes entries older than the maximum stale age; returns how many.
    pub fn purge_expired(&self) -> Result<u64, CacheError> {
        let now = (self.clock)();
        let limit = self.lifetimes.max_stale.as_millis() as u64;
        purge(&self.tree, |at| {
            at.is_none_or(|at| {
                now.saturating_sub(at) > limit || at > now.saturating_add(CLOCK_SKEW_MS)
            })
        })
    }

    /// Counts.
    pub fn stats(&self) -> Result<Stats, CacheError> {
        stats(&self.tree, (self.clock)())
    }
}

/// `OID|value`: how an INS is named in an entry's identities (and keyed, under HMAC).
fn identity(ins: &Ins) -> String {
    format!("{}|{}", ins.oid(), ins.as_str())
}

fn fetched_at(value: &[u8]) -> Option<u64> {
    matches!(
        value.first(),
        Some(&(VERSION_JSON | VERSION_FRAMED | VERSION))
    )
    .then_some(())?;
    let bytes: [u8; 8] = value.get(1..HEADER)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Removes every entry for which `expired(fetched_at)` holds (no key needed).
pub fn purge(
    db_tree: &sled::Tree,
    expired: impl Fn(Option<u64>) -> bool,
) -> Result<u64, CacheError> {
    let mut removed = 0;
    for item in db_tree.iter() {
        let (key, value) = item.map_err(super::storage)?;
        if expired(fetched_at(&value)) && remove_if_unchanged(db_tree, &key, &value)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes `key` if it still holds `value`: an expired copy is deleted, never the one a
/// fetch has just written in its place. Returns whether it was removed.
fn remove_if_unchanged(tree: &sled::Tree, key: &[u8], value: &[u8]) -> Result<bool, CacheError> {
    let swapped = tree
        .compare_and_swap(key, Some(value), None::<&[u8]>)
        .map_err(super::storage)?;
    Ok(swapped.is_ok())
}

/// Counts entries without opening them.
pub fn stats(db_tree: &sled::Tree, now: u64) -> Result<Stats, CacheError> {
    let mut stats = Stats::default();
    for item in db_tree.iter() {
        let (_, value) = item.map_err(super::storage)?;
        stats.entries += 1;
        stats.bytes += value.len() as u64;
        if let Some(at) = fetched_at(&value) {
            stats.oldest_secs = stats.oldest_secs.max(now.saturating_sub(at) / 1000);
        }
    }
    Ok(stats)
}

/// The summaries tree of `db` (for key-less maintenance: stats, purge).
pub fn tree(db: &sled::Db) -> Result<sled::Tree, CacheError> {
    db.open_tree(TREE).map_err(super::storage)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn clearances_keep_their_own_time() {
        let summary = crate::summary::extract(
            br#"{"resourceType": "Bundle", "type": "searchset", "entry": []}"#,
        )
        .unwrap();
        let mut entry = Entry::new("p".into(), summary, composed());
        entry.clear("810001", AccessMode::BrisDeGlace, 1_000);
        entry.clear("810002", AccessMode::Centre15, 5_000);
        assert_eq!(
            entry.clearance_age("810001", AccessMode::BrisDeGlace, 6_000),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            entry.clearance_age("810001", AccessMode::Centre15, 6_000),
            None
        );
        // Cleared again: the time moves, the clearance is not doubled.
        entry.clear("810001", AccessMode::BrisDeGlace, 6_000);
        assert_eq!(entry.cleared.len(), 2);
        assert_eq!(
            entry.clearance_age("810001", AccessMode::BrisDeGlace, 6_000),
            Some(Duration::ZERO)
        );
    }
    use crate::patient::InsPolicy;

    static NOW: AtomicU64 = AtomicU64::new(1_000_000);

    fn test_clock() -> u64 {
        NOW.load(Ordering::SeqCst)
    }

    const LIFETIMES: Lifetimes = Lifetimes {
        fresh: Duration::from_secs(600),
        max_stale: Duration::from_secs(7200),
    };

    fn ins() -> Ins {
        // 2 69 05 49 588 157, key 80: a public example NIR.
        Ins::parse(
            "269054958815780",
            crate::patient::OID_NIR,
            InsPolicy::default(),
        )
        .unwrap()
    }

    fn entry() -> Entry {
        let bundle = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/ips/penicillin-allergy-high-criticality.json"),
        )
        .unwrap();
        let mut summary = crate::summary::extract(&bundle).unwrap();
        // Kept beside the summary (which never serialises it), sealed with it.
        summary.provenance = vec![
            "dmp=registry:_a1".into(),
            "retrieved=1.2.250.1.999.1.1".into(),
        ];
        let entry = Entry::new("p-minimal".into(), summary, composed());
        assert_eq!(entry.provenance.len(), 2);
        entry
    }

    fn composed() -> ComposedFor {
        ComposedFor {
            mode: AccessMode::BrisDeGlace,
            profession: Some("10".into()),
        }
    }

    fn store(dir: &Path) -> (super::super::SummaryCache, MasterKey) {
        let key_path = dir.join("cache.key");
        if !key_path.exists() {
            MasterKey::generate(&key_path).unwrap();
        }
        // Reopened as a test reopens a store: sled lets go of the lock a moment after the
        // last handle is dropped (a CI run failed on it, `Locked`).
        let cache = super::super::tests::reopen(&dir.join("cache")).unwrap();
        (cache, MasterKey::load(&key_path).unwrap())
    }

    /// Every byte of every file under `dir`.
    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Copies sealed under one key are gone once the store is opened under another, and
    /// stay gone when the first key comes back: a run under the other key could not have
    /// withdrawn them on a refusal. Opened again under the same key, they stay.
    #[test]
    fn copies_sealed_under_another_key_are_never_served_again() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, first) = store(dir.path());
        let other_path = dir.path().join("other.key");
        MasterKey::generate(&other_path).unwrap();
        let other = MasterKey::load(&other_path).unwrap();
        let sealed = cache.sealed(&first, LIFETIMES).unwrap();
        sealed.put(&ins(), &entry()).unwrap();
        drop(sealed);
        let sealed = cache.sealed(&first, LIFETIMES).unwrap();
        assert!(
            sealed.get(&ins()).unwrap().is_some(),
            "the same key keeps them"
        );
        drop(sealed);
        let sealed = cache.sealed(&other, LIFETIMES).unwrap();
        assert_eq!(cache.summaries_tree().unwrap().len(), 0);
        drop(sealed);
        let sealed = cache.sealed(&first, LIFETIMES).unwrap();
        assert!(sealed.get(&ins()).unwrap().is_none());
    }

    #[test]
    fn neither_the_ins_nor_the_allergy_is_readable_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let entry = entry();
        assert!(
            entry.summary.parsed().unwrap().allergies.items[0]
                .substance
                .contains("penicillin")
        );
        sealed.put(&ins(), &entry).unwrap();
        cache.flush().unwrap();
        drop(sealed);
        drop(cache);
        let bytes = all_bytes(&dir.path().join("cache"));
        assert!(bytes.len() > 1000, "nothing was written");
        for needle in [
            "269054958815780".as_bytes(),
            b"penicillin",
            b"Penicillin",
            b"PENICILLIN",
            b"p-minimal",
            b"1.2.250.1.213.1.4.8",
        ] {
            assert!(
                !contains(&bytes, needle),
                "{} readable at rest",
                String::from_utf8_lossy(needle)
            );
        }
        // And it reopens with the key.
        let (cache, master) = store(dir.path());
        let hit = cache
            .sealed(&master, LIFETIMES)
            .unwrap()
            .get(&ins())
            .unwrap()
            .unwrap();
        assert_eq!(json(&hit.entry), json(&entry));
        // Sealed by another run (this reopening is one): parsed again, not trusted as is.
        assert!(matches!(hit.entry.summary, CachedSummary::Parsed(_)));
    }

    fn json(entry: &Entry) -> serde_json::Value {
        serde_json::to_value(entry).unwrap()
    }

    #[test]
    fn a_copy_this_run_sealed_is_handed_on_as_its_json_and_an_earlier_runs_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let entry = entry();
        sealed.put(&ins(), &entry).unwrap();
        let hit = sealed.get(&ins()).unwrap().unwrap();
        let CachedSummary::Sealed {
            json: raw,
            has_content,
        } = &hit.entry.summary
        else {
            panic!("this run's copy was parsed again");
        };
        // Noted when sealed: nothing to take out, so the answer needs no look inside.
        assert!(!has_content);
        // Byte for byte what the summary itself serialises to: the answer is unchanged.
        assert_eq!(
            &**raw,
            serde_json::to_string(&*entry.summary.parsed().unwrap()).unwrap()
        );
        assert_eq!(json(&hit.entry), json(&entry));
        assert_eq!(
            format!("{:?}", hit.entry.summary),
            format!("Sealed({} bytes)", raw.len())
        );
        assert_eq!(
            serde_json::to_value(hit.entry.summary.clone().without_content()).unwrap(),
            serde_json::to_value(&*entry.summary.parsed().unwrap()).unwrap()
        );
        // Another run of the gateway (maybe another build) reads the same copy as a struct.
        let other = cache.sealed(&master, LIFETIMES).unwrap();
        let hit = other.get(&ins()).unwrap().unwrap();
        assert!(matches!(hit.entry.summary, CachedSummary::Parsed(_)));
        assert_eq!(json(&hit.entry), json(&entry));
    }

    #[test]
    fn a_sealed_copys_document_content_is_left_out_of_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let mut summary = entry().summary.parsed().unwrap().into_owned();
        summary.unstructured = Some(crate::summary::Unstructured {
            media_type: "application/pdf".into(),
            size: 9,
            text: None,
            pdf: true,
            by_reference: false,
            content: Some("JVBERi0xLjQK".into()),
        });
        sealed
            .put(
                &ins(),
                &Entry::new("p-minimal".into(), summary.clone(), composed()),
            )
            .unwrap();
        let hit = sealed.get(&ins()).unwrap().unwrap();
        assert!(matches!(
            hit.entry.summary,
            CachedSummary::Sealed {
                has_content: true,
                ..
            }
        ));
        assert_eq!(
            hit.entry.summary.parsed().unwrap().pdf().as_deref(),
            Some(b"%PDF-1.4\n".as_slice())
        );
        let answer = hit.entry.summary.without_content();
        let value = serde_json::to_value(&answer).unwrap();
        assert_eq!(value["unstructured"]["media_type"], "application/pdf");
        assert!(value["unstructured"]["content"].is_null(), "{value}");
        assert_eq!(
            value,
            serde_json::to_value(summary.without_content()).unwrap()
        );
    }

    /// A removal that fails (a full or failing disk) may leave a refused patient's copy:
    /// the cache then serves and keeps nothing more in this run.
    #[test]
    fn a_failed_removal_disables_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        sealed.put(&ins(), &entry()).unwrap();
        assert!(sealed.get(&ins()).unwrap().is_some());
        sealed.fail_removals_for_tests();
        assert!(sealed.remove(&ins()).is_err());
        assert!(sealed.get(&ins()).unwrap().is_none());
        assert!(sealed.put(&ins(), &entry()).is_err());
        // Nor is the run's stop marked clean: the next start deletes every copy, the one
        // not removed too. Before, a clean stop kept it for the next run to serve.
        assert!(cache.mark_clean_stop().is_err());
        assert_eq!(cache.start_run().unwrap(), 1);
    }

    /// A refusal heard under one identifier removes the patient's copies under every
    /// other (the same record-service patient), and no one else's.
    #[test]
    fn a_refusal_removes_the_patients_copies_under_every_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let nia = Ins::parse(
            "185057800608491",
            crate::patient::OID_NIA,
            InsPolicy::default(),
        )
        .unwrap();
        let someone_else = Ins::parse(
            "285057800600028",
            crate::patient::OID_NIR,
            InsPolicy::default(),
        )
        .unwrap();
        let entry = entry();
        sealed.put(&ins(), &entry).unwrap();
        sealed.put(&nia, &entry).unwrap();
        let mut other = entry.clone();
        other.patient_id = "p-other".into();
        sealed.put(&someone_else, &other).unwrap();
        assert_eq!(sealed.remove_patient(&ins()).unwrap(), 1);
        assert!(sealed.get(&ins()).unwrap().is_none());
        assert!(sealed.get(&nia).unwrap().is_none());
        assert!(sealed.get(&someone_else).unwrap().is_some());
        // Nothing cached under the identifier refused: nothing known to link.
        assert_eq!(sealed.remove_patient(&ins()).unwrap(), 0);
    }

    /// The DMP's copies carry the INS asked for as their patient id, so an NIA copy and an
    /// NIR copy of one person are tied only by the INS their documents name: a refusal
    /// under either drops both, whether or not the refused INS had a copy of its own.
    #[test]
    fn a_refusal_reaches_copies_tied_by_the_ins_their_documents_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let nir = ins();
        let nia = Ins::parse(
            "185057800608491",
            crate::patient::OID_NIA,
            InsPolicy::default(),
        )
        .unwrap();
        let stranger = Ins::parse(
            "285057800600028",
            crate::patient::OID_NIR,
            InsPolicy::default(),
        )
        .unwrap();
        let dmp_copy = |asked: &Ins, named: &[&Ins]| {
            let mut entry = entry();
            entry.patient_id = identity(asked);
            entry.identities = named.iter().map(|i| identity(i)).collect();
            entry
        };
        // Read under the NIA, its document naming the NIR too; nothing under the NIR.
        sealed.put(&nia, &dmp_copy(&nia, &[&nir, &nia])).unwrap();
        sealed
            .put(&stranger, &dmp_copy(&stranger, &[&stranger]))
            .unwrap();
        assert_eq!(sealed.remove_patient(&nir).unwrap(), 1);
        assert!(
            sealed.get(&nia).unwrap().is_none(),
            "the NIA copy outlived a refusal under the NIR"
        );
        assert!(sealed.get(&stranger).unwrap().is_some());

        // The NIR copy names both; the NIA copy, read earlier, names only the NIA: the
        // refused copy's identities reach it.
        sealed.put(&nir, &dmp_copy(&nir, &[&nir, &nia])).unwrap();
        sealed.put(&nia, &dmp_copy(&nia, &[&nia])).unwrap();
        assert_eq!(sealed.remove_patient(&nir).unwrap(), 1);
        assert!(sealed.get(&nia).unwrap().is_none());

        // The INS a copy is cached under is among its identities without being named.
        sealed.put(&nia, &dmp_copy(&nia, &[])).unwrap();
        let opened = sealed.get(&nia).unwrap().unwrap();
        assert_eq!(opened.entry.identities, vec![identity(&nia)]);
        // A copy tied by nothing stays: an NIR refused says nothing of an unrelated NIA.
        assert_eq!(sealed.remove_patient(&nir).unwrap(), 0);
        assert!(sealed.get(&nia).unwrap().is_some());
        assert!(!format!("{:?}", opened.entry).contains("185057800608491"));
    }

    /// Expiry deletes the expired value only: a copy written since stays.
    #[test]
    fn expiry_never_deletes_a_copy_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        sealed.put(&ins(), &entry()).unwrap();
        let key = sealed.key(&ins());
        let old = sealed.tree.get(&key).unwrap().unwrap();
        sealed.put(&ins(), &entry()).unwrap();
        assert!(!remove_if_unchanged(&sealed.tree, &key, &old).unwrap());
        assert!(sealed.get(&ins()).unwrap().is_some());
        let new = sealed.tree.get(&key).unwrap().unwrap();
        assert!(remove_if_unchanged(&sealed.tree, &key, &new).unwrap());
        assert!(sealed.get(&ins()).unwrap().is_none());
    }

    #[test]
    fn entries_turn_stale_then_expire_and_the_purge_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache
            .sealed(&master, LIFETIMES)
            .unwrap()
            .with_clock(test_clock);
        NOW.store(10_000_000, Ordering::SeqCst);
        sealed.put(&ins(), &entry()).unwrap();
        NOW.store(10_000_000 + 599_000, Ordering::SeqCst);
        assert!(sealed.get(&ins()).unwrap().unwrap().fresh);
        NOW.store(10_000_000 + 601_000, Ordering::SeqCst);
        let stale = sealed.get(&ins()).unwrap().unwrap();
        assert!(!stale.fresh);
        assert_eq!(stale.age, Duration::from_secs(601));
        assert_eq!(sealed.stats().unwrap().entries, 1);
        NOW.store(10_000_000 + 7_201_000, Ordering::SeqCst);
        assert_eq!(sealed.purge_expired().unwrap(), 1);
        assert_eq!(sealed.stats().unwrap().entries, 0);
        sealed.put(&ins(), &entry()).unwrap();
        NOW.store(10_000_000 + 20_000_000, Ordering::SeqCst);
        assert!(
            sealed.get(&ins()).unwrap().is_none(),
            "expired entries are never served"
        );
        assert_eq!(
            sealed.stats().unwrap().entries,
            0,
            "and are removed on the way"
        );
        // The wall clock steps back two minutes: an entry fetched "in the future" has no
        // age one can trust, so it is neither served (as fresh) nor kept; a minute of
        // skew is tolerated.
        sealed.put(&ins(), &entry()).unwrap();
        NOW.store(10_000_000 + 20_000_000 - 59_000, Ordering::SeqCst);
        assert!(sealed.get(&ins()).unwrap().unwrap().fresh);
        NOW.store(10_000_000 + 20_000_000 - 120_000, Ordering::SeqCst);
        assert!(sealed.get(&ins()).unwrap().is_none());
        assert_eq!(sealed.stats().unwrap().entries, 0);
        sealed.put(&ins(), &entry()).unwrap();
        NOW.store(10_000_000 + 20_000_000 - 240_000, Ordering::SeqCst);
        assert_eq!(sealed.purge_expired().unwrap(), 1);
        let mut cleared = entry();
        cleared.clear("810001", AccessMode::BrisDeGlace, 1_000_000);
        assert!(
            cleared
                .clearance_age("810001", AccessMode::BrisDeGlace, 1_000_000 + 5_000)
                .is_some()
        );
        assert!(
            cleared
                .clearance_age("810001", AccessMode::BrisDeGlace, 1_000_000 - 120_000)
                .is_none()
        );
    }

    #[test]
    fn a_tampered_moved_or_foreign_key_entry_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        sealed.put(&ins(), &entry()).unwrap();
        let tree = cache.summaries_tree().unwrap();
        let (key, value) = tree.iter().next().unwrap().unwrap();
        // Made to look fresher: the fetch time is authenticated.
        let mut younger = value.to_vec();
        younger[8] ^= 1;
        tree.insert(&key, younger).unwrap();
        assert!(sealed.get(&ins()).unwrap().is_none());
        // Another master key cannot open (nor even find) it; the store opened under it
        // deletes it (`copies_sealed_under_another_key_are_never_served_again`).
        sealed.put(&ins(), &entry()).unwrap();
        assert!(sealed.get(&ins()).unwrap().is_some());
        let other_dir = tempfile::tempdir().unwrap();
        MasterKey::generate(&other_dir.path().join("k")).unwrap();
        let other = MasterKey::load(&other_dir.path().join("k")).unwrap();
        let foreign = cache.sealed(&other, LIFETIMES).unwrap();
        assert!(foreign.get(&ins()).unwrap().is_none());
        assert!(sealed.get(&ins()).unwrap().is_none());
    }

    #[test]
    fn an_entry_an_earlier_build_sealed_as_one_json_object_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let mut entry = entry();
        entry.clear("810001", AccessMode::BrisDeGlace, 1_000);
        // Those builds kept no provenance.
        entry.provenance.clear();
        // What builds before the framed plaintext sealed: the entry as one object, marked
        // with their run.
        let mut old = json(&entry);
        old.as_object_mut().unwrap().remove("provenance");
        old["sealed_by"] = serde_json::json!(7);
        old["has_content"] = serde_json::json!(false);
        let key = sealed.key(&ins());
        let at = sealed.now_ms();
        let mut aad = key.clone();
        aad.extend_from_slice(&at.to_be_bytes());
        let value = legacy_seal(
            &master.0,
            &aad,
            at,
            VERSION_JSON,
            &serde_json::to_vec(&old).unwrap(),
        );
        let tree = cache.summaries_tree().unwrap();
        tree.insert(&key, value.clone()).unwrap();
        // Counted and kept by the key-less maintenance, then opened and parsed.
        assert_eq!(sealed.stats().unwrap().entries, 1);
        assert_eq!(sealed.purge_expired().unwrap(), 0);
        let hit = sealed.get(&ins()).unwrap().unwrap();
        assert!(matches!(hit.entry.summary, CachedSummary::Parsed(_)));
        assert_eq!(json(&hit.entry), json(&entry));
        // Relabelled as the framed version (same key, same authenticated data), it does not
        // open, and is removed.
        let mut relabelled = value;
        relabelled[0] = VERSION_FRAMED;
        tree.insert(&key, relabelled).unwrap();
        assert!(sealed.get(&ins()).unwrap().is_none());
        assert_eq!(sealed.stats().unwrap().entries, 0);
        // A framed entry whose meta length runs past its end does not open either.
        let mut plain = 4096u32.to_be_bytes().to_vec();
        plain.extend_from_slice(
            br#"{"patient_id":"p","cleared":[],"sealed_by":1,"has_content":false}{}"#,
        );
        tree.insert(&key, sealed.seal(&key, at, &plain).unwrap())
            .unwrap();
        assert!(sealed.get(&ins()).unwrap().is_none());
    }

    /// Version 2 entries (framed, wrapped by the master key itself) still open after an
    /// upgrade; no entry opens under another version's label, in either direction.
    #[test]
    fn an_entry_an_earlier_build_wrapped_with_the_master_key_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, master) = store(dir.path());
        let sealed = cache.sealed(&master, LIFETIMES).unwrap();
        let mut entry = entry();
        entry.clear("810001", AccessMode::BrisDeGlace, 1_000);
        sealed.put(&ins(), &entry).unwrap();
        let key = sealed.key(&ins());
        let tree = cache.summaries_tree().unwrap();
        let current = tree.get(&key).unwrap().unwrap().to_vec();
        assert_eq!(current[0], VERSION);
        // Opened here without this module's code, as the format says: version 3 wraps
        // with HMAC(master, label) and authenticates version, tree key and fetch time.
        let at = fetched_at(&current).unwrap();
        let derive = hmac::Key::new(hmac::HMAC_SHA256, &master.0);
        let wrap = hmac::sign(&derive, b"samu-gateway cache wrapping key v3");
        let mut aad = vec![VERSION];
        aad.extend_from_slice(&key);
        aad.extend_from_slice(&at.to_be_bytes());
        let plain = legacy_open(wrap.as_ref(), &aad, &current);
        // Version 2 as earlier builds sealed it: the master key itself, no version in the
        // authenticated data.
        let mut old_aad = key.clone();
        old_aad.extend_from_slice(&at.to_be_bytes());
        let old = legacy_seal(&master.0, &old_aad, at, VERSION_FRAMED, &plain);
        tree.insert(&key, old.clone()).unwrap();
        let hit = sealed.get(&ins()).unwrap().unwrap();
        assert_eq!(json(&hit.entry), json(&entry));
        // The wrapping differs: the master key does not open a version 3 entry, nor the
        // derived key a version 2 one, whatever the label says.
        for (value, label) in [(old, VERSION), (current, VERSION_FRAMED)] {
            let mut relabelled = value;
            relabelled[0] = label;
            tree.insert(&key, relabelled).unwrap();
            assert!(sealed.get(&ins()).unwrap().is_none(), "opened as {label}");
        }
    }

    /// Seals as the format describes, with this test's own code: `wrapping` wraps a fresh
    /// data key, both seals authenticate `aad`.
    fn legacy_seal(wrapping: &[u8], aad: &[u8], at: u64, version: u8, plain: &[u8]) -> Vec<u8> {
        let seal = |key: &[u8], nonce: [u8; NONCE_LEN], data: &mut Vec<u8>| {
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap())
                .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
                .unwrap();
        };
        let data_key = [7u8; 32];
        let mut wrapped = data_key.to_vec();
        seal(wrapping, [1; NONCE_LEN], &mut wrapped);
        let mut body = plain.to_vec();
        seal(&data_key, [2; NONCE_LEN], &mut body);
        let mut value = vec![version];
        value.extend_from_slice(&at.to_be_bytes());
        value.extend_from_slice(&[1; NONCE_LEN]);
        value.extend_from_slice(&wrapped);
        value.extend_from_slice(&[2; NONCE_LEN]);
        value.extend_from_slice(&body);
        value
    }

    /// Opens what `legacy_seal` describes.
    fn legacy_open(wrapping: &[u8], aad: &[u8], value: &[u8]) -> Vec<u8> {
        let open = |key: &[u8], nonce: &[u8], data: &mut Vec<u8>| {
            let plain = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap())
                .open_in_place(
                    Nonce::try_assume_unique_for_key(nonce).unwrap(),
                    Aad::from(aad),
                    data,
                )
                .unwrap()
                .len();
            data.truncate(plain);
        };
        let rest = &value[HEADER..];
        let (wrap_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(WRAPPED);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let mut data_key = wrapped.to_vec();
        open(wrapping, wrap_nonce, &mut data_key);
        let mut body = body.to_vec();
        open(&data_key, nonce, &mut body);
        body
    }

    #[test]
    fn master_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        MasterKey::generate(&path).unwrap();
        assert!(MasterKey::generate(&path).is_err(), "never overwrites");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MasterKey::load(&path).is_err());
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            MasterKey::load(&short)
                .unwrap_err()
                .to_string()
                .contains("64 hex")
        );
    }
}
