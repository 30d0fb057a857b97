//! A private pcscd with vsmartcard-vpcd virtual readers, per test: its own socket (bound by
//! `systemd-socket-activate`, Debian's systemd package, and handed over with the LISTEN_FDS
//! protocol, as systemd's pcscd.socket does), its own reader configuration and
//! ports, stopped when dropped. Clients reach it through PCSCLITE_CSOCK_NAME, which the
//! harness sets on the child processes it starts (never on the test process itself).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so.0.8";

pub(crate) struct Pcscd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// vpcd port of each reader block `Desk{i}` (reader `Desk{i} 00 00`).
    pub ports: Vec<u16>,
    child: Child,
}

impl Pcscd {
    /// Starts pcscd with `desks` vpcd reader blocks, named `Desk0`, `Desk1`, …
    pub(crate) fn start(desks: usize) -> Self {
        for needed in ["/usr/sbin/pcscd", DRIVER] {
            assert!(
                Path::new(needed).exists(),
                "{needed} is missing: run `bash .ci/deps`"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("pcsc")
            .tempdir_in("/tmp")
            .unwrap();
        let (conf, drv) = (dir.path().join("conf"), dir.path().join("drv"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&drv).unwrap();
        let mut ports = Vec::new();
        for i in 0..desks {
            let port = free_port_pair(&ports);
            let driver = drv.join(format!("vpcd{i}.so"));
            // Each block needs its own copy of the driver, or their cards mix up.
            std::fs::copy(DRIVER, &driver).unwrap();
            let block = format!(
                "FRIENDLYNAME \"Desk{i}\"\nDEVICENAME /dev/null:{port}\nLIBPATH {}\n",
                driver.display()
            );
            std::fs::write(conf.join(format!("vpcd{i}")), block).unwrap();
            ports.push(port);
        }
        let socket = dir.path().join("pcscd.comm");
        let child = spawn_pcscd(dir.path(), &socket);
        let pcscd = Self {
            dir,
            socket,
            ports,
            child,
        };
        for port in &pcscd.ports {
            pcscd.wait_listening(*port);
        }
        pcscd
    }

    /// Stops pcscd and starts it again on the same socket, configuration and ports.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.child = spawn_pcscd(self.dir.path(), &self.socket);
        for port in self.ports.clone() {
            self.wait_listening(port);
        }
    }

    /// Stops pcscd (SIGKILL, as a crash would).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Environment for a child process that must use this pcscd.
    pub(crate) fn env(&self) -> (&'static str, String) {
        ("PCSCLITE_CSOCK_NAME", self.socket.display().to_string())
    }

    /// Waits (without connecting: for vpcd a connection is a card insertion) until pcscd's
    /// vpcd driver listens on `port`.
    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .unwrap();
            if !out.stdout.is_empty() {
                return;
            }
            let log =
                std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "vpcd never listened on {port}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_pcscd(dir: &Path, socket: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pcscd.log"))
        .unwrap();
    // A killed pcscd leaves its socket file behind; the new listener needs the path.
    let _ = std::fs::remove_file(socket);
    let child = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(socket)
        .args(["pcscd", "-f", "-c"])
        .arg(dir.join("conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd): run `bash .ci/deps`");
    // systemd-socket-activate starts the daemon on the first connection: make that one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never listened",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A port p such that p and p+1 are free (a vpcd block opens both) and not already taken.
fn free_port_pair(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let clash = taken.iter().any(|t| port.abs_diff(*t) <= 1);
        if !clash && port < u16::MAX && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// A virtual CPS card process (`samu-gateway card emulate`) in reader `Desk{desk} 00 00`;
/// removed from its reader when dropped.
pub(crate) struct VirtualCard {
    child: Child,
    /// Its CA (`card-ca.pem`), certificate and CRL (`card-ca.crl`).
    pub dir: PathBuf,
    /// What the emulator says (its insertions, the resets the reader asked for).
    pub said: super::Lines,
}

impl VirtualCard {
    pub(crate) fn insert(pcscd: &Pcscd, desk: usize, extra: &[&str]) -> Self {
        let dir = pcscd
            .dir
            .path()
            .join(format!("card{desk}-{}", pcscd.ports[desk]));
        let _ = std::fs::remove_dir_all(&dir);
        Self::insert_from(pcscd, desk, &dir, extra)
    }

    /// Inserts the card saved in `dir` by an earlier insertion (same key and certificate).
    pub(crate) fn insert_from(pcscd: &Pcscd, desk: usize, dir: &Path, extra: &[&str]) -> Self {
        let (key, value) = pcscd.env();
        let mut child = Command::new(super::BIN)
            .args([
                "card",
                "emulate",
                "--vpcd-port",
                &pcscd.ports[desk].to_string(),
                "--dir",
            ])
            .arg(dir)
            .args(extra)
            .env(key, value)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let said = super::Lines::default();
        if let Some(out) = child.stdout.take() {
            said.follow(out);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("card-ca.crl").exists() {
            assert!(
                Instant::now() < deadline,
                "the virtual card never wrote its files"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            dir: dir.to_owned(),
            said,
        }
    }

    /// Pulls the card out of the reader.
    pub(crate) fn remove(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.remove();
    }
}
