//! The service's life: prepare (load and check everything, bind nothing), run (open the
//! stores, bind, tell systemd READY, serve, feed the watchdog), and stop on SIGTERM/SIGINT
//! (stop accepting, drain, flush, exit 0).

use crate::access::BreakGlass;
use crate::cache::sealed::{MasterKey, SealedSummaries};
use crate::limit::Limits;
use crate::patient::InsPolicy;
use crate::upstream::Protocol;
use crate::upstream::client::FhirClient;
use crate::upstream::dmp::client::{CardVihfSigner, DmpClient, VihfSigner};
use crate::upstream::dmp::{AuthenticationMode, DmpConfig, SoftwareSigner};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{AuditError, AuditLog, Event, EventKind, Outcome, Signer, chain};
use crate::card::trust::{CardTrust, TrustError};
use crate::config::{Config, ConfigError};
use crate::encoding::hex;
use crate::http::probe::Probe;
use crate::http::server::{self, ConnectionLimits, Connections, Drain};
use crate::http::tls::ServerTls;
use crate::http::{self as api, AppState, DeskDirectory, Metrics};
use crate::problem::ConfigProblem;
use crate::session::CardLogin;
use crate::session::roster::Roster;
use crate::state::{StateError, Stores};

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The state directory or a store refused to open.
    #[error(transparent)]
    State(#[from] StateError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The audit trail refused to start or to record the service's own events.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The saved roster is unreadable.
    #[error("{0}")]
    Roster(String),
    /// The card worker thread could not start.
    #[error("cannot start the card worker: {0}")]
    CardWorker(std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A step of the stop failed (each is logged with its reason): the service stopped,
    /// but not cleanly, and says so to its supervisor.
    #[error("the stop was not clean: {}", .0.join("; "))]
    UncleanStop(Vec<&'static str>),
}

/// A configuration that passed every check, with its TLS material loaded.
pub struct Prepared {
    /// The configuration.
    pub config: Config,
    /// The parsed `server.listen`.
    pub listen: SocketAddr,
    /// The parsed `server.management_listen`.
    pub management: SocketAddr,
    /// Listener TLS.
    pub tls: ServerTls,
    /// Desks by workstation identity.
    pub desks: DeskDirectory,
    /// The audit checkpoint signing key.
    pub signer: Signer,
    /// Card certificate trust, when `[cards]` is configured.
    pub card_trust: Option<CardTrust>,
    /// The demo's in-process virtual card (never set from configuration).
    pub virtual_card: Option<Box<dyn crate::card::apdu::Transport + Send>>,
    /// The record service client, when `[upstream]` is configured (its failures counted in
    /// `record_service_failures`).
    pub upstream: Option<Arc<dyn crate::upstream::RecordService>>,
    /// The record service's failures since start, for the metrics.
    pub record_service_failures: Arc<crate::upstream::failures::Failures>,
    /// The DMP client's card signer (`DIRECTE`), bound to the card worker once it runs.
    card_signer: Option<Arc<CardVihfSigner>>,
    /// The audit repositories records are shipped to.
    pub receivers: Vec<Arc<crate::audit::ship::Receiver>>,
}

impl Prepared {
    /// Loads `path` and checks everything `serve` would use, binding and opening nothing.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_config(Config::load(path)?)
    }

    /// Checks an in-memory configuration the same way. Every file is loaded even when an
    /// earlier one failed, and every problem is reported at once: a broken server
    /// certificate does not hide a broken card anchor until the next run.
    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let listen = config.listen_addr()?;
        let management = config.management_addr()?;
        let mut problems = Vec::new();
        let tls = kept(
            ServerTls::load(&config.tls).map_err(ConfigError::Invalid),
            &mut problems,
        );
        let desks = DeskDirectory::new(&config.desks).with_roles(crate::http::Roles::new(
            &config.compliance.officer_cns,
            &config.compliance.officer_sha256,
            config
                .integration
                .as_ref()
                .map(|i| (i.cn.as_str(), i.sha256.as_deref())),
        ));
        let signer = kept(load_signer(&config), &mut problems);
        let card_trust = kept(
            config
                .cards
                .as_ref()
                .map(|cards| CardTrust::load(cards.trust.clone()))
                .transpose()
                .map_err(|e| match e {
                    TrustError::Config { key, reason } => {
                        ConfigError::Invalid(vec![ConfigProblem::new(key, reason)])
                    }
                    other => ConfigError::Invalid(vec![ConfigProblem::new(
                        "cards.trust",
                        other.to_string(),
                    )]),
                }),
            &mut problems,
        );
        let mut card_signer = None;
        let mut record_service = || -> Result<_, ConfigError> {
            Ok(match (&config.upstream, &config.dmp) {
                (Some(upstream), Some(dmp)) if upstream.protocol == Protocol::Dmp => {
                    let client = match dmp.authentication_mode {
                        AuthenticationMode::Directe => {
                            let signer = Arc::new(CardVihfSigner::unbound());
                            card_signer = Some(signer.clone());
                            DmpClient::with_card(dmp, &config.centre.structure_id, signer)
                        }
                        _ => {
                            let signer: Arc<dyn VihfSigner> = Arc::new(load_structure_signer(dmp)?);
                            DmpClient::new(dmp, &config.centre.structure_id, signer)
                        }
                    };
                    Some(Arc::new(client.map_err(ConfigError::Invalid)?)
                        as Arc<dyn crate::upstream::RecordService>)
                }
                (Some(upstream), _) => Some(Arc::new(
                    FhirClient::new(upstream, &config.centre.structure_id)
                        .map_err(ConfigError::Invalid)?,
                )
                    as Arc<dyn crate::upstream::RecordService>),
                (None, _) => None,
            })
        };
        let upstream = kept(record_service(), &mut problems);
        let mut receivers = Vec::new();
        for (at, receiver) in config.audit.receivers.iter().enumerate() {
            let loaded = crate::audit::ship::Receiver::new(receiver.clone(), at)
                .map_err(ConfigError::Invalid);
            if let Some(loaded) = kept(loaded, &mut problems) {
                receivers.push(Arc::new(loaded));
            }
        }
        let (Some(tls), Some(signer), Some(card_trust), Some(upstream), true) =
            (tls, signer, card_trust, upstream, problems.is_empty())
        else {
            return Err(ConfigError::Invalid(problems));
        };
        let record_service_failures = Arc::new(crate::upstream::failures::Failures::default());
        let upstream = upstream.map(|inner| {
            Arc::new(crate::upstream::failures::Counted::new(
                inner,
                record_service_failures.clone(),
            )) as Arc<dyn crate::upstream::RecordService>
        });
        Ok(Self {
            config,
            listen,
            management,
            tls,
            desks,
            signer,
            card_trust,
            virtual_card: None,
            upstream,
            record_service_failures,
            card_signer,
            receivers,
        })
    }

    fn limits(&self) -> ConnectionLimits {
        let server = &self.config.server;
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(server.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
            max_connections: server.max_connections,
            max_connections_per_address: server.max_connections_per_address,
            max_streams: server.max_streams_per_connection,
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

/// `result`'s value, or `None` with its problems added to `problems`.
fn kept<T>(result: Result<T, ConfigError>, problems: &mut Vec<ConfigProblem>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(ConfigError::Invalid(mut found)) => {
            problems.append(&mut found);
            None
        }
        Err(other) => {
            problems.push(ConfigProblem::new("configuration", other.to_string()));
            None
        }
    }
}

/// Files the service holds open beside its connections: stores, logs, card readers, the
/// record service's and repositories' pools, the management listener, its probes.
const RESERVED_FILES: u64 = 512;

/// Whether `max_connections` fit in the process's open-file limit, raised first to its
/// hard limit (the unit's `LimitNOFILE=`; the soft one is only a default). Past it, peers
/// holding connections would leave no descriptor for the management listener and the
/// watchdog's probe: systemd would kill the service, ending every session.
pub fn file_budget(max_connections: usize) -> Result<(), ConfigProblem> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = match (limit.current, limit.maximum) {
        (None, _) => return Ok(()),
        (Some(current), Some(maximum)) if current < maximum => {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                maximum
            } else {
                current
            }
        }
        (Some(current), _) => current,
    };
    let needed = max_connections as u64 + RESERVED_FILES;
    if needed > soft {
        return Err(ConfigProblem::new(
            "server.max_connections",
            format!(
                "{max_connections} connections and {RESERVED_FILES} other open files need {needed} file descriptors; the process may open {soft} (the unit's LimitNOFILE=): lower it or raise the limit"
            ),
        ));
    }
    Ok(())
}

