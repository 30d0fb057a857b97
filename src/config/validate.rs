//! Whole-configuration checks. Each check appends [`ConfigProblem`]s instead of returning early,
//! so that an engineer fixing a file sees everything wrong with it in one `configtest`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::Config;
use crate::encoding::{hex, parse_sha256};
use crate::problem::ConfigProblem;
use crate::secret::{SecretPath, check_key_file_mode};
use crate::session::DeskConfig;

/// The regulation software's certificate: its own, pinned correctly when pinned, and
/// useful only where desks have sessions.
fn check_integration(
    config: &Config,
    integration: &super::IntegrationConfig,
    out: &mut Vec<ConfigProblem>,
) {
    if integration.cn.trim().is_empty() {
        out.push(ConfigProblem::new("integration.cn", "must not be empty"));
    } else if let Some(i) = config
        .desks
        .iter()
        .position(|d| d.workstation_cn == integration.cn)
    {
        out.push(ConfigProblem::new(
            "integration.cn",
            format!("'{}' is desks[{i}]'s workstation: the integration certificate must be a separate one", integration.cn),
        ));
    }
    if let Some(pin) = &integration.sha256
        && let Err(reason) = parse_sha256(pin)
    {
        out.push(ConfigProblem::new("integration.sha256", reason));
    }
    if config.cards.is_none() {
        out.push(ConfigProblem::new(
            "integration",
            "the regulation software's roster and cases are for desks' card sessions: add a [cards] section",
        ));
    }
}

thread_local! {
    /// The files the checks met (key, path), while [`files_named`] asks for them. Noted
    /// where every path is checked ([`check_absolute`]), so that a file a new section
    /// names is on the list without anyone having to add it. A key given as
    /// `credential:NAME` is not: systemd reads it, as root, and hands the service a copy.
    static NAMED: RefCell<Option<Vec<(String, PathBuf)>>> = const { RefCell::new(None) };
}

/// `check` without noting the files it meets.
fn unnoted<T>(check: impl FnOnce() -> T) -> T {
    let noting = NAMED.with(|named| named.borrow_mut().take());
    let result = check();
    NAMED.with(|named| *named.borrow_mut() = noting);
    result
}

fn note_file(key: &str, path: &Path) {
    NAMED.with(|named| {
        if let Some(files) = named.borrow_mut().as_mut() {
            files.push((key.to_owned(), path.to_owned()));
        }
    });
}

/// Every file the configuration names (its key, its absolute path), as the checks meet
/// them: certificates, keys, CRLs, anchors, the PKCS#11 module, the cache's master key;
/// not the credentials systemd reads for the service. The checks run again for this
/// (they load nothing they keep: the PKCS#11 module is loaded and let go).
pub(super) fn files_named(config: &Config) -> Vec<(String, PathBuf)> {
    NAMED.with(|named| *named.borrow_mut() = Some(Vec::new()));
    let _ = problems(config);
    NAMED
        .with(|named| named.borrow_mut().take())
        .unwrap_or_default()
}

