//! What the command line prints: tables for people, JSON for machines, and a run's progress.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::event::{Event, EventKind, Metadata, StepStatus};
use crate::executor::RunHandle;
use crate::result::{RunResult, StepOutcome};
use crate::state::AssetState;
use crate::storage::RunRecord;

pub(super) const TIME: &str = "%Y-%m-%d %H:%M:%S UTC";

/// Whether stdout was closed by its reader (`run list | head`): further output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout; a closed pipe ends output quietly instead of a panic.
pub(super) fn write_line(line: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

/// `println!` for the command line: see [`write_line`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::show::write_line(format_args!($($arg)*))
    };
}
pub(super) use say;

/// A table with no borders, columns aligned, as `ls -l` prints.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    table
}

/// Prints `rows` under `header` as a table.
pub(super) fn rows(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut out = table(header);
    for row in rows {
        out.add_row(row);
    }
    print_table(&out);
}

fn print_table(table: &Table) {
    for line in table.lines() {
        say!("{}", line.trim_end());
    }
}

pub(super) fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => say!("{text}"),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}

fn duration(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{d:.1?}"))
}

pub(super) fn asset_list(states: &[AssetState], json: bool) {
    if json {
        return print_json(&states);
    }
    let mut out = table(&["asset", "group", "last materialized", "stale"]);
    for state in states {
        let last = state
            .latest
            .as_ref()
            .map_or_else(|| "-".into(), |m| m.timestamp.format(TIME).to_string());
        let stale = match &state.stale {
            Some(reason) => format!("yes ({reason})"),
            None => "no".into(),
        };
        out.add_row(vec![
            state.key.to_string(),
            state.group.clone().unwrap_or_else(|| "-".into()),
            last,
            stale,
        ]);
    }
    print_table(&out);
}

pub(super) fn run_list(runs: &[RunRecord], json: bool) {
    if json {
        return print_json(&runs);
    }
    let mut out = table(&["run", "status", "started", "duration", "selection"]);
    if let Some(column) = out.column_mut(3) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    for run in runs {
        let took = run
            .ended_at
            .map(|end| (end - run.started_at).to_std().unwrap_or_default());
        out.add_row(vec![
            run.run_id.to_string(),
            run.status.to_string(),
            run.started_at.format(TIME).to_string(),
            duration(took),
            crate::text::bounded(&run.selection, 60).into_owned(),
        ]);
        if let Some(failure) = &run.failure {
            out.add_row(vec![String::new(), String::new(), failure.clone()]);
        }
    }
    print_table(&out);
}

pub(super) fn run_show(
    run: &RunRecord,
    steps: &[StepOutcome],
    events: Option<&[Event]>,
    json: bool,
) {
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            run: &'a RunRecord,
            steps: Vec<StepSummary<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            events: Option<&'a [Event]>,
        }
        return print_json(&Shown {
            run,
            steps: steps.iter().map(StepSummary::of).collect(),
            events,
        });
    }
    say!("run {}", run.run_id);
    say!("  status:    {}", run.status);
    say!("  selection: {}", run.selection);
    say!("  started:   {}", run.started_at.format(TIME));
    if let Some(ended) = run.ended_at {
        say!("  ended:     {}", ended.format(TIME));
    }
    say!("  process:   {}", run.owner);
    if let Some(parent) = &run.parent_run_id {
        say!("  re-executes: {parent}");
    }
    if let Some(failure) = &run.failure {
        say!("  failure:   {failure}");
    }
    let mut out = table(&["asset", "status", "attempts", "duration", "error"]);
    for step in steps {
        out.add_row(vec![
            step.key.to_string(),
            step.status.to_string(),
            step.attempts.to_string(),
            duration(step.duration),
            step.error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ]);
    }
    print_table(&out);
    if let Some(events) = events {
        for event in events {
            say!(
                "{:>5}  {}  {:<20}  {}",
                event.seq,
                event.timestamp.format("%H:%M:%S%.3f"),
                event.asset.as_deref().unwrap_or("-"),
                event.kind
            );
        }
    }
}

/// One step of a run, as JSON shows it.
#[derive(Serialize)]
struct StepSummary<'a> {
    asset: &'a str,
    status: StepStatus,
    attempts: u32,
    duration_ms: Option<f64>,
    metadata: &'a Metadata,
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

