//! Shipping the trail to audit repositories: syslog over TLS (RFC 5424 messages, RFC 5425
//! octet-counted framing) with mutual TLS, IHE ATNA style, store-and-forward.
//!
//! One task per receiver reads the records after its "shipped up to" cursor (kept in the
//! audit store, written by the audit writer), sends them in order, and advances the cursor
//! once the receiver's TCP has acknowledged every byte (`outq`) and the connection is seen
//! still open; a receiver outage grows a
//! backlog that drains in order when it returns, with backoff (1 s doubling to 30 s), and a
//! restart resumes from the cursor. An idle shipper wakes on each commit, so a record (an
//! alert above all) leaves as soon as it is durable. Delivery is at least once: the structured data carries
//! node, sequence number and hashes so a receiver can deduplicate and check the chain.
//! The slowest receiver's cursor is the trail's "shipped up to", which pruning respects.

use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::event::{EventKind, Outcome, Record};
use super::store::{self, AuditStore, ReadStore};
use super::{AuditError, AuditLog, dicom, fhir, outq, relp};
use crate::problem::ConfigProblem;
use crate::secret::SecretPath;

/// Records sent per batch, at most: one cursor update (two small redb commits) each, so a
/// backlog drains in large batches; a live trail ships in small ones, as it comes. Over
/// RELP a batch is one round: every message written, then every answer read. A round
/// ended waiting ~40 ms for the repository's last answers until our ACKs were made prompt
/// (see `relp::PromptAcks`), which is why rounds are as large as batches: measured 2.9k
/// records/s in rounds of 128, 20.6k in 1,024, 34.9k in 4,096, then 48-51k with prompt
/// ACKs. The answers are read while the round is written (`relp::Session::send`), so a
/// round of any size cannot deadlock on full socket buffers.
const BATCH: usize = 4096;
/// A batch also ends once its messages reach this many bytes. A backlog is held up to
/// three times over (the batch in flight, the next one formatted meanwhile, the framed
/// copy written): records of the usual size (under 1 KiB) fill 4,096 well before it, but
/// records near a raised `max_message_bytes` (up to 4 MiB) would make each copy gigabytes.
const BATCH_BYTES: usize = 8 << 20;
/// The smallest batch a slow link is given (see [`batch_after`]).
const MIN_BATCH: usize = 16;
/// How long an idle shipper waits for a commit notice before looking anyway.
const IDLE: Duration = Duration::from_millis(500);
/// How long after a batch the connection is watched for the receiver closing it (a
/// receiver refusing our certificate under TLS 1.3 closes only after the handshake).
/// During a backlog drain over syslog/TLS the next batch is the watch instead: a batch
/// counts shipped once the one after it was acknowledged by the receiver's TCP on a
/// connection still open, and only the last batch waits this long.
const SETTLE: Duration = Duration::from_millis(30);
/// A batch must be written within this, and acknowledged by the receiver's TCP within it
/// again; past it the connection is dropped and the batch resent on the next.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);
/// The kernel gives up on a connection whose sent data stays unacknowledged this long
/// (`TCP_USER_TIMEOUT`), instead of retransmitting for many minutes.
const TCP_USER_TIMEOUT_MS: u32 = 20_000;

/// Message body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// DICOM audit message XML (MSGID `IHE+RFC-3881`).
    #[default]
    Dicom,
    /// FHIR AuditEvent JSON.
    Fhir,
}

/// How records travel to a repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Syslog over TLS (RFC 5425, the IHE ATNA transport).
    #[default]
    SyslogTls,
    /// RELP over TLS: every message acknowledged by the repository once taken.
    Relp,
}

/// `[[audit.receivers]]`: one audit repository.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Stable name (its cursor is kept under it): `[a-z0-9_-]`.
    pub name: String,
    /// `host:port` of the syslog-over-TLS listener.
    pub address: String,
    /// Name the receiver's certificate must carry (default: the host of `address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM CA the receiver's certificate chains to.
    pub ca: PathBuf,
    /// CRLs (PEM or DER) the receiver's certificate is checked against; they must include
    /// its issuer's. Reread when they change (looked at every five minutes at most).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<PathBuf>,
    /// The gateway's client certificate (PEM chain).
    pub client_cert: PathBuf,
    /// Its key (file or `credential:NAME`).
    pub client_key: SecretPath,
    /// Message body: `dicom` (default) or `fhir`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// `syslog_tls` (RFC 5425: delivery confirmed by the repository's TCP) or `relp`
    /// (rsyslog's RELP over TLS, `imrelp`: each message acknowledged by the repository).
    #[serde(default)]
    pub transport: Transport,
    /// The IANA private enterprise number in the structured-data id (`samu@N`): the
    /// centre's organisation's own. The default, 32473, is the number reserved for
    /// documentation examples.
    #[serde(default = "default_enterprise_number")]
    pub enterprise_number: u32,
    /// The largest message the repository keeps whole (rsyslog's `maxMessageSize`, and
    /// `imrelp`'s `maxDataSize`), bytes. A repository cuts a longer one short and still
    /// acknowledges it, so a record rendered longer is not sent: shipping to this
    /// repository stops before it, loudly, until both are raised. Default: rsyslog's 8 KiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_enterprise_number() -> u32 {
    32473
}