pub(super) fn problems(config: &Config) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    check_centre(config, &mut out);
    check_server(config, &mut out);
    check_tls(config, &mut out);
    check_storage(config, &mut out);
    check_audit(config, &mut out);
    match &config.upstream {
        Some(upstream) if upstream.protocol == crate::upstream::Protocol::Dmp => {
            if config.dmp.is_none() {
                out.push(ConfigProblem::new(
                    "upstream.protocol",
                    "dmp needs a [dmp] section (docs/dmp.md)",
                ));
            }
            if let Some(dmp) = &config.dmp
                && dmp.authentication_mode == crate::upstream::dmp::AuthenticationMode::Directe
                && config.cards.is_none()
            {
                out.push(ConfigProblem::new(
                    "dmp.authentication_mode",
                    "DIRECTE signs with the physicians' cards: configure [cards]",
                ));
            }
        }
        Some(upstream) => check_upstream(upstream, &mut out),
        None => {}
    }
    // A [dmp] section nothing would use: the gateway would run against no record service,
    // or against another protocol's, while its operator believes it speaks to the DMP.
    if config.dmp.is_some()
        && !config
            .upstream
            .as_ref()
            .is_some_and(|u| u.protocol == crate::upstream::Protocol::Dmp)
    {
        out.push(ConfigProblem::new(
            "dmp",
            "a [dmp] section is used only with [upstream] protocol = \"dmp\": add that, or remove [dmp]",
        ));
    }
    if config.compliance.max_patients_per_hour == 0 {
        out.push(ConfigProblem::new(
            "compliance.max_patients_per_hour",
            "0 would raise an alert at every access: at least 1",
        ));
    }
    if let Some(dmp) = &config.dmp {
        out.extend(dmp.problems());
        check_readable_file(&mut out, "dmp.server_ca", &dmp.server_ca);
        check_crl_files(&mut out, "dmp.server_crls", &dmp.server_crls);
        if let Some(cert) = &dmp.structure_cert {
            check_readable_file(&mut out, "dmp.structure_cert", cert);
        }
        if let Some(key) = &dmp.structure_key {
            check_private_key(&mut out, "dmp.structure_key", key);
        }
    }
    check_access(config, &mut out);
    // Loaded after validation (`CardTrust::load`), where a relative path would be read
    // from the working directory too.
    if let Some(cards) = &config.cards {
        let trust = &cards.trust;
        for (name, paths) in [
            ("anchors", &trust.anchors),
            ("intermediates", &trust.intermediates),
            ("crls", &trust.crls),
        ] {
            for (i, path) in paths.iter().enumerate() {
                check_absolute(&mut out, &format!("cards.trust.{name}[{i}]"), path);
            }
        }
    }
    if let Some(pattern) = &config.compliance.call_id_pattern
        && let Err(e) = regex::Regex::new(pattern)
    {
        out.push(ConfigProblem::new(
            "compliance.call_id_pattern",
            format!("not a regular expression: {e}"),
        ));
    }
    for (i, cn) in config.compliance.officer_cns.iter().enumerate() {
        let clash = config.desks.iter().any(|d| &d.workstation_cn == cn)
            || config.integration.as_ref().is_some_and(|i| &i.cn == cn);
        if cn.trim().is_empty() || clash {
            out.push(ConfigProblem::new(
                format!("compliance.officer_cns[{i}]"),
                format!("'{cn}' must be a certificate of its own, neither a desk's nor the regulation software's"),
            ));
        }
    }
    for (i, pin) in config.compliance.officer_sha256.iter().enumerate() {
        if let Err(reason) = parse_sha256(pin) {
            out.push(ConfigProblem::new(
                format!("compliance.officer_sha256[{i}]"),
                reason,
            ));
        }
    }
    if let Some(integration) = &config.integration {
        check_integration(config, integration, &mut out);
    }
    if let Some(roster) = &config.roster {
        check_range(
            &mut out,
            "roster.grace_minutes",
            roster.grace_minutes,
            0,
            240,
        );
        // Before [integration], the certificate was named inside [roster]: say where it
        // went rather than "unknown field", so an upgrade's configtest tells what to edit.
        for (old, new) in [
            (roster.integration_cn.is_some(), "roster.integration_cn"),
            (
                roster.integration_sha256.is_some(),
                "roster.integration_sha256",
            ),
        ]
        .into_iter()
        .filter_map(|(set, key)| {
            set.then_some((key, key.replace("roster.integration_", "integration.")))
        }) {
            out.push(ConfigProblem::new(
                old,
                format!(
                    "moved: write it as {new} (an [integration] section, shared with case intake)"
                ),
            ));
        }
        if config.integration.is_none() {
            out.push(ConfigProblem::new(
                "roster",
                "a roster needs the certificate that replaces it: add an [integration] section",
            ));
        }
        if config.cards.is_none() {
            out.push(ConfigProblem::new(
                "roster",
                "a roster needs card login: add a [cards] section",
            ));
        }
    }
    if let Some(cards) = &config.cards {
        check_range(
            &mut out,
            "cards.pin_attempts_per_minute",
            u64::from(cards.pin_attempts_per_minute),
            1,
            1_000,
        );
        // Under 2 s a sound card's signature can miss it; over two minutes a physician
        // mid-call has long given up on the screen.
        check_range(
            &mut out,
            "cards.login_timeout_secs",
            cards.login_timeout_secs,
            2,
            120,
        );
        check_range(
            &mut out,
            "cards.session_idle_minutes",
            cards.session_idle_minutes,
            1,
            1_440,
        );
        check_range(
            &mut out,
            "cards.session_max_hours",
            cards.session_max_hours,
            1,
            crate::session::CardsConfig::LONGEST_SESSION_HOURS,
        );
        // A CRL may be reloaded from every minute to once a week (past a week it would
        // outlive its own freshness), and be considered fresh for at most 30 days: each
        // bound also keeps the reload's arithmetic far from overflow.
        check_range(
            &mut out,
            "cards.trust.crl_refresh_minutes",
            cards.trust.crl_refresh_minutes,
            1,
            10_080,
        );
        check_range(
            &mut out,
            "cards.trust.crl_max_age_hours",
            cards.trust.crl_max_age_hours,
            1,
            720,
        );
        check_pkcs11(config, cards, &mut out);
        let pinpad = config
            .desks
            .iter()
            .any(|d| d.pin_entry == crate::session::settings::PinEntry::Pinpad);
        // The PKCS#11 backend finds keys by label and lets the module pad the PIN.
        if cards.backend == crate::card::backend::BackendKind::Apdu {
            for (key, why) in cards.profile.problems(pinpad) {
                out.push(ConfigProblem::new(format!("cards.profile.{key}"), why));
            }
        }
    }
    check_log(config, &mut out);
    check_desks(&config.desks, &mut out);
    out
}

