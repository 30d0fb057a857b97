//! Break-glass end to end under load: `cargo bench --bench break_glass` prints a report.
//!
//! Setup: a private pcscd with the virtual CPS card, the dev upstream on loopback (mutual
//! TLS, assertions verified), and two gateways (bench-profile binary) with a session open:
//! one with the encrypted cache (cache hits), one without (every request goes upstream:
//! cache misses). Load: this project's client stack (reqwest, rustls with ring, client
//! certificates, keep-alive, HTTP/1.1 like the nginx anchor), N workers looping for a fixed
//! time. Every gateway request is a `POST /api/v1/break-glass` with its two fsync'd audit
//! records. Compared with, in the same run:
//! - the dev upstream called directly (`POST Patient/_search` then `GET $summary`, the two
//!   calls a miss makes), for the gateway's overhead;
//! - nginx serving the same summary JSON over TLS 1.3 with client certificates
//!   (docs/test-harness.md; `apt-get install nginx-light`), the anchor.
//!
//! And a third gateway on the national record's path: `dev-dmp` on loopback, each miss
//! three SOAP round trips (test of existence, document search, retrieval), each with a
//! VIHF the virtual card signs through the session's card connection; the card's
//! signature alone is timed after the load.
//!
//! `--quick` runs 1 s per measure instead of 5.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use samu_gateway::upstream::AccessMode;
use samu_gateway::upstream::assertion::{AssertionSigner, Claims, LIFETIME_SECS, new_jti};
use serde_json::{Value, json};
use support::pcsc::{Pcscd, VirtualCard};
use support::upstream::{DevUpstream, TEST_OID, nir, patient};
use support::{DESK_A, Gateway, Pki, write_config};

struct Measure {
    name: String,
    concurrency: usize,
    requests: usize,
    seconds: f64,
    latencies: Vec<Duration>,
    /// Cores the bench's own client used meanwhile (CPU seconds / wall seconds).
    client_cores: f64,
    /// Cores the measured server used (the process and its direct children), if known.
    server_cores: Option<f64>,
}

impl Measure {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn pct(&self, p: f64) -> Duration {
        self.latencies[((self.latencies.len() as f64 - 1.0) * p).round() as usize]
    }
    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {} |",
            self.name,
            self.concurrency,
            self.rps(),
            self.pct(0.5).as_secs_f64() * 1000.0,
            self.pct(0.99).as_secs_f64() * 1000.0,
            self.client_cores,
            self.server_cores
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
        )
    }
}

/// An HTTP/1.1 client trusting `ca`, presenting `cert`/`key` (PEM).
fn client(ca: &[u8], identity: &[u8]) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca).expect("ca"))
        .expect("ca");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(identity).expect("cert")],
            PrivateKeyDer::from_pem_slice(identity).expect("key"),
        )
        .expect("client auth");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .http1_only()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `workers` loops of `request` for `duration`; every answer must be `ok`.
/// User + system CPU seconds of a `/proc/<pid>/stat` line (clock ticks of 1/100 s).
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rfind(')').and_then(|at| stat.get(at + 2..)) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// CPU seconds of `pid` and its direct children (nginx's workers), from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let mut total =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |s| stat_cpu_seconds(&s));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rfind(')')
            .and_then(|at| stat.get(at + 2..))
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            total += stat_cpu_seconds(&stat);
        }
    }
    total
}

fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |s| stat_cpu_seconds(&s))
}

async fn load<F, Fut>(
    name: &str,
    workers: usize,
    duration: Duration,
    server: Option<u32>,
    request: F,
) -> Measure
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    // Warm the connections.
    for _ in 0..workers {
        assert!(request().await, "{name}: warm-up failed");
    }
    let (client_before, server_before) = (own_cpu_seconds(), server.map(cpu_seconds));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                assert!(request().await, "request failed under load");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cores = (own_cpu_seconds() - client_before) / seconds;
    let server_cores = server
        .zip(server_before)
        .map(|(pid, before)| (cpu_seconds(pid) - before) / seconds);
    latencies.sort();
    Measure {
        name: name.into(),
        concurrency: workers,
        requests: latencies.len(),
        seconds,
        latencies,
        client_cores,
        server_cores,
    }
}

