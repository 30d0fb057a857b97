//! Compliance review over the API, for the compliance officers' certificates only (desks
//! and the regulation software are refused, and officers cannot reach patient data: the
//! access routes require a desk). Answers carry audit metadata only.
//!
//! Every read of the trail is itself recorded (`audit_log_used`, DICOM 110101) before the
//! answer leaves, naming the officer and what was asked (filter names, not values; the
//! patient, when one was looked up). Filters travel in request bodies, never in URLs, so
//! no INS reaches a log or a browser history.

use std::io::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params, Segment};
use super::identity::Peer;
use super::session_routes::audit_unavailable;
use crate::audit::export::{self, Filter, FilterSpec, Format};
use crate::audit::review::{self, AccessTrail, BreakGlassAccess, TrailRecord};
use crate::audit::store::ReadStore;
use crate::audit::{
    Actor, AuditError, AuditStore, Decision, Event, EventKind, Outcome, PatientRef, Review,
};

/// A caller holding a compliance officer's certificate.
pub(super) struct Officer {
    cn: String,
    /// SHA-256 of its certificate: a download ticket serves only the certificate that
    /// asked for it.
    sha256: String,
}

impl Officer {
    fn actor(&self) -> Actor {
        Actor {
            name: Some(self.cn.clone()),
            workstation: Some(self.cn.clone()),
            ..Actor::default()
        }
    }
}

impl FromRequestParts<AppState> for Officer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Peer>() {
            Some(Peer::Unmapped(w)) if w.role == Some(super::Role::Officer) => Ok(Self {
                cn: w.cn.clone().unwrap_or_default(),
                sha256: w.sha256.clone(),
            }),
            Some(Peer::Anonymous) | None => Err(ApiError::certificate_required()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "compliance_only",
                "this endpoint is for compliance officers' certificates",
                "Réservé aux référents conformité.",
            )),
        }
    }
}

/// Break-glass accesses to review.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct PendingAnswer {
    /// Oldest first.
    pub accesses: Vec<BreakGlassAccess>,
    /// The restores of the trail from a backup, latest first: the records written between
    /// each backup and its restore are not in this trail, and a review should know it.
    pub restores: Vec<review::Restore>,
}

/// Lists the break-glass accesses still to review, oldest first.
#[utoipa::path(get, path = "/api/v1/compliance/pending", tag = "compliance",
    responses((status = 200, description = "Accesses to review", body = PendingAnswer),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError)))]
pub(super) async fn pending(
    State(state): State<AppState>,
    officer: Officer,
) -> Result<Json<PendingAnswer>, ApiError> {
    let queue = state.review_queue();
    let (accesses, restores) = read_trail(&state, move |store| {
        // A panic elsewhere while it was held may have left it half updated: start over.
        let mut queue = queue.lock().unwrap_or_else(|poisoned| {
            let mut queue = poisoned.into_inner();
            *queue = review::ReviewQueue::default();
            queue
        });
        Ok((queue.refresh(store)?, review::restores(store)?))
    })
    .await?;
    let detail = format!("pending accesses={}", accesses.len());
    record_use(&state, &officer, detail, LookedUp::default()).await?;
    Ok(Json(PendingAnswer { accesses, restores }))
}

/// A decision on one access.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReviewRequest {
    /// The access's `break_glass_started` sequence number.
    pub seq: u64,
    /// `justified`, `to_investigate` or `unjustified`.
    pub decision: Decision,
    /// Why (up to 2000 characters).
    #[serde(default)]
    pub comment: String,
    /// The access's latest decision this one replaces (its `last_decision_seq`), when it
    /// has one. A decision names the one it was taken against: one recorded meanwhile by
    /// another officer is read before it is replaced (409 otherwise).
    #[serde(default)]
    pub replaces: Option<u64>,
}

/// The record of a decision.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReviewAnswer {
    /// Sequence number of the `access_reviewed` record.
    pub recorded: u64,
}

