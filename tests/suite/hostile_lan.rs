//! A laptop on the regulation LAN must not take the gateway down. Attackers connect from
//! other loopback addresses (127.0.0.2 and up: each is a distinct source address to the
//! gateway), complete anonymous TLS handshakes and fall silent, or speak HTTP/2 and fall
//! silent; meanwhile a desk logs in over real pcscd and completes a break-glass.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::json;
use support::pcsc::{Pcscd, VirtualCard};
use support::upstream::{DevUpstream, TEST_OID, nir, own_bundle, patient};
use support::{DESK_A, Gateway, Pki, write_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const LIMITS: &str = "handshake_timeout_secs = 2\nidle_timeout_secs = 4\nmax_connections = 24\nmax_connections_per_address = 8\n";

fn attacker(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TLS connection from `source` to the gateway, trusting its CA, presenting `identity`'s
/// certificate if any, offering `alpn`; `None` when the gateway refuses it.
async fn tls_from(
    gateway: &Gateway,
    source: IpAddr,
    identity: Option<&str>,
    alpn: &[u8],
) -> Option<TlsStream<TcpStream>> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let tcp = socket.connect(gateway.addr).await.ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(gateway.pki.server_ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let issued = &gateway.pki.clients[name].issued;
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder
                .with_client_auth_cert(vec![issued.der.clone()], key)
                .unwrap()
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = ServerName::IpAddress(gateway.addr.ip().into());
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .ok()?
        .ok()
}

/// An anonymous TLS connection from `source`, silent after the handshake (after the HTTP/2
/// preface and an empty SETTINGS frame when `h2`); `None` when the gateway refuses it.
async fn silent(gateway: &Gateway, source: IpAddr, h2: bool) -> Option<TlsStream<TcpStream>> {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let mut tls = tls_from(gateway, source, None, alpn).await?;
    if h2 {
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .ok()?;
        tls.flush().await.ok()?;
    }
    Some(tls)
}

/// Whether the gateway closes `stream` within `within` (whatever it sends first).
async fn closed_within(stream: &mut TlsStream<TcpStream>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_cannot_hold_the_listener_while_a_desk_breaks_glass() {
    let pcscd = Pcscd::start(1);
    let card = VirtualCard::insert(&pcscd, 0, &["--id-nat", "810002813839"]);
    let bundles = tempfile::tempdir().unwrap();
    let bundle = own_bundle(bundles.path(), "utf8-byte-order-mark.json", 1, |_| {});
    let upstream = DevUpstream::start(vec![patient("p1", 1, &bundle)]);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let extra = format!(
        "\n[cards.trust]\nanchors = [\"{}\"]\ncrls = [\"{}\"]\n{}\n",
        card.dir.join("card-ca.pem").display(),
        card.dir.join("card-ca.crl").display(),
        upstream.toml_section(),
    );
    let config = write_config(dir.path(), &pki, LIMITS, &extra);
    let (key, value) = pcscd.env();
    let gateway = Gateway::launch(dir, pki, config, &[(key, value.as_str())]);
    let token = gateway.login_desk_a().await;

    // One address gets at most 8 connections: the 9th is closed at once.
    let mut held = Vec::new();
    for i in 0..8 {
        let stream = silent(&gateway, attacker(2), i % 2 == 0).await;
        held.push(stream.expect("within the per-address cap"));
    }
    let ninth = silent(&gateway, attacker(2), false).await;
    let refused = match ninth {
        None => true,
        Some(mut stream) => closed_within(&mut stream, Duration::from_millis(500)).await,
    };
    assert!(refused, "a 9th connection from one address is refused");

    // Two more addresses try to fill every one of the 24 slots with silent connections;
    // without a certificate they hold 12 at most (the others are closed at once).
    for n in [3, 4] {
        for i in 0..8 {
            if let Some(stream) = silent(&gateway, attacker(n), i % 2 == 1).await {
                held.push(stream);
            }
        }
    }
    let saturated = Instant::now();

    // The management listener (the watchdog's and centre IT's) answers while the public
    // one is saturated: some silent connection is still open when it has answered (the
    // gateway drops each at its own deadline, the last about 4 s on, so an answer that
    // waited for the public slots to free would come after every one was closed; checked
    // by answering 4.5 s late). Said by the gateway's deadlines, not by a time this
    // machine must meet: a bound of 1 s failed once under the whole suite's load (the
    // answer after 1.08 s).
    let manager = gateway.client(None);
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        support::get_json(&manager, &gateway.management_url("/readyz")),
    )
    .await
    .expect("the management listener answers");
    assert_eq!(status, 200, "{body}");
    let mut still_held = false;
    for stream in &mut held {
        if !closed_within(stream, Duration::from_millis(5)).await {
            still_held = true;
            break;
        }
    }
    assert!(
        still_held,
        "management answered only after every silent connection was dropped ({:?})",
        saturated.elapsed()
    );

    // The desk still gets through: health answers and a break-glass completes (the slots
    // anonymous connections cannot take are there for it).
    let desk = gateway.client(Some(DESK_A));
    let health = desk.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let answer = desk
        .post(gateway.url("/api/v1/break-glass"))
        .bearer_auth(&token)
        .json(
            &json!({"ins": nir(1), "ins_oid": TEST_OID, "call_id": "CRRA-2026-009999",
            "reason_code": "inconscient", "access_mode": "bris_de_glace"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let waited = saturated.elapsed();
    eprintln!("desk served {waited:?} after the listener was saturated");
    assert!(
        waited < Duration::from_secs(10),
        "the desk waited {waited:?}"
    );

    // Every silent connection was closed by the gateway (they are past their deadline).
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(3)).await,
            "a silent connection is still open"
        );
    }
    let (_, metrics) = support::get_text(&manager, &gateway.management_url("/metrics")).await;
    assert!(
        metrics.contains(r#"samu_gateway_http_connections_closed_by_gateway_total{reason="idle"}"#)
            && metrics.contains(r#"reason="per_address_cap""#),
        "{metrics}"
    );
}

/// Connections that never start their TLS handshake hold a quarter of the slots at most:
/// a new one closes the oldest still waiting, so a desk's handshake (milliseconds) gets
/// through. Before, 24 silent TCP connections from three addresses held all 24 slots until
/// their handshake deadline (2 s), and the desk waited in the kernel's backlog.
#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_start_their_handshake_cannot_hold_the_listener() {
    let gateway = Gateway::start_with(LIMITS, |_| String::new());
    let mut held = Vec::new();
    for n in [2, 3, 4] {
        for _ in 0..8 {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(attacker(n), 0)).unwrap();
            held.push(socket.connect(gateway.addr).await.unwrap());
        }
    }
    // Accepted by now (the gateway accepts as fast as it can).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let desk = gateway.client(Some(DESK_A));
    let health = tokio::time::timeout(
        Duration::from_millis(1500),
        desk.get(gateway.url("/healthz")).send(),
    )
    .await;
    assert!(
        matches!(&health, Ok(Ok(answer)) if answer.status() == 200),
        "the desk was not served while silent connections waited: {health:?}"
    );
    let manager = gateway.client(None);
    let (_, metrics) = support::get_text(&manager, &gateway.management_url("/metrics")).await;
    assert!(metrics.contains(r#"reason="handshake_cap""#), "{metrics}");
    drop(held);
}

/// Connections without a client certificate hold half of the slots at most: past that,
/// each is closed right after its handshake, and a desk still gets a slot. (Before, a
/// peer that sent a request now and then, or stalled an HTTP/2 answer, held every slot
/// from eight addresses.)
#[tokio::test(flavor = "multi_thread")]
async fn connections_without_a_certificate_hold_half_of_the_slots_at_most() {
    let gateway = Gateway::start_with(LIMITS, |_| String::new());
    let mut held = Vec::new();
    for n in [2, 3] {
        for _ in 0..6 {
            let stream = silent(&gateway, attacker(n), false).await;
            held.push(stream.expect("within the caps"));
        }
    }
    // 12 of 24: the next one is closed well before its first-request deadline (2 s).
    let opened = Instant::now();
    let mut over = silent(&gateway, attacker(4), false)
        .await
        .expect("the handshake itself completes");
    assert!(
        closed_within(&mut over, Duration::from_millis(1500)).await,
        "a 13th connection without a certificate is kept"
    );
    eprintln!(
        "13th anonymous connection closed after {:?}",
        opened.elapsed()
    );
    // The 12 are still open (their deadline has not come), yet a desk is served, and so
    // is the appliance's own probe without a certificate (it connects from the listener's
    // own address, which no LAN peer has; `healthcheck` must not fail for them).
    let desk = gateway.client(Some(DESK_A));
    let health = desk.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let own = gateway.client(None);
    let health = own.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let manager = gateway.client(None);
    let (_, metrics) = support::get_text(&manager, &gateway.management_url("/metrics")).await;
    assert!(
        metrics.contains(
            r#"samu_gateway_http_connections_closed_by_gateway_total{reason="anonymous_cap"} 1"#
        ),
        "{metrics}"
    );
    // Once they are gone (first-request deadline), the slots are free again.
    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(4)).await);
    }
    let mut again = silent(&gateway, attacker(4), false).await.unwrap();
    assert!(
        !closed_within(&mut again, Duration::from_millis(500)).await,
        "a slot freed is not given back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_idle_after_its_requests_is_closed() {
    let gateway = Gateway::start_with(LIMITS, |_| String::new());
    // A real HTTP/2 client: one request, then nothing (it still answers pings).
    let (mut sender, ended) = h2(&gateway, attacker(6), None).await;
    let opened = Instant::now();
    let request = hyper::Request::get(format!("https://{}/healthz", gateway.addr))
        .body(unfinished_empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // Closed by the gateway after 4 s without a request in flight (not by this client),
    // cleanly: a GOAWAY, then TLS's close_notify (idle_connections_are_closed_with_…).
    let ended = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the idle HTTP/2 connection is closed by the gateway");
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the connection did not end cleanly: {ended:?}"
    );
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_secs(3) && lived < Duration::from_secs(9),
        "closed after {lived:?}"
    );
}

/// The (type, stream) of each HTTP/2 frame whose 9-byte header `bytes` hold (length,
/// type, flags, stream id, then the payload), in order.
fn h2_frames(bytes: &[u8]) -> Vec<(u8, u32)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]])
                & 0x7fff_ffff;
        frames.push((bytes[at + 3], stream));
        at += 9 + length;
    }
    frames
}

