//! A private rsyslog (docs/test-harness.md): gtls driver, mutual TLS with
//! `permittedPeer=["gateway-*"]`, loopback port, its own work dir and pid file, writing
//! every message it receives to a file; stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use samu_gateway::dev_pki::{Authority, write_file, write_pair};

pub(crate) struct Rsyslog {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    authority: Authority,
    relp: bool,
}

impl Rsyslog {
    /// A repository taking syslog over TLS (RFC 5425, `imtcp` with gtls).
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    /// A repository taking RELP over TLS (`imrelp`, Debian's rsyslog-relp): each message
    /// acknowledged once rsyslog took it.
    pub(crate) fn start_relp() -> Self {
        Self::start_with(true)
    }

    fn start_with(relp: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["work", "out", "pki"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let authority = Authority::new("test audit repository CA").unwrap();
        write_file(&root.join("pki/ca.pem"), authority.cert_pem(), 0o644).unwrap();
        write_pair(
            &root.join("pki"),
            "server",
            &authority.issue_server(&["localhost", "127.0.0.1"]).unwrap(),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let r = root.display();
        let input = if relp {
            format!(
                "module(load=\"imrelp\")\n\
                 input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"audit\"\n\
                 tls=\"on\" tls.caCert=\"{r}/pki/ca.pem\" tls.myCert=\"{r}/pki/server.pem\"\n\
                 tls.myPrivKey=\"{r}/pki/server.key\" tls.authMode=\"name\"\n\
                 tls.permittedPeer=[\"gateway-test\",\"gateway-bench\"])\n"
            )
        } else {
            format!(
                "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\"\n\
                 streamDriver.authMode=\"x509/name\" permittedPeer=[\"gateway-*\"] maxSessions=\"200\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"audit\")\n"
            )
        };
        let conf = format!(
            "global(workDirectory=\"{r}/work\" net.enableDNS=\"off\" maxMessageSize=\"64k\"\n\
             defaultNetstreamDriver=\"gtls\"\n\
             defaultNetstreamDriverCAFile=\"{r}/pki/ca.pem\"\n\
             defaultNetstreamDriverCertFile=\"{r}/pki/server.pem\"\n\
             defaultNetstreamDriverKeyFile=\"{r}/pki/server.key\")\n\
             {input}\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             ruleset(name=\"audit\") {{\n\
             action(type=\"omfile\" file=\"{r}/out/received.log\" template=\"raw\"\n\
             flushOnTXEnd=\"on\" asyncWriting=\"off\") }}\n"
        );
        std::fs::write(root.join("rsyslog.conf"), conf).unwrap();
        let mut rsyslog = Self {
            dir,
            port,
            child: None,
            authority,
            relp,
        };
        rsyslog.restart();
        rsyslog
    }

    /// Starts (again) on the same port and files.
    pub(crate) fn restart(&mut self) {
        self.child = Some(spawn_rsyslogd(self.dir.path(), self.port));
    }

    /// Kills rsyslogd outright (SIGKILL: no flush, no goodbye to clients).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// A client certificate with common name `cn`, as `(cert, key)` paths.
    pub(crate) fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        write_pair(
            &self.dir.path().join("pki"),
            &format!("client-{cn}"),
            &self.authority.issue_client(cn).unwrap(),
        )
        .unwrap()
    }

    /// An `[[audit.receivers]]` table for a gateway presenting certificate CN `cn`.
    pub(crate) fn receiver_toml(&self, name: &str, cn: &str) -> String {
        let (cert, key) = self.client(cn);
        let transport = if self.relp { "relp" } else { "syslog_tls" };
        format!(
            "\n[[audit.receivers]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\ntransport = \"{transport}\"\nmax_message_bytes = 65536\n",
            self.port,
            self.dir.path().join("pki/ca.pem").display(),
            cert.display(),
            key.display()
        )
    }

    /// Every message received so far, one per line.
    pub(crate) fn received(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("out/received.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Messages written after byte `from` of the file (whole lines only), and where the
    /// next read should start.
    pub(crate) fn tail(&self, from: u64) -> (Vec<String>, u64) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(self.dir.path().join("out/received.log")) else {
            return (Vec::new(), from);
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return (Vec::new(), from);
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let lines = String::from_utf8_lossy(&bytes[..complete])
            .lines()
            .map(str::to_owned)
            .collect();
        (lines, from + complete as u64)
    }

    /// Waits until `n` messages arrived (or fails after `timeout`).
    pub(crate) fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived",
                received.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `rsyslogd` in the foreground on `root/rsyslog.conf` (its pid file and log under
/// `root/work`), and waits until it listens on `port`.
fn spawn_rsyslogd(root: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(root.join("rsyslog.conf"))
        .arg("-i")
        .arg(root.join("work/rsyslogd.pid"))
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(root.join("work/rsyslogd.log"))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls rsyslog-relp)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            // A daemon that never listens is stopped here: the caller gets no handle to it.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rsyslogd did not listen on {port} (see {})",
                root.join("work/rsyslogd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// rsyslog's own RELP client (`omrelp`, librelp) as a sender: takes plain TCP on a
/// loopback port and forwards every line, one RELP transaction each, over mutual TLS to a
/// RELP repository. The anchor for our shipper's RELP figures: the same repository fed
/// by the reference client.
pub(crate) struct RelpForwarder {
    dir: tempfile::TempDir,
    /// The plain TCP port it takes lines on.
    pub port: u16,
    child: Option<Child>,
}

impl RelpForwarder {
    /// Starts a forwarder to `repository` (started with `start_relp`), presenting a
    /// certificate with common name `cn`.
    pub(crate) fn start(repository: &Rsyslog, cn: &str) -> Self {
        assert!(repository.relp, "the repository must take RELP");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let (cert, key) = repository.client(cn);
        let ca = repository.dir.path().join("pki/ca.pem");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let r = root.display();
        // The main queue holds a whole backlog, so the intake never waits on the RELP leg
        // and what is timed is that leg. omrelp's default window, 128 transactions, ends
        // each window on the repository's delayed ACKs (2.7k messages/s measured); 1,024
        // and more gave 47-55k/s, the best this client does.
        let conf = format!(
            "global(workDirectory=\"{r}/work\" net.enableDNS=\"off\" maxMessageSize=\"64k\")\n\
             main_queue(queue.type=\"LinkedList\" queue.size=\"1000000\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             module(load=\"omrelp\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\")\n\
             action(type=\"omrelp\" target=\"127.0.0.1\" port=\"{}\" template=\"raw\" windowSize=\"1024\"\n\
             tls=\"on\" tls.caCert=\"{}\" tls.myCert=\"{}\" tls.myPrivKey=\"{}\"\n\
             tls.authMode=\"name\" tls.permittedPeer=[\"localhost\"])\n",
            repository.port,
            ca.display(),
            cert.display(),
            key.display()
        );
        std::fs::write(root.join("rsyslog.conf"), conf).unwrap();
        let child = spawn_rsyslogd(root, port);
        Self {
            dir,
            port,
            child: Some(child),
        }
    }

    /// Its own log (startup and connection errors).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("work/rsyslogd.log")).unwrap_or_default()
    }
}

impl Drop for RelpForwarder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::terminate(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