/// The PKCS#11 backend: a module that exists and loads (loaded once here, then let
/// go: the service loads it again), desks' token labels only with it.
fn check_pkcs11(
    config: &Config,
    cards: &crate::session::settings::CardsConfig,
    out: &mut Vec<ConfigProblem>,
) {
    use crate::card::backend::BackendKind;
    match (cards.backend, &cards.pkcs11_module) {
        (BackendKind::Pkcs11, None) => out.push(ConfigProblem::new(
            "cards.pkcs11_module",
            "backend \"pkcs11\" needs the module's path, e.g. /opt/santesocial/CPS/lib/libcps3_pkcs11_lux.so",
        )),
        (BackendKind::Pkcs11, Some(module)) => {
            if check_readable_file(out, "cards.pkcs11_module", module)
                && check_not_writable_by_others(out, "cards.pkcs11_module", module)
                && let Err(e) =
                    crate::card::pkcs11::Pkcs11Module::load(module).and_then(|m| m.close())
            {
                out.push(ConfigProblem::new("cards.pkcs11_module", e.to_string()));
            }
        }
        (BackendKind::Apdu, Some(_)) => out.push(ConfigProblem::new(
            "cards.pkcs11_module",
            "only with backend = \"pkcs11\"",
        )),
        (BackendKind::Apdu, None) => {}
    }
    for (at, desk) in config.desks.iter().enumerate() {
        if desk.pkcs11_token.is_some() && cards.backend != BackendKind::Pkcs11 {
            out.push(ConfigProblem::new(
                format!("desks[{at}].pkcs11_token"),
                "a token label only applies with [cards] backend = \"pkcs11\"",
            ));
        }
    }
}

