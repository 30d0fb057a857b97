//! The accept loop: TLS handshake with a deadline, attribution of the connection to a desk,
//! HTTP/1.1 or HTTP/2 by ALPN, a bound on open connections (in all and per source address),
//! and a graceful drain that lets in-flight requests finish within the configured grace
//! period.
//!
//! A connection holds a slot only while it is used: from accept, its first request head
//! must arrive within the handshake deadline, and once no request is in flight it is
//! closed after the idle timeout (HTTP/1 and HTTP/2 alike; a streamed answer such as the
//! desk's event stream counts as in flight until its body ends), as HTTP closes: a GOAWAY
//! for HTTP/2, TLS's close_notify, within [`IDLE_CLOSE_GRACE`]. HTTP/2 connections are
//! pinged, and their concurrent streams bounded. So silent connections, anonymous or not,
//! cannot hold the listener.
//!
//! Two more bounds hold against a peer that talks just enough (a request now and then, or
//! an HTTP/2 client that opens a zero flow-control window so that an answer never
//! leaves): connections without a client certificate, once past their handshake, may
//! hold half of the slots at most (the appliance's own probes excepted), so they cannot
//! hold the other half; and a request in flight whose answer has not moved (no frame sent)
//! for [`stall_timeout`] closes its connection. Handshake failures and refusals are logged
//! once per [`LOG_EVERY`] per source address and reason, and [`LOG_LINES`] in all, with
//! how many were not, so a flood of them cannot push the gateway's own errors out of the
//! journal's rate limit while one desk's refusal still shows; the metrics count every one.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::Metrics;
use super::identity::DeskDirectory;
use super::tls::ServerTls;

/// How often a refusal of one kind from one address is logged, at most (the rest are
/// counted in the next line).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Refusal lines per [`LOG_EVERY`] in all, far below journald's default rate limit
/// (10,000 lines per 30 s per service).
const LOG_LINES: u32 = 100;
/// Addresses and reasons remembered for the throttle, at most.
const LOG_TRACKED: usize = 4096;

/// How long a request in flight may go without its answer moving before its connection is
/// closed: past the longest legitimate wait for a first frame (a PIN-pad login, 150 s at
/// most with `cards.login_timeout_secs`), and never below the idle timeout. The desk's
/// event stream sends a keep-alive every 15 s and exports stream their chunks, so long
/// answers that move are not cut.
pub(crate) fn stall_timeout(idle: Duration) -> Duration {
    idle.max(Duration::from_secs(180))
}

/// Refusal lines, throttled per source address and reason, and in all.
#[derive(Default)]
struct Throttled {
    state: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    /// Per address and reason: when its last line was written, and what was left out
    /// since.
    last: HashMap<(IpAddr, String), (tokio::time::Instant, u64)>,
    /// The current period's start and the lines written in it.
    period: Option<(tokio::time::Instant, u32)>,
}

impl Throttled {
    /// `Some(left out since this address's last line for this reason)` when a line may be
    /// written now.
    fn allow(&self, ip: IpAddr, reason: &str) -> Option<u64> {
        let now = tokio::time::Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (ip, reason.to_owned());
        if let Some((at, left_out)) = state.last.get_mut(&key)
            && now.duration_since(*at) < LOG_EVERY
        {
            *left_out += 1;
            return None;
        }
        let (start, lines) = match state.period {
            Some((start, lines)) if now.duration_since(start) < LOG_EVERY => (start, lines),
            _ => (now, 0),
        };
        if lines >= LOG_LINES {
            return None;
        }
        state.period = Some((start, lines + 1));
        if state.last.len() >= LOG_TRACKED {
            state
                .last
                .retain(|_, (at, _)| now.duration_since(*at) < LOG_EVERY);
        }
        let left_out = state.last.remove(&key).map_or(0, |(_, left_out)| left_out);
        if state.last.len() < LOG_TRACKED {
            state.last.insert(key, (now, 0));
        }
        Some(left_out)
    }
}

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Deadline for a TLS handshake, and from accept to the first request head.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections at most from one source address.
    pub max_connections_per_address: usize,
    /// Concurrent HTTP/2 streams on one connection at most.
    pub max_streams: u32,
    /// Time in-flight requests get to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the grace period.
    Complete,
    /// The grace period ran out; remaining connections were dropped.
    TimedOut,
}

