//! The command line, run from your own binary:
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
//! `storage prune`. Runs are recorded in the definitions' storage when one was chosen, else
//! in the embedded SQLite store (`$DAGRS_HOME/dagrs.db`, or `./.dagrs/dagrs.db`).
//!
//! Exit codes: 0 success, 1 a run that failed or was cancelled, 2 bad input or an error
//! before anything ran.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::RunConfig;
use crate::definitions::Definitions;
use crate::error::Error;
use crate::event::{now, Event, EventKind, RunStatus, StepStatus};
use crate::executor::{launch, reexecute_from_failure, RunHandle, RunOptions};
use crate::key::RunId;
use crate::result::{outcomes_from_events, RunResult, StepOutcome};
use crate::state::asset_states;
use crate::storage::{recover_abandoned_runs, Retention, SqliteStorage, LEASE};

#[derive(Parser)]
#[command(about = "Materialize and inspect data assets (dagrs)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// Prints the result as JSON, and no progress.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RunCommand {
    /// Lists the newest runs.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
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
    /// Cancels a running run (its process stops it within a few seconds).
    Cancel {
        /// The run id.
        id: String,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Deletes finished runs beyond the limits, with their events; keeps every asset's
    /// latest materialization and every running run.
    Prune {
        /// Keeps runs younger than this many days.
        #[arg(long)]
        max_age_days: Option<u64>,
        /// Keeps at most this many runs.
        #[arg(long)]
        max_runs: Option<usize>,
    },
}

/// Runs the command line of `defs` from the process arguments on a new tokio runtime.
pub fn main(defs: Definitions) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(defs, std::env::args_os())),
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command line of `defs` on `args` (the first is the program name).
pub async fn run<I, T>(defs: Definitions, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match execute(defs, cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn execute(defs: Definitions, command: Command) -> Result<ExitCode, Error> {
    let defs = if defs.has_chosen_storage() {
        defs
    } else {
        let store = SqliteStorage::open_default()?;
        defs.with_storage(Arc::new(store))
    };
    match command {
        Command::Asset(AssetCommand::List { json }) => asset_list(&defs, json).await,
        Command::Asset(AssetCommand::Materialize {
            select,
            all,
            config,
            json,
        }) => {
            let selection = if all {
                "*".to_owned()
            } else {
                select.join(" ")
            };
            let config = match config {
                Some(path) => RunConfig::from_file(path)?,
                None => RunConfig::new(),
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let options = RunOptions::new().config(config).forward_events(tx);
            let handle = launch(&defs, &selection, options).await?;
            follow(handle, rx, json).await
        }
        Command::Run(RunCommand::List { limit, json }) => run_list(&defs, limit, json).await,
        Command::Run(RunCommand::Show { id, logs, json }) => run_show(&defs, &id, logs, json).await,
        Command::Run(RunCommand::Reexecute {
            id, config, json, ..
        }) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut options = RunOptions::new().forward_events(tx);
            if let Some(path) = config {
                options = options.config(RunConfig::from_file(path)?);
            }
            let handle = reexecute_from_failure(&defs, &RunId::from(id), options).await?;
            follow(handle, rx, json).await
        }
        Command::Run(RunCommand::Cancel { id }) => run_cancel(&defs, &id).await,
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
                max_runs,
            };
            let report = defs.storage().prune(keep, now()).await?;
            println!(
                "pruned {} runs, {} events, {} materialization records",
                report.runs, report.events, report.materializations
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Shows a run's progress until it ends (a progress bar on a terminal, plain lines
/// otherwise, nothing with `--json`), then its result.
async fn follow(
    handle: RunHandle,
    mut events: mpsc::UnboundedReceiver<Event>,
    json: bool,
) -> Result<ExitCode, Error> {
    let cancel = handle.cancellation_token();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: cancelling the run");
            cancel.cancel();
        }
    });
    let run_id = handle.run_id().clone();
    let show = tokio::spawn(async move {
        let terminal = !json && std::io::stdout().is_terminal();
        let mut bar: Option<indicatif::ProgressBar> = None;
        while let Some(event) = events.recv().await {
            if json {
                continue;
            }
            if let EventKind::RunStarted { selection } = &event.kind {
                println!("run {run_id}: {} assets", selection.len());
                if terminal {
                    let progress = indicatif::ProgressBar::new(selection.len() as u64);
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                    ) {
                        progress.set_style(style);
                    }
                    progress.enable_steady_tick(Duration::from_millis(100));
                    bar = Some(progress);
                }
                continue;
            }
            let Some(asset) = &event.asset else { continue };
            let finished = matches!(
                event.kind,
                EventKind::StepSucceeded { .. }
                    | EventKind::StepSkipped { .. }
                    | EventKind::StepCancelled { .. }
                    | EventKind::StepFailed {
                        will_retry: false,
                        ..
                    }
            );
            let line = format!("  {asset}: {}", event.kind);
            match &bar {
                Some(bar) => {
                    if matches!(event.kind, EventKind::StepStarted { .. }) {
                        bar.set_message(asset.to_string());
                    } else if finished || !matches!(event.kind, EventKind::Materialization { .. }) {
                        bar.println(line);
                    }
                    if finished {
                        bar.inc(1);
                    }
                }
                None => println!("{line}"),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    });
    let result = handle.wait().await;
    interrupt.abort();
    let _ = show.await;
    let result = result?;
    if json {
        print_json(&RunSummary::of(&result));
    } else {
        print!("{result}");
    }
    let _ = std::io::stdout().flush();
    Ok(if result.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Serialize)]
struct StepSummary<'a> {
    asset: &'a str,
    status: StepStatus,
    attempts: u32,
    duration_ms: Option<f64>,
    metadata: &'a crate::event::Metadata,
    error: Option<String>,
}

impl<'a> StepSummary<'a> {
    fn of(step: &'a StepOutcome) -> Self {
        StepSummary {
            asset: &step.key,
            status: step.status,
            attempts: step.attempts,
            duration_ms: step.duration.map(|d| d.as_secs_f64() * 1000.0),
            metadata: &step.metadata,
            error: step.error.as_ref().map(ToString::to_string),
        }
    }
}

#[derive(Serialize)]
struct RunSummary<'a> {
    run_id: &'a str,
    status: RunStatus,
    steps: Vec<StepSummary<'a>>,
}