fn check_centre(config: &Config, out: &mut Vec<ConfigProblem>) {
    let id = &config.centre.structure_id;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        out.push(ConfigProblem::new(
            "centre.structure_id",
            format!("'{id}' is not a structure identifier: expected 1 to 64 ASCII letters or digits, e.g. 1 + FINESS"),
        ));
    }
    if config.centre.name.trim().is_empty() {
        out.push(ConfigProblem::new("centre.name", "must not be empty"));
    }
}

/// Parses `IP:PORT`; host names are refused because resolving them at start would make
/// the listener depend on DNS.
pub(super) fn parse_listen(value: &str) -> Result<SocketAddr, InvalidListen> {
    value
        .parse::<SocketAddr>()
        .map_err(|_| InvalidListen(value.to_owned()))
}

/// A listen address that is not `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address '{0}': expected IP:PORT, e.g. 0.0.0.0:8443 or [::]:8443")]
pub(super) struct InvalidListen(String);

fn check_server(config: &Config, out: &mut Vec<ConfigProblem>) {
    let server = &config.server;
    if let Err(reason) = parse_listen(&server.listen) {
        out.push(ConfigProblem::new("server.listen", reason));
    }
    match parse_listen(&server.management_listen) {
        Err(reason) => out.push(ConfigProblem::new("server.management_listen", reason)),
        // Plain HTTP, no certificate: only the appliance itself may reach it.
        Ok(addr) if !addr.ip().is_loopback() => out.push(ConfigProblem::new(
            "server.management_listen",
            format!(
                "{addr} is not a loopback address: the management listener has no TLS and must stay on the appliance (127.0.0.1 or ::1)"
            ),
        )),
        Ok(addr) => {
            // A wildcard listener (0.0.0.0, ::) holds its port on every address of its
            // family, loopback included (and `::` IPv4's too, dual-stack being Linux's
            // default), whichever of the two it is: the second bind would fail at start.
            let covers = |wild: std::net::IpAddr, other: std::net::IpAddr| {
                wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
            };
            let overlaps = |l: std::net::SocketAddr| {
                l.port() == addr.port()
                    && addr.port() != 0
                    && (l.ip() == addr.ip() || covers(l.ip(), addr.ip()) || covers(addr.ip(), l.ip()))
            };
            if parse_listen(&server.listen).is_ok_and(overlaps) {
                out.push(ConfigProblem::new(
                    "server.management_listen",
                    "uses the port server.listen already holds on this address",
                ));
            }
        }
    }
    // The unit's TimeoutStopSec (45 s) must cover the grace and then the stop's own
    // records (each open grant's end, service_stopped, the final checkpoint): past it,
    // systemd kills the process before they are written.
    check_range(
        out,
        "server.shutdown_grace_secs",
        server.shutdown_grace_secs,
        1,
        20,
    );
    check_range(
        out,
        "server.handshake_timeout_secs",
        server.handshake_timeout_secs,
        1,
        120,
    );
    check_range(
        out,
        "server.idle_timeout_secs",
        server.idle_timeout_secs,
        2,
        3600,
    );
    check_range(
        out,
        "server.max_connections",
        server.max_connections as u64,
        1,
        100_000,
    );
    // Above max_connections it simply never binds (the smaller bound applies).
    check_range(
        out,
        "server.max_connections_per_address",
        server.max_connections_per_address as u64,
        1,
        100_000,
    );
    check_range(
        out,
        "server.max_streams_per_connection",
        u64::from(server.max_streams_per_connection),
        1,
        1000,
    );
}

fn check_range(out: &mut Vec<ConfigProblem>, key: &str, value: u64, min: u64, max: u64) {
    if !(min..=max).contains(&value) {
        out.push(ConfigProblem::new(
            key,
            format!("{value} is out of range: expected {min} to {max}"),
        ));
    }
}

