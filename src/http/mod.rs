//! The HTTPS API: TLS with workstation client certificates, attribution of each request to
//! one desk, the routes, metrics, and the accept loop with graceful drain.

pub(crate) mod settings;
pub(crate) use settings::{CentreConfig, ServerConfig, TlsConfig};
mod access_routes;
pub(crate) mod case_routes;
mod compliance_routes;
pub(crate) mod csrf;
mod downloads;
pub(crate) mod error;
mod extract;
pub(crate) mod identity;
mod metrics;
mod middleware;
pub(crate) mod probe;
mod routes;
pub(crate) mod server;
mod session_routes;
#[cfg(feature = "test-hooks")]
mod test_hooks;
pub(crate) mod tls;
mod web;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::BreakGlass;
use crate::audit::AuditLog;
use crate::session::CardLogin;
use crate::state::Stores;

pub(crate) use error::ApiError;
pub(crate) use identity::{DeskDirectory, Role, Roles};
pub(crate) use metrics::Metrics;

/// Who watches the trail: the audit repositories it is shipped to, how late shipping may
/// run before readiness says so, and the anomaly thresholds (officers are recognised by
/// their certificates: `identity::Roles`).
pub(crate) struct Oversight {
    /// Audit repositories.
    pub receivers: Vec<Arc<crate::audit::ship::Receiver>>,
    /// Shipping lag bound, seconds.
    pub ship_alert_seconds: u64,
    /// The anomaly report's thresholds.
    pub thresholds: crate::audit::report::Thresholds,
    /// The listener's TLS, whose workstation CRLs readiness watches.
    pub tls: Option<tls::ServerTls>,
}

/// What serves the desks: card login, break-glass access and the cases the regulation
/// software sends.
pub(crate) struct DeskServices {
    /// Card login, when `[cards]` is configured.
    pub cards: Option<Arc<CardLogin>>,
    /// Break-glass access, when `[upstream]` and `[cards]` are.
    pub access: Option<Arc<BreakGlass>>,
    /// Each desk's case.
    pub cases: Arc<crate::case::board::CaseBoard>,
    /// Whether `[integration]` names the regulation software's certificate (without it,
    /// neither cases nor the roster can be sent, and callers are told so).
    pub integration: bool,
}

/// What handlers share.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

struct Shared {
    centre: CentreConfig,
    stores: Arc<Stores>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    cards: Option<Arc<CardLogin>>,
    access: Option<Arc<BreakGlass>>,
    cases: Arc<crate::case::board::CaseBoard>,
    integration: bool,
    receivers: Vec<Arc<crate::audit::ship::Receiver>>,
    ship_alert_seconds: u64,
    thresholds: crate::audit::report::Thresholds,
    tls: Option<tls::ServerTls>,
    draining: AtomicBool,
    drain_started: tokio::sync::Notify,
    csrf: csrf::Csrf,
    requests: middleware::InFlight,
    /// The compliance review queue, read forward from where the last look stopped.
    review_queue: Arc<std::sync::Mutex<crate::audit::review::ReviewQueue>>,
    /// Held by a compliance decision from its check to its record, one per access's
    /// stripe (its sequence number modulo their count): decisions on one access are taken
    /// one at a time; one on an old access, whose check reads the trail from it on, does
    /// not hold up the others'.
    decisions: [tokio::sync::Mutex<()>; 16],
    /// Exports recorded and waiting for the browser to fetch them.
    downloads: downloads::Tickets<compliance_routes::PreparedExport>,
}

impl AppState {
    /// State for one server instance.
    pub(crate) fn new(
        centre: CentreConfig,
        stores: Arc<Stores>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        desks: DeskServices,
        oversight: Oversight,
    ) -> Self {
        let DeskServices {
            cards,
            access,
            cases,
            integration,
        } = desks;
        Self(Arc::new(Shared {
            centre,
            stores,
            audit,
            metrics,
            cards,
            access,
            cases,
            integration,
            receivers: oversight.receivers,
            ship_alert_seconds: oversight.ship_alert_seconds,
            thresholds: oversight.thresholds,
            tls: oversight.tls,
            draining: AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
            csrf: csrf::Csrf::new(),
            requests: middleware::InFlight::default(),
            review_queue: Arc::default(),
            decisions: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            downloads: downloads::Tickets::default(),
        }))
    }