/// Everything a connection task needs, cheap to clone.
#[derive(Clone)]
pub(crate) struct Connections {
    tls: ServerTls,
    desks: Arc<DeskDirectory>,
    app: Router,
    metrics: Arc<Metrics>,
    http: Arc<Protocols>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    /// Slots connections without a client certificate may hold (half of them).
    anonymous: Arc<Semaphore>,
    /// Connections whose TLS handshake is under way (a quarter of the slots at most).
    handshakes: Arc<Handshakes>,
    refused_handshakes: Arc<Throttled>,
    refused_connections: Arc<Throttled>,
}

impl Connections {
    /// Prepares connection handling for `app`.
    pub(crate) fn new(
        tls: &ServerTls,
        desks: Arc<DeskDirectory>,
        app: Router,
        metrics: Arc<Metrics>,
        limits: &ConnectionLimits,
    ) -> Self {
        let mut http = Builder::new(TokioExecutor::new());
        // A head that never starts is the activity tracker's to close (gracefully, with
        // TLS's close_notify); hyper's own deadline, which just drops the connection, is
        // for a head begun and never finished, so it comes a moment later.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout + IDLE_CLOSE_GRACE);
        // A peer that stops answering pings is gone: its streams are cut.
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams)
            .keep_alive_interval(Some(limits.idle_timeout / 2))
            .keep_alive_timeout(limits.handshake_timeout);
        Self {
            tls: tls.clone(),
            desks,
            app,
            metrics,
            http: Arc::new(Protocols {
                http1: http.clone().http1_only(),
                http2: http.clone().http2_only(),
                either: http,
            }),
            handshake_timeout: limits.handshake_timeout,
            idle_timeout: limits.idle_timeout,
            anonymous: Arc::new(Semaphore::new((limits.max_connections / 2).max(1))),
            handshakes: Arc::new(Handshakes::new((limits.max_connections / 4).max(1))),
            refused_handshakes: Arc::default(),
            refused_connections: Arc::default(),
        }
    }

    /// Logs a refused connection, unless the throttle says not now.
    fn log_refusal(throttle: &Throttled, remote: SocketAddr, what: &str) {
        if let Some(left_out) = throttle.allow(remote.ip(), what) {
            tracing::info!(peer = %remote, left_out, "{what}");
        }
    }

    async fn handle(self, tcp: TcpStream, remote: SocketAddr, mut drain: DrainSignal) {
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(self.tls.config());
        let (pending, evicted) = self.handshakes.begin(source(remote.ip()));
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp));
        let handshake = tokio::select! {
            done = handshake => done,
            // No request can be under way yet: a handshake would only hold the drain.
            () = drain.stopping() => return,
            _ = evicted => {
                self.metrics.observe_connection_closed("handshake_cap");
                Self::log_refusal(
                    &self.refused_connections,
                    remote,
                    "connection closed before its TLS handshake ended: a newer connection needed the slot (left_out: the same from this address since its last such line)",
                );
                return;
            }
        };
        drop(pending);
        let tls = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.metrics.observe_handshake_failure();
                let error = e.to_string();
                if let Some(left_out) = self.refused_handshakes.allow(remote.ip(), &error) {
                    tracing::info!(peer = %remote, error, left_out, "TLS handshake refused (left_out: the same refusals from this address since its last such line)");
                }
                return;
            }
            Err(_) => {
                self.metrics.observe_handshake_failure();
                Self::log_refusal(
                    &self.refused_handshakes,
                    remote,
                    "TLS handshake timed out (left_out: the same from this address since its last such line)",
                );
                return;
            }
        };
        let chain: Vec<rustls::pki_types::CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        // Before any request is read: a resumed TLS session skips the verifier, and a
        // check racing the connection (as `no_longer_trusted` does later) would let the
        // requests sent with the handshake run first (a case posted, a PIN try spent).
        if let Err(why) = self.tls.still_trusted(&chain) {
            self.metrics
                .observe_connection_closed("certificate_no_longer_valid");
            tracing::warn!(peer = %remote, reason = %why, "a client certificate that no longer verifies (revoked or expired since the TLS session began): connection closed before any request");
            return;
        }
        let peer = self.desks.attribute(chain.first(), remote.ip());
        // Held for the connection's life; certificate holders need none, nor the
        // appliance's own probes (`healthcheck` connects from the listener's own address;
        // no LAN peer can).
        let own = tls
            .get_ref()
            .0
            .local_addr()
            .is_ok_and(|local| local.ip() == remote.ip());
        let _anonymous_slot = match peer {
            super::identity::Peer::Anonymous if !own => {
                match self.anonymous.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        self.metrics.observe_connection_closed("anonymous_cap");
                        Self::log_refusal(
                            &self.refused_connections,
                            remote,
                            "connection closed: half of the slots are taken by connections without a client certificate (left_out: the same from this address since its last such line)",
                        );
                        return;
                    }
                }
            }
            _ => None,
        };
        let app = self.app.clone();
        let activity = Activity::new();
        let tracked = activity.clone();
        let service = tower::service_fn(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(peer.clone());
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            let busy = tracked.begin();
            let answer = app.clone().oneshot(request);
            async move {
                let response = answer.await?;
                // In flight until the body has been sent (or dropped), not just the head.
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        // The answer moves (see `stall_timeout`).
                        busy.moved();
                        frame
                    }))
                }))
            }
        });
        let http = match tls.get_ref().1.alpn_protocol() {
            Some(b"http/1.1") => &self.http.http1,
            Some(b"h2") => &self.http.http2,
            _ => &self.http.either,
        };
        let connection = http
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
            .into_owned();
        // Counted down however this future ends, dropped at shutdown included.
        let _open = OpenConnection::count(&self.metrics);
        let idle = activity.idle(
            self.handshake_timeout,
            self.idle_timeout,
            stall_timeout(self.idle_timeout),
        );
        let untrusted = no_longer_trusted(self.tls.clone(), chain);
        tokio::pin!(connection);
        tokio::pin!(untrusted);
        let revoked = |why: &dyn std::fmt::Display| {
            self.metrics
                .observe_connection_closed("certificate_no_longer_valid");
            tracing::warn!(peer = %remote, reason = %why, "an open connection's client certificate no longer verifies (revoked or expired since its handshake): connection closed");
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
                }
                return;
            }
            () = drain.stopping() => {}
            // Dropped at once: nothing more goes to a certificate that no longer verifies.
            why = &mut untrusted => return revoked(&why),
            why = idle => {
                self.metrics.observe_connection_closed(why);
                tracing::debug!(peer = %remote, why, "connection closed");
                // A stalled answer would hold a graceful close as long: dropped at once.
                if why == "stalled" {
                    return;
                }
            }
        }
        // Closed as HTTP closes: an HTTP/2 client is sent a GOAWAY (it then knows which
        // requests were not taken, and sends the next on a new connection instead of
        // failing it), HTTP/1 ends after the request in progress, and TLS ends with its
        // close_notify. Dropping the connection said none of it.
        connection.as_mut().graceful_shutdown();
        // The close takes as long as the requests it lets finish keep moving (HTTP/2 takes
        // streams opened during its PING's round trip: cut, their answers would be lost
        // though the client is told they were taken), then IDLE_CLOSE_GRACE: a peer that
        // does not take part (the PING never answered, a vanished laptop) is dropped then,
        // not held until the drain's end. The drain's own deadline bounds it all.
        activity.touch();
        let grace = IDLE_CLOSE_GRACE.min(self.handshake_timeout);
        let closing = activity.idle(grace, grace, stall_timeout(self.idle_timeout));
        tokio::select! {
            ended = connection => if let Err(e) = ended {
                tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
            },
            _ = closing => {}
            why = untrusted => revoked(&why),
        }
    }
}