/// Runs until SIGTERM or SIGINT. `on_bound` is called once the listener is bound and the
/// stores are open (the demo writes its `demo.json` there).
pub async fn run(
    prepared: Prepared,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<Drain, ServiceError> {
    let limits = prepared.limits();
    let addr = prepared.listen;
    // Said when the lists were read, but before logging started: said again now.
    if let Some(policy) = prepared.tls.stale_crls() {
        tracing::error!(
            ?policy,
            "a workstation CRL is past its next update: publish a fresh one"
        );
    }
    // Bound first (nothing is served before READY=1): a port taken or an address not up
    // fails the start before anything is written, so a unit restarting on it does not add
    // a record to the trail at each attempt.
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServiceError::Bind { addr, source })?;
    let management_addr = prepared.management;
    let management =
        TcpListener::bind(management_addr)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: management_addr,
                source,
            })?;
    let management_local = management
        .local_addr()
        .map_err(|source| ServiceError::Bind {
            addr: management_addr,
            source,
        })?;
    let stores = Stores::open(&prepared.config.storage.state_dir)?;
    tracing::info!(state_dir = %stores.dir().display(), "stores open");
    // Nothing read from the cache can be trusted: it is emptied, or removed.
    let (stores, deleted) = stores.start_cache_run()?;
    if deleted > 0 {
        tracing::warn!(
            deleted,
            "the previous run did not stop cleanly, or ran without the cache key: its cached summaries are deleted (a removal after a refusal may not have reached the disk, or could not be made)"
        );
    }
    let stores = Arc::new(stores);
    let audit = start_audit(&stores, prepared.signer, &prepared.config).await?;
    if prepared.receivers.is_empty() {
        tracing::warn!("no [[audit.receivers]]: the trail stays on this appliance only");
    }
    crate::audit::ship::start(
        prepared.receivers.clone(),
        stores.audit.clone(),
        audit.clone(),
    );
    let mut terminate = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
    // SIGHUP's default ends the process at once: no drain, no stop on the record, and
    // systemd's Restart=on-failure takes it as a clean exit. Nothing is reloaded on it.
    let mut hangup = signal(SignalKind::hangup()).map_err(ServiceError::Signals)?;

    let metrics = Arc::new(Metrics::new().with_audit_disk(audit.disk_times()));
    let cards = start_cards(
        prepared.card_trust,
        prepared.virtual_card,
        &prepared.config,
        &audit,
    )?;
    if let (Some(signer), Some(cards)) = (&prepared.card_signer, &cards) {
        signer.bind(cards.worker(), cards.trust());
    }
    let shifts = cards
        .as_ref()
        .and_then(|c| c.shared_roster())
        .map(|r| r as crate::audit::alert::SharedShifts);
    crate::audit::alert::start(
        stores.audit.clone(),
        audit.clone(),
        crate::audit::alert::Watch::new(&prepared.config.compliance.thresholds(), shifts),
    );
    spawn_monitoring(
        &prepared.config,
        cards.clone(),
        prepared.receivers.clone(),
        prepared.record_service_failures.clone(),
        metrics.clone(),
    );
    let access = start_access(
        &prepared.config,
        prepared.upstream.clone(),
        cards.as_ref(),
        &stores,
        &audit,
        &metrics,
    );
    let state = AppState::new(
        prepared.config.centre.clone(),
        stores.clone(),
        audit.clone(),
        metrics.clone(),
        api::DeskServices {
            cards,
            access,
            cases: Arc::new(crate::case::board::CaseBoard::new(Duration::from_secs(
                prepared.config.cases.ttl_minutes.max(1) * 60,
            ))),
            integration: prepared.config.integration.is_some(),
        },
        api::Oversight {
            receivers: prepared.receivers.clone(),
            ship_alert_seconds: prepared.config.audit.ship_alert_seconds,
            thresholds: prepared.config.compliance.thresholds(),
            tls: Some(prepared.tls.clone()),
        },
    );
    let app = api::router(state.clone());
    // Cases lapse on their own: each end is recorded.
    let reaping = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut failing = crate::telemetry::Repeating::every(Duration::from_secs(60));
        loop {
            every.tick().await;
            let now = std::time::Instant::now();
            match api::case_routes::reap(&reaping).await {
                Ok(_) => {
                    if let Some(lasted) = failing.succeeded(now) {
                        tracing::info!(
                            lasted_secs = lasted.as_secs(),
                            "the end of lapsed cases is recorded again"
                        );
                    }
                }
                Err(e) => {
                    if let crate::telemetry::Repeat::Log { unlogged } = failing.failed(now) {
                        tracing::error!(
                            error = %e,
                            failed_rounds_unlogged = unlogged,
                            "cannot record the end of lapsed cases: kept for the next round"
                        );
                    }
                }
            }
        }
    });
    let (management_stop, management_stopped) = tokio::sync::oneshot::channel::<()>();
    let management_task = tokio::spawn(server::serve_management(
        management,
        api::management_router(state.clone()),
        limits,
        async {
            let _ = management_stopped.await;
        },
    ));

    let connections = Connections::new(
        &prepared.tls,
        Arc::new(prepared.desks),
        app,
        metrics,
        &limits,
    );
    let version = crate::build::describe();
    let started = Event::new(EventKind::ServiceStarted, Outcome::Success)
        .with_detail(format!("samu-gateway {version} on {local}"));
    let _recorded = audit.append(started).await?;
    // The version and build too: after an upgrade, the journal says which build started.
    tracing::info!(notice = true, version = %version, addr = %local, management = %management_local, desks = prepared.config.desks.len(), "listening");
    on_bound(local);
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let watchdog = spawn_watchdog(management_local, stores.clone(), audit.clone());
    spawn_crl_reload(prepared.tls.clone());

    let stop = async {
        let name = loop {
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = hangup.recv() => tracing::warn!(
                    "SIGHUP ignored: the gateway does not reload its configuration; restart the unit to apply a change"
                ),
            }
        };
        tracing::info!(notice = true, signal = name, "shutdown requested");
        state.start_draining();
        notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    };
    let drain = server::serve(listener, connections, limits, stop).await;
    if let Some(task) = watchdog {
        task.abort();
    }
    let _ = management_stop.send(());
    let _ = management_task.await;
    // Requests whose clients left are not in the drain: each is waited for (a little), so
    // that what it did is recorded before the audit log closes.
    if !state.requests().settled(Duration::from_secs(5)).await {
        tracing::warn!("requests still running at stop: their records may fail");
    }
    // Grants and cases live in memory: each one still open ends here, on the record.
    if let Some(access) = state.access() {
        access.end_all("gateway_stopped").await;
    }
    api::case_routes::end_all(&state).await;
    // Desk sessions too, after their grants: every login on the record has its logout.
    if let Some(cards) = state.cards() {
        cards.sessions.end_all("gateway_stopped").await;
    }
    finish(drain, audit, &stores).await?;
    tracing::info!(notice = true, "stopped");
    Ok(drain)
}