fn check_access(config: &Config, out: &mut Vec<ConfigProblem>) {
    let bg = &config.break_glass;
    check_range(out, "break_glass.grant_minutes", bg.grant_minutes, 5, 720);
    check_range(out, "cases.ttl_minutes", config.cases.ttl_minutes, 5, 1440);
    check_range(
        out,
        "break_glass.open_grants_per_session",
        bg.open_grants_per_session as u64,
        1,
        100,
    );
    if bg.reasons.is_empty() {
        out.push(ConfigProblem::new(
            "break_glass.reasons",
            "at least one reason is needed",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, reason) in bg.reasons.iter().enumerate() {
        let code_ok = !reason.code.is_empty()
            && reason.code.len() <= 32
            && reason
                .code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !code_ok {
            out.push(ConfigProblem::new(
                format!("break_glass.reasons[{i}].code"),
                format!("'{}' must be 1 to 32 of a-z 0-9 _", reason.code),
            ));
        }
        if !seen.insert(&reason.code) {
            out.push(ConfigProblem::new(
                format!("break_glass.reasons[{i}].code"),
                format!("'{}' is listed twice", reason.code),
            ));
        }
        if reason.label.trim().is_empty() {
            out.push(ConfigProblem::new(
                format!("break_glass.reasons[{i}].label"),
                "must not be empty",
            ));
        }
    }
    let limits = &config.limits;
    for (key, value) in [
        (
            "limits.per_professional_per_hour",
            limits.per_professional_per_hour,
        ),
        ("limits.per_desk_per_hour", limits.per_desk_per_hour),
        ("limits.global_per_minute", limits.global_per_minute),
        (
            "limits.searches_per_professional_per_hour",
            limits.searches_per_professional_per_hour,
        ),
    ] {
        check_range(out, key, u64::from(value), 1, 1_000_000);
    }
    let cache = &config.cache;
    check_range(out, "cache.fresh_seconds", cache.fresh_seconds, 1, 3600);
    check_range(
        out,
        "cache.max_stale_seconds",
        cache.max_stale_seconds,
        cache.fresh_seconds.max(1),
        86_400,
    );
    check_range(
        out,
        "cache.purge_interval_secs",
        cache.purge_interval_secs,
        5,
        3600,
    );
    // A missing master key file is not a problem (the cache is then disabled, with a
    // warning); a key file others can read is, and so is one that is not a key (the
    // cache would be disabled only once the service runs, the listeners bound). One this
    // user cannot read (an operator's command) is left to the service's own start.
    if let Some(key) = &cache.master_key
        && let Err(e @ crate::secret::SecretError::NotAPath) = key.resolve()
    {
        out.push(ConfigProblem::new("cache.master_key", e.to_string()));
    }
    if let Some(key) = &cache.master_key
        && !key.is_credential()
        && let Ok(path) = key.resolve()
    {
        note_file("cache.master_key", &path);
    }
    if let Some(key) = &cache.master_key
        && let Ok(path) = key.resolve()
        && path.exists()
        && let Err(
            e @ (crate::cache::sealed::MasterKeyError::Secret(_)
            | crate::cache::sealed::MasterKeyError::Malformed(_)),
        ) = crate::cache::sealed::MasterKey::load(&path)
    {
        out.push(ConfigProblem::new("cache.master_key", e.to_string()));
    }
}

fn check_upstream(upstream: &crate::upstream::UpstreamConfig, out: &mut Vec<ConfigProblem>) {
    match reqwest::Url::parse(&upstream.base_url) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() && url.query().is_none() => {}
        Ok(_) => out.push(ConfigProblem::new(
            "upstream.base_url",
            format!(
                "'{}' must be an https:// URL without query",
                upstream.base_url
            ),
        )),
        Err(e) => out.push(ConfigProblem::new(
            "upstream.base_url",
            format!("'{}' is not a URL: {e}", upstream.base_url),
        )),
    }
    check_readable_file(out, "upstream.server_ca", &upstream.server_ca);
    check_crl_files(out, "upstream.server_crls", &upstream.server_crls);
    check_readable_file(out, "upstream.client_cert", &upstream.client_cert);
    check_private_key(out, "upstream.client_key", &upstream.client_key);
    check_private_key(out, "upstream.assertion_key", &upstream.assertion_key);
    check_range(
        out,
        "upstream.connect_timeout_ms",
        upstream.connect_timeout_ms,
        50,
        10_000,
    );
    check_range(
        out,
        "upstream.total_timeout_ms",
        upstream.total_timeout_ms,
        200,
        30_000,
    );
    check_range(
        out,
        "upstream.max_retries",
        u64::from(upstream.max_retries),
        0,
        5,
    );
    check_range(
        out,
        "upstream.max_body_bytes",
        upstream.max_body_bytes as u64,
        1024,
        crate::summary::MAX_BUNDLE_BYTES as u64,
    );
    if upstream.connect_timeout_ms > upstream.total_timeout_ms {
        out.push(ConfigProblem::new(
            "upstream.connect_timeout_ms",
            "must not exceed upstream.total_timeout_ms",
        ));
    }
    let sector = &upstream.activity_sector;
    if !(sector.len() == 4
        && sector.starts_with("SA")
        && sector[2..].bytes().all(|b| b.is_ascii_digit()))
    {
        out.push(ConfigProblem::new(
            "upstream.activity_sector",
            format!("'{sector}' is not a TRE_R02 code such as SA01"),
        ));
    }
}

fn check_tls(config: &Config, out: &mut Vec<ConfigProblem>) {
    check_readable_file(out, "tls.server_cert", &config.tls.server_cert);
    check_readable_file(out, "tls.workstation_ca", &config.tls.workstation_ca);
    for (i, crl) in config.tls.workstation_crls.iter().enumerate() {
        check_readable_file(out, &format!("tls.workstation_crls[{i}]"), crl);
    }
    check_range(
        out,
        "tls.workstation_crl_refresh_secs",
        config.tls.workstation_crl_refresh_secs,
        1,
        86_400,
    );
    check_private_key(out, "tls.server_key", &config.tls.server_key);
}

fn check_private_key(out: &mut Vec<ConfigProblem>, key: &str, secret: &SecretPath) {
    match secret.resolve() {
        Err(reason) => out.push(ConfigProblem::new(key, reason)),
        Ok(path) => {
            let readable = if secret.is_credential() {
                unnoted(|| check_readable_file(out, key, &path))
            } else {
                check_readable_file(out, key, &path)
            };
            if readable && let Err(reason) = check_key_file_mode(&path) {
                out.push(ConfigProblem::new(key, reason));
            }
        }
    }
}

fn check_audit(config: &Config, out: &mut Vec<ConfigProblem>) {
    let audit = &config.audit;
    check_range(
        out,
        "audit.ship_alert_seconds",
        audit.ship_alert_seconds,
        10,
        86_400,
    );
    let mut names = std::collections::HashSet::new();
    for (i, receiver) in audit.receivers.iter().enumerate() {
        let key = |field: &str| format!("audit.receivers[{i}].{field}");
        let name_ok = !receiver.name.is_empty()
            && receiver.name.len() <= 32
            && receiver
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            out.push(ConfigProblem::new(
                key("name"),
                format!("'{}' must be 1 to 32 of a-z 0-9 - _", receiver.name),
            ));
        } else if !names.insert(receiver.name.clone()) {
            out.push(ConfigProblem::new(
                key("name"),
                format!("'{}' is used twice", receiver.name),
            ));
        }
        let port_ok = receiver
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        if !port_ok {
            out.push(ConfigProblem::new(
                key("address"),
                format!("'{}' is not host:port", receiver.address),
            ));
        }
        if !crate::audit::ship::MAX_MESSAGE_BYTES.contains(&receiver.max_message_bytes) {
            out.push(ConfigProblem::new(
                key("max_message_bytes"),
                format!(
                    "{} is out of range: expected {} to {} (the repository's maxMessageSize)",
                    receiver.max_message_bytes,
                    crate::audit::ship::MAX_MESSAGE_BYTES.start(),
                    crate::audit::ship::MAX_MESSAGE_BYTES.end()
                ),
            ));
        }
        check_readable_file(out, &key("ca"), &receiver.ca);
        check_crl_files(out, &key("crls"), &receiver.crls);
        check_readable_file(out, &key("client_cert"), &receiver.client_cert);
        check_private_key(out, &key("client_key"), &receiver.client_key);
    }
    check_private_key(out, "audit.signing_key", &audit.signing_key);
    for (i, path) in audit.earlier_public_keys.iter().enumerate() {
        // Read by the `audit` commands and `configtest`, as root (`cli::audit_cli`), never
        // by the service: a file the service cannot read must not keep it from starting.
        unnoted(|| check_absolute(out, &format!("audit.earlier_public_keys[{i}]"), path));
    }
    if let Some(node) = &audit.node_id
        && (node.is_empty()
            || node.len() > 64
            || !node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        out.push(ConfigProblem::new(
            "audit.node_id",
            format!(
                "'{node}' is not a node id: expected 1 to 64 characters among A-Z a-z 0-9 - _ ."
            ),
        ));
    }
    check_range(
        out,
        "audit.batch_max_records",
        audit.batch_max_records as u64,
        1,
        10_000,
    );
    check_range(
        out,
        "audit.batch_max_wait_ms",
        audit.batch_max_wait_ms,
        0,
        1_000,
    );
    check_range(
        out,
        "audit.checkpoint_every_records",
        audit.checkpoint_every_records,
        1,
        1_000_000,
    );
    check_range(
        out,
        "audit.checkpoint_every_secs",
        audit.checkpoint_every_secs,
        1,
        86_400,
    );
    check_range(out, "audit.retention_days", audit.retention_days, 1, 3_650);
}

