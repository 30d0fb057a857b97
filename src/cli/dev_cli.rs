//! The development tools' commands: `demo`, `dev-upstream` and `dev-dmp`. Built only with
//! the `dev-tools` feature (default on; the Debian package is built without it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{Failure, runtime};
use crate::demo::{self, DemoSetup};
use crate::service::{self, Prepared};
use crate::telemetry;

pub(super) fn dev_upstream(
    options: crate::dev_upstream::DevUpstreamOptions,
) -> Result<ExitCode, Failure> {
    runtime()?.block_on(async {
        let server = crate::dev_upstream::DevUpstream::start(options)
            .await
            .context("cannot start the dev upstream")?;
        out!("dev-upstream listening on https://{}", server.addr);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        server.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn dev_dmp(options: crate::dev_dmp::DevDmpOptions) -> Result<ExitCode, Failure> {
    runtime()?.block_on(async {
        let server = crate::dev_dmp::DevDmp::start(options)
            .await
            .context("cannot start dev-dmp")?;
        out!("dev-dmp listening on https://{}", server.addr);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        server.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn run_demo(
    dir: Option<PathBuf>,
    port: u16,
    upstream: crate::demo::samples::DemoUpstream,
    send_case: bool,
) -> Result<ExitCode, Failure> {
    let setup = demo::setup(dir.as_deref(), port, upstream).context("cannot set up the demo")?;
    let (setup, parts) = setup;
    let mut prepared = Prepared::load(&setup.config)?;
    prepared.virtual_card = Some(Box::new(parts.card));
    // A browser on this machine has no client certificate: the demo (and only the demo,
    // no configuration key can ask for it) lets loopback connections without one act for
    // the card's desk, and the page says so.
    prepared.desks = std::mem::take(&mut prepared.desks).with_demo_loopback_desk(&setup.card.desk);
    telemetry::init(&prepared.config.log).context("cannot start logging")?;
    let setup = std::sync::Arc::new(setup);
    let announce = |addr| announce_demo(setup.clone(), addr, send_case);
    let (listener, options) = parts.upstream;
    runtime()?.block_on(async {
        // Either stand-in, kept alive while the gateway runs.
        let _record_service: Box<dyn std::any::Any> = match options {
            crate::demo::samples::StandIn::Fhir(options) => Box::new(
                crate::dev_upstream::DevUpstream::start_on(listener, options)
                    .await
                    .context("cannot start the demo record service")?,
            ),
            crate::demo::samples::StandIn::Dmp(options) => Box::new(
                crate::dev_dmp::DevDmp::start_on(listener, options)
                    .await
                    .context("cannot start the demo record service (dev-dmp)")?,
            ),
        };
        service::run(prepared, announce)
            .await
            .context("demo stopped on an error")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Writes demo.json and prints the banner, once the sample case was sent when asked (so
/// that a script polling for demo.json finds the case at the desk).
fn announce_demo(setup: std::sync::Arc<DemoSetup>, addr: std::net::SocketAddr, send_case: bool) {
    // Called from the service's runtime once the listener is bound: the request is served
    // as soon as the service's accept loop runs, right after this returns.
    tokio::spawn(async move {
        let sent = send_case
            && match setup.send_case(addr).await {
                Ok(()) => {
                    tracing::info!(desk = %setup.integration.desk, "demo case sent");
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "demo case not sent");
                    false
                }
            };
        match setup.write_manifest(addr) {
            Ok(path) => tracing::info!(manifest = %path.display(), "demo manifest written"),
            Err(e) => tracing::error!(error = %e, "cannot write demo.json"),
        }
        out!("{}", setup.banner(addr, sent));
    });
}