/// A connection the gateway closes for idleness is closed cleanly: an HTTP/2 client is
/// told by a GOAWAY frame (so it knows no request of its was dropped, and opens a new
/// connection for the next instead of seeing an error), and TLS ends with its close_notify
/// (a plain TCP close reads as a truncation attack). Before, the connection was dropped.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_with_a_goaway_and_a_close_notify() {
    let gateway = Gateway::start_with(LIMITS, |_| String::new());
    // Until the gateway closes it: every byte it sent, and whether TLS ended cleanly.
    async fn until_closed(stream: &mut TlsStream<TcpStream>) -> (Vec<u8>, Result<(), String>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Err(_) => panic!("the idle connection is still open after 10 s"),
                Ok(Ok(0)) => return (got, Ok(())),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return (got, Err(e.to_string())),
            }
        }
    }
    // A silent HTTP/2 peer never answers the PING that completes a graceful close: it is
    // told by the GOAWAY, then dropped.
    let mut h2 = silent(&gateway, attacker(7), true).await.unwrap();
    let (sent, _) = until_closed(&mut h2).await;
    let kinds: Vec<u8> = h2_frames(&sent).iter().map(|(kind, _)| *kind).collect();
    assert!(
        kinds.contains(&0x7),
        "no GOAWAY before the close: frame types {kinds:?}"
    );
    let mut h1 = silent(&gateway, attacker(8), false).await.unwrap();
    let (_, ended) = until_closed(&mut h1).await;
    assert_eq!(
        ended,
        Ok(()),
        "HTTP/1.1: TLS ended without its close_notify"
    );
}