/// Records a decision on an access (itself an audit record).
#[utoipa::path(post, path = "/api/v1/compliance/reviews", tag = "compliance", request_body = ReviewRequest,
    responses((status = 201, description = "Decision recorded", body = ReviewAnswer),
              (status = 400, description = "Comment too long", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError),
              (status = 404, description = "No break-glass access with this sequence number", body = ApiError),
              (status = 409, description = "`replaces` is not the access's latest decision (`already_decided` when absent, `decision_changed` otherwise), or a closing decision on an access that has not ended (`access_still_open`)", body = ApiError)))]
pub(super) async fn review(
    State(state): State<AppState>,
    officer: Officer,
    JsonBody(request): JsonBody<ReviewRequest>,
) -> Result<(StatusCode, Json<ReviewAnswer>), ApiError> {
    if request.comment.chars().count() > 2000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "comment_too_long",
            "a comment has at most 2000 characters",
            "Commentaire trop long (2000 caractères au plus).",
        ));
    }
    let seq = request.seq;
    // One decision at a time on an access, from its check to its record: two officers
    // deciding on it at once would both pass the check below, and the second would
    // replace the first's unseen. The read waits for the index, so it sees every
    // decision recorded.
    let _one_at_a_time = state.decisions(seq).lock().await;
    let Some(trail) = read_trail(&state, move |store| review::trail(store, seq)).await? else {
        return Err(no_such_access());
    };
    if request.replaces != trail.access.last_decision_seq {
        return Err(not_the_latest_decision(&trail.access, request.replaces));
    }
    // A closing decision on an access still running would take it off the list while
    // reads may follow under its grant (for up to `break_glass.grant_minutes`): those
    // would be reviewed by no one. "To investigate" keeps it on the list, so it may come
    // at any time.
    if request.decision != Decision::ToInvestigate && !trail.has_ended() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "access_still_open",
            "the access has not ended: a closing decision waits for its end (reads may follow under its grant)",
            "Accès encore en cours : décidez une fois qu'il est terminé (d'autres lectures peuvent suivre). « À investiguer » reste possible.",
        ));
    }
    let event = Event {
        actor: Some(officer.actor()),
        review: Some(Review {
            of: request.seq,
            decision: request.decision,
            comment: request.comment,
            replaces: request.replaces,
        }),
        ..Event::new(EventKind::AccessReviewed, Outcome::Success)
    };
    let receipt = state
        .audit()
        .append(event)
        .await
        .map_err(|_| audit_unavailable())?;
    Ok((
        StatusCode::CREATED,
        Json(ReviewAnswer {
            recorded: receipt.seq(),
        }),
    ))
}

/// The report's period.
#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct ReportQuery {
    /// RFC 3339 time, or hours back (`24h`, the default).
    #[serde(default)]
    pub since: Option<String>,
}

/// Anomaly flags, each with its supporting records.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReportAnswer {
    /// The flags.
    pub flags: Vec<crate::audit::report::Flag>,
}

/// The anomaly report (same as `samu-gateway audit report`).
#[utoipa::path(get, path = "/api/v1/compliance/report", tag = "compliance", params(ReportQuery),
    responses((status = 200, description = "Anomalies with their records", body = ReportAnswer),
              (status = 400, description = "Unreadable `since`", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError)))]
pub(super) async fn report(
    State(state): State<AppState>,
    officer: Officer,
    Params(query): Params<ReportQuery>,
) -> Result<Json<ReportAnswer>, ApiError> {
    let since = query.since.unwrap_or_else(|| "24h".into());
    let since_ms = crate::audit::report::parse_since(&since).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_since",
            "since is an RFC 3339 time or a number of hours (24h)",
            "Période invalide.",
        )
    })?;
    let thresholds = state.thresholds().clone();
    // A scan of the whole trail: off the async workers, like every other read here.
    let flags = read_trail(&state, move |store| {
        crate::audit::report::report(store, since_ms, &thresholds).map_err(|e| match e {
            crate::audit::report::ReportError::Audit(e) => e,
            other => crate::audit::AuditError::Storage(other.to_string()),
        })
    })
    .await?;
    let detail = format!("report since={since} flags={}", flags.len());
    record_use(&state, &officer, detail, LookedUp::default()).await?;
    Ok(Json(ReportAnswer { flags }))
}