/// A run's result, as JSON shows it.
#[derive(Serialize)]
struct RunSummary<'a> {
    run_id: &'a str,
    status: crate::event::RunStatus,
    steps: Vec<StepSummary<'a>>,
}

/// Shows a run's progress until it ends (a progress bar on a terminal, plain lines
/// otherwise, nothing with `--json`), then its result.
pub(super) async fn follow(
    handle: RunHandle,
    mut events: mpsc::UnboundedReceiver<Event>,
    json: bool,
) -> Result<ExitCode, Error> {
    let cancel = handle.cancellation_token();
    let interrupt = tokio::spawn(async move {
        let signal = interrupted().await;
        eprintln!("{signal}: cancelling the run");
        cancel.cancel();
    });
    let run_id = handle.run_id().clone();
    let show = tokio::spawn(async move {
        let mut progress = Progress::new(json);
        while let Some(event) = events.recv().await {
            progress.show(&run_id, &event);
        }
        progress.done();
    });
    let result = handle.wait().await;
    interrupt.abort();
    let _ = show.await;
    Ok(report(&result?, json))
}

/// Shows the progress of run `run_id`, driven elsewhere (a worker, a child process), from
/// its stored events until it ends, then its result; Ctrl-C asks for its cancellation.
pub(super) async fn follow_stored(
    instance: &crate::instance::Instance,
    run_id: crate::key::RunId,
    json: bool,
) -> Result<ExitCode, Error> {
    let interrupt = tokio::spawn({
        let (instance, run_id) = (instance.clone(), run_id.clone());
        async move {
            let signal = interrupted().await;
            eprintln!("{signal}: cancelling the run");
            if let Err(e) = instance.cancel_run(&run_id, "interrupted").await {
                eprintln!("error: {e}");
            }
        }
    });
    let mut progress = Progress::new(json);
    let mut after = None;
    let mut last_look = false;
    loop {
        let events = instance.storage().events(&run_id, after).await?;
        let ended = events.iter().any(Event::is_final);
        for event in &events {
            progress.show(&run_id, event);
            after = Some(event.seq);
        }
        if ended || last_look {
            break;
        }
        if events.is_empty() {
            // A run can end without a final event (its process died before starting it):
            // then one more look at its log, and done.
            last_look = instance.run(&run_id).await?.status.is_final();
            if !last_look {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    progress.done();
    interrupt.abort();
    let run = instance.run(&run_id).await?;
    let events = instance.events(&run_id).await?;
    let result = RunResult {
        steps: crate::result::outcomes_from_events(&run.assets, &events),
        run_id,
        status: run.status,
        outputs: Default::default(),
        values: Default::default(),
        storage: std::sync::Arc::clone(instance.storage()),
    };
    Ok(report(&result, json))
}

/// Prints how a run ended; its exit code.
fn report(result: &RunResult, json: bool) -> ExitCode {
    if json {
        print_json(&RunSummary {
            run_id: result.run_id().as_str(),
            status: result.status(),
            steps: result.steps().iter().map(StepSummary::of).collect(),
        });
    } else {
        say!("{}", result.to_string().trim_end());
    }
    if result.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP (a terminal closed, a service stopped) and names it;
/// each is the same request: cancel the run, record how it ended, exit.
pub(super) async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated (SIGTERM)",
            _ = hangup.recv() => "hung up (SIGHUP)",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}

/// Progress of a run: a bar on a terminal, lines otherwise, nothing for JSON.
struct Progress {
    json: bool,
    terminal: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(json: bool) -> Self {
        Progress {
            json,
            terminal: !json && std::io::stdout().is_terminal(),
            bar: None,
        }
    }

    fn show(&mut self, run_id: &crate::key::RunId, event: &Event) {
        if self.json {
            return;
        }
        if let EventKind::RunStarted { selection } = &event.kind {
            say!("run {run_id}: {} assets", selection.len());
            if self.terminal {
                let bar = indicatif::ProgressBar::new(selection.len() as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                ) {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bar = Some(bar);
            }
            return;
        }
        let Some(asset) = &event.asset else { return };
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
        match &self.bar {
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
            None => say!("{line}"),
        }
    }

    fn done(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