/// The connection handlers, by the protocol TLS negotiated (ALPN). A connection whose
/// protocol is known is HTTP from its start, so it can be closed as HTTP closes even before
/// its first request (one still reading its first bytes to tell was only dropped).
struct Protocols {
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
    /// For a client that named none: told by the first bytes.
    either: Builder<TokioExecutor>,
}

/// How long an idle connection's graceful close may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The drain's word to the open connections. Each connection's task holds one until it
/// ends, so the drain knows when the last has ([`tokio::sync::watch::Sender::closed`]).
#[derive(Clone)]
pub(crate) struct DrainSignal(tokio::sync::watch::Receiver<bool>);

impl DrainSignal {
    /// The drain's sender (`true`: close) and the signal connections hold.
    fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (stop, signal) = tokio::sync::watch::channel(false);
        (stop, Self(signal))
    }

    /// Resolves once the drain has begun (or its sender is gone).
    async fn stopping(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// One open connection in the gauge, from its handshake to its end.
struct OpenConnection<'a>(&'a Metrics);

impl<'a> OpenConnection<'a> {
    fn count(metrics: &'a Metrics) -> Self {
        metrics.add_connections(1);
        Self(metrics)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.add_connections(-1);
    }
}

/// How often an open connection's certificate is checked again without a CRL reread (a
/// certificate expires on its own).
const RECHECK: Duration = Duration::from_secs(300);