/// Starts the audit writer on the store and records the configuration it runs with.
async fn start_audit(
    stores: &Stores,
    signer: Signer,
    config: &Config,
) -> Result<Arc<AuditLog>, ServiceError> {
    let audit = Arc::new(AuditLog::start(
        stores.audit.clone(),
        signer,
        config.audit.settings(),
    )?);
    // Accesses and desk sessions a crash left open get their end record first, before
    // anything of this run.
    // Both read before either is recorded: each window runs back from the previous
    // run's last record (the ends recorded here would move it to now).
    let longest_grant = Duration::from_secs(config.break_glass.grant_minutes.max(1) * 60);
    let accesses = crate::audit::recover::unended_accesses(stores.audit.as_ref(), longest_grant)?;
    // Without cards now, the previous run may have had them: as long as any may last.
    let longest_session = config.cards.as_ref().map_or(
        Duration::from_secs(crate::session::CardsConfig::LONGEST_SESSION_HOURS * 3600),
        |cards| cards.expiry().max,
    );
    let sessions = crate::audit::recover::unended_sessions(stores.audit.as_ref(), longest_session)?;
    if !accesses.is_empty() {
        tracing::warn!(
            accesses = accesses.len(),
            "accesses left open by the previous run: recording their end"
        );
        let _recorded = audit.append_all(accesses).await?;
    }
    if !sessions.is_empty() {
        tracing::warn!(
            sessions = sessions.len(),
            "desk sessions left open by the previous run: recording their logout"
        );
        let _recorded = audit.append_all(sessions).await?;
    }
    let digest = config
        .to_toml()
        .map(|t| hex(&chain::hash(t.as_bytes())))
        .unwrap_or_default();
    let loaded = Event::new(EventKind::ConfigurationLoaded, Outcome::Success)
        .with_detail(format!("sha256:{digest}"));
    let _recorded = audit.append(loaded).await?;
    Ok(audit)
}