/// A peer that vanished after its request (a laptop asleep: its HTTP/2 connection open,
/// nothing answered any more) does not hold the stop: the drain's GOAWAY goes unanswered,
/// and the connection is dropped a moment later, not at the drain's deadline (10 s here).
#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_http2_peer_does_not_hold_the_drain() {
    let mut gateway = Gateway::start_with(&format!("{LIMITS}shutdown_grace_secs = 10\n"), |_| {
        String::new()
    });
    let mut tls = silent(&gateway, attacker(9), true).await.unwrap();
    // GET /healthz on stream 1, its header block in HPACK without Huffman: :method GET
    // and :scheme https from the static table, :authority and :path as literals.
    let authority = gateway.addr.ip().to_string();
    let mut block = vec![0x82, 0x87, 0x01, u8::try_from(authority.len()).unwrap()];
    block.extend_from_slice(authority.as_bytes());
    block.extend_from_slice(&[0x04, 8]);
    block.extend_from_slice(b"/healthz");
    let length = u32::try_from(block.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], 0x1, 0x5, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    tls.write_all(&frame).await.unwrap();
    tls.flush().await.unwrap();
    // Until the answer's HEADERS frame (type 1) on stream 1; then silence.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
        if h2_frames(&got).contains(&(0x1, 1)) {
            break true;
        }
    };
    assert!(answered);
    let stopping = Instant::now();
    gateway.terminate();
    assert_eq!(gateway.wait(Duration::from_secs(20)).code(), Some(0));
    let took = stopping.elapsed();
    let logs = gateway.stderr.all();
    assert!(!logs.contains("grace period over"), "{logs}");
    assert!(took < Duration::from_millis(3500), "the stop took {took:?}");
    drop(tls);
}

