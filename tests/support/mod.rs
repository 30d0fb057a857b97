//! The one harness every integration test shares: a test PKI, a real `samu-gateway serve`
//! process on 127.0.0.1 port 0 with its own temp dir, TLS clients holding the test
//! identities, and the process's captured logs.
#![allow(dead_code)] // each test crate uses part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) mod dicom;
pub(crate) mod dmp;
pub(crate) mod hub;
pub(crate) mod pcsc;
pub(crate) mod rsyslog;
pub(crate) mod softhsm;
pub(crate) mod upstream;
pub(crate) mod validators;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use samu_gateway::dev_pki::{Authority, Issued, write_file, write_pair};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_samu-gateway");

/// Says loudly that `what` was skipped: on stderr, and in `SKIPPED` under the target's
/// test directory, which `.ci/test` prints after the run (cargo hides a passing test's
/// stderr).
pub(crate) fn skipped(what: &str) {
    use std::io::Write;
    eprintln!("!!! SKIPPED: {what}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("SKIPPED");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: tests skip in parallel, and O_APPEND keeps whole writes whole.
        let _ = file.write_all(format!("{what}\n").as_bytes());
    }
}
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The test identities: who holds which client certificate.
pub(crate) const DESK_A: &str = "desk-a";
pub(crate) const DESK_B: &str = "desk-b";
/// Issued by the workstation CA but mapped to no desk.
pub(crate) const UNMAPPED: &str = "unmapped";
/// Desk A's CN, issued by the workstation CA, expired.
pub(crate) const EXPIRED: &str = "expired";
/// Desk B's CN, issued by another CA.
pub(crate) const FOREIGN: &str = "foreign";
/// The regulation software's integration certificate (CN `logiciel-regulation`).
pub(crate) const INTEGRATION: &str = "integration";
/// A workstation-CA certificate that nothing in the test configurations maps.
pub(crate) const STRANGER: &str = "stranger";

pub(crate) struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub issued: Issued,
}

/// Server and workstation PKI for one test, written under `dir/pki`.
pub(crate) struct Pki {
    pub audit_key: PathBuf,
    pub server_ca: PathBuf,
    pub server_ca_der: CertificateDer<'static>,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub workstation_ca: PathBuf,
    /// The workstation CA itself, to issue CRLs.
    pub workstations: Authority,
    pub clients: HashMap<&'static str, ClientCert>,
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let server_ca = Authority::new("test server CA").unwrap();
        let server_ca_path = dir.join("server-ca.pem");
        write_file(&server_ca_path, server_ca.cert_pem(), 0o644).unwrap();
        let (server_cert, server_key) = write_pair(
            &dir,
            "server",
            &server_ca.issue_server(&["localhost", "127.0.0.1"]).unwrap(),
        )
        .unwrap();
        let workstations = Authority::new("test workstation CA").unwrap();
        let workstation_ca = dir.join("workstation-ca.pem");
        write_file(&workstation_ca, workstations.cert_pem(), 0o644).unwrap();
        let other = Authority::new("some other CA").unwrap();
        let issued = [
            (DESK_A, workstations.issue_client("poste-a").unwrap()),
            (DESK_B, workstations.issue_client("poste-b").unwrap()),
            (UNMAPPED, workstations.issue_client("poste-x").unwrap()),
            (
                EXPIRED,
                workstations
                    .issue_client_between("poste-a", -30, -1)
                    .unwrap(),
            ),
            (FOREIGN, other.issue_client("poste-b").unwrap()),
            (
                INTEGRATION,
                workstations.issue_client("logiciel-regulation").unwrap(),
            ),
            (
                STRANGER,
                workstations.issue_client("poste-inconnu").unwrap(),
            ),
        ];
        let clients = issued
            .into_iter()
            .map(|(name, issued)| {
                let (cert, key) = write_pair(&dir, name, &issued).unwrap();
                (name, ClientCert { cert, key, issued })
            })
            .collect();
        let server_ca_der = CertificateDer::from_pem_file(&server_ca_path).unwrap();
        let audit_key = dir.join("audit-signing.key");
        samu_gateway::audit::Signer::generate(&audit_key).unwrap();
        Self {
            audit_key,
            server_ca: server_ca_path,
            server_ca_der,
            server_cert,
            server_key,
            workstation_ca,
            workstations,
            clients,
        }
    }

    /// A client trusting the test server CA, presenting `identity`'s certificate if any.
    /// SHA-256 of `identity`'s certificate, as `workstation_sha256` takes it.
    pub(crate) fn fingerprint(&self, identity: &str) -> String {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            self.clients[identity].issued.der.as_ref(),
        );
        samu_gateway::encoding::hex(digest.as_ref())
    }

    pub(crate) fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let identity = identity.map(|name| {
            let issued = &self.clients[name].issued;
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            (issued.der.clone(), key)
        });
        tls_client(self.server_ca_der.clone(), identity)
    }
}