/// Resolves, with the reason, once `chain` (a connection's client certificate, checked at
/// its handshake) no longer verifies: checked again after each reread of the workstation
/// CRLs and every [`RECHECK`]. Attribution is once per connection, so without this a
/// certificate revoked or expired since its handshake kept working for as long as its
/// connection stayed open (a desk's event stream keeps one open all shift). Never resolves
/// for a connection without a certificate.
async fn no_longer_trusted(
    tls: ServerTls,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> String {
    if chain.is_empty() {
        return std::future::pending().await;
    }
    let mut reloads = tls.reloads();
    // Checked at once as well: a reread between the handshake and the subscription would
    // not be seen as a change, and a resumed TLS session skips the verifier altogether.
    if let Err(why) = tls.still_trusted(&chain) {
        return why;
    }
    loop {
        // The sender lives as long as the listener's TLS, so `changed` failing is not
        // expected; if it did, the periodic check goes on rather than spin.
        if let Ok(Err(_)) = tokio::time::timeout(RECHECK, reloads.changed()).await {
            tokio::time::sleep(RECHECK).await;
        }
        if let Err(why) = tls.still_trusted(&chain) {
            return why;
        }
    }
}

/// What a connection is doing: requests in flight, and when it last did something.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    /// Milliseconds since `opened` at the last request start or end, or answer frame.
    last: AtomicU64,
    /// Whether any request has started.
    started: AtomicUsize,
    /// Each request in flight: milliseconds since `opened` when its answer last moved
    /// (its start, or its last frame). Judged one by one, so that a client cannot keep a
    /// stuck answer alive by starting other requests on the same connection.
    requests: Mutex<Vec<Arc<AtomicU64>>>,
    opened: tokio::time::Instant,
}

/// One request in flight; its end is recorded when dropped.
struct Busy {
    activity: Activity,
    moved: Arc<AtomicU64>,
}