fn default_max_message_bytes() -> usize {
    8 * 1024
}

/// Bounds of `max_message_bytes`: syslog's minimum (RFC 5424 §6.1) and more than any
/// record renders to (records are at most 64 KiB of JSON).
pub const MAX_MESSAGE_BYTES: std::ops::RangeInclusive<usize> = 2048..=4 * 1024 * 1024;

/// How a message is framed for a receiver.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// The body's format.
    pub format: PayloadFormat,
    /// The private enterprise number of the structured-data id.
    pub enterprise_number: u32,
}

/// What one batch may hold: records, and the largest message the repository keeps whole.
#[derive(Debug, Clone, Copy)]
struct Limits {
    records: usize,
    message_bytes: usize,
    /// The batch ends once its messages reach this many bytes (at least one record goes).
    batch_bytes: usize,
}

/// Backlog of one receiver, for metrics and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Records not yet confirmed delivered (by the repository's TCP, or by the repository
    /// itself over RELP).
    pub records: u64,
    /// Age of the oldest of them, seconds.
    pub oldest_secs: u64,
    /// Connection or write failures so far.
    pub errors: u64,
    /// Bytes sent and not confirmed yet (the batch under way, or the last one that failed).
    pub unconfirmed_bytes: u64,
}

/// A receiver, ready to connect.
pub struct Receiver {
    config: ReceiverConfig,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    state: std::sync::Mutex<Backlog>,
}

impl Receiver {
    /// How messages are framed for this receiver.
    pub fn framing(&self) -> Framing {
        Framing {
            format: self.config.format,
            enterprise_number: self.config.enterprise_number,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            records: BATCH,
            message_bytes: self.config.max_message_bytes,
            batch_bytes: BATCH_BYTES,
        }
    }

    /// Loads the TLS material of `config` (problems keyed under `audit.receivers[i]`).
    pub fn new(config: ReceiverConfig, at: usize) -> Result<Self, Vec<ConfigProblem>> {
        let section = format!("audit.receivers[{at}]");
        let mut problems = Vec::new();
        let host = config.server_name.clone().unwrap_or_else(|| {
            config
                .address
                .rsplit_once(':')
                .map_or(config.address.clone(), |(h, _)| h.to_owned())
        });
        let server_name = ServerName::try_from(host)
            .map_err(|e| {
                problems.push(ConfigProblem::new(
                    format!("{section}.server_name"),
                    e.to_string(),
                ))
            })
            .ok();
        let files = crate::tls::MutualClient {
            section: &section,
            ca: ("ca", &config.ca),
            crls: ("crls", &config.crls),
            cert: ("client_cert", &config.client_cert),
            key: ("client_key", &config.client_key),
        };
        let tls = crate::tls::mutual_client_config(&files, &mut problems);
        let (Some(tls), Some(server_name), true) = (tls, server_name, problems.is_empty()) else {
            return Err(problems);
        };
        Ok(Self {
            config,
            connector: TlsConnector::from(Arc::new(tls)),
            server_name,
            state: std::sync::Mutex::new(Backlog::default()),
        })
    }

    /// The receiver's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its backlog now.
    pub fn backlog(&self) -> Backlog {
        self.state.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// A new connection by this receiver's transport (a RELP session opened).
    async fn link(&self) -> Result<Link, ShipError> {
        let stream = self.connect().await?;
        match self.config.transport {
            Transport::SyslogTls => Ok(Link::Syslog(Box::new(stream))),
            Transport::Relp => {
                let opened =
                    tokio::time::timeout(Duration::from_secs(5), relp::Session::open(stream))
                        .await
                        .map_err(|_| ShipError::RelpOpenTimeout)??;
                Ok(Link::Relp(Box::new(opened)))
            }
        }
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>, ShipError> {
        // The resolver retries on its own schedule: bounded like the connection.
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host(&self.config.address),
        )
        .await
        .map_err(|_| ShipError::Resolve("no answer within 5 s".into()))?
        .map_err(|e| ShipError::Resolve(e.to_string()))?
        .take(8)
        .collect();
        if addrs.is_empty() {
            return Err(ShipError::Resolve("it resolves to nothing".into()));
        }
        // Each address in turn: a dead one (an unreachable IPv6 entry, a retired A
        // record) must not keep the repository unreachable while another answers.
        let mut failure = ShipError::ConnectTimeout;
        let mut connected = None;
        for addr in addrs {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    connected = Some(tcp);
                    break;
                }
                Ok(Err(e)) => failure = ShipError::Connect(e),
                Err(_) => failure = ShipError::ConnectTimeout,
            }
        }
        let tcp = connected.ok_or(failure)?;
        // Batches go out whole and answers must come back at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        if let Err(e) = rustix::net::sockopt::set_tcp_user_timeout(&tcp, TCP_USER_TIMEOUT_MS) {
            tracing::warn!(error = %e, "cannot set TCP_USER_TIMEOUT on an audit connection");
        }
        tokio::time::timeout(
            Duration::from_secs(5),
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ShipError::HandshakeTimeout)?
        .map_err(ShipError::Handshake)
    }

    fn set_unconfirmed(&self, bytes: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.unconfirmed_bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        }
    }

    /// The receiver's transport.
    pub fn transport(&self) -> Transport {
        self.config.transport
    }

    fn failed(&self, why: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.errors += 1;
        }
        tracing::warn!(receiver = %self.config.name, error = why, "audit shipping failed; will retry");
    }
}