/// Rate limits out of the way: the load is one professional.
const NO_LIMITS: &str = "\n[limits]\nper_professional_per_hour = 1000000\nper_desk_per_hour = 1000000\nglobal_per_minute = 1000000\n";

/// The quiet log level of the measured gateways (no access log, like nginx).
const QUIET: (&str, &str) = (
    "SAMU_GATEWAY__LOG__LEVEL",
    "warn,samu_gateway::service=info",
);

/// The virtual card's signature key timed alone: `n` signatures of a VIHF-sized message
/// through pcscd, in one session (PIN verified once). Runs in a child process of this
/// bench, which talks to the test pcscd through its environment.
fn card_signatures(pcscd: &Pcscd, n: usize) -> Vec<Duration> {
    let (key, value) = pcscd.env();
    let out = Command::new(std::env::current_exe().expect("bench binary"))
        .arg("--card-signatures")
        .arg(n.to_string())
        .env(key, value)
        .output()
        .expect("signature child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut times: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|t| t.parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect();
    times.sort();
    times
}

/// The child's side of [`card_signatures`]: prints each signature's microseconds.
fn sign_in_child(n: usize) {
    use samu_gateway::card::profile::{
        CardProfile, Pin, read_certificate, read_signature_certificate, sign_with_signature_key,
        verify_pin,
    };
    use samu_gateway::card::reader::PcscCard;
    let profile = CardProfile::default();
    let mut card = PcscCard::connect("Desk0 00 00").expect("card");
    let times = card
        .in_transaction(|card| {
            read_certificate(card, &profile)?;
            let signing = read_signature_certificate(card, &profile)?;
            verify_pin(card, &profile, &Pin::new("1234")?)?;
            let message = vec![b'x'; 1_200];
            let mut times = Vec::new();
            for _ in 0..n {
                let started = Instant::now();
                sign_with_signature_key(card, &profile, &message, &signing)?;
                times.push(started.elapsed());
            }
            Ok(times)
        })
        .expect("signatures");
    for t in times {
        println!("{}", t.as_micros());
    }
}

/// A gateway's resident memory now and at its peak (`VmRSS`, `VmHWM`), in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The cumulative buckets `(upper bound in s, count)` of histogram `family` in the
/// gateway's metrics, read from its management listener.
fn histogram(gateway: &Gateway, family: &str) -> Vec<(f64, f64)> {
    use std::io::{Read, Write};
    // Plain HTTP/1.0 on loopback: the bench's reqwest clients are built for mutual TLS.
    let mut text = String::new();
    if let Ok(mut stream) = std::net::TcpStream::connect(gateway.management) {
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let _ = stream.read_to_string(&mut text);
    }
    let prefix = format!("samu_gateway_{family}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix.as_str())?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// What a histogram gathered between two reads: the count, and the bucket bounds that hold
/// its median and its 99th percentile (`≤`: the buckets double, 50 µs to 1.6 s).
fn histogram_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> (f64, f64, f64) {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let earlier = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |&(_, m)| m);
            (le, n - earlier)
        })
        .collect();
    let total = counts.last().map_or(0.0, |&(_, n)| n);
    let bound = |q: f64| {
        counts
            .iter()
            .find(|&&(_, n)| n >= q * total)
            .map_or(f64::NAN, |&(le, _)| le)
    };
    (total, bound(0.5), bound(0.99))
}

/// The audit disk's timings while `measure` ran, as a report line.
struct DiskDuring {
    concurrency: usize,
    requests: usize,
    syncs: (f64, f64, f64),
    commits: (f64, f64, f64),
}