/// After the drain: record the stop, close the trail (final checkpoint), flush the cache.
/// Every step is tried; a failed one makes the stop unclean, so that `serve` exits with
/// an error and systemd shows the unit failed instead of a clean stop (the journal keeps
/// what was durable; the next start recovers from it and the cache is emptied).
async fn finish(drain: Drain, audit: Arc<AuditLog>, stores: &Stores) -> Result<(), ServiceError> {
    let mut failed = Vec::new();
    let how = match drain {
        Drain::Complete => {
            tracing::info!("all in-flight requests finished");
            "drained"
        }
        Drain::TimedOut => {
            tracing::warn!("grace period over: remaining connections dropped");
            "grace period over"
        }
    };
    let stopped = Event::new(EventKind::ServiceStopped, Outcome::Success).with_detail(how);
    if let Err(e) = audit.append(stopped).await {
        tracing::error!(error = %e, "cannot record the service stop");
        failed.push("the service stop was not recorded");
    }
    let closed = match tokio::task::spawn_blocking(move || audit.close()).await {
        Ok(closed) => closed.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = closed {
        tracing::error!(error = %e, "closing the audit trail failed");
        failed.push("the audit trail's final checkpoint was not written");
    }
    if let Err(e) = stores.cache.mark_clean_stop() {
        tracing::error!(error = %e, "marking the cache's clean stop failed (its copies will be deleted at the next start)");
        failed.push("the cache's clean stop was not marked");
    }
    if let Err(e) = stores.flush() {
        tracing::error!(error = %e, "flushing stores at shutdown failed");
        failed.push("the stores were not flushed");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::UncleanStop(failed))
    }
}