/// The RFC 5424 message for `record` (stored bytes hashing to `hash`), framed per RFC 5425.
pub fn frame(record: &Record, hash: &str, framing: Framing) -> Vec<u8> {
    octet_counted(&message(record, hash, framing))
}

/// RFC 5425 framing: the message's length, a space, the message.
fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    octet_counted_into(&mut out, message);
    out
}

fn octet_counted_into(out: &mut Vec<u8>, message: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{} ", message.len());
    out.extend_from_slice(message);
}

/// The RFC 5424 message for `record`. MSGID says what the body is, as IHE ATNA's tests
/// expect: `IHE+RFC-3881` for the DICOM audit message (the schema that grew out of RFC
/// 3881), `IHE+FHIR` for an AuditEvent.
fn message(record: &Record, hash: &str, framing: Framing) -> Vec<u8> {
    let Framing {
        format,
        enterprise_number,
    } = framing;
    // Facility 10 (security/authorization); notice for normal events, warning for refusals
    // and failures, alert (1: "action must be taken immediately") for real-time anomalies,
    // so that the receiving side can page on them.
    let severity = match (&record.event.kind, &record.event.outcome) {
        // A restore means records after the backup exist only in the repositories: someone
        // must look, now.
        (EventKind::SecurityAlert | EventKind::TrailRestored, _) => 1,
        (_, Outcome::Success) => 5,
        (_, Outcome::Refused { .. } | Outcome::Failed { .. }) => 4,
    };
    let (msgid, body) = match format {
        PayloadFormat::Dicom => ("IHE+RFC-3881", dicom::audit_message(record, hash)),
        PayloadFormat::Fhir => ("IHE+FHIR", fhir::audit_event(record, hash).to_string()),
    };
    let message = format!(
        "<{}>1 {} {} samu-gateway - {msgid} [samu@{enterprise_number} node=\"{}\" epoch=\"{}\" seq=\"{}\" prev=\"{}\" hash=\"{}\"] {body}",
        10 * 8 + severity,
        record.time,
        sd_token(&record.node),
        sd_value(&record.node),
        record.epoch,
        record.seq,
        sd_value(&record.prev),
        hash,
    );
    message.into_bytes()
}

