//! The command line, run from your own binary (feature `cli`):
//!
//! ```no_run
//! # fn definitions() -> dagrs_core::Definitions { unimplemented!() }
//! fn main() -> std::process::ExitCode {
//!     dagrs_core::cli::main(definitions())
//! }
//! ```
//!
//! Verbs: `asset list`, `asset materialize --select … [--config FILE] [--json]`, `run list`,
//! `run show ID [--logs]`, `run reexecute ID --from-failure [--config FILE]`, `run cancel ID`,
//! `storage prune`, `job list|launch NAME [--queue]`, `schedule list|start|stop|preview NAME`,
//! `sensor list|start|stop|preview NAME`, `tick list [--schedule|--sensor NAME]`, `daemon`,
//! `asset partitions X`, `backfill launch|list|show|cancel|resume`,
//! `partitions add|list|delete NAME`; `asset materialize` takes `--partition KEY` or
//! `--partition-range START...END`; `asset materialize` and `daemon` take a repeatable
//! `--pool NAME=SLOTS` (the limit of a concurrency pool for that command, see
//! [`Instance::with_pool_limit`]); and with feature `web`: `ui [--bind ADDR] [--token T |
//! --no-auth]` (the web UI) and `dev` (the daemon and the UI in one process). Every verb works through an [`Instance`]: the one given to [`run_with`],
//! else one on the embedded SQLite store (`$DAGRS_HOME/dagrs.db`, or `./.dagrs/dagrs.db`).
//!
//! Logs: every verb takes `--log-format text|json` (stderr), filtered by `DAGRS_LOG` or
//! `RUST_LOG` (default `warn`); unless the process has a `tracing` subscriber already, the
//! command line installs one with that output and the
//! [`CaptureLayer`](crate::observe::CaptureLayer). `asset materialize` and `daemon` take
//! `--metrics-bind ADDR` (Prometheus text on `http://ADDR/metrics`); `ui` and `dev` serve
//! `/metrics`. See [`observe`](crate::observe).
//!
//! Exit codes: 0 success, 1 a run that failed or was cancelled, 2 bad input or an error
//! before anything ran.

mod automation;
mod checks;
mod metrics;
mod partitions;
mod show;
#[cfg(feature = "web")]
mod ui;
mod worker;

use self::show::say;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;

use crate::config::RunConfig;
use crate::definitions::Definitions;
use crate::error::Error;
use crate::event::RunStatus;
use crate::executor::RunOptions;
use crate::instance::{Cancellation, Instance};
use crate::key::RunId;
use crate::observe::LogFormat;
use crate::result::outcomes_from_events;
use crate::storage::{Retention, SqliteStorage};