impl<'a> RunSummary<'a> {
    fn of(result: &'a RunResult) -> Self {
        RunSummary {
            run_id: result.run_id().as_str(),
            status: result.status(),
            steps: result.steps().iter().map(StepSummary::of).collect(),
        }
    }
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}

async fn asset_list(defs: &Definitions, json: bool) -> Result<ExitCode, Error> {
    let states = asset_states(defs).await?;
    if json {
        print_json(&states);
        return Ok(ExitCode::SUCCESS);
    }
    let width = states.iter().map(|s| s.key.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<width$}  {:<12}  {:<24}  stale",
        "asset", "group", "last materialized"
    );
    for state in &states {
        let last = state
            .latest
            .as_ref()
            .map(|m| m.timestamp.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into());
        let stale = match &state.stale {
            Some(reason) => format!("yes ({reason})"),
            None => "no".into(),
        };
        println!(
            "{:<width$}  {:<12}  {:<24}  {stale}",
            state.key,
            state.group.as_deref().unwrap_or("-"),
            last
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_list(defs: &Definitions, limit: usize, json: bool) -> Result<ExitCode, Error> {
    recover_abandoned_runs(&**defs.storage(), LEASE, now()).await?;
    let runs = defs.storage().runs(limit).await?;
    if json {
        print_json(&runs);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<9}  {:<23}  {:>9}  selection",
        "run", "status", "started", "duration"
    );
    for run in &runs {
        let duration = run
            .ended_at
            .map(|end| {
                format!(
                    "{:.1?}",
                    (end - run.started_at).to_std().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<36}  {:<9}  {:<23}  {:>9}  {}",
            run.run_id,
            format!("{:?}", run.status).to_lowercase(),
            run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            duration,
            run.selection
        );
        if let Some(failure) = &run.failure {
            println!("{:<36}  {failure}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `id` from storage, after marking abandoned runs as failed.
async fn stored_run(defs: &Definitions, id: &str) -> Result<crate::storage::RunRecord, Error> {
    recover_abandoned_runs(&**defs.storage(), LEASE, now()).await?;
    defs.storage()
        .run(&RunId::from(id))
        .await?
        .ok_or_else(|| Error::RunNotFound(id.to_owned()))
}

async fn run_show(defs: &Definitions, id: &str, logs: bool, json: bool) -> Result<ExitCode, Error> {
    let run = stored_run(defs, id).await?;
    let run_id = run.run_id.clone();
    let events = defs.storage().events(&run_id, None).await?;
    let steps = outcomes_from_events(&run.assets, &events);
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            run: &'a crate::storage::RunRecord,
            steps: Vec<StepSummary<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            events: Option<&'a [Event]>,
        }
        print_json(&Shown {
            run: &run,
            steps: steps.iter().map(StepSummary::of).collect(),
            events: logs.then_some(events.as_slice()),
        });
        return Ok(ExitCode::SUCCESS);
    }
    println!("run {}", run.run_id);
    println!(
        "  status:    {}",
        format!("{:?}", run.status).to_lowercase()
    );
    println!("  selection: {}", run.selection);
    println!(
        "  started:   {}",
        run.started_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    if let Some(ended) = run.ended_at {
        println!("  ended:     {}", ended.format("%Y-%m-%d %H:%M:%S%.3f UTC"));
    }
    println!("  process:   {}", run.owner);
    if let Some(parent) = &run.parent_run_id {
        println!("  re-executes: {parent}");
    }
    if let Some(failure) = &run.failure {
        println!("  failure:   {failure}");
    }
    for step in &steps {
        let status = format!("{:?}", step.status).to_lowercase();
        print!(
            "  {:<24} {:<9} attempts {}",
            step.key, status, step.attempts
        );
        if let Some(error) = &step.error {
            print!("  error: {error}");
        }
        println!();
    }
    if logs {
        for event in &events {
            println!(
                "{:>5}  {}  {:<20}  {}",
                event.seq,
                event.timestamp.format("%H:%M:%S%.3f"),
                event.asset.as_deref().unwrap_or("-"),
                event.kind
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_cancel(defs: &Definitions, id: &str) -> Result<ExitCode, Error> {
    let run = stored_run(defs, id).await?;
    let cancelled = defs
        .storage()
        .finish_run(
            &run.run_id,
            RunStatus::Cancelled,
            now(),
            Some("cancelled from the command line"),
        )
        .await?;
    if cancelled {
        println!("run {id} cancelled; its process stops its steps within a few seconds");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: run {id} has already ended ({})",
            format!("{:?}", run.status).to_lowercase()
        );
        Ok(ExitCode::from(1))
    }
}