    /// The requests running, whether or not their client is still there.
    pub(crate) fn requests(&self) -> &middleware::InFlight {
        &self.0.requests
    }

    /// Exports waiting for the browser to fetch them.
    fn downloads(&self) -> &downloads::Tickets<compliance_routes::PreparedExport> {
        &self.0.downloads
    }

    /// The compliance review queue.
    pub(crate) fn review_queue(&self) -> Arc<std::sync::Mutex<crate::audit::review::ReviewQueue>> {
        self.0.review_queue.clone()
    }

    /// Taken by a compliance decision on access `seq` from its check to its record.
    pub(crate) fn decisions(&self, seq: u64) -> &tokio::sync::Mutex<()> {
        let stripes = self.0.decisions.len() as u64;
        // The remainder is below the array's length, so it fits and indexes it.
        &self.0.decisions[usize::try_from(seq % stripes).unwrap_or(0)]
    }

    /// The pages' CSRF token key.
    pub(crate) fn csrf(&self) -> &csrf::Csrf {
        &self.0.csrf
    }

    /// The anomaly report's thresholds.
    pub(crate) fn thresholds(&self) -> &crate::audit::report::Thresholds {
        &self.0.thresholds
    }

    /// Whether a workstation CRL in force is past its next update, and the policy for it.
    pub(crate) fn stale_workstation_crls(&self) -> Option<crate::card::trust::StaleCrlPolicy> {
        self.0.tls.as_ref().and_then(tls::ServerTls::stale_crls)
    }

    /// Whether workstation CRLs are configured (readiness then reports on them).
    pub(crate) fn checks_workstation_crls(&self) -> bool {
        self.0
            .tls
            .as_ref()
            .is_some_and(|tls| tls.crl_refresh().is_some())
    }

    /// Whether audit repositories are configured.
    pub(crate) fn ships_audit(&self) -> bool {
        !self.0.receivers.is_empty()
    }

    /// The audit repositories the trail is shipped to.
    pub(crate) fn repositories(&self) -> &[Arc<crate::audit::ship::Receiver>] {
        &self.0.receivers
    }

    /// Receivers whose oldest unshipped record is older than the alert bound.
    pub(crate) fn lagging_receivers(&self) -> Vec<&str> {
        self.0
            .receivers
            .iter()
            .filter(|r| {
                let backlog = r.backlog();
                backlog.records > 0 && backlog.oldest_secs > self.0.ship_alert_seconds
            })
            .map(|r| r.name())
            .collect()
    }

    /// The centre served.
    pub(crate) fn centre(&self) -> &CentreConfig {
        &self.0.centre
    }

    /// Both stores.
    pub(crate) fn stores(&self) -> &Stores {
        &self.0.stores
    }

    /// The audit log: the only way handlers record what they do.
    pub(crate) fn audit(&self) -> &AuditLog {
        &self.0.audit
    }

    /// Card login, when `[cards]` is configured.
    pub(crate) fn cards(&self) -> Option<&CardLogin> {
        self.0.cards.as_deref()
    }

    /// Break-glass access, when `[upstream]` and `[cards]` are configured.
    pub(crate) fn access(&self) -> Option<&BreakGlass> {
        self.0.access.as_deref()
    }

    /// The case each desk holds.
    pub(crate) fn cases(&self) -> &Arc<crate::case::board::CaseBoard> {
        &self.0.cases
    }

    /// Whether the regulation software's certificate is configured (`[integration]`).
    pub(crate) fn integration_configured(&self) -> bool {
        self.0.integration
    }

