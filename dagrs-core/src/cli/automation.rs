//! The verbs of unattended operation: jobs, schedules, sensors, ticks and the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::show::{self, say};
use crate::daemon::Daemon;
use crate::definitions::Definitions;
use crate::error::{Error, Hint};
use crate::event::now;
use crate::executor::RunOptions;
use crate::instance::Instance;
use crate::storage::{InstigatorStatus, TickRecord};

#[derive(Subcommand)]
pub(super) enum JobCommand {
    /// Lists the jobs with their selections and schedules.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs a job now, in this process (or puts it in the daemon's queue with `--queue`).
    Launch {
        /// The job.
        name: String,
        /// Run config file (YAML, JSON or TOML), merged over the job's.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Queues the run for the daemon instead of running it here; prints its id.
        #[arg(long)]
        queue: bool,
        /// Prints the result as JSON, and no progress.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(super) enum ScheduleCommand {
    /// Lists the schedules: job, cron, time zone, on or off, next tick.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turns a schedule on, from now (ticks before now do not run).
    Start {
        /// The schedule.
        name: String,
    },
    /// Turns a schedule off.
    Stop {
        /// The schedule.
        name: String,
    },
    /// Shows a schedule's next ticks.
    Preview {
        /// The schedule.
        name: String,
        /// How many ticks (1 to 1,000).
        #[arg(short = 'n', long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
    },
}

#[derive(Subcommand)]
pub(super) enum SensorCommand {
    /// Lists the sensors: kind, job, interval, on or off.
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turns a sensor on.
    Start {
        /// The sensor.
        name: String,
    },
    /// Turns a sensor off.
    Stop {
        /// The sensor.
        name: String,
    },
    /// Evaluates a sensor once and shows what it would request, launching nothing and
    /// storing no cursor.
    Preview {
        /// The sensor.
        name: String,
    },
}

#[derive(Subcommand)]
pub(super) enum TickCommand {
    /// Lists the newest ticks of schedules and sensors: fired, skipped or failed, and runs.
    List {
        /// Only this schedule's ticks.
        #[arg(long, conflicts_with = "sensor")]
        schedule: Option<String>,
        /// Only this sensor's ticks.
        #[arg(long)]
        sensor: Option<String>,
        /// How many (1 to 100,000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn job(
    defs: &Definitions,
    instance: &Instance,
    command: JobCommand,
) -> Result<ExitCode, Error> {
    match command {
        JobCommand::List { json } => {
            #[derive(Serialize)]
            struct Job<'a> {
                name: &'a str,
                selection: &'a str,
                description: Option<&'a str>,
                schedules: Vec<&'a str>,
            }
            let jobs: Vec<Job<'_>> = defs
                .jobs()
                .iter()
                .map(|job| Job {
                    name: job.name(),
                    selection: job.selection(),
                    description: job.description_text(),
                    schedules: defs
                        .schedules()
                        .iter()
                        .filter(|s| s.job() == job.name())
                        .map(|s| s.name())
                        .collect(),
                })
                .collect();
            if json {
                show::print_json(&jobs);
            } else {
                let rows = jobs.iter().map(|job| {
                    vec![
                        job.name.to_owned(),
                        job.selection.to_owned(),
                        job.schedules.join(", "),
                        job.description.unwrap_or_default().to_owned(),
                    ]
                });
                show::rows(&["job", "selection", "schedules", "description"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Launch {
            name,
            config,
            queue,
            json,
        } => {
            let mut options = RunOptions::new();
            if let Some(path) = config {
                options = options.config(crate::config::RunConfig::from_file(path)?);
            }
            if queue {
                let run_id = instance.submit_job(defs, &name, options).await?;
                say!("queued run {run_id} of job {name}; a daemon starts it");
                return Ok(ExitCode::SUCCESS);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let handle = instance
                .launch_job(defs, &name, options.forward_events(tx))
                .await?;
            show::follow(handle, rx, json).await
        }
    }
}

fn unknown(defs: &Definitions, name: &str) -> Error {
    let names = defs.schedules().iter().map(|s| s.name());
    let names = names.chain(defs.sensors().iter().map(|s| s.name()));
    Error::UnknownInstigator {
        name: crate::text::bounded(name, crate::text::ECHO_LIMIT).into_owned(),
        hint: Hint::closest(name, names),
    }
}

fn status_of(
    states: &std::collections::BTreeMap<String, InstigatorStatus>,
    name: &str,
    default: InstigatorStatus,
) -> InstigatorStatus {
    states.get(name).copied().unwrap_or(default)
}

pub(super) async fn schedule(
    defs: &Definitions,
    instance: &Instance,
    command: ScheduleCommand,
) -> Result<ExitCode, Error> {
    let find = |name: &str| defs.schedule(name).ok_or_else(|| unknown(defs, name));
    match command {
        ScheduleCommand::List { json } => {
            let states = instance.storage().instigator_states().await?;
            #[derive(Serialize)]
            struct Schedule<'a> {
                name: &'a str,
                job: &'a str,
                cron: &'a str,
                timezone: &'a str,
                status: InstigatorStatus,
                next_tick: Option<String>,
                description: Option<&'a str>,
            }
            let list: Vec<Schedule<'_>> = defs
                .schedules()
                .iter()
                .map(|s| Schedule {
                    name: s.name(),
                    job: s.job(),
                    cron: s.cron(),
                    timezone: s.timezone_name(),
                    status: status_of(&states, s.name(), s.default_status()),
                    next_tick: s
                        .ticks_after(now())
                        .and_then(|mut ticks| ticks.next())
                        .map(|t| t.to_rfc3339()),
                    description: s.description_text(),
                })
                .collect();
            if json {
                show::print_json(&list);
            } else {
                let rows = list.iter().map(|s| {
                    vec![
                        s.name.to_owned(),
                        s.job.to_owned(),
                        s.cron.to_owned(),
                        s.timezone.to_owned(),
                        s.status.to_string(),
                        s.next_tick.clone().unwrap_or_default(),
                    ]
                });
                let header = ["schedule", "job", "cron", "timezone", "status", "next tick"];
                show::rows(&header, rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Start { name } => {
            let schedule = find(&name)?;
            instance
                .set_instigator_status(schedule.name(), InstigatorStatus::Running)
                .await?;
            say!("schedule {name} started; its next tick runs when a daemon is up");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Stop { name } => {
            find(&name)?;
            instance
                .set_instigator_status(&name, InstigatorStatus::Stopped)
                .await?;
            say!("schedule {name} stopped");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Preview { name, count } => {
            let schedule = find(&name)?;
            let ticks = schedule.ticks_after(now()).into_iter().flatten();
            for tick in ticks.take(usize::from(count)) {
                let local = schedule.local_time(tick);
                say!("{}  ({local})", tick.format("%Y-%m-%d %H:%M:%S UTC"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn sensor(
    defs: &Definitions,
    instance: &Instance,
    command: SensorCommand,
) -> Result<ExitCode, Error> {
    let find = |name: &str| defs.sensor(name).ok_or_else(|| unknown(defs, name));
    match command {
        SensorCommand::List { json } => {
            let states = instance.storage().instigator_states().await?;
            #[derive(Serialize)]
            struct Sensor<'a> {
                name: &'a str,
                kind: &'a str,
                job: Option<&'a str>,
                minimum_interval_s: f64,
                status: InstigatorStatus,
                description: Option<&'a str>,
            }
            let list: Vec<Sensor<'_>> = defs
                .sensors()
                .iter()
                .map(|s| Sensor {
                    name: s.name(),
                    kind: s.kind_name(),
                    job: s.job_name(),
                    minimum_interval_s: s.interval().as_secs_f64(),
                    status: status_of(&states, s.name(), s.default_status()),
                    description: s.description_text(),
                })
                .collect();
            if json {
                show::print_json(&list);
            } else {
                let rows = list.iter().map(|s| {
                    vec![
                        s.name.to_owned(),
                        s.kind.to_owned(),
                        s.job.unwrap_or("-").to_owned(),
                        format!("{:?}", Duration::from_secs_f64(s.minimum_interval_s)),
                        s.status.to_string(),
                    ]
                });
                show::rows(&["sensor", "kind", "job", "interval", "status"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        SensorCommand::Start { name } => {
            find(&name)?;
            instance
                .set_instigator_status(&name, InstigatorStatus::Running)
                .await?;
            say!("sensor {name} started; a daemon evaluates it");
            Ok(ExitCode::SUCCESS)
        }
        SensorCommand::Stop { name } => {
            find(&name)?;
            instance
                .set_instigator_status(&name, InstigatorStatus::Stopped)
                .await?;
            say!("sensor {name} stopped");
            Ok(ExitCode::SUCCESS)
        }
        SensorCommand::Preview { name } => {
            find(&name)?;
            let daemon = Daemon::new(instance.clone(), defs.clone());
            let result = daemon.preview_sensor(&name).await?;
            for request in result.requests() {
                say!("would request: {request}");
            }
            if let Some(reason) = result.skip_reason() {
                say!("skips: {reason}");
            }
            if let Some(cursor) = result.new_cursor() {
                say!("new cursor: {cursor}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn tick(instance: &Instance, command: TickCommand) -> Result<ExitCode, Error> {
    let TickCommand::List {
        schedule,
        sensor,
        limit,
        json,
    } = command;
    let name = schedule.or(sensor);
    let ticks: Vec<TickRecord> = instance
        .storage()
        .ticks(name.as_deref(), limit as usize)
        .await?;
    if json {
        show::print_json(&ticks);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = ticks.iter().map(|t| {
        let runs: Vec<String> = t.run_ids.iter().map(ToString::to_string).collect();
        vec![
            t.tick.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            t.name.clone(),
            t.kind.to_string(),
            t.status.to_string(),
            runs.join(", "),
            t.reason.clone().unwrap_or_default(),
        ]
    });
    show::rows(&["tick", "name", "kind", "status", "runs", "reason"], rows);
    Ok(ExitCode::SUCCESS)
}

/// Runs the daemon until Ctrl-C, SIGTERM or SIGHUP; then lets runs finish within the grace
/// period.
pub(super) async fn daemon(
    defs: &Definitions,
    instance: &Instance,
    interval_ms: u64,
    grace_s: u64,
) -> Result<ExitCode, Error> {
    let daemon = Daemon::new(instance.clone(), defs.clone())
        .with_interval(Duration::from_millis(interval_ms))
        .with_grace(Duration::from_secs(grace_s));
    let shutdown = CancellationToken::new();
    let signal = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let signal = show::interrupted().await;
            eprintln!("{signal}: the daemon stops (runs get {grace_s} s to finish)");
            shutdown.cancel();
        }
    });
    let running = defs.schedules().len() + defs.sensors().len();
    say!(
        "daemon: {running} schedules and sensors, queue of {} runs at once; Ctrl-C stops it",
        instance.run_queue().max_concurrent_runs()
    );
    let result = daemon.run(shutdown).await;
    signal.abort();
    result?;
    say!("daemon stopped");
    Ok(ExitCode::SUCCESS)
}