fn to_filter(spec: &FilterSpec) -> Result<Filter, ApiError> {
    spec.to_filter().map_err(|(field, why)| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            format!("filter.{field} {why}"),
            "Critère de recherche invalide.",
        )
    })
}

/// A search of the trail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditSearchRequest {
    /// Which records (none: all); `filter.after` pages (the previous page's
    /// `next_after`).
    #[serde(default)]
    pub filter: FilterSpec,
    /// At most this many records (default 200, at most 1000).
    pub limit: Option<usize>,
}

/// One page of matching records.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct AuditSearchAnswer {
    /// Oldest first.
    pub records: Vec<TrailRecord>,
    /// Set when more records match: pass it as `filter.after` for the next page.
    pub next_after: Option<u64>,
}

/// Searches the trail (same filters as `samu-gateway audit list`).
#[utoipa::path(post, path = "/api/v1/compliance/search", tag = "compliance", operation_id = "search_audit_records", request_body = AuditSearchRequest,
    responses((status = 200, description = "Matching records, oldest first", body = AuditSearchAnswer),
              (status = 400, description = "Invalid filter", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError)))]
pub(super) async fn search(
    State(state): State<AppState>,
    officer: Officer,
    JsonBody(request): JsonBody<AuditSearchRequest>,
) -> Result<Json<AuditSearchAnswer>, ApiError> {
    let limit = request.limit.unwrap_or(200).clamp(1, 1000);
    let filter = to_filter(&request.filter)?;
    let selecting = filter.clone();
    let selection = read_trail(&state, move |store| {
        export::select(&store.snapshot()?, &selecting, Some(limit + 1))
    })
    .await?;
    let more = selection.records.len() > limit;
    let records: Vec<TrailRecord> = selection
        .records
        .into_iter()
        .take(limit)
        .map(TrailRecord::from)
        .collect();
    let detail = format!(
        "search filters={} results={}",
        export::describe(&filter),
        records.len()
    );
    let patient = looked_up(&filter, records.iter().map(|r| &r.record));
    record_use(&state, &officer, detail, patient).await?;
    let next_after = more.then(|| records.last().map(|r| r.seq)).flatten();
    Ok(Json(AuditSearchAnswer {
        records,
        next_after,
    }))
}

/// An export of the trail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportRequest {
    /// `jsonl` (verifiable offline when unfiltered), `csv`, `fhir` or `dicom`.
    pub format: Format,
    /// Which records (none: all).
    #[serde(default)]
    pub filter: FilterSpec,
}

/// Exports the trail as a file (same as `samu-gateway audit export`).
#[utoipa::path(post, path = "/api/v1/compliance/export", tag = "compliance", request_body = ExportRequest,
    responses((status = 200, description = "The export, as an attachment"),
              (status = 400, description = "Invalid filter", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError)))]
pub(super) async fn export(
    State(state): State<AppState>,
    officer: Officer,
    JsonBody(request): JsonBody<ExportRequest>,
) -> Result<Response, ApiError> {
    let prepared = prepare_export(&state, &officer, request).await?;
    Ok(export_response(&state, prepared))
}

/// Where the browser fetches an export it was given a ticket for.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct DownloadOffer {
    /// The export's one-use link (`GET`, by the same certificate, within a minute).
    pub href: String,
}

/// Records an export and gives a one-use link to it, for the page to hand to the
/// browser's own download (which writes the file to disk as it comes; read by the page's
/// script, the whole file sat in memory first). Same body as `/api/v1/compliance/export`.
#[utoipa::path(post, path = "/api/v1/compliance/downloads", tag = "compliance", request_body = ExportRequest,
    responses((status = 201, description = "The export is recorded; its link", body = DownloadOffer),
              (status = 400, description = "Invalid filter", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError),
              (status = 503, description = "Too many exports waiting for their fetch (`downloads_full`), or the trail unavailable or catching up", body = ApiError)))]
