//! Prometheus metrics of the gateway. Labels are route templates, methods, statuses,
//! configured names (receivers, desks, certificate roles, CRL files) and fixed codes only:
//! never a raw path, a query or a header value, so no patient identifier can become a
//! label. config/prometheus/ holds alert rules on these series (docs in the README).

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// Matched route template (`/api/v1/desk`) or `unmatched`.
    pub route: String,
    /// HTTP method, or `other` for unusual ones.
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// The stamped build id (`crate::build`), empty for an unstamped build.
    build: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: covers a cached answer up to a timed-out upstream.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics registry.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    handshake_failures: Counter,
    connections_closed: Family<ClosedLabels, Counter>,
    connections: Gauge<i64, AtomicI64>,
    cache_entries: Gauge<i64, AtomicI64>,
    cache_oldest: Gauge<i64, AtomicI64>,
    ship_backlog: Family<ReceiverLabels, Gauge>,
    ship_oldest: Family<ReceiverLabels, Gauge>,
    ship_errors: Family<ReceiverLabels, Counter>,
    ship_unconfirmed_bytes: Family<ReceiverLabels, Gauge>,
    record_service_errors: Family<KindLabels, Counter>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    crl_this_update: Family<CrlLabels, Gauge>,
    crl_next_update: Family<CrlLabels, Gauge>,
    reader_present: Family<DeskLabels, Gauge>,
}

/// A record-service failure's code (`upstream_unavailable`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Which configured certificate file: `server`, `workstation_ca`, `record_service_client`,
/// `record_service_ca`, `dmp_structure`, `dmp_server_ca`, `card_ca`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

/// A CRL: whose (`cards`, `workstations`, `record_service` or `audit_repositories`) and its
/// file name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlLabels {
    source: &'static str,
    file: String,
}

/// A configured desk.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeskLabels {
    desk: String,
}