#[derive(Parser)]
#[command(about = "Materialize and inspect data assets (dagrs)")]
struct Cli {
    /// How log lines are written on stderr: `text`, or `json` (one object per line, with the
    /// run's and step's fields); filter them with DAGRS_LOG or RUST_LOG (default `warn`).
    #[arg(long, global = true, default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

fn parse_log_format(s: &str) -> Result<LogFormat, crate::observe::ObserveError> {
    s.parse()
}

#[derive(Subcommand)]
enum Command {
    /// Assets: list them, materialize them.
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Runs: list, show, re-execute, cancel.
    #[command(subcommand)]
    Run(RunCommand),
    /// The run store.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Asset jobs: list, launch.
    #[command(subcommand)]
    Job(automation::JobCommand),
    /// Cron schedules: list, start, stop, preview.
    #[command(subcommand)]
    Schedule(automation::ScheduleCommand),
    /// Sensors: list, start, stop, preview.
    #[command(subcommand)]
    Sensor(automation::SensorCommand),
    /// Ticks of schedules and sensors.
    #[command(subcommand)]
    Tick(automation::TickCommand),
    /// Backfills of partitions: launch, list, show, cancel, resume.
    #[command(subcommand)]
    Backfill(partitions::BackfillCommand),
    /// Keys of dynamic partitions: add, list, delete.
    #[command(subcommand)]
    Partitions(partitions::PartitionsCommand),
    /// Runs a worker: claims steps of queued runs from the instance's step queue (on
    /// PostgreSQL) and runs them, until Ctrl-C or SIGTERM; `worker list` lists the workers.
    Worker(worker::WorkerArgs),
    /// Runs the daemon: schedules, sensors, backfills and the run queue, until Ctrl-C or
    /// SIGTERM.
    Daemon {
        /// Looks at sensors and the queue at least this often, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval_ms: u64,
        /// Seconds runs get to finish after a stop before they are cancelled.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        grace_s: u64,
        /// Serves the process's metrics in Prometheus' text format on http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_bind: Option<SocketAddr>,
        /// Limits concurrency pool NAME to SLOTS steps at once across the runs this daemon
        /// starts (repeatable; 0: steps of the pool never start).
        #[arg(long = "pool", value_name = "NAME=SLOTS", value_parser = parse_pool)]
        pools: Vec<(String, usize)>,
    },
    /// Serves the web UI (127.0.0.1:3000 by default) until Ctrl-C or SIGTERM.
    #[cfg(feature = "web")]
    Ui(ui::UiArgs),
    /// Runs the daemon and the web UI in one process, until Ctrl-C or SIGTERM.
    #[cfg(feature = "web")]
    Dev {
        #[command(flatten)]
        ui: ui::UiArgs,
        #[command(flatten)]
        daemon: ui::DaemonArgs,
    },
}

/// `NAME=SLOTS` of `--pool`: a valid pool name and a number of slots.
fn parse_pool(value: &str) -> Result<(String, usize), String> {
    let Some((name, slots)) = value.rsplit_once('=') else {
        return Err("expected NAME=SLOTS, e.g. `--pool warehouse=2`".into());
    };
    if let Some(reason) = crate::pool::pool_name_problem(name) {
        return Err(format!("invalid pool name: {reason}"));
    }
    let slots = slots.trim().parse().map_err(|_| {
        format!("SLOTS must be a whole number of slots (0 or more), e.g. `--pool {name}=2`")
    })?;
    Ok((name.to_owned(), slots))
}

/// `instance` with the limits of `--pool`, for one command.
fn with_pools(instance: &Instance, pools: Vec<(String, usize)>) -> Instance {
    pools
        .into_iter()
        .fold(instance.clone(), |instance, (name, slots)| {
            instance.with_pool_limit(name, slots)
        })
}

#[derive(Subcommand)]
enum AssetCommand {
    /// Lists the assets with their last materialization and whether they are stale.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Materializes a selection of assets.
    Materialize {
        /// What to materialize: `name`, `name+`, `+name`, `name+2`, `*`, `group:x`, `tag:k=v`.
        #[arg(long, num_args = 1.., required_unless_present = "all", conflicts_with = "all")]
        select: Vec<String>,
        /// Materializes every asset.
        #[arg(long)]
        all: bool,
        /// Run config file (YAML, JSON or TOML): `assets: { <asset>: { ... } }`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The partition to materialize, of partitioned assets.
        #[arg(long, conflicts_with = "partition_range")]
        partition: Option<String>,
        /// The partitions `START...END` (END excluded) to materialize in one run.
        #[arg(long)]
        partition_range: Option<String>,
        /// Prints the result as JSON, and no progress.
        #[arg(long)]
        json: bool,
        /// Serves the process's metrics in Prometheus' text format on http://ADDR/metrics
        /// while the run lasts.
        #[arg(long, value_name = "ADDR")]
        metrics_bind: Option<SocketAddr>,
        /// Where the run runs: `in-process`, `subprocess` (a child process of this program),
        /// or `queue` (the workers of a PostgreSQL instance, on any machine).
        #[arg(long, value_enum, default_value = "in-process")]
        launcher: worker::LauncherKind,
        /// Limits concurrency pool NAME to SLOTS steps at once (repeatable; 0: steps of the
        /// pool never start).
        #[arg(long = "pool", value_name = "NAME=SLOTS", value_parser = parse_pool)]
        pools: Vec<(String, usize)>,
    },
    /// Shows an asset's checks with their latest results, and the latest evaluations.
    Checks {
        /// The asset.
        asset: String,
        /// How many evaluations to read (1 to 10,000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows an asset's automation condition and why the daemon requested it, or did not.
    Automation {
        /// The asset.
        asset: String,
        /// How many evaluations (1 to 10,000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows a partitioned asset's partitions as ranges: materialized, failed, in
    /// progress, missing.
    Partitions {
        /// The asset.
        asset: String,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RunCommand {
    /// Lists the newest runs.
    List {
        /// How many (1 to 100,000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows one run: its steps, and with `--logs` its event log.
    Show {
        /// The run id.
        id: String,
        /// Prints every event.
        #[arg(long)]
        logs: bool,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs the failed, skipped and cut-off assets of a run again.
    Reexecute {
        /// The run id.
        id: String,
        /// Only what did not succeed (the only mode).
        #[arg(long, required = true)]
        from_failure: bool,
        /// Run config file to use instead of the original run's config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Prints the result as JSON, and no progress.
        #[arg(long)]
        json: bool,
    },
    /// Cancels a running run: its process stops it within a few seconds; waits for it to end.
    Cancel {
        /// The run id.
        id: String,
    },
    /// Drives a queued run in this process (what `--launcher subprocess` starts).
    Execute {
        /// The run id.
        id: String,
        /// Prints the result as JSON, and no progress.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Deletes finished runs beyond the limits, with their events; keeps every asset's
    /// latest materialization and every running run.
    Prune {
        /// Keeps runs younger than this many days (0 to 36,500).
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=36_500))]
        max_age_days: Option<u64>,
        /// Keeps at most this many runs (0 to 1,000,000,000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000_000))]
        max_runs: Option<u32>,
    },
}

/// Runs the command line of `defs` from the process arguments on a new tokio runtime, with
/// runs kept in the embedded SQLite store.
pub fn main(defs: Definitions) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(defs, std::env::args_os())),
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command line of `defs` on `args` (the first is the program name), with runs
/// kept in the embedded SQLite store ([`Instance::sqlite_default`]).
pub async fn run<I, T>(defs: Definitions, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = match parse(args) {
        Ok(command) => command,
        Err(code) => return code,
    };
    match default_instance(&command) {
        Ok(instance) => finish(execute(&defs, &instance, command).await),
        Err(e) => finish(Err(e)),
    }
}

/// The embedded store for `command`: created when missing by commands that write; only
/// read by commands that read (an empty history when there is no store yet, and a
/// read-only store when it cannot be written).
fn default_instance(command: &Command) -> Result<Instance, Error> {
    let path = SqliteStorage::default_path();
    use automation::{JobCommand, ScheduleCommand, SensorCommand};
    let writes = matches!(
        command,
        Command::Asset(AssetCommand::Materialize { .. })
            | Command::Run(RunCommand::Reexecute { .. } | RunCommand::Cancel { .. })
            | Command::Storage(_)
            | Command::Job(JobCommand::Launch { .. })
            | Command::Schedule(ScheduleCommand::Start { .. } | ScheduleCommand::Stop { .. })
            | Command::Sensor(SensorCommand::Start { .. } | SensorCommand::Stop { .. })
            | Command::Daemon { .. }
            | Command::Worker(_)
            | Command::Run(RunCommand::Execute { .. })
            | Command::Backfill(
                partitions::BackfillCommand::Launch { .. }
                    | partitions::BackfillCommand::Cancel { .. }
                    | partitions::BackfillCommand::Resume { .. }
            )
            | Command::Partitions(
                partitions::PartitionsCommand::Add { .. }
                    | partitions::PartitionsCommand::Delete { .. }
            )
    );
    #[cfg(feature = "web")]
    let writes = writes || matches!(command, Command::Ui(_) | Command::Dev { .. });
    if writes {
        return Instance::sqlite(path);
    }
    if !path.exists() {
        return Ok(Instance::ephemeral());
    }
    match SqliteStorage::open(&path) {
        Ok(store) => Ok(Instance::new(store)),
        Err(writable) => match SqliteStorage::open_read_only(&path) {
            Ok(Some(store)) => {
                tracing::warn!("reading {} read-only: {writable}", path.display());
                Ok(Instance::new(store))
            }
            Ok(None) => Ok(Instance::ephemeral()),
            Err(_) => Err(writable),
        },
    }
}

/// Runs the command line of `defs` on `args` (the first is the program name) with runs kept
/// by `instance` (e.g. one on PostgreSQL).
pub async fn run_with<I, T>(defs: Definitions, instance: Instance, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse(args) {
        Ok(command) => finish(execute(&defs, &instance, command).await),
        Err(code) => code,
    }
}

/// The parsed command, or the exit code of `--help`, `--version` or a usage error; installs
/// the command line's log output and capture layer unless the process has a subscriber.
fn parse<I, T>(args: I) -> Result<Command, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 2 } else { 0 })
    })?;
    if let Err(e) = crate::observe::install_cli(cli.log_format) {
        eprintln!("error: {e}");
        return Err(ExitCode::from(2));
    }
    Ok(cli.command)
}