pub(super) async fn offer_download(
    State(state): State<AppState>,
    officer: Officer,
    JsonBody(request): JsonBody<ExportRequest>,
) -> Result<(StatusCode, Json<DownloadOffer>), ApiError> {
    // Reserved before the export is recorded: a record for an export no one could fetch
    // would be evidence of nothing.
    let token = state
        .downloads()
        .reserve(std::time::Instant::now(), &officer.sha256)
        .map_err(|e| match e {
            super::downloads::TicketError::Full => downloads_full(),
            super::downloads::TicketError::NoRandom => {
                tracing::error!("no random bytes for a download ticket");
                audit_unavailable()
            }
        })?;
    match prepare_export(&state, &officer, request).await {
        Ok(prepared) => state.downloads().fill(&token, prepared),
        Err(e) => {
            state.downloads().release(&token);
            return Err(e);
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(DownloadOffer {
            href: format!("/api/v1/compliance/downloads/{token}"),
        }),
    ))
}

fn downloads_full() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "downloads_full",
        "too many exports are waiting for their fetch (4 per certificate, 32 in all); try again in a minute",
        "Trop d'exports en attente de téléchargement : réessayez dans une minute.",
    )
}

/// The export a ticket from `/api/v1/compliance/downloads` stands for, once.
#[utoipa::path(get, path = "/api/v1/compliance/downloads/{ticket}", tag = "compliance",
    params(("ticket" = String, Path, description = "The ticket the export's offer gave")),
    responses((status = 200, description = "The export, as an attachment"),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError),
              (status = 404, description = "No such ticket for this certificate: unknown, already used or expired", body = ApiError)))]
pub(super) async fn download(
    State(state): State<AppState>,
    officer: Officer,
    method: axum::http::Method,
    Segment(ticket): Segment<String>,
) -> Result<Response, ApiError> {
    let no_such_download = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_download",
            "no export waits under this link for this certificate (used, expired or unknown)",
            "Ce lien d'export n'est plus valable : relancez l'export depuis la page.",
        )
    };
    let now = std::time::Instant::now();
    // Axum answers HEAD with this handler: a look (a download manager's) must not spend
    // the one fetch.
    if method == axum::http::Method::HEAD {
        return if state.downloads().holds(now, &ticket, &officer.sha256) {
            Ok(StatusCode::OK.into_response())
        } else {
            Err(no_such_download())
        };
    }
    let prepared = state
        .downloads()
        .take(now, &ticket, &officer.sha256)
        .ok_or_else(no_such_download)?;
    Ok(export_response(&state, prepared))
}

/// An export recorded on the trail, ready to be written.
pub(super) struct PreparedExport {
    filter: Filter,
    format: Format,
    /// The `Content-Disposition` that names the file.
    disposition: String,
}

/// Records the export `request` asks for (durable before the first byte of it leaves)
/// and signs the trail up to that record.
async fn prepare_export(
    state: &AppState,
    officer: &Officer,
    request: ExportRequest,
) -> Result<PreparedExport, ApiError> {
    let mut filter = to_filter(&request.filter)?;
    let format = request.format;
    let selecting = filter.clone();
    // The patient an officer looked up is named on the record of the export, which is
    // durable before the first byte leaves.
    let patient = read_trail(state, move |store| {
        let txn = store.snapshot()?;
        let first = export::select(&txn, &selecting, Some(1))?;
        Ok(looked_up(
            &selecting,
            first.records.iter().map(|s| &s.record),
        ))
    })
    .await?;
    let detail = format!(
        "export format={} filters={}",
        format.name(),
        export::describe(&filter)
    );
    record_use(state, officer, detail, patient).await?;
    // Signed up to the export's own record: a whole-trail export then verifies with no
    // record outside a signature (records after the last checkpoint could not be told
    // from forged ones).
    let signing = state.clone();
    let signed = tokio::task::spawn_blocking(move || signing.audit().checkpoint())
        .await
        .map_err(|_| audit_unavailable())?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign a checkpoint before an export");
            audit_unavailable()
        })?;
    // A whole-trail export ends at that checkpoint: records appended after it are under
    // no signature yet, and the file would fail its own verification; they are in the
    // next export.
    if export::is_unfiltered(&filter) {
        filter.through_seq = Some(signed);
    }
    let disposition = format!(
        "attachment; filename=\"audit-{}.{}\"",
        crate::clock::now().0.replace([':', '.'], ""),
        format.extension()
    );
    Ok(PreparedExport {
        filter,
        format,
        disposition,
    })
}