/// Labels of the shipping series: the receiver's configured name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series of the HTTP layer.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("samu_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let handshake_failures = Counter::default();
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        let connections = Gauge::<i64, AtomicI64>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::build::VERSION,
                build: crate::build::ID.unwrap_or(""),
            })
            .set(1);
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            latency.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes refused or timed out (untrusted, expired or missing certificates)",
            handshake_failures.clone(),
        );
        registry.register(
            "http_connections_closed_by_gateway",
            "Connections the gateway closed or refused: idle (no request within the deadline), stalled (an answer that did not move), over the cap of connections without a certificate, a client certificate revoked or expired since the handshake, or over the per-address cap",
            connections_closed.clone(),
        );
        registry.register(
            "http_connections_open",
            "Open client connections",
            connections.clone(),
        );
        registry.register("build_info", "Build version", build);
        let cache_entries = Gauge::<i64, AtomicI64>::default();
        let cache_oldest = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "cache_entries",
            "Sealed summaries in the cache (updated at each purge)",
            cache_entries.clone(),
        );
        registry.register(
            "cache_oldest_entry_age_seconds",
            "Age of the oldest cached summary (updated at each purge)",
            cache_oldest.clone(),
        );
        let ship_backlog = Family::<ReceiverLabels, Gauge>::default();
        let ship_oldest = Family::<ReceiverLabels, Gauge>::default();
        let ship_errors = Family::<ReceiverLabels, Counter>::default();
        let ship_unconfirmed_bytes = Family::<ReceiverLabels, Gauge>::default();
        registry.register(
            "audit_ship_backlog_records",
            "Audit records not yet shipped, by receiver",
            ship_backlog.clone(),
        );
        registry.register(
            "audit_ship_backlog_oldest_seconds",
            "Age of the oldest unshipped audit record, by receiver",
            ship_oldest.clone(),
        );
        registry.register(
            "audit_ship_errors",
            "Connection or write failures shipping to a receiver",
            ship_errors.clone(),
        );
        registry.register(
            "audit_ship_unconfirmed_bytes",
            "Bytes sent to a receiver and not confirmed delivered yet",
            ship_unconfirmed_bytes.clone(),
        );
        let record_service_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "record_service_errors",
            "Record service calls that failed (unreachable, timed out, malformed, refused assertion), by kind",
            record_service_errors.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the earliest certificate of a configured file expires (notAfter, Unix time)",
            certificate_expiry.clone(),
        );
        let crl_this_update = Family::<CrlLabels, Gauge>::default();
        let crl_next_update = Family::<CrlLabels, Gauge>::default();
        registry.register(
            "crl_this_update_timestamp_seconds",
            "When a configured CRL file was issued (thisUpdate, Unix time)",
            crl_this_update.clone(),
        );
        registry.register(
            "crl_next_update_timestamp_seconds",
            "When a configured CRL file says the next one is due (nextUpdate, Unix time)",
            crl_next_update.clone(),
        );
        let reader_present = Family::<DeskLabels, Gauge>::default();
        registry.register(
            "desk_reader_present",
            "1 when pcscd answers and lists the desk's card reader, else 0",
            reader_present.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            handshake_failures,
            connections_closed,
            connections,
            cache_entries,
            cache_oldest,
            ship_backlog,
            ship_oldest,
            ship_errors,
            ship_unconfirmed_bytes,
            record_service_errors,
            certificate_expiry,
            crl_this_update,
            crl_next_update,
            reader_present,
        }
    }

    /// Counts one finished request.
    pub(crate) fn observe_request(&self, labels: RequestLabels, elapsed: Duration) {
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts one refused or timed-out TLS handshake.
    pub(crate) fn observe_handshake_failure(&self) {
        self.handshake_failures.inc();
    }

    /// Counts one connection the gateway closed (`idle`, `stalled`, `anonymous_cap`, `handshake_cap`) or
    /// refused (`per_address_cap`).
    pub(crate) fn observe_connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ClosedLabels { reason })
            .inc();
    }

    /// Tracks open connections (+1 when opened, -1 when closed).
    pub(crate) fn add_connections(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// Records a receiver's shipping backlog and error count.
    pub(crate) fn set_shipping(&self, receiver: &str, backlog: &crate::audit::ship::Backlog) {
        let labels = ReceiverLabels {
            receiver: receiver.to_owned(),
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.ship_backlog
            .get_or_create(&labels)
            .set(gauge(backlog.records));
        self.ship_oldest
            .get_or_create(&labels)
            .set(gauge(backlog.oldest_secs));
        // The shipper counts its errors since start: the counter catches up with it.
        let errors = self.ship_errors.get_or_create(&labels);
        errors.inc_by(backlog.errors.saturating_sub(errors.get()));
        self.ship_unconfirmed_bytes
            .get_or_create(&labels)
            .set(gauge(backlog.unconfirmed_bytes));
    }

    /// Brings the record-service failure counters up to `totals` (count since start, by
    /// code).
    pub(crate) fn set_record_service_errors(&self, totals: &[(&'static str, u64)]) {
        for (kind, total) in totals {
            let labels = KindLabels { kind };
            let counter = self.record_service_errors.get_or_create(&labels);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Records when `certificate` (a configured file's role) expires, or forgets it when
    /// the file no longer reads.
    pub(crate) fn set_certificate_expiry(&self, certificate: &'static str, not_after: Option<i64>) {
        let labels = CertificateLabels { certificate };
        match not_after {
            Some(at) => {
                self.certificate_expiry.get_or_create(&labels).set(at);
            }
            None => {
                self.certificate_expiry.remove(&labels);
            }
        }
    }

    /// Records a CRL's issue and next-update times (`None`: unreadable, forgotten; a CRL
    /// without a next update has no such series).
    pub(crate) fn set_crl(
        &self,
        source: &'static str,
        file: &str,
        dates: Option<(i64, Option<i64>)>,
    ) {
        let labels = CrlLabels {
            source,
            file: file.to_owned(),
        };
        match dates {
            Some((this, next)) => {
                self.crl_this_update.get_or_create(&labels).set(this);
                match next {
                    Some(next) => {
                        self.crl_next_update.get_or_create(&labels).set(next);
                    }
                    None => {
                        self.crl_next_update.remove(&labels);
                    }
                }
            }
            None => {
                self.crl_this_update.remove(&labels);
                self.crl_next_update.remove(&labels);
            }
        }
    }

    /// Records whether `desk`'s reader is there.
    pub(crate) fn set_reader_present(&self, desk: &str, present: bool) {
        self.reader_present
            .get_or_create(&DeskLabels {
                desk: desk.to_owned(),
            })
            .set(i64::from(present));
    }

    /// Records the cache's size and oldest entry.
    pub(crate) fn set_cache(&self, entries: u64, oldest_secs: u64) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_oldest
            .set(i64::try_from(oldest_secs).unwrap_or(i64::MAX));
    }

    /// Serves the audit trail's disk timings: the journal's syncs, which every access
    /// waits for before its data leaves, and the index commits that share the disk.
    pub(crate) fn with_audit_disk(mut self, times: &crate::audit::DiskTimes) -> Self {
        self.registry.register(
            "audit_journal_sync_seconds",
            "Time of each audit journal fdatasync (every access waits for one before its data leaves)",
            times.journal_sync(),
        );
        self.registry.register(
            "audit_index_commit_seconds",
            "Time of each audit index transaction (redb, its syncs included), which shares the disk with the journal",
            times.index_commit(),
        );
        self
    }

    /// The text exposition (OpenMetrics, which Prometheus scrapes natively).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only come from a broken
        // encoder, and an empty scrape is then the honest answer.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_by_route_and_status() {
        let metrics = Metrics::new();
        let labels = |status| RequestLabels {
            route: "/api/v1/desk".into(),
            method: "GET",
            status,
        };
        metrics.observe_request(labels(200), Duration::from_millis(3));
        metrics.observe_request(labels(200), Duration::from_millis(5));
        metrics.observe_request(labels(403), Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains(r#"samu_gateway_http_requests_total{route="/api/v1/desk",method="GET",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"samu_gateway_http_requests_total{route="/api/v1/desk",method="GET",status="403"} 1"#), "{text}");
        assert!(
            text.contains("samu_gateway_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    /// Counters fed from running totals catch up with them, never go back, and render as
    /// `_total`.
    #[test]
    fn counters_follow_the_running_totals_they_are_fed() {
        let metrics = Metrics::new();
        metrics.set_record_service_errors(&[("upstream_timeout", 2)]);
        metrics.set_record_service_errors(&[("upstream_timeout", 5)]);
        // A smaller total (a restarted source) adds nothing.
        metrics.set_record_service_errors(&[("upstream_timeout", 1)]);
        let backlog = |errors| crate::audit::ship::Backlog {
            errors,
            ..Default::default()
        };
        metrics.set_shipping("central", &backlog(3));
        metrics.set_shipping("central", &backlog(4));
        let text = metrics.render();
        assert!(
            text.contains(r#"samu_gateway_record_service_errors_total{kind="upstream_timeout"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"samu_gateway_audit_ship_errors_total{receiver="central"} 4"#),
            "{text}"
        );
    }

    /// The audit trail's disk timings are served as histograms, fed by the audit threads.
    #[test]
    fn audit_disk_timings_render_as_histograms() {
        let dir = tempfile::tempdir().unwrap();
        let (_, log) = crate::audit::AuditLog::for_tests(dir.path());
        let metrics = Metrics::new().with_audit_disk(log.disk_times());
        let count = |text: &str, family: &str| {
            let series = format!("samu_gateway_{family}_count ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<u64>().ok())
        };
        let text = metrics.render();
        assert_eq!(
            count(&text, "audit_journal_sync_seconds"),
            Some(0),
            "{text}"
        );
        let event = crate::audit::Event::new(
            crate::audit::EventKind::ServiceStarted,
            crate::audit::Outcome::Success,
        );
        let _receipt = log.append_blocking(event).unwrap();
        // Closing waits for the indexer, so its commit is counted too.
        log.close().unwrap();
        let text = metrics.render();
        assert!(
            count(&text, "audit_journal_sync_seconds") >= Some(1),
            "{text}"
        );
        assert!(
            count(&text, "audit_index_commit_seconds") >= Some(1),
            "{text}"
        );
        assert!(
            text.contains("# TYPE samu_gateway_audit_journal_sync_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn certificate_and_crl_series_are_set_and_forgotten() {
        let metrics = Metrics::new();
        metrics.set_certificate_expiry("server", Some(2_000_000_000));
        metrics.set_crl("cards", "card-ca.crl", Some((1_000, Some(2_000))));
        metrics.set_reader_present("regul-1", false);
        let text = metrics.render();
        assert!(text.contains(r#"samu_gateway_certificate_expiry_timestamp_seconds{certificate="server"} 2000000000"#), "{text}");
        assert!(text.contains(r#"samu_gateway_crl_next_update_timestamp_seconds{source="cards",file="card-ca.crl"} 2000"#), "{text}");
        assert!(
            text.contains(r#"samu_gateway_desk_reader_present{desk="regul-1"} 0"#),
            "{text}"
        );
        // A file that no longer reads leaves no stale value behind.
        metrics.set_certificate_expiry("server", None);
        metrics.set_crl("cards", "card-ca.crl", None);
        let text = metrics.render();
        assert!(!text.contains(r#"certificate="server""#), "{text}");
        assert!(!text.contains(r#"file="card-ca.crl""#), "{text}");
    }
}