/// Each of `paths` is a readable CRL (PEM or DER); the first that is not is reported as
/// `key[i]`.
fn check_crl_files(out: &mut Vec<ConfigProblem>, key: &str, paths: &[std::path::PathBuf]) {
    let relative = paths
        .iter()
        .enumerate()
        .filter(|(i, path)| !check_absolute(out, &format!("{key}[{i}]"), path))
        .count();
    if relative > 0 {
        return;
    }
    if let Err(problem) = crate::tls::load_crls(paths, key) {
        out.push(problem);
    }
}

/// Pushes a problem and returns false unless `path` is absolute. A relative path would
/// be read from wherever `configtest` was started, and from `/` by the unit: the check
/// would pass on a file the service then cannot find.
fn check_absolute(out: &mut Vec<ConfigProblem>, key: &str, path: &Path) -> bool {
    if path.is_absolute() {
        note_file(key, path);
        return true;
    }
    out.push(ConfigProblem::new(
        key,
        format!(
            "'{}' must be an absolute path (the service runs from /)",
            path.display()
        ),
    ));
    false
}

/// Pushes a problem and returns false unless `path` is an absolute path to a readable
/// regular file.
fn check_readable_file(out: &mut Vec<ConfigProblem>, key: &str, path: &Path) -> bool {
    if !check_absolute(out, key, path) {
        return false;
    }
    let reason = match std::fs::metadata(path) {
        Err(e) => format!("file {} cannot be read: {e}", path.display()),
        Ok(meta) if !meta.is_file() => format!("{} is not a regular file", path.display()),
        Ok(_) => match std::fs::File::open(path) {
            Ok(_) => return true,
            Err(e) => format!("file {} cannot be read: {e}", path.display()),
        },
    };
    out.push(ConfigProblem::new(key, reason));
    false
}