/// The prepared export as a streamed attachment.
fn export_response(state: &AppState, prepared: PreparedExport) -> Response {
    let PreparedExport {
        filter,
        format,
        disposition,
    } = prepared;
    let mut response =
        Body::from_stream(stream_export(state.stores().audit.clone(), filter, format))
            .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The export, written on a blocking thread in 64 KiB chunks as the client takes them: a
/// trail of any length never sits in memory. A failure mid-way cuts the body: the stream
/// ends in an error, so the client sees a broken transfer, never a clean end (the JSONL
/// form also lacks its closing line, so a truncated file never verifies).
fn stream_export(
    store: Arc<AuditStore>,
    filter: Filter,
    format: Format,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sender = ChunkSender {
        tx: tx.clone(),
        runtime: tokio::runtime::Handle::current(),
        stalled: EXPORT_STALLED,
    };
    // Set once the whole export is written: the body ends cleanly only then. The error
    // sent on failure may find no room (a stalled client), so its absence must not read
    // as success.
    let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let completed = complete.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, sender);
        // An export that would miss the last records must not end as if whole (nor a
        // whole-trail one stop before the checkpoint it was signed to): the index lagging
        // past the wait fails it (`settled_snapshot`), as it fails an access's trail.
        let written = store
            .settled_snapshot()
            .and_then(|txn| export::export(&txn, &filter, format, &mut out))
            .and_then(|n| {
                out.flush()
                    .map(|()| n)
                    .map_err(|e| AuditError::Storage(e.to_string()))
            });
        if let Err(e) = written {
            // What is still buffered goes unsent (its flush would wait on the same
            // stalled client), and the error is left only if there is room for it.
            drop(out.into_parts());
            tracing::error!(error = %e, "compliance export cut short");
            let _ = tx.try_send(Err(std::io::Error::other("export failed")));
        } else {
            completed.store(true, std::sync::atomic::Ordering::Release);
        }
    });
    ended_by_its_writer(rx, complete)
}

/// The chunks `rx` receives, then an error unless the writer said `complete` before it
/// hung up (a writer that failed, panicked or was cut short).
fn ended_by_its_writer(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    complete: Arc<std::sync::atomic::AtomicBool>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(rx), move |rx| {
        let complete = complete.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(Err(e)) => Some((Err(e), None)),
                Some(item) => Some((item, Some(rx))),
                // Every sender is gone: the writer has returned, and said how it ended.
                None if complete.load(std::sync::atomic::Ordering::Acquire) => None,
                None => Some((Err(std::io::Error::other("export cut short")), None)),
            }
        }
    })
}

/// How long an export waits for its client to take the next chunk: a client that stops
/// reading must not keep a blocking thread and a read snapshot of the store (which keeps
/// redb from reclaiming pages) forever.
const EXPORT_STALLED: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands written bytes to the response body; fails once the client has gone, or has taken
/// nothing for `stalled`.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    runtime: tokio::runtime::Handle,
    stalled: std::time::Duration,
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // On a blocking thread: waiting on the runtime here blocks no async worker.
        let sent = self.runtime.block_on(tokio::time::timeout(
            self.stalled,
            self.tx.send(Ok(Bytes::copy_from_slice(bytes))),
        ));
        match sent {
            Ok(Ok(())) => Ok(bytes.len()),
            Ok(Err(_)) => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no export data for a minute",
            )),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One access and every record about it.