/// The structure's key and certificate, signing the VIHF in the indirect modes.
fn load_structure_signer(dmp: &DmpConfig) -> Result<SoftwareSigner, ConfigError> {
    let problem = |reason: String| {
        ConfigError::Invalid(vec![ConfigProblem::new("dmp.structure_key", reason)])
    };
    let (Some(cert), Some(key)) = (&dmp.structure_cert, &dmp.structure_key) else {
        return Err(problem("the indirect modes sign with the structure's key: set structure_cert and structure_key".into()));
    };
    let key = key.resolve().map_err(|e| problem(e.to_string()))?;
    SoftwareSigner::load(&key, cert).map_err(|e| problem(e.to_string()))
}

/// Starts card login (reader monitor, sessions) when `[cards]` is configured.
fn start_cards(
    trust: Option<CardTrust>,
    virtual_card: Option<Box<dyn crate::card::apdu::Transport + Send>>,
    config: &Config,
    audit: &Arc<AuditLog>,
) -> Result<Option<Arc<CardLogin>>, ServiceError> {
    let (Some(trust), Some(cards)) = (trust, &config.cards) else {
        tracing::warn!("no [cards] section: card login is disabled");
        return Ok(None);
    };
    let login = CardLogin::start(
        cards,
        trust,
        &config.desks,
        audit.clone(),
        virtual_card,
        roster(config)?,
    )
    .map_err(ServiceError::CardWorker)?;
    Ok(Some(Arc::new(login)))
}