impl DiskDuring {
    fn line(&self) -> String {
        let ms = |s: f64| {
            if s.is_finite() {
                format!("≤ {:.2} ms", s * 1000.0)
            } else {
                "over 1.6 s".to_owned()
            }
        };
        format!(
            "concurrency {}: {} journal syncs ({:.1} requests per sync), p50 {}, p99 {}; {} index commits, p50 {}, p99 {}",
            self.concurrency,
            self.syncs.0,
            self.requests as f64 / self.syncs.0.max(1.0),
            ms(self.syncs.1),
            ms(self.syncs.2),
            self.commits.0,
            ms(self.commits.1),
            ms(self.commits.2),
        )
    }
}

/// Starts the cache-hit gateway with `$NOTIFY_SOCKET` set and returns it with the time
/// from its spawn to its `READY=1` (what systemd waits for).
fn gateway_timed(
    pcscd: &Pcscd,
    card: &VirtualCard,
    upstream: &DevUpstream,
) -> (Gateway, Option<Duration>) {
    let socket_dir = tempfile::tempdir().expect("tempdir");
    let path = socket_dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
    let started = Instant::now();
    let ready = std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buffer = [0u8; 512];
        loop {
            let n = socket.recv(&mut buffer).ok()?;
            if String::from_utf8_lossy(&buffer[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return Some(started.elapsed());
            }
        }
    });
    let notify = path.display().to_string();
    let gateway = gateway_with(pcscd, card, upstream, true, &[("NOTIFY_SOCKET", &notify)]);
    let ready = ready.join().ok().flatten();
    drop(socket_dir);
    (gateway, ready)
}

fn gateway(pcscd: &Pcscd, card: &VirtualCard, upstream: &DevUpstream, cache: bool) -> Gateway {
    gateway_with(pcscd, card, upstream, cache, &[])
}

fn gateway_with(
    pcscd: &Pcscd,
    card: &VirtualCard,
    upstream: &DevUpstream,
    cache: bool,
    env: &[(&str, &str)],
) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let cache_section = if cache {
        let key = dir.path().join("cache.key");
        samu_gateway::cache::sealed::MasterKey::generate(&key).expect("key");
        format!("[cache]\nmaster_key = \"{}\"\n", key.display())
    } else {
        String::new()
    };
    let text = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}\n{cache_section}\n{NO_LIMITS}",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
        upstream.toml_section(),
    );
    let config = write_config(dir.path(), &pki, "", &text);
    let (key, value) = pcscd.env();
    // No access log, like the nginx anchor (access_log off).
    let mut all = vec![(key, value.as_str()), QUIET];
    all.extend_from_slice(env);
    Gateway::launch(dir, pki, config, &all)
}