#[utoipa::path(get, path = "/api/v1/compliance/accesses/{seq}", tag = "compliance",
    params(("seq" = u64, Path, description = "The access's `break_glass_started` sequence number")),
    responses((status = 200, description = "The access and its records", body = AccessTrail),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError),
              (status = 404, description = "No break-glass access with this sequence number", body = ApiError)))]
pub(super) async fn access_trail(
    State(state): State<AppState>,
    officer: Officer,
    Segment(seq): Segment<u64>,
) -> Result<Json<AccessTrail>, ApiError> {
    let trail = read_trail(&state, move |store| review::trail(store, seq))
        .await?
        .ok_or_else(no_such_access)?;
    let patient = trail
        .records
        .iter()
        .find_map(|r| r.record.event.patient.clone());
    let looked_up = LookedUp {
        patient,
        candidates: Vec::new(),
    };
    record_use(&state, &officer, format!("trail of {seq}"), looked_up).await?;
    Ok(Json(trail))
}

/// The answer to a decision not taken against the access's latest one.
fn not_the_latest_decision(access: &BreakGlassAccess, named: Option<u64>) -> ApiError {
    let (Some(latest), Some(decision)) = (access.last_decision_seq, access.last_decision) else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "decision_changed",
            "the access has no decision to replace: send the decision without `replaces`",
            "La décision que vous pensiez remplacer n'est pas celle de cet accès. Rouvrez l'accès et décidez à nouveau.",
        );
    };
    let who = access.last_decided_by.as_deref().unwrap_or("?");
    let (en, fr) = match decision {
        Decision::Justified => ("justified", "Justifié"),
        Decision::ToInvestigate => ("to_investigate", "À investiguer"),
        Decision::Unjustified => ("unjustified", "Injustifié"),
    };
    let (code, said) = match named {
        None => (
            "already_decided",
            "the access already has a decision".to_owned(),
        ),
        Some(named) => (
            "decision_changed",
            format!("record {named} is not the access's latest decision"),
        ),
    };
    ApiError::new(
        StatusCode::CONFLICT,
        code,
        format!(
            "{said} (record {latest}, {en} by {who}): read it, then name it in `replaces` to replace it"
        ),
        format!(
            "Une décision a été enregistrée sur cet accès entre-temps : « {fr} » par {who} (n° {latest}). Relisez-la ; enregistrer la vôtre la remplacera."
        ),
    )
}

fn no_such_access() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_access",
        "no successful break-glass start has this sequence number",
        "Aucun accès en bris de glace ne porte ce numéro.",
    )
}

/// Runs a read of the trail off the async workers (a scan can take a while).
async fn read_trail<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&AuditStore) -> Result<T, AuditError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.stores().audit.clone();
    let read = tokio::task::spawn_blocking(move || {
        // The accesses just made must be there: wait for the index to take them in. An
        // index still behind after the wait would give a list or a trail without the last
        // accesses, looking whole: refused instead.
        if !store.wait_settled() {
            return Ok(None);
        }
        read(&store).map(Some)
    })
    .await
    .map_err(|_| audit_unavailable())?;
    let read = read.map_err(|e| {
        tracing::error!(error = %e, "cannot read the trail for compliance");
        match e {
            // Said as such: an incident for the centre, not a moment's unavailability.
            AuditError::Damaged { seq, .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "trail_damaged",
                format!("audit record {seq} does not read; run samu-gateway audit verify"),
                format!(
                    "Le journal d'audit contient un enregistrement illisible (n° {seq}) : la lecture s'arrête avant lui. Prévenez l'informatique du centre (audit verify)."
                ),
            ),
            _ => audit_unavailable(),
        }
    })?;
    read.ok_or_else(|| {
        tracing::warn!("the audit index lags the journal: a compliance read is refused rather than miss the last records");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "trail_catching_up",
            "the audit index is still taking in the last records; try again in a few seconds",
            "Le journal d'audit termine d'enregistrer les derniers accès : réessayez dans quelques secondes.",
        )
    })
}