/// Break-glass access over the record service, with the cache when its master key reads,
/// and the tasks that end grants, purge the cache and prune the rate limiters.
fn start_access(
    config: &Config,
    upstream: Option<Arc<dyn crate::upstream::RecordService>>,
    cards: Option<&Arc<CardLogin>>,
    stores: &Arc<Stores>,
    audit: &Arc<AuditLog>,
    metrics: &Arc<Metrics>,
) -> Option<Arc<BreakGlass>> {
    let Some(upstream) = upstream else {
        tracing::warn!("no [upstream] section: summaries cannot be fetched");
        return None;
    };
    let cards = cards?;
    let cache = open_cache(config, stores);
    let limits = Arc::new(Limits::new(&config.limits));
    let policy = InsPolicy {
        accept_test_oids: config.upstream.as_ref().is_some_and(|u| u.accept_test_ins),
    };
    let access = Arc::new(BreakGlass::new(
        audit.clone(),
        upstream,
        cache.clone(),
        limits.clone(),
        config.break_glass.clone(),
        policy,
    ));
    tokio::spawn(crate::limit::prune_periodically(limits));
    let (reaper, sessions) = (access.clone(), cards.sessions.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(500));
        loop {
            every.tick().await;
            reaper.reap(|desk| sessions.token_hash(desk)).await;
        }
    });
    // The purge needs no key: copies an earlier run left stay expiring while the key is
    // missing or unusable (they are never served without it).
    let period = Duration::from_secs(config.cache.purge_interval_secs);
    let max_stale = config.cache.lifetimes().max_stale;
    let (metrics, stores) = (metrics.clone(), stores.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        loop {
            every.tick().await;
            let (stores, cache) = (stores.clone(), cache.clone());
            let purged = tokio::task::spawn_blocking(move || {
                let now = crate::clock::now().1;
                let purged = match &cache {
                    Some(cache) => cache.purge_expired(),
                    None => stores.cache.purge_older_than(max_stale, now),
                };
                (purged, stores.cache.stats(now))
            })
            .await;
            let Ok((purged, stats)) = purged else {
                continue;
            };
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired cached summaries deleted"),
                Err(e) => tracing::warn!(error = %e, "cache purge failed"),
            }
            if let Ok(stats) = stats {
                metrics.set_cache(stats.entries, stats.oldest_secs);
            }
        }
    });
    Some(access)
}

/// The certificate files the configuration names, by the role the metrics label them with
/// (a role with several files reports the earliest expiry among them).
fn certificate_files(config: &Config) -> Vec<(&'static str, Vec<std::path::PathBuf>)> {
    let mut files = vec![
        ("server", vec![config.tls.server_cert.clone()]),
        ("workstation_ca", vec![config.tls.workstation_ca.clone()]),
    ];
    match (&config.upstream, &config.dmp) {
        (Some(upstream), Some(dmp)) if upstream.protocol == Protocol::Dmp => {
            files.push(("dmp_server_ca", vec![dmp.server_ca.clone()]));
            if let Some(structure) = &dmp.structure_cert {
                files.push(("dmp_structure", vec![structure.clone()]));
            }
        }
        (Some(upstream), _) => {
            files.push(("record_service_ca", vec![upstream.server_ca.clone()]));
            files.push(("record_service_client", vec![upstream.client_cert.clone()]));
        }
        (None, _) => {}
    }
    if let Some(cards) = &config.cards {
        let trust = &cards.trust;
        files.push((
            "card_ca",
            trust
                .anchors
                .iter()
                .chain(&trust.intermediates)
                .cloned()
                .collect(),
        ));
    }
    files
}

/// The series centre IT pages on (config/prometheus/) that are read from elsewhere: every
/// 5 s, each desk's reader, each audit repository's backlog and the record service's
/// failures; every minute, the configured certificates' expiry and
/// the CRLs' dates, read from their files (what the next reload will put in force).
fn spawn_monitoring(
    config: &Config,
    cards: Option<Arc<CardLogin>>,
    receivers: Vec<Arc<crate::audit::ship::Receiver>>,
    failures: Arc<crate::upstream::failures::Failures>,
    metrics: Arc<Metrics>,
) {
    let certificates = certificate_files(config);
    let mut crls: Vec<(&'static str, std::path::PathBuf)> = config
        .tls
        .workstation_crls
        .iter()
        .map(|path| ("workstations", path.clone()))
        .collect();
    if let Some(cards) = &config.cards {
        crls.extend(cards.trust.crls.iter().map(|path| ("cards", path.clone())));
    }
    match (&config.upstream, &config.dmp) {
        (Some(upstream), Some(dmp)) if upstream.protocol == Protocol::Dmp => {
            crls.extend(
                dmp.server_crls
                    .iter()
                    .map(|p| ("record_service", p.clone())),
            );
        }
        (Some(upstream), _) => {
            crls.extend(
                upstream
                    .server_crls
                    .iter()
                    .map(|p| ("record_service", p.clone())),
            );
        }
        (None, _) => {}
    }
    for receiver in &config.audit.receivers {
        crls.extend(
            receiver
                .crls
                .iter()
                .map(|p| ("audit_repositories", p.clone())),
        );
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        for round in 0u64.. {
            every.tick().await;
            if let Some(cards) = &cards {
                for (desk, present) in cards.sessions.readers_present() {
                    metrics.set_reader_present(&desk, present);
                }
            }
            for receiver in &receivers {
                metrics.set_shipping(receiver.name(), &receiver.backlog());
            }
            metrics.set_record_service_errors(&failures.totals());
            if round % 12 != 0 {
                continue;
            }
            let (certificates, crls) = (certificates.clone(), crls.clone());
            let read = tokio::task::spawn_blocking(move || {
                let expiries: Vec<_> = certificates
                    .iter()
                    .map(|(role, paths)| {
                        let earliest = paths
                            .iter()
                            .filter_map(|p| crate::tls::earliest_not_after(p))
                            .min();
                        (*role, earliest)
                    })
                    .collect();
                let name = |path: &std::path::PathBuf| {
                    path.file_name()
                        .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
                };
                let dates: Vec<_> = crls
                    .iter()
                    .map(|(source, path)| {
                        // A file's name, unless another of the source's files has the same
                        // name (one authority's ca.crl beside another's): then its path,
                        // or the two would be one series and a stale list would hide.
                        let shared = crls
                            .iter()
                            .filter(|(s, p)| s == source && name(p) == name(path))
                            .count()
                            > 1;
                        let file = if shared {
                            path.display().to_string()
                        } else {
                            name(path)
                        };
                        (*source, file, crate::tls::crl_dates(path))
                    })
                    .collect();
                (expiries, dates)
            })
            .await;
            if let Ok((expiries, dates)) = read {
                for (role, earliest) in expiries {
                    metrics.set_certificate_expiry(role, earliest);
                }
                for (source, file, dates) in dates {
                    metrics.set_crl(source, &file, dates);
                }
            }
        }
    });
}

