//! `worker` (claims and runs steps of queued runs until stopped), `worker list`, and the
//! launchers `asset materialize --launcher` picks from.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::show::{self, say};
use crate::definitions::Definitions;
use crate::error::Error;
use crate::executor::RunOptions;
use crate::instance::Instance;
use crate::worker::launcher::{InProcessLauncher, QueueLauncher, RunLauncher, SubprocessLauncher};
use crate::worker::Worker;

/// Where `asset materialize` runs the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum LauncherKind {
    /// In this process (the default).
    InProcess,
    /// In a child process of its own: this program again, as `run execute RUN_ID`.
    Subprocess,
    /// Step by step, by the workers of the instance's step queue (`worker`), on any machine.
    Queue,
}

impl LauncherKind {
    /// Starts the run with this launcher and returns its id.
    pub(super) async fn launch(
        self,
        instance: &Instance,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<crate::key::RunId, Error> {
        let launcher: Box<dyn RunLauncher> = match self {
            LauncherKind::InProcess => Box::new(InProcessLauncher),
            LauncherKind::Subprocess => Box::new(SubprocessLauncher::current_exe()?),
            LauncherKind::Queue => Box::new(QueueLauncher),
        };
        launcher.launch(instance, defs, selection, options).await
    }
}

/// `worker`: runs a worker; `worker list`: lists them.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct WorkerArgs {
    #[command(subcommand)]
    command: Option<WorkerCommand>,
    /// Steps run at once (1 to 10,000).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Seconds a claimed step stays this worker's without a heartbeat: after a crash, another
    /// worker runs it again after this long (1 to 3,600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    lease_s: u64,
    /// Seconds in-flight steps get to finish after Ctrl-C or SIGTERM before they are handed
    /// back (0 to 86,400).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    grace_s: u64,
    /// Limits concurrency pool NAME to SLOTS claimed steps at once, across all workers
    /// (repeatable; recorded in the queue, where the last worker to start sets it).
    #[arg(long = "pool", value_name = "NAME=SLOTS", value_parser = super::parse_pool)]
    pools: Vec<(String, usize)>,
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Lists the workers: id, host, pid, steps claimed, last heartbeat.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `worker` or `worker list`.
pub(super) async fn worker(
    defs: &Definitions,
    instance: &Instance,
    args: WorkerArgs,
) -> Result<ExitCode, Error> {
    if let Some(WorkerCommand::List { json }) = args.command {
        return list(instance, json).await;
    }
    let instance = &super::with_pools(instance, args.pools);
    let worker = Worker::new(instance, defs.clone())?
        .concurrency(args.concurrency as usize)
        .lease(Duration::from_secs(args.lease_s))
        .grace(Duration::from_secs(args.grace_s));
    let stop = CancellationToken::new();
    let signal = tokio::spawn({
        let stop = stop.clone();
        let grace = args.grace_s;
        async move {
            let signal = show::interrupted().await;
            eprintln!("{signal}: the worker stops (its steps get {grace} s to finish)");
            stop.cancel();
        }
    });
    eprintln!("worker {} waiting for steps", worker.id());
    let ran = worker.run(stop).await;
    signal.abort();
    ran.map(|()| ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct WorkerRow<'a> {
    id: &'a str,
    host: &'a str,
    pid: u32,
    claimed: u32,
    started_at: chrono::DateTime<chrono::Utc>,
    heartbeat_at: chrono::DateTime<chrono::Utc>,
}

async fn list(instance: &Instance, json: bool) -> Result<ExitCode, Error> {
    let queue = instance.step_queue().ok_or(Error::NoStepQueue)?;
    let workers = queue.workers().await?;
    if json {
        let rows: Vec<WorkerRow<'_>> = workers
            .iter()
            .map(|w| WorkerRow {
                id: &w.id,
                host: &w.host,
                pid: w.pid,
                claimed: w.claimed,
                started_at: w.started_at,
                heartbeat_at: w.heartbeat_at,
            })
            .collect();
        show::print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        say!("no workers");
        return Ok(ExitCode::SUCCESS);
    }
    show::rows(
        &["ID", "HOST", "PID", "CLAIMED", "LAST HEARTBEAT"],
        workers.iter().map(|w| {
            vec![
                w.id.clone(),
                w.host.clone(),
                w.pid.to_string(),
                w.claimed.to_string(),
                w.heartbeat_at.format(show::TIME).to_string(),
            ]
        }),
    );
    Ok(ExitCode::SUCCESS)
}