/// `POST /api/v1/break-glass` for patient 1, checking the source.
fn break_glass(
    gateway: &Gateway,
    token: String,
    source: &'static str,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync + use<>
{
    let identity = identity(
        &gateway.pki.clients[DESK_A].cert,
        &gateway.pki.clients[DESK_A].key,
    );
    let ca = std::fs::read(&gateway.pki.server_ca).expect("ca");
    let client = client(&ca, &identity);
    let url = gateway.url("/api/v1/break-glass");
    let body = json!({
        "ins": nir(1), "ins_oid": TEST_OID, "call_id": "BENCH-1",
        "reason_code": "inconscient", "access_mode": "bris_de_glace",
    });
    move || {
        let request = client.post(&url).bearer_auth(&token).json(&body);
        Box::pin(async move {
            match request.send().await {
                Ok(r) if r.status() == 201 => {
                    r.json::<Value>().await.is_ok_and(|b| b["source"] == source)
                }
                _ => false,
            }
        })
    }
}

/// A 200 whose body arrived whole.
async fn succeeded(response: reqwest::Result<reqwest::Response>) -> bool {
    match response {
        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
        _ => false,
    }
}

fn identity(cert: &Path, key: &Path) -> Vec<u8> {
    let mut pem = std::fs::read(cert).expect("cert");
    pem.extend(std::fs::read(key).expect("key"));
    pem
}

/// The two calls a cache miss makes, straight to the dev upstream.
fn upstream_direct(
    upstream: &DevUpstream,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync + use<>
{
    let ca = std::fs::read(upstream.dir.join("record-ca.pem")).expect("ca");
    let identity = identity(
        &upstream.dir.join("structure.pem"),
        &upstream.dir.join("structure.key"),
    );
    let client = client(&ca, &identity);
    let signer = Arc::new(AssertionSigner::load(&upstream.dir.join("assertion.key")).expect("key"));
    let base = upstream.url.clone();
    move || {
        let (client, signer, base) = (client.clone(), signer.clone(), base.clone());
        Box::pin(async move {
            // One assertion per call, as the gateway signs them: the record service refuses
            // one seen before (its jti), as a replay.
            let search = client
                .post(format!("{base}/Patient/_search"))
                .bearer_auth(assertion(&signer, &base))
                .form(&[("identifier", format!("urn:oid:{TEST_OID}|{}", nir(1)))])
                .send()
                .await;
            let Ok(search) = search else { return false };
            if search.status() != 200 || search.bytes().await.is_err() {
                return false;
            }
            let summary = client
                .get(format!("{base}/Patient/p1/$summary"))
                .bearer_auth(assertion(&signer, &base))
                .send()
                .await;
            succeeded(summary).await
        })
    }
}

fn assertion(signer: &AssertionSigner, base: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    signer
        .sign(&Claims {
            iss: "samu-gateway/1750000000".into(),
            aud: base.into(),
            iat: now,
            exp: now + LIFETIME_SECS,
            jti: new_jti().expect("random"),
            purpose_of_use: AccessMode::BrisDeGlace,
            subject_id: "Jeanne URGENTISTE".into(),
            subject_nameid: "810002813839".into(),
            role: Some("10".into()),
            specialty: None,
            structure_id: "1750000000".into(),
            activity_sector: "SA01".into(),
            resource_id: Some(format!("{}^^^&{TEST_OID}&ISO^NH", nir(1))),
            lps_name: "bench".into(),
            lps_version: "0".into(),
            auth_mode: "DIRECTE".into(),
        })
        .expect("sign")
}

/// An independent load generator: `oha` (`cargo install oha`; not packaged for Debian 12),
/// when it is on the `PATH` or in `~/.cargo/bin`. It presents the desk's client
/// certificate like the bench's client, and reads each answer without parsing it.
fn oha_binary() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/oha"));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("oha"))
        .chain(home)
        .find(|candidate| candidate.is_file())
}

/// What one oha run asks.
struct OhaTarget<'a> {
    name: &'a str,
    url: String,
    /// oha's request options (method, headers, body).
    extra: Vec<String>,
    /// Every answer must have this status.
    expected_status: &'a str,
}

/// One oha run: `-c workers` connections for `duration`. Returns its table row (its own
/// CPU from the shell's `times`, the server's from /proc).
fn oha_row(
    oha: &Path,
    pki: &Pki,
    target: &OhaTarget<'_>,
    workers: usize,
    duration: Duration,
    server: u32,
) -> String {
    let OhaTarget {
        name,
        url,
        extra,
        expected_status,
    } = target;
    let client = &pki.clients[DESK_A];
    let server_before = cpu_seconds(server);
    let started = Instant::now();
    // oha runs as the shell's child, its arguments passed as positional parameters (no
    // quoting), so that `times` can report its CPU once it has exited.
    let out = Command::new("bash")
        .args(["-c", "\"$@\"; times", "oha-run"])
        .arg(oha)
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-c",
            &workers.to_string(),
        ])
        .args(["-z", &format!("{}s", duration.as_secs())])
        .arg("--cacert")
        .arg(&pki.server_ca)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .args(extra)
        .arg(url)
        .output()
        .expect("oha");
    let wall = started.elapsed().as_secs_f64();
    let server_cores = (cpu_seconds(server) - server_before) / wall;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // oha's JSON, then `times`: the shell's own CPU line, then its children's (oha).
    let (json, times) = stdout.rsplit_once('}').map_or(("", ""), |(j, t)| (j, t));
    let report: Value = serde_json::from_str(&format!("{json}}}")).unwrap_or(Value::Null);
    let seconds = |s: &str| -> f64 {
        s.trim_end_matches('s')
            .split_once('m')
            .map_or(0.0, |(m, s)| {
                m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
            })
    };
    let oha_cpu: f64 = times
        .lines()
        .filter(|l| !l.trim().is_empty())
        .nth(1)
        .map_or(0.0, |l| l.split_whitespace().map(seconds).sum());
    let statuses = &report["statusCodeDistribution"];
    let total: u64 = statuses
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let good = statuses[*expected_status].as_u64().unwrap_or(0);
    assert!(
        total > 0 && good == total,
        "{name} (oha): answers {statuses}, errors {}; {}",
        report["errorDistribution"],
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = |p: &str| report["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    format!(
        "| {name} (oha) | {workers} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {server_cores:.2} |",
        report["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        ms("p50"),
        ms("p99"),
        oha_cpu / wall,
    )
}

/// The nginx anchor; stopped when dropped, also when a panic unwinds past it, so a
/// failed run leaves no nginx behind to hold its port and workers.
struct Nginx {
    master: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; SIGKILL would orphan them.
        support::terminate(&mut self.master, Duration::from_secs(10));
    }
}