/// The sealed cache, or `None` (with a warning) when the master key is absent or unusable:
/// the service then works without a cache.
fn open_cache(config: &Config, stores: &Stores) -> Option<Arc<SealedSummaries>> {
    let cache = open_sealed(config, stores);
    if cache.is_none() {
        // Copies an earlier run sealed cannot be withdrawn in this one.
        stores.cache.run_without_key();
    }
    cache
}

fn open_sealed(config: &Config, stores: &Stores) -> Option<Arc<SealedSummaries>> {
    let Some(key) = &config.cache.master_key else {
        tracing::warn!("no cache.master_key: the summary cache is disabled");
        return None;
    };
    let master = match key
        .resolve()
        .map_err(Into::into)
        .and_then(|path| MasterKey::load(&path))
    {
        Ok(master) => master,
        Err(e) => {
            tracing::warn!(error = %e, "cache master key unusable: the summary cache is disabled");
            return None;
        }
    };
    match stores.cache.sealed(&master, config.cache.lifetimes()) {
        Ok(sealed) => Some(Arc::new(sealed)),
        Err(e) => {
            tracing::warn!(error = %e, "summary cache unusable: disabled");
            None
        }
    }
}

/// The roster in the state directory, when `[roster]` is set.
fn roster(config: &Config) -> Result<Option<Roster>, ServiceError> {
    let Some(roster) = &config.roster else {
        tracing::warn!("no [roster] section: any professional with a trusted card may log in");
        return Ok(None);
    };
    let path = config.storage.state_dir.join("roster.json");
    let loaded = Roster::load(&path, roster.grace_minutes)
        .map_err(|e| ServiceError::Roster(e.to_string()))?;
    Ok(Some(loaded))
}

/// Loads the checkpoint signing key as a configuration step: a missing or unreadable key
/// is a configuration problem (exit 64), found by `configtest`.
fn load_signer(config: &Config) -> Result<Signer, ConfigError> {
    let problem = |reason: &dyn std::fmt::Display| {
        ConfigError::Invalid(vec![ConfigProblem::new("audit.signing_key", reason)])
    };
    let path = config
        .audit
        .signing_key
        .resolve()
        .map_err(|e| problem(&e))?;
    Signer::load(&path).map_err(|e| match e {
        AuditError::Key(reason) => problem(&reason),
        other => problem(&other),
    })
}

/// Rereads the workstation CRLs periodically (when some are configured); a failed read
/// keeps the lists in force and says so.
fn spawn_crl_reload(tls: ServerTls) {
    let Some(every) = tls.crl_refresh() else {
        return;
    };
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.tick().await;
        loop {
            interval.tick().await;
            match tls.reload_crls() {
                Ok(()) => tracing::debug!("workstation CRLs reread"),
                Err(e) => tracing::error!(
                    problem = %e,
                    "workstation CRL reload failed; the previous lists stay in force"
                ),
            }
        }
    });
}