/// Serves metrics on `addr` when given, until the returned task is aborted.
async fn metrics_server(
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ExitCode> {
    let Some(addr) = addr else { return Ok(None) };
    match metrics::serve(addr).await {
        Ok((addr, task)) => {
            eprintln!("metrics on http://{addr}/metrics");
            Ok(Some(task))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn finish(result: Result<ExitCode, Error>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn config_file(path: Option<PathBuf>) -> Result<RunConfig, Error> {
    path.map_or_else(|| Ok(RunConfig::new()), RunConfig::from_file)
}

async fn execute(
    defs: &Definitions,
    instance: &Instance,
    command: Command,
) -> Result<ExitCode, Error> {
    match command {
        Command::Asset(AssetCommand::List { json }) => {
            show::asset_list(&instance.asset_states(defs).await?, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Asset(AssetCommand::Materialize {
            select,
            all,
            config,
            partition,
            partition_range,
            json,
            metrics_bind,
            launcher,
            pools,
        }) => {
            let instance = &with_pools(instance, pools);
            let server = match metrics_server(metrics_bind).await {
                Ok(server) => server,
                Err(code) => return Ok(code),
            };
            let selection = if all {
                "*".to_owned()
            } else {
                select.join(" ")
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let mut options = RunOptions::new()
                .config(config_file(config)?)
                .forward_events(tx);
            if let Some(target) = partition.or(partition_range) {
                options = options.partition(target);
            }
            let shown = if launcher == worker::LauncherKind::InProcess {
                let handle = instance.launch(defs, &selection, options).await?;
                show::follow(handle, rx, json).await
            } else {
                let run_id = launcher.launch(instance, defs, &selection, options).await?;
                show::follow_stored(instance, run_id, json).await
            };
            if let Some(server) = server {
                server.abort();
            }
            shown
        }
        Command::Asset(AssetCommand::Checks { asset, limit, json }) => {
            checks::checks(defs, instance, &asset, limit as usize, json).await
        }
        Command::Asset(AssetCommand::Automation { asset, limit, json }) => {
            checks::automation(defs, instance, &asset, limit as usize, json).await
        }
        Command::Asset(AssetCommand::Partitions { asset, json }) => {
            partitions::asset_partitions(defs, instance, &asset, json).await
        }
        Command::Backfill(command) => partitions::backfill(defs, instance, command).await,
        Command::Partitions(command) => partitions::partitions(instance, command).await,
        Command::Run(RunCommand::List { limit, json }) => {
            show::run_list(&instance.runs(limit as usize).await?, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(RunCommand::Show { id, logs, json }) => {
            let run = instance.run(&RunId::from(id)).await?;
            let events = instance.events(&run.run_id).await?;
            let steps = outcomes_from_events(&run.assets, &events);
            show::run_show(&run, &steps, logs.then_some(events.as_slice()), json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(RunCommand::Reexecute {
            id, config, json, ..
        }) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut options = RunOptions::new().forward_events(tx);
            if config.is_some() {
                options = options.config(config_file(config)?);
            }
            let handle = instance
                .reexecute_from_failure(defs, &RunId::from(id), options)
                .await?;
            show::follow(handle, rx, json).await
        }
        Command::Run(RunCommand::Cancel { id }) => run_cancel(instance, &RunId::from(id)).await,
        Command::Run(RunCommand::Execute { id, json }) => {
            let run_id = RunId::from(id);
            match instance.execute_queued(defs, &run_id).await? {
                Some(handle) => {
                    // Its progress is in its stored log; this prints its result.
                    let (_, rx) = mpsc::unbounded_channel();
                    show::follow(handle, rx, json).await
                }
                None => {
                    eprintln!("run {run_id} was started by another process");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Worker(args) => worker::worker(defs, instance, args).await,
        Command::Job(command) => automation::job(defs, instance, command).await,
        Command::Schedule(command) => automation::schedule(defs, instance, command).await,
        Command::Sensor(command) => automation::sensor(defs, instance, command).await,
        Command::Tick(command) => automation::tick(instance, command).await,
        Command::Daemon {
            interval_ms,
            grace_s,
            metrics_bind,
            pools,
        } => {
            let instance = &with_pools(instance, pools);
            let server = match metrics_server(metrics_bind).await {
                Ok(server) => server,
                Err(code) => return Ok(code),
            };
            let ran = automation::daemon(defs, instance, interval_ms, grace_s).await;
            if let Some(server) = server {
                server.abort();
            }
            ran
        }
        #[cfg(feature = "web")]
        Command::Ui(args) => ui::serve(defs, instance, args, None).await,
        #[cfg(feature = "web")]
        Command::Dev { ui, daemon } => ui::serve(defs, instance, ui, Some(daemon)).await,
        Command::Storage(StorageCommand::Prune {
            max_age_days,
            max_runs,
        }) => {
            if max_age_days.is_none() && max_runs.is_none() {
                eprintln!("error: give --max-age-days and/or --max-runs");
                return Ok(ExitCode::from(2));
            }
            let keep = Retention {
                max_age: max_age_days.map(|d| Duration::from_secs(d * 86_400)),
                max_runs: max_runs.map(|n| n as usize),
            };
            let report = instance.prune(keep).await?;
            say!(
                "pruned {} runs, {} events, {} materialization records, {} ticks",
                report.runs,
                report.events,
                report.materializations,
                report.ticks
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long `run cancel` waits for the run's process to stop it.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

async fn run_cancel(instance: &Instance, run_id: &RunId) -> Result<ExitCode, Error> {
    match instance
        .cancel_run(run_id, "cancelled from the command line")
        .await?
    {
        Cancellation::Cancelled => {
            say!("run {run_id} cancelled before it started");
            return Ok(ExitCode::SUCCESS);
        }
        Cancellation::AlreadyEnded(status) => {
            eprintln!("error: run {run_id} has already ended ({status})");
            return Ok(ExitCode::from(1));
        }
        Cancellation::Requested => {}
    }
    say!("run {run_id}: cancellation requested; waiting for its process to stop it");
    let run = instance.wait_for_end(run_id, CANCEL_WAIT).await?;
    match run.status {
        RunStatus::Cancelled => {
            say!("run {run_id} cancelled");
            Ok(ExitCode::SUCCESS)
        }
        status if status.is_final() => {
            say!("run {run_id} ended before it could be cancelled: {status}");
            Ok(ExitCode::from(1))
        }
        status => {
            say!(
                "run {run_id} is still {status} after {CANCEL_WAIT:?}; its process stops it \
                 at its next await point"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