impl Busy {
    /// Its answer moved (a frame went out).
    fn moved(&self) {
        let now = self.activity.now_ms();
        self.moved.store(now, Ordering::Release);
        self.activity.0.last.store(now, Ordering::Release);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let state = &self.activity.0;
        state
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|r| !Arc::ptr_eq(r, &self.moved));
        self.activity.touch();
    }
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityState {
            last: AtomicU64::new(0),
            started: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            opened: tokio::time::Instant::now(),
        }))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.0.last.store(self.now_ms(), Ordering::Release);
    }

    fn begin(&self) -> Busy {
        let moved = Arc::new(AtomicU64::new(self.now_ms()));
        self.0
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(moved.clone());
        self.0.started.store(1, Ordering::Release);
        self.touch();
        Busy {
            activity: self.clone(),
            moved,
        }
    }

    /// When the answer that has gone longest without moving last moved (ms since opened).
    fn stuck_since(&self) -> Option<u64> {
        self.0
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
    }

    /// Resolves, saying why, when the connection has been idle too long: no request head
    /// within `first` of accept, or no request in flight for `idle` ("idle"); or a request
    /// in flight whose answer has not moved for `stall` ("stalled").
    async fn idle(&self, first: Duration, idle: Duration, stall: Duration) -> &'static str {
        loop {
            let state = &self.0;
            let stuck = self.stuck_since();
            let (since, allowed) = match stuck {
                Some(since) => (since, stall),
                None if state.started.load(Ordering::Acquire) == 0 => {
                    (state.last.load(Ordering::Acquire), first)
                }
                None => (state.last.load(Ordering::Acquire), idle),
            };
            let deadline = state.opened + Duration::from_millis(since) + allowed;
            if tokio::time::Instant::now() >= deadline {
                return if stuck.is_some() { "stalled" } else { "idle" };
            }
            // Looked at again at the deadline, or sooner when the connection may have gone
            // quiet meanwhile (a request ending makes the shorter idle deadline count).
            let next = if stuck.is_some() {
                deadline.min(
                    tokio::time::Instant::now() + idle.min(first).max(Duration::from_millis(100)),
                )
            } else {
                deadline
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// Open connections per source address, bounded.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its address; uncounted when dropped.
struct Counted(PerAddress, IpAddr);

impl PerAddress {
    /// Counts a connection from `ip`, or `None` when the address is at `cap`.
    fn admit(&self, ip: IpAddr, cap: usize) -> Option<Counted> {
        // A poisoned lock only means another connection task panicked mid-update: the
        // counts are plain integers, still usable.
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Counted(self.clone(), ip))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// The connections whose TLS handshake is under way. Nothing tells a desk's connection
/// from a hostile one before its handshake, and one that sends nothing holds its slot
/// until the handshake deadline: a few addresses reconnecting would hold every slot, and
/// desks would wait in the kernel's backlog. So these hold a quarter of the slots at most
/// (with the half anonymous connections may hold, a quarter stays for desks); past that,
/// a new connection closes the oldest handshake of the source with the most under way.
/// The source flooding the pool loses its own; a desk's handshake (which may wait on a
/// TPM-held key or the browser's certificate dialog) is closed only when its workstation
/// holds as many as the flooder.
struct Handshakes {
    capacity: usize,
    pending: std::sync::Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    /// By order of arrival: each one's source and sender, fired to close it.
    by_id: std::collections::BTreeMap<u64, (IpAddr, tokio::sync::oneshot::Sender<()>)>,
    /// Each source's handshakes, oldest first (at most `max_connections_per_address`).
    by_source: HashMap<IpAddr, std::collections::VecDeque<u64>>,
}

impl Pending {
    fn remove(&mut self, id: u64) -> Option<tokio::sync::oneshot::Sender<()>> {
        let (source, close) = self.by_id.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
        Some(close)
    }

    /// The oldest handshake of the source holding the most (the oldest first among
    /// equals).
    fn to_close(&self) -> Option<u64> {
        self.by_source
            .values()
            .filter_map(|ids| Some((ids.len(), *ids.front()?)))
            .max_by(|(a, a_id), (b, b_id)| a.cmp(b).then(b_id.cmp(a_id)))
            .map(|(_, id)| id)
    }
}

/// A handshake under way, until dropped.
struct PendingHandshake {
    handshakes: Arc<Handshakes>,
    id: u64,
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        self.handshakes.lock().remove(self.id);
    }
}

impl Handshakes {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            pending: std::sync::Mutex::new(Pending::default()),
        }
    }

    /// A poisoned lock still holds whole maps: each change is made under the lock by
    /// code that does not panic.
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a handshake from `source` starting now, closing one when all are taken
    /// (see the type): the guard, and what resolves if a newer one closes this one.
    fn begin(
        self: &Arc<Self>,
        source: IpAddr,
    ) -> (PendingHandshake, tokio::sync::oneshot::Receiver<()>) {
        let (close, closed) = tokio::sync::oneshot::channel();
        let mut pending = self.lock();
        while pending.by_id.len() >= self.capacity {
            let Some(id) = pending.to_close() else { break };
            // Its task ends its handshake when it hears of it (or has just ended it: then
            // there is no one to tell).
            if let Some(oldest) = pending.remove(id) {
                let _ = oldest.send(());
            }
        }
        let id = pending.next;
        pending.next = pending.next.wrapping_add(1);
        pending.by_id.insert(id, (source, close));
        pending.by_source.entry(source).or_default().push_back(id);
        drop(pending);
        (
            PendingHandshake {
                handshakes: self.clone(),
                id,
            },
            closed,
        )
    }
}