/// Tells systemd about a state change; outside systemd (no `$NOTIFY_SOCKET`) it does nothing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// With `WatchdogSec=` set, pings systemd at half the interval, but only after proving that
/// the service works: a request to its management listener answers and both stores read.
/// A wedged runtime, router or store therefore stops the pings and systemd restarts us;
/// peers saturating the public listener do not (the management listener is apart).
fn spawn_watchdog(
    management: SocketAddr,
    stores: Arc<Stores>,
    audit: Arc<AuditLog>,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = interval / 2;
    let probe = Probe::management(management, period / 2);
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        // Every `period` from the start, however long a check took: a sleep after each
        // check would space the pings by the check's time too.
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self_check(&probe, &stores, &audit).await {
                Ok(()) => notify(&[NotifyState::Watchdog]),
                Err(reason) => {
                    tracing::error!(%reason, "watchdog self-check failed; not pinging systemd")
                }
            }
        }
    }))
}

/// Why the watchdog is not fed.
#[derive(Debug, thiserror::Error)]
enum SelfCheckFailure {
    /// A commit failed; the writer needs a restart.
    #[error("the audit writer failed on a storage error")]
    AuditWriter,
    /// The management listener answered something else than 200.
    #[error("/healthz answered {0}")]
    Health(u16),
    /// The management listener did not answer.
    #[error("{0}")]
    Probe(String),
    /// A store did not answer a read.
    #[error("{0}")]
    Stores(String),
}

async fn self_check(
    probe: &Probe,
    stores: &Arc<Stores>,
    audit: &AuditLog,
) -> Result<(), SelfCheckFailure> {
    if !audit.is_healthy() {
        return Err(SelfCheckFailure::AuditWriter);
    }
    match probe.get("/healthz").await {
        Ok((200, _)) => {}
        Ok((status, _)) => return Err(SelfCheckFailure::Health(status)),
        Err(e) => return Err(SelfCheckFailure::Probe(e.to_string())),
    }
    let stores = stores.clone();
    tokio::task::spawn_blocking(move || stores.check())
        .await
        .map_err(|e| SelfCheckFailure::Stores(format!("store check task failed: {e}")))?
        .map_err(|e| SelfCheckFailure::Stores(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More connections than the process may open files for is refused before anything
    /// binds (peers would starve the management listener and the watchdog's probe); a
    /// number within it passes.
    #[test]
    fn connections_beyond_the_open_file_limit_are_refused() {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let Some(hard) = limit.maximum else {
            eprintln!("SKIPPED: this process has no open-file limit");
            return;
        };
        let problem = file_budget(usize::try_from(hard).unwrap()).unwrap_err();
        assert_eq!(problem.key, "server.max_connections");
        assert!(problem.reason.contains("LimitNOFILE"), "{problem}");
        assert!(file_budget(16).is_ok());
    }

    fn started(dir: &Path, key: &str) -> (Stores, Arc<AuditLog>) {
        let stores = Stores::open(&dir.join("state")).unwrap();
        let signer = Signer::generate(&dir.join(key)).unwrap();
        let settings = crate::audit::Settings::for_tests();
        let audit = AuditLog::start(stores.audit.clone(), signer, settings).unwrap();
        (stores, Arc::new(audit))
    }

    /// A stop whose record and final checkpoint cannot be written is not a clean stop:
    /// `serve` must fail on it, not exit 0 as if the trail had been closed.
    #[tokio::test]
    async fn a_stop_that_cannot_close_the_trail_is_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, audit) = started(dir.path(), "first");
        finish(Drain::Complete, audit, &stores).await.unwrap();
        drop(stores);

        let (stores, audit) = started(dir.path(), "second");
        // The trail closed under the stop's feet (as a writer that failed does).
        audit.close().unwrap();
        let Err(ServiceError::UncleanStop(failed)) = finish(Drain::Complete, audit, &stores).await
        else {
            panic!("a stop that wrote nothing was called clean");
        };
        assert_eq!(
            failed,
            [
                "the service stop was not recorded",
                "the audit trail's final checkpoint was not written"
            ]
        );
    }
}