/// A HOSTNAME field: printable ASCII without spaces, at most 255.
fn sd_token(value: &str) -> String {
    let token: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if token.is_empty() { "-".into() } else { token }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped.
fn sd_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// The messages of the records after `cursor` (at most `limit`), with the last sequence
/// number and how many records that covers.
fn next_batch(
    store: &AuditStore,
    cursor: u64,
    framing: Framing,
    limits: Limits,
) -> Result<(Vec<Vec<u8>>, u64, usize), AuditError> {
    let txn = store.snapshot()?;
    let mut out = Vec::new();
    // A repository added after a prune starts where the store does now.
    let pruned = store::meta(&txn, store::Meta::PrunedThrough)?.unwrap_or(0);
    let (mut last, mut count, mut size) = (cursor.max(pruned), 0, 0usize);
    let mut unshippable = None;
    store::for_each_record(&txn, last + 1, |seq, bytes| {
        // Sequence numbers are gap-free, and nothing after a cursor or the pruned point
        // is ever pruned: a hole is damage (`audit verify` names it). Moving past it
        // would count the missing record delivered.
        if seq != last + 1 {
            unshippable = Some((
                last + 1,
                format!("it is missing from the store (the next record present is {seq})"),
            ));
            return ControlFlow::Break(());
        }
        match serde_json::from_slice::<Record>(bytes) {
            Ok(record) if record.seq != seq => {
                unshippable = Some((
                    seq,
                    format!(
                        "it is stored under {seq} but says it is record {}",
                        record.seq
                    ),
                ));
                return ControlFlow::Break(());
            }
            // The time is the syslog header's TIMESTAMP: a space in it would shift every
            // field after it. The writer writes RFC 3339; anything else is damage.
            Ok(record)
                if record.time.is_empty() || !record.time.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                unshippable = Some((seq, "its time is not a timestamp".to_owned()));
                return ControlFlow::Break(());
            }
            Ok(record) => {
                let hash = crate::encoding::hex(&super::chain::hash(bytes));
                let message = message(&record, &hash, framing);
                // The repository would keep it cut short and acknowledge it all the same.
                if message.len() > limits.message_bytes {
                    unshippable = Some((
                        seq,
                        format!(
                            "its message is {} bytes, over this repository's \
                             max_message_bytes ({}); raise the repository's maxMessageSize \
                             (and imrelp's maxDataSize), then this setting",
                            message.len(),
                            limits.message_bytes
                        ),
                    ));
                    return ControlFlow::Break(());
                }
                size = size.saturating_add(message.len());
                out.push(message);
            }
            // The writer stores only records it serialised itself, so this is damage
            // (`audit verify` names it). Shipping stops before it: moving past would count
            // it delivered and leave a hole in every repository's copy of the chain.
            Err(e) => {
                unshippable = Some((
                    seq,
                    format!("it is unreadable ({})", super::event::unreadable_record(&e)),
                ));
                return ControlFlow::Break(());
            }
        }
        last = seq;
        count += 1;
        if count >= limits.records || size >= limits.batch_bytes {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    match unshippable {
        // What comes before it still goes.
        Some((seq, why)) if count == 0 => Err(AuditError::Unshippable { seq, why }),
        _ => Ok((out, last, count)),
    }
}

type Prepared = tokio::task::JoinHandle<Result<(Vec<Vec<u8>>, u64, usize), AuditError>>;

/// Reads and formats the batch after `cursor`: CPU work, off the async workers.
fn prepare(store: &Arc<AuditStore>, cursor: u64, framing: Framing, limits: Limits) -> Prepared {
    let store = store.clone();
    tokio::task::spawn_blocking(move || next_batch(&store, cursor, framing, limits))
}

/// Size and age of the backlog after `cursor` (or after the pruned point, where a
/// repository added after a prune starts).
///
/// The age is the oldest unconfirmed record's. When that record is damaged or missing,
/// shipping stops before it (`next_batch`), and this is when the age must keep growing
/// so that readiness and the backlog alerts say so: the first readable record after it
/// (a few are tried) is younger, so its age is a lower bound; with none, the last one
/// confirmed, older, stands in. Reading 0 there hid a stopped repository for good.
fn backlog_after(store: &AuditStore, cursor: u64) -> Result<(u64, u64), AuditError> {
    /// Records tried past a damaged one for a time.
    const TRIED: usize = 64;
    #[derive(serde::Deserialize)]
    struct Stamped<'a> {
        #[serde(borrow)]
        time: std::borrow::Cow<'a, str>,
    }
    let time_of = |bytes: &[u8]| {
        serde_json::from_slice::<Stamped<'_>>(bytes)
            .ok()
            .and_then(|r| crate::clock::parse_time(&r.time))
    };
    let txn = store.snapshot()?;
    let head = store::meta(&txn, store::Meta::HeadSeq)?.unwrap_or(0);
    let pruned = store::meta(&txn, store::Meta::PrunedThrough)?.unwrap_or(0);
    let from = cursor.max(pruned);
    if head <= from {
        return Ok((0, 0));
    }
    let mut at = None;
    let mut tried = 0;
    store::for_each_record(&txn, from + 1, |_, bytes| {
        at = time_of(bytes);
        tried += 1;
        if at.is_some() || tried >= TRIED {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if at.is_none() {
        at = store::record(&txn, from)?.and_then(|bytes| time_of(&bytes));
    }
    let oldest = at.map_or(0, |at| crate::clock::now().1.saturating_sub(at) / 1000);
    Ok((head - from, oldest))
}

/// Ships to every receiver until the process ends.
pub fn start(receivers: Vec<Arc<Receiver>>, store: Arc<AuditStore>, log: Arc<AuditLog>) {
    let all: Arc<Vec<Arc<Receiver>>> = Arc::new(receivers);
    for receiver in all.iter() {
        let (receiver, store, log, all) =
            (receiver.clone(), store.clone(), log.clone(), all.clone());
        tokio::spawn(async move { ship(receiver, store, log, all).await });
    }
}

async fn ship(
    receiver: Arc<Receiver>,
    store: Arc<AuditStore>,
    log: Arc<AuditLog>,
    all: Arc<Vec<Arc<Receiver>>>,
) {
    let mut connection: Option<Link> = None;
    // A syslog/TLS batch the receiver's TCP acknowledged, not yet watched (see SETTLE):
    // its last record and its bytes. The next batch starts after it; the cursor waits.
    let mut unsettled: Option<(u64, usize)> = None;
    let mut backoff = Duration::from_secs(1);
    // Records per batch now: a link too slow for a full batch within the deadline gets
    // smaller ones (`batch_after`).
    let mut batch = BATCH;
    let limits = |batch| Limits {
        records: batch,
        ..receiver.limits()
    };
    // The batch after the one in flight, formatted meanwhile: (its cursor, the work).
    let mut ahead: Option<(u64, Prepared)> = None;
    let commits = log.commits();
    // A cursor before the pruned point: the repository had one, so it was configured
    // before, and removed while the records between were pruned; they are gone from the
    // appliance and it never got them. Said once; it resumes after them (`next_batch`).
    if let Ok(txn) = store.snapshot()
        && let (Ok(cursor), Ok(Some(pruned))) = (
            store::receiver_cursor(&txn, receiver.name()),
            store::meta(&txn, store::Meta::PrunedThrough),
        )
        && cursor > 0
        && cursor < pruned
    {
        tracing::warn!(
            receiver = receiver.name(),
            cursor,
            pruned,
            "this repository's cursor is before the pruned point: the records between were pruned while it was not configured, and it never received them; it resumes after them"
        );
    }
    loop {
        // Registered before reading, so a commit made meanwhile is not missed.
        let committed = commits.notified();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let stored = match store
            .snapshot()
            .and_then(|t| store::receiver_cursor(&t, receiver.name()))
        {
            Ok(cursor) => cursor,
            Err(e) => {
                receiver.failed(&e.to_string());
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if let Ok((records, oldest)) = backlog_after(&store, stored)
            && let Ok(mut state) = receiver.state.lock()
        {
            state.records = records;
            state.oldest_secs = oldest;
        }
        let cursor = unsettled.map_or(stored, |(through, _)| through.max(stored));
        let prepared = match ahead.take() {
            Some((from, next)) if from == cursor => next,
            _ => prepare(&store, cursor, receiver.framing(), limits(batch)),
        };
        let prepared = prepared
            .await
            .unwrap_or_else(|e| Err(AuditError::Storage(format!("shipping batch: {e}"))));
        let (messages, last, count) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                // The batch before this one still counts once watched: records that went
                // before one that cannot go are not held back with it.
                settle(
                    &mut connection,
                    &mut unsettled,
                    &receiver,
                    &log,
                    &store,
                    &all,
                )
                .await;
                receiver.failed(&e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if count == 0 {
            // The backlog is drained: the last batch gets its watch, then counts.
            if unsettled.is_some() {
                settle(
                    &mut connection,
                    &mut unsettled,
                    &receiver,
                    &log,
                    &store,
                    &all,
                )
                .await;
                continue;
            }
            let _ = tokio::time::timeout(IDLE, committed).await;
            continue;
        }
        let link = match connection.take() {
            Some(link) => link,
            None => match receiver.link().await {
                Ok(link) => link,
                Err(e) => {
                    receiver.failed(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            },
        };
        // A full batch means a backlog: format the next one while this one travels, and
        // let that one be this one's watch.
        let more = count >= batch;
        if more {
            ahead = Some((
                last,
                prepare(&store, last, receiver.framing(), limits(batch)),
            ));
        }
        let sent: usize = messages.iter().map(Vec::len).sum();
        receiver.set_unconfirmed(sent + unsettled.map_or(0, |(_, bytes)| bytes));
        let delivered = link.deliver(&messages, !more).await;
        let resized = batch_after(batch, delivered.as_ref().err());
        if resized < batch {
            tracing::warn!(
                receiver = receiver.name(),
                records = resized,
                "the repository did not take a batch within the delivery deadline: smaller batches"
            );
        }
        batch = resized;
        match delivered {
            Ok(link) => {
                // Confirmed: this batch (watched, or confirmed by the repository itself),
                // or, for a syslog/TLS batch left unwatched, the one before it.
                let confirmed = if more && matches!(link, Link::Syslog(_)) {
                    unsettled.replace((last, sent)).map(|(through, _)| through)
                } else {
                    unsettled = None;
                    Some(last)
                };
                receiver.set_unconfirmed(unsettled.map_or(0, |(_, bytes)| bytes));
                connection = Some(link);
                backoff = Duration::from_secs(1);
                if let Some(through) = confirmed
                    && let Err(e) = advance(&receiver, &log, &store, &all, through)
                {
                    // The cursor did not move (a failed index commit, the log closing):
                    // the next pass would send the same batch again at once.
                    receiver.failed(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            Err(e) => {
                // Everything after the stored cursor goes again, on a new connection.
                unsettled = None;
                receiver.failed(&e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The records per batch after one of `batch` was delivered, or failed with `failure`.
/// A batch must get through within [`DELIVERY_DEADLINE`], whole (a RELP round keeps none
/// of its answers when it fails): over a link too slow for a full batch of large
/// messages, a backlog would be sent again and again and never drain. So a batch that
/// ran out of time halves the next, down to [`MIN_BATCH`]; each delivered batch doubles
/// it back up to [`BATCH`]. Other failures (a refused handshake, a closed connection)
/// say nothing of the link's speed and leave it.
fn batch_after(batch: usize, failure: Option<&ShipError>) -> usize {
    match failure {
        None => batch.saturating_mul(2).min(BATCH),
        Some(
            ShipError::WriteTimeout(_)
            | ShipError::Unacknowledged { .. }
            | ShipError::RelpAckTimeout(_),
        ) => (batch / 2).max(MIN_BATCH),
        Some(_) => batch,
    }
}

/// Why a batch did not reach a repository (logged and counted; the batch goes again).
#[derive(Debug, thiserror::Error)]
enum ShipError {
    /// The address does not resolve.
    #[error("cannot resolve the address: {0}")]
    Resolve(String),
    /// No TCP connection within 5 s.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connection failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// No TLS handshake within 5 s.
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    /// The repository refused the handshake.
    #[error("TLS handshake refused: {0}")]
    Handshake(std::io::Error),
    /// The RELP session did not open in time.
    #[error("RELP open not answered within 5 s")]
    RelpOpenTimeout,
    /// The RELP session failed.
    #[error(transparent)]
    Relp(#[from] relp::RelpError),
    /// RELP acknowledgements late.
    #[error("RELP acknowledgements not received within {0} s")]
    RelpAckTimeout(u64),
    /// The write did not complete in time.
    #[error("write not done within {0} s")]
    WriteTimeout(u64),
    /// The write failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// The kernel's send queue could not be read.
    #[error("cannot read the connection's send queue: {0}")]
    SendQueue(std::io::Error),
    /// Bytes the repository's TCP did not acknowledge in time.
    #[error("{pending} bytes not acknowledged by the receiver within {secs} s")]
    Unacknowledged {
        /// Bytes still in the send queue.
        pending: usize,
        /// The deadline.
        secs: u64,
    },
    /// The repository closed the connection after the batch.
    #[error("the receiver closed the connection")]
    Closed,
    /// The repository sent something (syslog receivers do not talk).
    #[error("the receiver sent unexpected data")]
    Unexpected,
    /// The connection failed after the batch.
    #[error("connection failed: {0}")]
    Connection(std::io::Error),
}

/// A connection to a repository, by transport.
enum Link {
    Syslog(Box<TlsStream<TcpStream>>),
    Relp(Box<relp::Session<TlsStream<TcpStream>>>),
}

impl Link {
    /// Delivers `messages`; `Ok` only once the transport confirmed them (the repository's
    /// TCP for syslog over TLS, the repository itself for RELP). Over syslog/TLS, without
    /// `settle` the connection is only checked, not watched: [`Link::settle`] or the next
    /// batch's delivery completes the confirmation.
    async fn deliver(self, messages: &[Vec<u8>], settle: bool) -> Result<Self, ShipError> {
        match self {
            Self::Syslog(stream) => {
                let mut frames = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
                for message in messages {
                    octet_counted_into(&mut frames, message);
                }
                let stream = send(*stream, &frames).await?;
                let watch = if settle { SETTLE } else { Duration::ZERO };
                watch_open(stream, watch)
                    .await
                    .map(|stream| Self::Syslog(Box::new(stream)))
            }
            Self::Relp(mut session) => {
                tokio::time::timeout(DELIVERY_DEADLINE, session.send(messages))
                    .await
                    .map_err(|_| ShipError::RelpAckTimeout(DELIVERY_DEADLINE.as_secs()))??;
                Ok(Self::Relp(session))
            }
        }
    }

    /// Watches a syslog/TLS connection for the receiver closing it after the last batch.
    async fn settle(self) -> Result<Self, ShipError> {
        match self {
            Self::Syslog(stream) => watch_open(*stream, SETTLE)
                .await
                .map(|stream| Self::Syslog(Box::new(stream))),
            relp @ Self::Relp(_) => Ok(relp),
        }
    }
}

/// Writes `frames` within the delivery deadline and waits until the receiver's TCP has
/// acknowledged every byte (the strongest confirmation RFC 5425 allows: the data reached
/// the repository's host).
async fn send(
    mut stream: TlsStream<TcpStream>,
    frames: &[u8],
) -> Result<TlsStream<TcpStream>, ShipError> {
    let written = async {
        stream.write_all(frames).await?;
        stream.flush().await
    };
    tokio::time::timeout(DELIVERY_DEADLINE, written)
        .await
        .map_err(|_| ShipError::WriteTimeout(DELIVERY_DEADLINE.as_secs()))?
        .map_err(ShipError::Write)?;
    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    let mut pause = Duration::from_millis(1);
    loop {
        let pending = outq::unacknowledged(stream.get_ref().0).map_err(ShipError::SendQueue)?;
        if pending == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ShipError::Unacknowledged {
                pending,
                secs: DELIVERY_DEADLINE.as_secs(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Ok(stream)
}

/// Watches the connection for `watch` (zero: whatever already arrived): a receiver that
/// closed it (or sends anything: syslog receivers do not talk) has not taken the batch. A
/// reset connection has an empty send queue too, so this check is never skipped.
async fn watch_open(
    mut stream: TlsStream<TcpStream>,
    watch: Duration,
) -> Result<TlsStream<TcpStream>, ShipError> {
    let mut probe = [0u8; 1];
    match tokio::time::timeout(watch, stream.read(&mut probe)).await {
        Err(_) => Ok(stream),
        Ok(Ok(0)) => Err(ShipError::Closed),
        Ok(Ok(_)) => Err(ShipError::Unexpected),
        Ok(Err(e)) => Err(ShipError::Connection(e)),
    }
}

/// Moves `receiver`'s cursor to `last`, and the trail's "shipped up to" to the slowest.
/// Watches the unsettled batch on its connection, then counts it: the cursor moves past it
/// if the connection is still open. (An unsettled batch always has its connection: both
/// are set together.)
async fn settle(
    connection: &mut Option<Link>,
    unsettled: &mut Option<(u64, usize)>,
    receiver: &Receiver,
    log: &AuditLog,
    store: &AuditStore,
    all: &[Arc<Receiver>],
) {
    let Some((through, _)) = unsettled.take() else {
        return;
    };
    let settled = match connection.take() {
        Some(link) => link.settle().await,
        None => Err(ShipError::Closed),
    };
    match settled {
        Ok(link) => {
            *connection = Some(link);
            receiver.set_unconfirmed(0);
            if let Err(e) = advance(receiver, log, store, all, through) {
                receiver.failed(&e.to_string());
            }
        }
        Err(e) => receiver.failed(&e.to_string()),
    }
}

fn advance(
    receiver: &Receiver,
    log: &AuditLog,
    store: &AuditStore,
    all: &[Arc<Receiver>],
    last: u64,
) -> Result<(), AuditError> {
    tokio::task::block_in_place(|| {
        log.mark_shipped_to(receiver.name(), last)?;
        let txn = store.snapshot()?;
        let slowest = all
            .iter()
            .map(|r| store::receiver_cursor(&txn, r.name()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .min()
            .unwrap_or(0);
        drop(txn);
        log.mark_shipped(slowest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    /// A slow link gets smaller batches until one gets through in time, then full ones
    /// again; failures that say nothing of its speed leave the size alone.
    #[test]
    fn a_batch_that_ran_out_of_time_halves_the_next() {
        let timeout = ShipError::RelpAckTimeout(10);
        let mut batch = BATCH;
        let mut sizes = Vec::new();
        for _ in 0..10 {
            batch = batch_after(batch, Some(&timeout));
            sizes.push(batch);
        }
        assert_eq!(sizes, [2048, 1024, 512, 256, 128, 64, 32, 16, 16, 16]);
        for slow in [
            ShipError::WriteTimeout(10),
            ShipError::Unacknowledged {
                pending: 1,
                secs: 10,
            },
        ] {
            assert_eq!(batch_after(BATCH, Some(&slow)), BATCH / 2);
        }
        assert_eq!(batch_after(256, Some(&ShipError::Closed)), 256);
        assert_eq!(batch_after(256, Some(&ShipError::ConnectTimeout)), 256);
        let mut grown = Vec::new();
        while batch < BATCH {
            batch = batch_after(batch, None);
            grown.push(batch);
        }
        assert_eq!(grown, [32, 64, 128, 256, 512, 1024, 2048, 4096]);
        assert_eq!(batch_after(BATCH, None), BATCH);
    }

    /// A damaged stored record, or one the repository would cut short, is never counted
    /// delivered: the records before it go, then shipping stops there (before, a damaged
    /// one was skipped and the cursor moved past it, and a long one went truncated).
    #[test]
    fn shipping_stops_before_a_record_it_cannot_deliver_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.redb")).unwrap();
        let record = |seq| {
            let record = Record {
                v: 1,
                seq,
                node: "gw".into(),
                epoch: 0,
                time: "2026-11-23T10:00:00.000Z".into(),
                run: "r".into(),
                mono_ns: seq,
                prev: "ab".into(),
                event: Event::new(EventKind::ServiceStarted, Outcome::Success),
            };
            store::NewRecord {
                seq,
                bytes: serde_json::to_vec(&record).unwrap(),
                time_ms: 0,
                keys: Vec::new(),
            }
        };
        let damaged = store::NewRecord {
            bytes: b"{\"v\":1,\"seq\":".to_vec(),
            ..record(3)
        };
        store
            .commit(&[record(1), record(2), damaged, record(4)], &[])
            .unwrap();
        let framing = Framing {
            format: PayloadFormat::Dicom,
            enterprise_number: 32473,
        };
        let limits = Limits {
            records: 10,
            message_bytes: 8192,
            batch_bytes: BATCH_BYTES,
        };
        let (messages, last, count) = next_batch(&store, 0, framing, limits).unwrap();
        assert_eq!((messages.len(), last, count), (2, 2, 2));
        let stopped = next_batch(&store, 2, framing, limits).unwrap_err();
        assert!(
            matches!(&stopped, AuditError::Unshippable { seq: 3, why } if why.starts_with("it is unreadable")),
            "{stopped}"
        );
        // Stopped there, the backlog keeps its age (the records are from 2026-11-23):
        // it was read as 0, and readiness and the backlog alerts never said so.
        let (records, oldest) = backlog_after(&store, 2).unwrap();
        assert_eq!(records, 2);
        assert!(oldest > 86_400, "{oldest}");
        // A message longer than the repository keeps whole is not sent either: the
        // repository would store it cut short and acknowledge it.
        let size = messages[0].len();
        let tight = Limits {
            message_bytes: size - 1,
            ..limits
        };
        let stopped = next_batch(&store, 0, framing, tight).unwrap_err();
        assert!(
            matches!(&stopped, AuditError::Unshippable { seq: 1, why } if why.contains(&format!("{size} bytes"))),
            "{stopped}"
        );
        let exact = Limits {
            message_bytes: size,
            ..limits
        };
        assert_eq!(next_batch(&store, 0, framing, exact).unwrap().2, 2);
        // A batch ends at its byte budget, whatever its count: at least one record goes.
        for (budget, records) in [(1, 1), (size, 1), (size + 1, 2)] {
            let bounded = Limits {
                batch_bytes: budget,
                ..limits
            };
            assert_eq!(next_batch(&store, 0, framing, bounded).unwrap().2, records);
        }

        // A hole (record 6 missing), and a record stored under another number: the
        // records before go, then shipping stops (before, both were passed over).
        let mislabelled = store::NewRecord {
            seq: 8,
            ..record(9)
        };
        store
            .commit(&[record(5), record(7), mislabelled], &[])
            .unwrap();
        let (_, last, count) = next_batch(&store, 4, framing, limits).unwrap();
        assert_eq!((last, count), (5, 1));
        let stopped = next_batch(&store, 5, framing, limits).unwrap_err();
        assert!(
            matches!(&stopped, AuditError::Unshippable { seq: 6, why } if why.contains("missing")),
            "{stopped}"
        );
        let (records, oldest) = backlog_after(&store, 5).unwrap();
        assert_eq!(records, 3);
        assert!(oldest > 86_400, "{oldest}");
        let stopped = next_batch(&store, 7, framing, limits).unwrap_err();
        assert!(
            matches!(&stopped, AuditError::Unshippable { seq: 8, why } if why.contains("says it is record 9")),
            "{stopped}"
        );
        // A repository added after a prune (its cursor 0) starts after the pruned point.
        store.set_meta(store::Meta::PrunedThrough, 4).unwrap();
        let (_, last, count) = next_batch(&store, 0, framing, limits).unwrap();
        assert_eq!((last, count), (5, 1));
        // Its backlog counts the records it will get, not the pruned ones.
        assert_eq!(backlog_after(&store, 0).unwrap().0, 4);

        // A stored record whose chain fields were tampered with cannot rewrite the
        // message's header or structured data: `prev` is escaped, a time with a space is
        // damage.
        let with = |seq, change: &dyn Fn(&mut serde_json::Value)| {
            let mut fields: serde_json::Value = serde_json::from_slice(&record(seq).bytes).unwrap();
            change(&mut fields);
            store::NewRecord {
                bytes: serde_json::to_vec(&fields).unwrap(),
                ..record(seq)
            }
        };
        let forged = "x\"] [samu@32473 seq=\"1\"";
        store
            .commit(
                &[
                    with(9, &|r| r["prev"] = forged.into()),
                    with(10, &|r| r["time"] = "2026-11-23 10:00:00Z".into()),
                ],
                &[],
            )
            .unwrap();
        let (messages, last, _) = next_batch(&store, 8, framing, limits).unwrap();
        assert_eq!(last, 9);
        let message = String::from_utf8(messages[0].clone()).unwrap();
        assert!(
            message.contains(r#" prev="x\"\] [samu@32473 seq=\"1\"" hash="#),
            "{message}"
        );
        let stopped = next_batch(&store, 9, framing, limits).unwrap_err();
        assert!(
            matches!(&stopped, AuditError::Unshippable { seq: 10, why } if why.contains("time")),
            "{stopped}"
        );
    }

    #[test]
    fn frames_are_octet_counted_rfc5424_with_the_chain_in_structured_data() {
        let record = Record {
            v: 1,
            seq: 42,
            node: "gw \"1\"".into(),
            epoch: 0,
            time: "2026-11-23T10:00:00.000Z".into(),
            run: "r".into(),
            mono_ns: 1,
            prev: "ab".into(),
            event: Event::new(EventKind::ServiceStarted, Outcome::Success),
        };
        let framed = String::from_utf8(frame(
            &record,
            "cd",
            Framing {
                format: PayloadFormat::Dicom,
                enterprise_number: 32473,
            },
        ))
        .unwrap();
        let (len, message) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        assert!(message.starts_with("<85>1 2026-11-23T10:00:00.000Z gw\"1\" samu-gateway - IHE+RFC-3881 [samu@32473 node=\"gw \\\"1\\\"\" epoch=\"0\" seq=\"42\" prev=\"ab\" hash=\"cd\"] <AuditMessage>"), "{message}");
        let refused = Record {
            event: Event::new(
                EventKind::UserLogin,
                Outcome::Refused { reason: "x".into() },
            ),
            ..record
        };
        let framed = String::from_utf8(frame(
            &refused,
            "cd",
            Framing {
                format: PayloadFormat::Fhir,
                enterprise_number: 99999,
            },
        ))
        .unwrap();
        assert!(
            framed.contains("<84>1 ")
                && framed.contains("IHE+FHIR [samu@99999 ")
                && !framed.contains("32473"),
            "{framed}"
        );
    }
}