/// An HTTPS client (ring provider, h2 and http/1.1) trusting `ca`, presenting `identity`.
pub(crate) fn tls_client(
    ca: CertificateDer<'static>,
    identity: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET `url`, returning the status and the body as text.
pub(crate) async fn get_text(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// GET `url`, returning the status and the body as JSON.
pub(crate) async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let (status, text) = get_text(client, url).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    (status, json)
}

/// Writes a gateway.toml for the test PKI; `extra` is appended verbatim (more keys/desks).
pub(crate) fn write_config(dir: &Path, pki: &Pki, server: &str, extra: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        r#"[centre]
structure_id = "1750000000"
name = "SAMU de test"

[server]
listen = "127.0.0.1:0"
management_listen = "127.0.0.1:0"
{server}

[tls]
server_cert = "{}"
server_key = "{}"
workstation_ca = "{}"

[storage]
state_dir = "{}"

[audit]
signing_key = "{}"
node_id = "gateway-test"

[log]
format = "json"
level = "info,samu_gateway=debug"

[[desks]]
id = "desk-a"
name = "Régulation A"
reader = "Desk0 00 00"
workstation_cn = "poste-a"

[[desks]]
id = "desk-b"
name = "Régulation B"
reader = "Desk1 00 00"
workstation_cn = "poste-b"
{extra}"#,
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.workstation_ca.display(),
        dir.join("state").display(),
        pki.audit_key.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Lines a child process wrote, collected by a reader thread.
#[derive(Clone, Default)]
pub(crate) struct Lines(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Lines {
    /// Collects `stream`'s lines on a thread of their own until it closes.
    pub(crate) fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let (lines, closed) = (self.0.clone(), self.1.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }

    /// Waits until the stream reached its end (the process closed it), so that `all()` is
    /// complete.
    pub(crate) fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.1.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "output stream still open after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether a line containing `needle` arrives within a few seconds.
    pub(crate) fn has(&self, needle: &str) -> bool {
        self.wait_for(Duration::from_secs(10), |l| l.contains(needle))
            .is_some()
    }

    pub(crate) fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Waits until there are at least `n` lines satisfying `pred`.
    pub(crate) fn wait_for_count(
        &self,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.0.lock().unwrap().iter().filter(|l| pred(l)).count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until a line satisfies `pred`, returning it.
    pub(crate) fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(line) = self.0.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A running `samu-gateway serve`.
pub(crate) struct Gateway {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub config: PathBuf,
    pub addr: SocketAddr,
    /// The management listener (plain HTTP on loopback).
    pub management: SocketAddr,
    pub stderr: Lines,
    pub stdout: Lines,
    child: Child,
}

impl Gateway {
    /// Starts a gateway with the default test configuration.
    pub(crate) fn start() -> Self {
        Self::start_with("", |_| String::new())
    }

    /// Starts a gateway with extra `[server]` keys and extra TOML (made from the PKI) appended.
    pub(crate) fn start_with(server: &str, extra: impl Fn(&Pki) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let config = write_config(dir.path(), &pki, server, &extra(&pki));
        Self::launch(dir, pki, config, &[])
    }

    /// Starts `serve` on an existing configuration, with extra environment variables.
    pub(crate) fn launch(
        dir: tempfile::TempDir,
        pki: Pki,
        config: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        let (child, stdout, stderr) = spawn(&config, &["serve"], env);
        let mut gateway = Self {
            dir,
            pki,
            config,
            addr: "127.0.0.1:0".parse().unwrap(),
            management: "127.0.0.1:0".parse().unwrap(),
            stderr,
            stdout,
            child,
        };
        gateway.await_listening();
        gateway
    }

    fn await_listening(&mut self) {
        let line = self
            .stderr
            .wait_for(START_TIMEOUT, |l| l.contains(r#""message":"listening""#));
        let Some(line) = line else {
            let status = self.child.try_wait().unwrap();
            panic!("gateway did not start ({status:?}):\n{}", self.stderr.all());
        };
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        self.addr = json["addr"].as_str().unwrap().parse().unwrap();
        self.management = json["management"].as_str().unwrap().parse().unwrap();
    }

    /// Kills the gateway (SIGKILL: no drain, no stop record) and starts it again on the
    /// same configuration and state, with `env`.
    pub(crate) fn crash_and_restart(&mut self, env: &[(&str, &str)]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, stdout, stderr) = spawn(&self.config, &["serve"], env);
        self.child = child;
        self.stdout = stdout;
        self.stderr = stderr;
        self.await_listening();
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// A URL on the management listener.
    pub(crate) fn management_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.management)
    }

    /// `healthcheck`'s environment: the ports this gateway really bound.
    pub(crate) fn listen_env(&self) -> [(&'static str, String); 2] {
        [
            ("SAMU_GATEWAY__SERVER__LISTEN", self.addr.to_string()),
            (
                "SAMU_GATEWAY__SERVER__MANAGEMENT_LISTEN",
                self.management.to_string(),
            ),
        ]
    }

    /// Logs in at desk A with PIN 1234 once its card is read (retrying until then) and
    /// returns the session token.
    pub(crate) async fn login_desk_a(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .post_desk_a("/api/v1/session", None, &serde_json::json!({"pin": "1234"}))
                .await;
            if status == 201 {
                return body["token"].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "login never succeeded; last answer {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST path` from desk A's workstation, under session `token` when given: the
    /// answer's status and JSON body.
    pub(crate) async fn post_desk_a(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.client(Some(DESK_A)).post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    pub(crate) fn client(&self, identity: Option<&str>) -> reqwest::Client {
        self.pki.client(identity)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Its whole log, once stopped: a log read while it runs may not hold yet the lines of
    /// the last requests (a thread of ours collects them), and a check that a secret is
    /// not in it would then pass on a log cut short.
    pub(crate) fn logs_once_stopped(&mut self) -> String {
        self.terminate();
        self.wait(Duration::from_secs(30));
        self.stderr.all()
    }

    /// Waits for the process to exit and for its output to be fully captured.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_child(&mut self.child, timeout);
        self.stderr.wait_closed(timeout);
        self.stdout.wait_closed(timeout);
        status
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `--config` and `args`, capturing both output streams.
pub(crate) fn spawn(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, Lines, Lines) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (Lines::default(), Lines::default());
    stdout.follow(child.stdout.take().unwrap());
    stderr.follow(child.stderr.take().unwrap());
    (child, stdout, stderr)
}

pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Stops a helper process from a `Drop` or a cleanup path: SIGTERM (so it can stop its own
/// children: nginx's workers, rsyslog's queues), at most `grace` for it to exit, then
/// SIGKILL. It never panics, because a `Drop` also runs while a panic unwinds and a second
/// panic aborts the whole test binary, and it never hangs on a process that ignores
/// SIGTERM. Tests that check how a process stops use [`signal`] and [`wait_child`], which
/// assert.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    // Already reaped (or never started properly): the pid may belong to someone else now.
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit within {timeout:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub(crate) fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        // The suite's files are root's, in private temporary directories: a check as the
        // packaged unit's user (which may exist here, after .ci/package) would refuse them
        // all. `configtest_checks_files_as_the_service_user` runs that check.
        .env("SAMU_GATEWAY_SERVICE_USER", "")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway started on a state directory holding `events` from an earlier run, with
/// `extra` appended to its configuration.
pub(crate) fn launch_on_trail(events: Vec<samu_gateway::audit::Event>, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    write_trail(dir.path(), &pki.audit_key, events);
    let config = write_config(dir.path(), &pki, "", extra);
    Gateway::launch(dir, pki, config, &[])
}

/// Writes `events` into `dir/state/audit.redb` as an earlier run of the gateway (node
/// `gateway-test`, signed with `key`) would have, on a thread of its own (callers may be
/// inside a runtime; the writer's batch API needs one of its own here).
pub(crate) fn write_trail(dir: &Path, key: &Path, events: Vec<samu_gateway::audit::Event>) {
    use samu_gateway::audit::{AuditLog, AuditStore, Settings, Signer};
    let (dir, key) = (dir.to_owned(), key.to_owned());
    std::thread::spawn(move || {
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let store = Arc::new(AuditStore::open(&state.join("audit.redb")).unwrap());
        let settings = Settings {
            node: "gateway-test".into(),
            batch_max_records: 512,
            batch_max_wait: Duration::ZERO,
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(3600),
        };
        let log = AuditLog::start(store, Signer::load(&key).unwrap(), settings).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<_> = events.by_ref().take(500).collect();
            runtime.block_on(log.append_all(batch)).unwrap();
        }
        log.close().unwrap();
    })
    .join()
    .unwrap();
}

/// The test physician, as a card certificate names her.
pub(crate) fn physician() -> samu_gateway::card::trust::Professional {
    samu_gateway::card::trust::Professional {
        id_nat: "810002813839".into(),
        id_nat_key_ok: true,
        given_name: Some("Jeanne".into()),
        surname: Some("URGENTISTE".into()),
        title: Some("10".into()),
        certificate_sha256: String::new(),
    }
}

/// The fuzz targets' mutation: each edit at an index of `bytes` replaces the byte there
/// (kind 0), cuts the rest (1) or inserts one (2); an empty input gets the byte.
pub(crate) fn mutate(bytes: &mut Vec<u8>, edits: Vec<(proptest::sample::Index, u8, u8)>) {
    for (at, byte, kind) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let i = at.index(bytes.len());
        match kind {
            0 => bytes[i] = byte,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, byte),
        }
    }
}

/// A stand-in record service's PKI in `dir`: its CA (`{name}-ca.pem`) and the CA's CRLs
/// (`{name}-ca.crl`, revoking nothing; `{name}-ca-revoking.crl`, revoking the stand-in's
/// certificate), its server pair (`{name}.pem`/`.key`), the structure CA
/// (`structure-ca.pem`) and the gateway's structure certificate (`structure.pem`/`.key`).
pub(crate) struct StandInPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub structure_ca: PathBuf,
    pub structure_cert: PathBuf,
    pub structure_key: PathBuf,
    pub structure: samu_gateway::dev_pki::Issued,
}

pub(crate) fn stand_in_pki(dir: &Path, name: &str) -> StandInPki {
    use samu_gateway::dev_pki::{Authority, write_file, write_pair};
    let record_ca = Authority::new(&format!("test {name} CA")).unwrap();
    let ca = dir.join(format!("{name}-ca.pem"));
    write_file(&ca, record_ca.cert_pem(), 0o644).unwrap();
    let server = record_ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let (cert, key) = write_pair(dir, name, &server).unwrap();
    // The CA's CRLs: one revoking nothing, one revoking the stand-in's certificate.
    let (_, parsed) = x509_parser::parse_x509_certificate(server.der.as_ref()).unwrap();
    let serial = parsed.raw_serial().to_vec();
    for (file, revoked) in [("ca.crl", vec![]), ("ca-revoking.crl", vec![serial])] {
        let crl = record_ca.crl(&revoked, 0, 7).unwrap();
        write_file(&dir.join(format!("{name}-{file}")), &crl, 0o644).unwrap();
    }
    let structures = Authority::new("test structure CA").unwrap();
    let structure_ca = dir.join("structure-ca.pem");
    write_file(&structure_ca, structures.cert_pem(), 0o644).unwrap();
    let structure = structures.issue_client("SAMU 75 structure").unwrap();
    let (structure_cert, structure_key) = write_pair(dir, "structure", &structure).unwrap();
    StandInPki {
        ca,
        cert,
        key,
        structure_ca,
        structure_cert,
        structure_key,
        structure,
    }
}

/// Spawns a stand-in record service (`dev-upstream`, `dev-dmp`) and returns it with the
/// URL it announces on its first line (`{name} listening on https://…`), as `localhost`
/// so that its certificate's name matches.
pub(crate) fn spawn_stand_in(mut command: Command, name: &str) -> (std::process::Child, String) {
    use std::io::{BufRead as _, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix(&format!("{name} listening on "))
        .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
        .replace("127.0.0.1", "localhost");
    (child, url)
}
