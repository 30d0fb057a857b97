//! A minimal HTTP(S) client for the gateway's own listeners, used by `healthcheck` and by
//! the systemd watchdog to prove that requests are really being served: plain HTTP to the
//! management listener (loopback), or HTTPS trusting exactly the public listener's
//! certificate. The demo also uses it, with the integration certificate, to send its
//! sample case the way the regulation software would.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::pinned_client_config;

/// Bodies larger than this are not health answers.
const MAX_BODY: usize = 64 * 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// TLS client setup failed.
    #[error("TLS client setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// TCP connect, TLS handshake or HTTP exchange failed.
    #[error("{step} with {addr} failed: {reason}")]
    Exchange {
        /// What was being done.
        step: &'static str,
        /// The address probed.
        addr: SocketAddr,
        /// The cause.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("no answer from {0} within the deadline")]
    Timeout(SocketAddr),
}

/// A client for a local listener.
#[derive(Clone)]
pub(crate) struct Probe {
    addr: SocketAddr,
    /// TLS trusting exactly the listener's certificate; `None` for the management
    /// listener's plain HTTP.
    connector: Option<TlsConnector>,
    timeout: Duration,
}

impl Probe {
    /// A probe for a listener bound to `listen` (a wildcard address is probed on loopback).
    pub(crate) fn new(
        listen: SocketAddr,
        leaf: CertificateDer<'static>,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        Self::presenting(listen, leaf, None, timeout)
    }

    /// As [`Probe::new`], presenting `identity` (certificate chain, key) as its client
    /// certificate when given.
    pub(crate) fn presenting(
        listen: SocketAddr,
        leaf: CertificateDer<'static>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        Ok(Self {
            addr: SocketAddr::new(local(listen.ip()), listen.port()),
            connector: Some(TlsConnector::from(Arc::new(pinned_client_config(
                leaf, identity,
            )?))),
            timeout,
        })
    }

    /// A plain-HTTP probe for the management listener bound to `listen`.
    pub(crate) fn management(listen: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr: SocketAddr::new(local(listen.ip()), listen.port()),
            connector: None,
            timeout,
        }
    }

    /// GETs `path`; returns the status and the body.
    pub(crate) async fn get(&self, path: &str) -> Result<(u16, String), ProbeError> {
        self.send(Call::get(path)).await
    }

    /// POSTs `body` (JSON) to `path`; returns the status and the body (the demo's case).
    #[cfg(feature = "dev-tools")]
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), ProbeError> {
        self.send(Call {
            method: hyper::Method::POST,
            path,
            body: Some(body),
        })
        .await
    }

    async fn send(&self, call: Call<'_>) -> Result<(u16, String), ProbeError> {
        tokio::time::timeout(self.timeout, self.exchange(call))
            .await
            .map_err(|_| ProbeError::Timeout(self.addr))?
    }

    async fn exchange(&self, call: Call<'_>) -> Result<(u16, String), ProbeError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| self.fail("connect", &e))?;
        match &self.connector {
            Some(connector) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.fail("TLS handshake", &e))?;
                self.request(TokioIo::new(tls), call).await
            }
            None => self.request(TokioIo::new(tcp), call).await,
        }
    }

    fn fail(&self, step: &'static str, e: &dyn std::fmt::Display) -> ProbeError {
        ProbeError::Exchange {
            step,
            addr: self.addr,
            reason: e.to_string(),
        }
    }

    async fn request<I>(&self, io: I, call: Call<'_>) -> Result<(u16, String), ProbeError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.fail("HTTP handshake", &e))?;
        let driver = tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(call.method)
            .uri(call.path)
            .header(hyper::header::HOST, self.addr.to_string());
        if call.body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(call.body.unwrap_or_default())))
            .map_err(|e| self.fail("request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.fail("request", &e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| self.fail("reading the answer", &*e))?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One request: method, path, and a JSON body if any.
struct Call<'a> {
    method: hyper::Method,
    path: &'a str,
    body: Option<Vec<u8>>,
}

impl<'a> Call<'a> {
    fn get(path: &'a str) -> Self {
        Self {
            method: hyper::Method::GET,
            path,
            body: None,
        }
    }
}

/// A wildcard address is probed on loopback.
fn local(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}