/// nginx (docs/test-harness.md), serving `summary` with the gateway's certificates.
fn nginx(pki: &Pki, summary: &[u8]) -> Option<Nginx> {
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("nginx not installed (apt-get install nginx-light): anchor skipped");
        return None;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    for sub in [
        "www",
        "tmp/body",
        "tmp/proxy",
        "tmp/fcgi",
        "tmp/uwsgi",
        "tmp/scgi",
    ] {
        std::fs::create_dir_all(root.join(sub)).expect("dir");
    }
    std::fs::write(root.join("www/summary.json"), summary).expect("write");
    std::fs::copy(&pki.server_cert, root.join("server.pem")).expect("copy");
    std::fs::copy(&pki.server_key, root.join("server.key")).expect("copy");
    std::fs::copy(&pki.workstation_ca, root.join("workstation-ca.pem")).expect("copy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let r = root.display();
    let conf = format!(
        "daemon off; master_process on; worker_processes 1;\n\
         pid {r}/nginx.pid; error_log {r}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off; keepalive_timeout 75s; keepalive_requests 10000000;\n\
         client_body_temp_path {r}/tmp/body; proxy_temp_path {r}/tmp/proxy;\n\
         fastcgi_temp_path {r}/tmp/fcgi; uwsgi_temp_path {r}/tmp/uwsgi; scgi_temp_path {r}/tmp/scgi;\n\
         server {{\n listen 127.0.0.1:{port} ssl;\n ssl_certificate {r}/server.pem; ssl_certificate_key {r}/server.key;\n\
         ssl_protocols TLSv1.3;\n ssl_verify_client on; ssl_client_certificate {r}/workstation-ca.pem;\n\
         root {r}/www; location = /summary.json {{ default_type application/json; }} }} }}\n"
    );
    std::fs::write(root.join("nginx.conf"), conf).expect("conf");
    // Workers run as nobody when started as root: the tree must be readable.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status();
    let master = Command::new("nginx")
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .spawn()
        .expect("nginx");
    let anchor = Nginx {
        master,
        port,
        _dir: t,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(anchor)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--card-signatures") {
        let n = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(50);
        sign_in_child(n);
        return;
    }
    let seconds = if std::env::args().any(|a| a == "--quick") {
        1
    } else {
        5
    };
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &[]);
    let bundle = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ips/penicillin-allergy-high-criticality.json");
    let upstream = DevUpstream::start(vec![patient("p1", 1, &bundle)]);
    let (cached, ready) = gateway_timed(&pcscd, &card, &upstream);
    let uncached = gateway(&pcscd, &card, &upstream, false);
    let documents = tempfile::tempdir().expect("tempdir");
    let dmp = support::dmp::DevDmp::start(
        support::dmp::patients(),
        documents.path(),
        &[card.dir.join("card-ca.pem").as_path()],
    );
    let over_dmp = support::dmp::dmp_gateway_with(&pcscd, &card, &dmp, NO_LIMITS, &[QUIET]);
    let mut measures = Vec::new();
    let mut oha_rows = Vec::new();
    let mut disk = Vec::new();
    let mut summary_json = Vec::new();
    let mut idle = (f64::NAN, f64::NAN);
    runtime.block_on(async {
        let hit_token = cached.login_desk_a().await;
        idle = memory_mib(cached.pid());
        let miss_token = uncached.login_desk_a().await;
        // Last: its card session must keep the PIN it verifies.
        let dmp_token = over_dmp.login_desk_a().await;
        // Fill the cache, and keep the released JSON for nginx to serve.
        let first = break_glass(&cached, hit_token.clone(), "upstream")();
        assert!(first.await, "first access failed");
        let probe = cached
            .client(Some(DESK_A))
            .post(cached.url("/api/v1/break-glass"))
            .bearer_auth(&hit_token)
            .json(
                &json!({"ins": nir(1), "ins_oid": TEST_OID, "call_id": "BENCH-1",
                          "reason_code": "inconscient", "access_mode": "bris_de_glace"}),
            )
            .send()
            .await
            .expect("probe");
        summary_json = probe.bytes().await.expect("body").to_vec();
        let anchor = nginx(&cached.pki, &summary_json);
        for workers in [1, 32] {
            if let Some(Nginx { master, port, .. }) = &anchor {
                let nginx_pid = master.id();
                let ca = std::fs::read(&cached.pki.server_ca).expect("ca");
                let id = identity(
                    &cached.pki.clients[DESK_A].cert,
                    &cached.pki.clients[DESK_A].key,
                );
                let client = client(&ca, &id);
                let url = format!("https://localhost:{port}/summary.json");
                measures.push(
                    load(
                        "nginx, same JSON, TLS 1.3 + client cert",
                        workers,
                        duration,
                        Some(nginx_pid),
                        move || {
                            let request = client.get(&url);
                            async move { succeeded(request.send().await).await }
                        },
                    )
                    .await,
                );
            }
            let syncs = histogram(&cached, "audit_journal_sync_seconds");
            let commits = histogram(&cached, "audit_index_commit_seconds");
            let hit = load(
                "gateway break-glass, cache hit",
                workers,
                duration,
                Some(cached.pid()),
                break_glass(&cached, hit_token.clone(), "cache"),
            )
            .await;
            disk.push(DiskDuring {
                concurrency: workers,
                requests: hit.requests,
                syncs: histogram_between(&syncs, &histogram(&cached, "audit_journal_sync_seconds")),
                commits: histogram_between(
                    &commits,
                    &histogram(&cached, "audit_index_commit_seconds"),
                ),
            });
            measures.push(hit);
            measures.push(
                load(
                    "gateway break-glass, cache miss (record service)",
                    workers,
                    duration,
                    Some(uncached.pid()),
                    break_glass(&uncached, miss_token.clone(), "upstream"),
                )
                .await,
            );
            measures.push(
                load(
                    "dev upstream direct (search + $summary)",
                    workers,
                    duration,
                    None,
                    upstream_direct(&upstream),
                )
                .await,
            );
            measures.push(
                load(
                    "gateway break-glass over the DMP (dev-dmp, 3 SOAP calls, card signing)",
                    workers,
                    duration,
                    Some(over_dmp.pid()),
                    break_glass(&over_dmp, dmp_token.clone(), "upstream"),
                )
                .await,
            );
        }
        // The same two measures at 32 connections with an independent generator.
        if let (Some(oha), Some(Nginx { master, port, .. })) = (oha_binary(), &anchor) {
            let nginx_target = OhaTarget {
                name: "nginx, same JSON, TLS 1.3 + client cert",
                url: format!("https://localhost:{port}/summary.json"),
                extra: Vec::new(),
                expected_status: "200",
            };
            oha_rows.push(oha_row(
                &oha,
                &cached.pki,
                &nginx_target,
                32,
                duration,
                master.id(),
            ));
            let auth = format!("Authorization: Bearer {hit_token}");
            let body = json!({"ins": nir(1), "ins_oid": TEST_OID, "call_id": "BENCH-1",
                              "reason_code": "inconscient", "access_mode": "bris_de_glace"})
            .to_string();
            let hit_target = OhaTarget {
                name: "gateway break-glass, cache hit",
                url: cached.url("/api/v1/break-glass"),
                extra: [
                    "-m",
                    "POST",
                    "-T",
                    "application/json",
                    "-H",
                    &auth,
                    "-d",
                    &body,
                ]
                .map(str::to_owned)
                .to_vec(),
                expected_status: "201",
            };
            oha_rows.push(oha_row(
                &oha,
                &cached.pki,
                &hit_target,
                32,
                duration,
                cached.pid(),
            ));
        }
        drop(anchor);
    });
    println!(
        "\nbreak-glass load, {seconds} s per measure, summary JSON {} bytes, HTTP/1.1 keep-alive, client certificates\n",
        summary_json.len()
    );
    println!(
        "client cores: CPU the bench's own client (reqwest, rustls) used per wall second; server cores: the measured gateway (or nginx's master and workers) alone, not the record service behind it\n"
    );
    println!(
        "| measure | concurrency | req/s | p50 | p99 | client cores | server cores |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for m in &measures {
        println!("{}", m.row());
    }
    if oha_rows.is_empty() {
        println!(
            "\n(oha not found, or nginx absent: no independent generator run; `cargo install oha`)"
        );
    } else {
        println!(
            "\nthe same at 32 connections with an independent generator, oha (client cores: oha's CPU):\n"
        );
        println!(
            "| measure | concurrency | req/s | p50 | p99 | client cores | server cores |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for row in &oha_rows {
            println!("{row}");
        }
    }
    println!(
        "\nthe cache-hit gateway's audit disk during its measures (its metrics, read before and after each):\n"
    );
    for during in &disk {
        println!("{}", during.line());
    }
    let (_, peak) = memory_mib(cached.pid());
    println!(
        "\ncache-hit gateway: spawn to READY=1 {}; resident memory {:.1} MiB idle after login, peak {:.1} MiB over the whole load (VmHWM)",
        ready.map_or_else(
            || "not seen".to_owned(),
            |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        ),
        idle.0,
        peak
    );
    let signatures = card_signatures(&pcscd, 50);
    let at = |p: f64| signatures[((signatures.len() - 1) as f64 * p).round() as usize];
    println!(
        "\nthe virtual card's signature key alone (VIHF SignedInfo, through pcscd + vpcd): p50 {:.2} ms, p99 {:.2} ms; a DMP miss makes three",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    );
    for workers in [1, 32] {
        let find = |prefix: &str| {
            measures
                .iter()
                .find(|m| m.concurrency == workers && m.name.starts_with(prefix))
        };
        if let (Some(hit), Some(nginx)) = (find("gateway break-glass, cache hit"), find("nginx")) {
            println!(
                "\nconcurrency {workers}: cache-hit throughput {:.2}× nginx's (issue 20: ≥ 0.5×, aim 0.8×), p99 {:.2}× nginx's (≤ 2×, aim 1.25×); cache-hit p50 {:.2} ms (at 1 connection: ≤ 0.8 ms)",
                hit.rps() / nginx.rps(),
                hit.pct(0.99).as_secs_f64() / nginx.pct(0.99).as_secs_f64(),
                hit.pct(0.5).as_secs_f64() * 1000.0
            );
        }
        if let (Some(miss), Some(direct)) = (
            find("gateway break-glass, cache miss"),
            find("dev upstream"),
        ) {
            println!(
                "concurrency {workers}: gateway overhead over the upstream at p50: {:.2} ms (goal < 2 ms)",
                (miss.pct(0.5).as_secs_f64() - direct.pct(0.5).as_secs_f64()) * 1000.0
            );
        }
    }
}
