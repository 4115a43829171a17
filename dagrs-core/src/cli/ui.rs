//! The `ui` and `dev` verbs (features `cli` and `web`): the web UI, alone or beside the
//! daemon in one process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::show::{self, say};
use crate::daemon::Daemon;
use crate::definitions::Definitions;
use crate::error::Error;
use crate::instance::Instance;
use crate::web::{self, UiOptions};

/// The environment variable that gives the UI's token when `--token` does not.
pub(super) const TOKEN_VAR: &str = "DAGRS_UI_TOKEN";

/// How long open pages (live logs) get to close after a stop.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Where and for whom the UI is served.
#[derive(Args, Debug)]
pub(super) struct UiArgs {
    /// The address to listen on; any other than a loopback address needs --token or
    /// --no-auth.
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: SocketAddr,
    /// The token every request must carry (default: $DAGRS_UI_TOKEN); open the UI once
    /// with `?token=<token>`.
    #[arg(long)]
    token: Option<String>,
    /// Serves a non-loopback address without a token: anyone who can reach it can launch
    /// and cancel runs.
    #[arg(long)]
    no_auth: bool,
}

/// The daemon's settings of `dev`.
#[derive(Args, Debug)]
pub(super) struct DaemonArgs {
    /// Looks at sensors and the queue at least this often, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub(super) interval_ms: u64,
    /// Seconds runs get to finish after a stop before they are cancelled.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub(super) grace_s: u64,
}

/// Serves the UI until Ctrl-C or SIGTERM; with `daemon`, runs the daemon beside it.
pub(super) async fn serve(
    defs: &Definitions,
    instance: &Instance,
    args: UiArgs,
    daemon: Option<DaemonArgs>,
) -> Result<ExitCode, Error> {
    let token = args
        .token
        .or_else(|| std::env::var(TOKEN_VAR).ok())
        .filter(|t| !t.is_empty());
    if let Err(e) = web::check_bind(args.bind, token.as_deref(), args.no_auth) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    if token.is_none() && !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: serving the UI on {} without a token (--no-auth): anyone who can reach \
             it can launch and cancel runs",
            args.bind
        );
    }
    if let Err(e) = crate::observe::PrometheusRecorder::install() {
        eprintln!("warning: /metrics is off: {e}");
    }
    let options = UiOptions {
        token: token.clone(),
        ..UiOptions::default()
    };
    let shutdown = CancellationToken::new();
    let app = web::router_with(instance.clone(), defs.clone(), options);
    let server = match web::serve(args.bind, app, shutdown.clone()).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let url = match &token {
        Some(token) => format!("http://{}/?token={token}", server.addr()),
        None => format!("http://{}/", server.addr()),
    };
    let daemon = daemon.map(|d| {
        let running = defs.schedules().len() + defs.sensors().len();
        say!("daemon: {running} schedules and sensors");
        let daemon = Daemon::new(instance.clone(), defs.clone())
            .with_interval(Duration::from_millis(d.interval_ms))
            .with_grace(Duration::from_secs(d.grace_s));
        let shutdown = shutdown.clone();
        tokio::spawn(async move { daemon.run(shutdown).await })
    });
    say!("dagrs UI on {url} (Ctrl-C stops it)");
    let signal = show::interrupted().await;
    eprintln!("{signal}: stopping");
    shutdown.cancel();
    if tokio::time::timeout(CLOSE_WAIT, server.wait())
        .await
        .is_err()
    {
        eprintln!("open pages did not close within {CLOSE_WAIT:?}; closing them");
    }
    if let Some(daemon) = daemon {
        match daemon.await {
            Ok(result) => result?,
            Err(e) => eprintln!("error: the daemon stopped abnormally: {e}"),
        }
    }
    say!("stopped");
    Ok(ExitCode::SUCCESS)
}