/// Whom an officer's use of the trail concerned, for its record.
#[derive(Default)]
struct LookedUp {
    /// The patient, as the trail names them.
    patient: Option<PatientRef>,
    /// An INS the trail does not know, under each OID an INS may have (the filter gives the
    /// number only): a probe for someone never handled is recorded as surely as a hit.
    candidates: Vec<PatientRef>,
}

/// The patient an officer looked up by INS, as the matching records name it.
fn looked_up<'a>(
    filter: &Filter,
    mut records: impl Iterator<Item = &'a crate::audit::Record>,
) -> LookedUp {
    let Some(ins) = filter.patient.as_deref() else {
        return LookedUp::default();
    };
    // Where the filter matched it: the record's patient, or among a search's candidates.
    let patient = records.find_map(|r| {
        r.event
            .patient
            .iter()
            .chain(&r.event.candidates)
            .find(|p| p.ins == ins)
            .cloned()
    });
    let candidates = if patient.is_some() {
        Vec::new()
    } else {
        crate::patient::INS_OIDS
            .iter()
            .map(|oid| PatientRef {
                ins: ins.to_owned(),
                oid: (*oid).to_owned(),
            })
            .collect()
    };
    LookedUp {
        patient,
        candidates,
    }
}

/// Records that `officer` read the trail; the answer waits for it.
async fn record_use(
    state: &AppState,
    officer: &Officer,
    detail: String,
    looked_up: LookedUp,
) -> Result<(), ApiError> {
    let event = Event {
        actor: Some(officer.actor()),
        patient: looked_up.patient,
        candidates: looked_up.candidates,
        detail: Some(detail),
        ..Event::new(EventKind::AuditLogUsed, Outcome::Success)
    };
    let _receipt = state
        .audit()
        .append(event)
        .await
        .map_err(|_| audit_unavailable())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An export whose client stops reading gives up after its stall time instead of
    /// holding its thread and snapshot forever; one whose client left stops at once.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_export_nobody_reads_gives_up() {
        use std::io::Write as _;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let mut sender = ChunkSender {
            tx,
            runtime: tokio::runtime::Handle::current(),
            stalled: std::time::Duration::from_millis(200),
        };
        let writing = tokio::task::spawn_blocking(move || {
            sender.write_all(b"first").unwrap();
            let stalled = sender.write_all(b"second").unwrap_err();
            (sender, stalled.kind())
        });
        let (sender, kind) = writing.await.unwrap();
        assert_eq!(kind, std::io::ErrorKind::TimedOut);
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"first");
        drop(rx);
        let gone = tokio::task::spawn_blocking(move || {
            let mut sender = sender;
            sender.write_all(b"third").unwrap_err().kind()
        });
        assert_eq!(gone.await.unwrap(), std::io::ErrorKind::BrokenPipe);
    }

    /// A body ends cleanly only when its writer said it wrote everything: a writer that
    /// hung up otherwise (its error lost to a full channel, as after a stall) ends the
    /// body in an error, so the client never takes a cut export for a whole one.
    #[tokio::test]
    async fn an_export_ends_cleanly_only_when_its_writer_completed() {
        use futures_util::StreamExt as _;
        for complete in [false, true] {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(Ok(Bytes::from_static(b"rows"))).await.unwrap();
            drop(tx);
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(complete));
            let items: Vec<_> = ended_by_its_writer(rx, flag).collect().await;
            assert_eq!(items.len(), if complete { 1 } else { 2 }, "{complete}");
            assert_eq!(&items[0].as_ref().unwrap()[..], b"rows");
            assert_eq!(items.get(1).is_some_and(Result::is_err), !complete);
        }
        // The writer's own error ends the body at once.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Err(std::io::Error::other("failed"))).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"never"))).await.unwrap();
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let items: Vec<_> = ended_by_its_writer(rx, flag).collect().await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }
}