/// The source a connection is counted under: its address, an IPv4-mapped IPv6 one taken
/// back to its IPv4 (a dual-stack listener would otherwise count one peer twice). An IPv6
/// address is counted whole, not by its /64: a centre's desks usually share one /64, and
/// grouping them would put every desk under one address's cap (a host holding many
/// addresses of its /64 is for the firewall, README "Security").
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Accepts connections until `shutdown` resolves, then drains them.
pub(crate) async fn serve(
    listener: TcpListener,
    connections: Connections,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let (stop, signal) = DrainSignal::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::default();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(slot) = slot else { break };
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(counted) =
            per_address.admit(source(remote.ip()), limits.max_connections_per_address)
        else {
            connections
                .metrics
                .observe_connection_closed("per_address_cap");
            Connections::log_refusal(
                &connections.refused_connections,
                remote,
                "connection refused: too many from this address (left_out: the same since its last such line)",
            );
            drop(tcp);
            continue;
        };
        let task = connections.clone().handle(tcp, remote, signal.clone());
        tokio::spawn(async move {
            task.await;
            drop(counted);
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        grace_secs = limits.shutdown_grace.as_secs(),
        "listener closed; draining in-flight requests"
    );
    drop(signal);
    let _ = stop.send(true);
    // Every connection holds a signal until its task ends: closed once the last has.
    match tokio::time::timeout(limits.shutdown_grace, stop.closed()).await {
        Ok(()) => Drain::Complete,
        Err(_) => Drain::TimedOut,
    }
}

/// Serves `app` on the management listener (plain HTTP on loopback: see the
/// `server.management_listen` check) until `shutdown` resolves. Its own few connections
/// and deadlines keep it answering when the public listener is saturated.
pub(crate) async fn serve_management(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    /// Centre IT's probes and a scraper need a handful.
    const MANAGEMENT_CONNECTIONS: usize = 8;
    let slots = Arc::new(Semaphore::new(MANAGEMENT_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "management accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over the bound, the newest caller is turned away rather than queued.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let http = http.clone();
        let deadline = limits.idle_timeout;
        tokio::spawn(async move {
            let service = tower::service_fn(move |mut request: axum::http::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(super::routes::ManagementListener);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                app.clone().oneshot(request)
            });
            let connection =
                http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
            // Probes are short: a connection lives one idle timeout at most.
            let _ = tokio::time::timeout(deadline, connection).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every handshake slot taken, a newcomer closes the oldest handshake of the
    /// source holding the most: a flooder from two addresses reconnecting without end
    /// closes its own, never a desk's slow handshake (before, the oldest overall went,
    /// which was the desk's once it waited on its certificate dialog).
    #[test]
    fn a_full_handshake_pool_closes_the_flooders_own() {
        let pool = Arc::new(Handshakes::new(4));
        let desk = IpAddr::from([10, 0, 0, 5]);
        let (flood_a, flood_b) = (IpAddr::from([10, 0, 0, 66]), IpAddr::from([10, 0, 0, 67]));
        let (_desk_guard, mut desk_closed) = pool.begin(desk);
        let mut held = Vec::new();
        for _ in 0..200 {
            for flooder in [flood_a, flood_b] {
                held.push(pool.begin(flooder));
                assert!(
                    desk_closed.try_recv().is_err(),
                    "the desk's handshake closed"
                );
            }
        }
        assert_eq!(pool.lock().by_id.len(), 4);
        // The flooders' own oldest were told to close.
        let (_, first_closed) = &mut held[0];
        assert!(first_closed.try_recv().is_ok());
        // Guards dropped: nothing left counted.
        drop(held);
        drop(_desk_guard);
        let pending = pool.lock();
        assert!(pending.by_id.is_empty() && pending.by_source.is_empty());
    }

    /// An IPv4-mapped address is its IPv4 one; IPv6 addresses of one /64 (a centre's desks)
    /// are counted apart.
    #[test]
    fn connections_are_counted_by_address_an_ipv4_mapped_one_as_ipv4() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_ne!(
            source(v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            source(v6("2001:db8:1:2::1"))
        );
        assert_eq!(source(v6("::ffff:10.0.0.5")), IpAddr::from([10, 0, 0, 5]));
        assert_eq!(
            source(IpAddr::from([10, 0, 0, 5])),
            IpAddr::from([10, 0, 0, 5])
        );
    }

    /// A request in flight keeps its connection while its answer moves; one whose answer
    /// stops moving (an HTTP/2 client that opened no flow-control window) loses it.
    #[tokio::test(start_paused = true)]
    async fn a_request_whose_answer_does_not_move_closes_its_connection() {
        let (first, idle) = (Duration::from_secs(2), Duration::from_secs(4));
        let stall = stall_timeout(idle);
        assert_eq!(stall, Duration::from_secs(180));
        let activity = Activity::new();
        let busy = activity.begin();
        let watch = activity.idle(first, idle, stall);
        tokio::pin!(watch);
        // A frame every 100 s: 500 s in flight, never closed.
        for _ in 0..5 {
            let waited = tokio::time::timeout(Duration::from_secs(100), &mut watch).await;
            assert!(waited.is_err(), "closed while its answer moved");
            busy.moved();
        }
        let stopped = tokio::time::Instant::now();
        assert_eq!(watch.await, "stalled");
        let waited = stopped.elapsed();
        assert!(
            waited >= stall && waited < stall + Duration::from_secs(5),
            "{waited:?}"
        );
        // Once the request ends, the idle deadline applies again.
        drop(busy);
        let ended = tokio::time::Instant::now();
        assert_eq!(activity.idle(first, idle, stall).await, "idle");
        let waited = ended.elapsed();
        assert!(
            waited >= idle && waited < idle + Duration::from_secs(1),
            "{waited:?}"
        );
        // A long setting of the idle timeout is never cut shorter by the stall bound.
        assert_eq!(
            stall_timeout(Duration::from_secs(600)),
            Duration::from_secs(600)
        );
    }

    /// One line per address and reason per period, the repeats counted in the next; a
    /// desk's own refusal still shows during a flood from elsewhere, up to the cap in all.
    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_once_per_address_and_reason_and_the_rest_counted() {
        let throttle = Throttled::default();
        let (flood, desk) = ("10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap());
        assert_eq!(throttle.allow(flood, "UnknownIssuer"), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(flood, "UnknownIssuer"), None);
        }
        // Another reason from the same address, and the desk's own, are written.
        assert_eq!(throttle.allow(flood, "timed out"), Some(0));
        assert_eq!(throttle.allow(desk, "Expired"), Some(0));
        assert_eq!(throttle.allow(desk, "Revoked"), Some(0));
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(throttle.allow(flood, "UnknownIssuer"), Some(5));
        assert_eq!(throttle.allow(flood, "UnknownIssuer"), None);
        // Past LOG_LINES lines in a period (many addresses), nothing more is written.
        tokio::time::advance(LOG_EVERY).await;
        let written = (0..=255u8)
            .flat_map(|a| (0..=1u8).map(move |b| IpAddr::from([10, 1, a, b])))
            .filter(|ip| throttle.allow(*ip, "UnknownIssuer").is_some())
            .count();
        assert_eq!(written, LOG_LINES as usize);
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(throttle.allow(desk, "Expired"), Some(0));
    }

    /// A request whose answer is stuck closes its connection even while the client keeps
    /// starting and ending other requests on it (HTTP/2).
    #[tokio::test(start_paused = true)]
    async fn a_stuck_answer_is_judged_on_its_own() {
        let (first, idle) = (Duration::from_secs(2), Duration::from_secs(4));
        let stall = stall_timeout(idle);
        let activity = Activity::new();
        let _stuck = activity.begin();
        let watch = activity.idle(first, idle, stall);
        tokio::pin!(watch);
        let started = tokio::time::Instant::now();
        let closed = loop {
            tokio::select! {
                why = &mut watch => break why,
                () = tokio::time::sleep(Duration::from_secs(30)) => {
                    let other = activity.begin();
                    other.moved();
                    drop(other);
                }
            }
        };
        assert_eq!(closed, "stalled");
        let waited = started.elapsed();
        assert!(
            waited >= stall && waited < stall + Duration::from_secs(5),
            "{waited:?}"
        );
    }
}