/// Code the gateway loads into the process that holds every key (a PKCS#11 module): a file
/// others may write, or in a directory others may write, would let them run theirs there.
/// Checked before it is loaded, even by `configtest`.
/// The owner counts too: a module, or its directory, owned by another user is theirs to
/// rewrite whatever its mode; only root or the user the check runs as may own them.
fn check_not_writable_by_others(out: &mut Vec<ConfigProblem>, key: &str, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let writable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o022 != 0 || (m.uid() != 0 && m.uid() != me))
    };
    let directory = path.parent().filter(|d| !d.as_os_str().is_empty());
    let culprit = if writable(path) {
        Some(path)
    } else {
        // A sticky directory (/tmp) still lets others rename over nothing of ours, but
        // they could plant the file before it exists: refused all the same.
        directory.filter(|d| writable(d))
    };
    match culprit {
        None => true,
        Some(culprit) => {
            out.push(ConfigProblem::new(
                key,
                format!(
                    "{} is owned by another user or writable by its group or by others: only root may write the code loaded into the gateway (install it as root, mode 0644 in a 0755 directory)",
                    culprit.display()
                ),
            ));
            false
        }
    }
}

fn check_storage(config: &Config, out: &mut Vec<ConfigProblem>) {
    let dir = &config.storage.state_dir;
    if !dir.is_absolute() {
        out.push(ConfigProblem::new(
            "storage.state_dir",
            format!("'{}' must be an absolute path", dir.display()),
        ));
    } else if dir.exists() && !dir.is_dir() {
        out.push(ConfigProblem::new(
            "storage.state_dir",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
}

fn check_log(config: &Config, out: &mut Vec<ConfigProblem>) {
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        out.push(ConfigProblem::new(
            "log.level",
            format!("'{}' is not a log filter: {e}", config.log.level),
        ));
    }
}

fn check_desks(desks: &[DeskConfig], out: &mut Vec<ConfigProblem>) {
    if desks.is_empty() {
        out.push(ConfigProblem::new(
            "desks",
            "no desk configured: add at least one [[desks]] table",
        ));
    }
    let mut ids = HashMap::new();
    let mut readers = HashMap::new();
    let mut cns = HashMap::new();
    let mut pins = HashMap::new();
    let mut tokens = HashMap::new();
    for (i, desk) in desks.iter().enumerate() {
        let key = |field: &str| format!("desks[{i}].{field}");
        if !is_desk_id(&desk.id) {
            out.push(ConfigProblem::new(
                key("id"),
                format!(
                    "'{}' is not a desk id: expected 1 to 32 characters among a-z 0-9 _ -",
                    desk.id
                ),
            ));
        }
        for (field, value) in [
            ("name", &desk.name),
            ("reader", &desk.reader),
            ("workstation_cn", &desk.workstation_cn),
        ] {
            if value.trim().is_empty() {
                out.push(ConfigProblem::new(key(field), "must not be empty"));
            }
        }
        check_unique(out, &mut ids, &desk.id, i, "id", "desk id");
        check_unique(out, &mut readers, &desk.reader, i, "reader", "reader");
        check_unique(
            out,
            &mut cns,
            &desk.workstation_cn,
            i,
            "workstation_cn",
            "workstation certificate",
        );
        // Two desks on one token would share its login: a session at one desk would be
        // the other desk's card.
        if let Some(token) = &desk.pkcs11_token {
            check_unique(out, &mut tokens, token, i, "pkcs11_token", "token");
        }
        if let Some(pin) = &desk.workstation_sha256 {
            match parse_sha256(pin) {
                Ok(bytes) => check_unique(
                    out,
                    &mut pins,
                    &hex(&bytes),
                    i,
                    "workstation_sha256",
                    "workstation certificate",
                ),
                Err(reason) => out.push(ConfigProblem::new(key("workstation_sha256"), reason)),
            }
        }
    }
}

fn check_unique(
    out: &mut Vec<ConfigProblem>,
    seen: &mut HashMap<String, usize>,
    value: &str,
    index: usize,
    field: &str,
    what: &str,
) {
    if let Some(first) = seen.insert(value.to_owned(), index) {
        out.push(ConfigProblem::new(
            format!("desks[{index}].{field}"),
            format!("{what} '{value}' is already mapped to desks[{first}]; each may belong to one desk only"),
        ));
    }
}

fn is_desk_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