#[tokio::test]
async fn anonymous_peers_see_neither_metrics_nor_readiness_details() {
    let gateway = Gateway::start();
    let anonymous = gateway.client(None);
    for path in ["/metrics", "/readyz"] {
        let refused = anonymous.get(gateway.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{path}");
        let body = refused.text().await.unwrap();
        assert!(body.contains("certificate_required"), "{path}: {body}");
        let desk = gateway.client(Some(DESK_A));
        assert_eq!(
            desk.get(gateway.url(path)).send().await.unwrap().status(),
            200
        );
        let unmapped = gateway.client(Some(support::UNMAPPED));
        assert_eq!(
            unmapped
                .get(gateway.url(path))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let local = anonymous
            .get(gateway.management_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(local.status(), 200, "{path} on the management listener");
    }
    // Liveness stays open: it says nothing but "alive".
    let alive = anonymous.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    // The management listener serves nothing else.
    let other = anonymous
        .get(gateway.management_url("/api/v1/desk"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// An HTTP/2 connection from `source`, anonymous or with `identity`'s certificate, and the
/// task driving it (it ends when the connection does).
async fn h2(
    gateway: &Gateway,
    source: IpAddr,
    identity: Option<&str>,
) -> (
    hyper::client::conn::http2::SendRequest<Unfinished>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = tls_from(gateway, source, identity, b"h2").await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(connection))
}

type Unfinished = http_body_util::StreamBody<
    std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<hyper::body::Frame<hyper::body::Bytes>, std::io::Error>,
                > + Send,
        >,
    >,
>;

/// A body announcing `declared` bytes that sends `sent` of them, then nothing, ever.
fn unfinished(sent: usize) -> Unfinished {
    use futures_util::StreamExt;
    let first = futures_util::stream::once(async move {
        Ok(hyper::body::Frame::data(hyper::body::Bytes::from(vec![
            b'{';
            sent
        ])))
    });
    http_body_util::StreamBody::new(first.chain(futures_util::stream::pending()).boxed())
}

/// An empty body, finished.
fn unfinished_empty() -> Unfinished {
    use futures_util::StreamExt;
    http_body_util::StreamBody::new(futures_util::stream::empty().boxed())
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const BODY_ROUTES: [(&str, &str); 8] = [
    ("PUT", "/api/v1/roster"),
    ("POST", "/api/v1/session"),
    ("POST", "/api/v1/break-glass"),
    ("POST", "/api/v1/patients/search"),
    ("POST", "/api/v1/compliance/reviews"),
    ("POST", "/api/v1/compliance/search"),
    ("POST", "/api/v1/compliance/export"),
    ("POST", "/api/v1/compliance/downloads"),
];

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_bodies_are_refused_from_the_request_head_and_never_buffered() {
    let gateway = Gateway::start_with(LIMITS, |_| {
        "\n[compliance]\nofficer_cns = [\"poste-x\"]\n".to_owned()
    });
    let before = resident_kib(gateway.pid());
    // Every route taking a body, many times over, from four addresses: 2 MB announced,
    // 1.5 MB sent, never finished.
    let mut answers = Vec::new();
    for n in 0..4u8 {
        let (mut sender, _) = h2(&gateway, attacker(10 + n), None).await;
        for _ in 0..2 {
            for (method, path) in BODY_ROUTES {
                sender.ready().await.unwrap();
                let request = hyper::Request::builder()
                    .method(method)
                    .uri(format!("https://{}{path}", gateway.addr))
                    .header("content-type", "application/json")
                    .header("content-length", "2000000")
                    .body(unfinished(1_500_000))
                    .unwrap();
                answers.push(tokio::spawn(sender.send_request(request)));
            }
        }
    }
    let started = Instant::now();
    let sent = answers.len();
    for answer in answers {
        let response = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("answered while the body is unfinished")
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 403);
    }
    let after = resident_kib(gateway.pid());
    eprintln!(
        "{sent} unfinished anonymous bodies refused within {:?}; RSS {before} KiB -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after < before + 48 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_holders_body_is_small_and_timely() {
    let gateway = Gateway::start_with(LIMITS, |_| String::new());
    let (mut sender, _) = h2(&gateway, attacker(20), Some(DESK_A)).await;
    // Over the 16 KiB bound: 413 as soon as the bound is crossed.
    sender.ready().await.unwrap();
    let big = hyper::Request::post(format!("https://{}/api/v1/session", gateway.addr))
        .header("content-type", "application/json")
        .body(unfinished(20_000))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(big))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 413);
    // The roster's and the cases' larger bounds are the integration's only: a desk's
    // body on those routes is held to 16 KiB too, not buffered to 256 KiB first.
    for path in ["/api/v1/roster", "/api/v1/desks/regul-1/case"] {
        sender.ready().await.unwrap();
        let big = hyper::Request::put(format!("https://{}{path}", gateway.addr))
            .header("content-type", "application/json")
            .body(unfinished(20_000))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(big))
            .await
            .expect("refused as soon as the desk's bound is crossed")
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
    }
    // Under the bound but never finished: 408 at the body deadline.
    sender.ready().await.unwrap();
    let slow = hyper::Request::post(format!("https://{}/api/v1/session", gateway.addr))
        .header("content-type", "application/json")
        .body(unfinished(10))
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(15), sender.send_request(slow))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 408);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

/// Malformed bodies, path segments and queries get the API's own refusal (code, English,
/// French), never axum's text quoting what was sent.
#[tokio::test]
async fn malformed_input_is_refused_without_echoing_it() {
    const INS: &str = "185057800608436";
    let gateway = Gateway::start_with("", |_| {
        "\n[compliance]\nofficer_cns = [\"poste-x\"]\n".to_owned()
    });
    let desk = gateway.client(Some(DESK_A));
    let officer = gateway.client(Some(support::UNMAPPED));
    let cases = [
        // An INS typed as a number, the wrong shape of a field, not JSON, no content type.
        (
            desk.post(gateway.url("/api/v1/session"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"pin": {INS}}}"#)),
            422,
            "body_invalid",
        ),
        (
            officer
                .post(gateway.url("/api/v1/compliance/search"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"filter": {{"patient": {INS}}}}}"#)),
            422,
            "body_invalid",
        ),
        (
            officer
                .post(gateway.url("/api/v1/compliance/reviews"))
                .header("content-type", "application/json")
                .body(format!("seq={INS}")),
            400,
            "body_not_json",
        ),
        (
            officer
                .post(gateway.url("/api/v1/compliance/export"))
                .body(format!(r#"{{"format": "{INS}"}}"#)),
            415,
            "json_required",
        ),
        (
            officer.get(gateway.url(&format!("/api/v1/compliance/accesses/{INS}x"))),
            400,
            "path_invalid",
        ),
        (
            officer.get(gateway.url(&format!("/api/v1/compliance/report?since=24h&since={INS}"))),
            400,
            "query_invalid",
        ),
        // A known path with a method it does not take: the API's 405, not an empty one.
        (
            officer
                .put(gateway.url("/api/v1/compliance/pending"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"ins": "{INS}"}}"#)),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message_fr"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!body.to_string().contains(INS), "echoed: {body}");
    }
}

/// Who may call what, for every documented route (the OpenAPI document is generated from
/// the router, so a new route fails this test until it is classified here). Each row: the
/// status for an anonymous peer, a workstation-CA certificate nothing maps, a desk (no
/// card login configured, no session), a compliance officer, and the regulation
/// software's integration certificate (no [integration] configured), for a bare request (no body,
/// no token).
const EXPECTED: &[(&str, [u16; 5])] = &[
    (
        "DELETE /api/v1/grants/{grant_id}",
        [403, 403, 503, 403, 403],
    ),
    (
        "DELETE /api/v1/desks/{desk}/case",
        [403, 503, 403, 503, 503],
    ),
    ("DELETE /api/v1/session", [403, 403, 503, 403, 403]),
    ("GET /", [200, 200, 200, 200, 200]),
    (
        "GET /api/v1/compliance/accesses/{seq}",
        [403, 403, 403, 400, 403],
    ),
    (
        "GET /api/v1/compliance/downloads/{ticket}",
        [403, 403, 403, 404, 403],
    ),
    ("GET /api/v1/compliance/pending", [403, 403, 403, 200, 403]),
    ("GET /api/v1/compliance/report", [403, 403, 403, 200, 403]),
    ("GET /api/v1/case", [403, 403, 503, 403, 403]),
    ("GET /api/v1/csrf-token", [200, 200, 200, 200, 200]),
    ("GET /api/v1/desk", [403, 403, 200, 403, 403]),
    ("GET /api/v1/desk/events", [403, 403, 200, 403, 403]),
    (
        "GET /api/v1/grants/{grant_id}/document",
        [403, 403, 503, 403, 403],
    ),
    (
        "GET /api/v1/grants/{grant_id}/documents/{unique_id}",
        [403, 403, 503, 403, 403],
    ),
    (
        "GET /api/v1/grants/{grant_id}/documents/{unique_id}/pdf",
        [403, 403, 503, 403, 403],
    ),
    (
        "GET /api/v1/grants/{grant_id}/summary",
        [403, 403, 503, 403, 403],
    ),
    ("GET /api/v1/openapi.json", [200, 200, 200, 200, 200]),
    ("GET /api/v1/session", [403, 403, 503, 403, 403]),
    ("GET /assets/app.css", [200, 200, 200, 200, 200]),
    ("GET /assets/app.js", [200, 200, 200, 200, 200]),
    ("GET /assets/common.js", [200, 200, 200, 200, 200]),
    ("GET /assets/compliance.js", [200, 200, 200, 200, 200]),
    ("GET /assets/icon.svg", [200, 200, 200, 200, 200]),
    ("GET /conformite", [200, 200, 200, 200, 200]),
    ("GET /healthz", [200, 200, 200, 200, 200]),
    ("GET /metrics", [403, 200, 200, 200, 200]),
    ("GET /readyz", [403, 200, 200, 200, 200]),
    ("POST /api/v1/break-glass", [403, 403, 503, 403, 403]),
    (
        "POST /api/v1/compliance/downloads",
        [403, 403, 403, 415, 403],
    ),
    ("POST /api/v1/compliance/export", [403, 403, 403, 415, 403]),
    ("POST /api/v1/desks/{desk}/case", [403, 503, 403, 503, 503]),
    ("POST /api/v1/compliance/reviews", [403, 403, 403, 415, 403]),
    ("POST /api/v1/compliance/search", [403, 403, 403, 415, 403]),
    ("POST /api/v1/patients/search", [403, 403, 503, 403, 403]),
    ("POST /api/v1/session", [403, 403, 415, 403, 403]),
    ("PUT /api/v1/roster", [403, 503, 403, 503, 503]),
];

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_expected() {
    let gateway = Gateway::start_with("", |_| {
        "\n[compliance]\nofficer_cns = [\"poste-x\"]\n".to_owned()
    });
    let callers = [
        None,
        Some(support::STRANGER),
        Some(DESK_A),
        Some(support::UNMAPPED),
        Some(support::INTEGRATION),
    ];
    let clients: Vec<reqwest::Client> = callers.iter().map(|c| gateway.client(*c)).collect();
    let (_, doc) = support::get_json(&clients[0], &gateway.url("/api/v1/openapi.json")).await;
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let operation = format!("{} {path}", method.to_uppercase());
            let Some((_, expected)) = EXPECTED.iter().find(|(o, _)| *o == operation) else {
                panic!(
                    "{operation} is served but not classified in EXPECTED: decide who may call it"
                );
            };
            seen.push(operation.clone());
            let concrete = path
                .replace("{grant_id}", "0123456789abcdef0123456789abcdef")
                .replace("{seq}", "not-a-number")
                .replace("{ticket}", "0123456789abcdef0123456789abcdef")
                .replace("{unique_id}", "1.2.250.1.999.1.1");
            for (client, want) in clients.iter().zip(expected) {
                let request = client.request(
                    method.to_uppercase().parse().unwrap(),
                    gateway.url(&concrete),
                );
                let status = request.send().await.unwrap().status().as_u16();
                if status != *want {
                    wrong.push(format!("{operation}: {status} where {want} was expected"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        seen.len(),
        EXPECTED.len(),
        "a classified route is no longer served"
    );
    // Anonymous peers reach nothing but the page, its assets, liveness and the API's
    // description.
    for (operation, expected) in EXPECTED {
        if expected[0] == 200 {
            assert!(
                operation.starts_with("GET /assets/")
                    || [
                        "GET /",
                        "GET /conformite",
                        "GET /healthz",
                        "GET /api/v1/openapi.json",
                        "GET /api/v1/csrf-token"
                    ]
                    .contains(operation),
                "{operation} is open to anonymous peers"
            );
        }
    }
}

/// A revoked workstation certificate fails the handshake; the workstation CRLs are reread
/// while the gateway runs, and a list past its next update refuses everyone (`refuse`).
#[tokio::test(flavor = "multi_thread")]
async fn revoked_workstation_certificates_fail_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let serial = |name: &str| {
        let der = pki.clients[name].issued.der.clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        parsed.raw_serial().to_vec()
    };
    let (desk_a, desk_b) = (serial(DESK_A), serial(support::DESK_B));
    let crl = dir.path().join("workstations.crl");
    let publish = |gateway_pki: &Pki, revoked: &[Vec<u8>], next_update_days: i64| {
        let pem = gateway_pki
            .workstations
            .crl(revoked, 3, next_update_days)
            .unwrap();
        let staged = crl.with_extension("new");
        std::fs::write(&staged, pem).unwrap();
        std::fs::rename(&staged, &crl).unwrap();
    };
    publish(&pki, std::slice::from_ref(&desk_b), 7);
    let config = write_config(dir.path(), &pki, "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    let anchor = format!("workstation_ca = \"{}\"", pki.workstation_ca.display());
    std::fs::write(
        &config,
        text.replace(
            &anchor,
            &format!(
                "{anchor}\nworkstation_crls = [\"{}\"]\nworkstation_crl_refresh_secs = 1",
                crl.display()
            ),
        ),
    )
    .unwrap();
    let gateway = Gateway::launch(dir, pki, config, &[]);
    // A fresh client each time: a pooled connection would skip the handshake.
    let desk = |name: &str| {
        let client = gateway.client(Some(name));
        let url = gateway.url("/api/v1/desk");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(desk(DESK_A).await.unwrap(), 200);
    assert!(desk(support::DESK_B).await.is_err(), "desk B is revoked");
    // A connection desk A keeps open (the client's pool keeps it for the next request).
    let held = gateway.client(Some(DESK_A));
    let ask = || held.get(gateway.url("/api/v1/desk")).send();
    assert_eq!(ask().await.unwrap().status(), 200);
    // Revoking desk A too takes effect at the next reread, without a restart.
    publish(&gateway.pki, &[desk_a.clone(), desk_b.clone()], 7);
    let deadline = Instant::now() + Duration::from_secs(10);
    while desk(DESK_A).await.is_ok() {
        assert!(Instant::now() < deadline, "desk A still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its open connection was closed too: the next request needs a new handshake, refused.
    // (Before, attribution held for the connection's life: 200.)
    assert!(
        gateway
            .stderr
            .wait_for(Duration::from_secs(5), |l| l
                .contains("client certificate no longer verifies"))
            .is_some()
    );
    assert!(
        ask().await.is_err(),
        "desk A's open connection still served"
    );
    // A list past its next update vouches for nobody: refused under `refuse`.
    publish(&gateway.pki, &[], -1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(desk(DESK_A).await.is_err(), "a stale CRL is not trusted");
    assert!(
        gateway
            .stderr
            .wait_for(Duration::from_secs(5), |l| l
                .contains("past its next update"))
            .is_some()
    );
    // Monitoring sees it: the process is fine, but no desk can connect.
    let readiness = || {
        let url = gateway.management_url("/readyz");
        let client = gateway.client(None);
        async move {
            let (status, body) = support::get_json(&client, &url).await;
            let status = status.as_u16();
            let check = body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "workstation_crls")
                .map(|c| c["status"].as_str().unwrap().to_owned());
            (status, check)
        }
    };
    assert_eq!(readiness().await, (503, Some("failed".to_owned())));
    // A fresh one again: accepted.
    publish(&gateway.pki, &[], 7);
    let deadline = Instant::now() + Duration::from_secs(10);
    while desk(DESK_A).await.is_err() {
        assert!(Instant::now() < deadline, "desk A never accepted again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(readiness().await, (200, Some("ok".to_owned())));
}