    /// The metrics registry.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// True once shutdown has begun: readiness then fails so balancers stop sending work.
    pub(crate) fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Marks the start of shutdown.
    pub(crate) fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
        self.0.drain_started.notify_waiters();
    }

    /// Resolves when shutdown starts: long-lived answers (event streams) end then, so that
    /// the drain does not wait for them and their pages learn of it at once.
    pub(crate) async fn draining(&self) {
        let notified = self.0.drain_started.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.is_draining() {
            notified.await;
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "samu-gateway",
        description = "Break-glass access to critical patient summaries for a SAMU regulation centre. \
            Workstations authenticate with client certificates mapped to desks.",
        license(name = "Proprietary: all rights reserved, no licence granted")
    ),
    modifiers(&SecuritySchemes),
    security(("workstationCertificate" = []))
)]
struct ApiDoc;

/// How callers authenticate, as the routes check it: every call comes over mutual TLS; a
/// desk's calls for a professional add the session token (cookie or bearer); a browser's
/// state-changing calls add the CSRF header.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "workstationCertificate",
            SecurityScheme::MutualTls {
                description: Some(
                    "TLS client certificate issued by the centre's workstation CA (desks), or an \
                     officer's or the regulation software's certificate; health endpoints also \
                     answer without one"
                        .into(),
                ),
                deprecated: None,
                extensions: None,
            },
        );
        components.add_security_scheme(
            "sessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                session_routes::SESSION_COOKIE,
                "session token set by POST /api/v1/session, valid only from the desk that opened it",
            ))),
        );
        components.add_security_scheme(
            "sessionBearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the same session token as an Authorization: Bearer header",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "csrfHeader",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                csrf::CSRF_HEADER,
                "token from GET /api/v1/csrf-token, required on a browser's POST, PUT and DELETE",
            ))),
        );
    }
}

/// Every documented route. Routes are added only here and only through `routes!`, so the
/// OpenAPI document is generated from the same registrations that serve requests.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::metrics))
        .routes(routes!(routes::desk))
        .routes(routes!(
            session_routes::open_session,
            session_routes::current_session,
            session_routes::close_session
        ))
        .routes(routes!(session_routes::put_roster))
        .routes(routes!(case_routes::post_case, case_routes::delete_case))
        .routes(routes!(case_routes::get_case))
        .routes(routes!(access_routes::break_glass))
        .routes(routes!(access_routes::reread))
        .routes(routes!(access_routes::document))
        .routes(routes!(access_routes::listed_document))
        .routes(routes!(access_routes::listed_document_pdf))
        .routes(routes!(access_routes::close))
        .routes(routes!(access_routes::search))
        .routes(routes!(compliance_routes::pending))
        .routes(routes!(compliance_routes::review))
        .routes(routes!(compliance_routes::report))
        .routes(routes!(compliance_routes::search))
        .routes(routes!(compliance_routes::export))
        .routes(routes!(compliance_routes::offer_download))
        .routes(routes!(compliance_routes::download))
        .routes(routes!(compliance_routes::access_trail))
        .routes(routes!(routes::openapi_json))
        .routes(routes!(web::index))
        .routes(routes!(web::app_js))
        .routes(routes!(web::common_js))
        .routes(routes!(web::app_css))
        .routes(routes!(web::icon))
        .routes(routes!(web::compliance))
        .routes(routes!(web::compliance_js))
        .routes(routes!(web::desk_events))
        .routes(routes!(csrf::token))
}

/// The OpenAPI 3.1 document, generated once.
pub(crate) fn openapi_document() -> &'static String {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        api_router()
            .into_openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"openapi generation failed: {e}\"}}"))
    });
    &DOC
}

/// The management listener's application: liveness, readiness and metrics only (already
/// documented with the public routes), behind the same observation middleware.
pub(crate) fn management_router(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::<AppState>::new()
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::metrics))
        .split_for_parts();
    router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// The application: routes, fallback and the observation middleware.
pub(crate) fn router(state: AppState) -> Router {
    let (router, _) = api_router().split_for_parts();
    #[cfg(feature = "test-hooks")]
    let router = router.merge(test_hooks::router());
    router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::bounded_body))
        .layer(axum::middleware::from_fn(middleware::refuse_head))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::protect,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::run_to_completion,
        ))
        .with_state(state)
}
