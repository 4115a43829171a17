//! The verbs of partitions: `asset partitions`, `backfill ...` and `partitions ...` (dynamic
//! keys).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::show::{self, say};
use crate::backfill::{BackfillPolicy, BackfillRecord, BackfillRequest};
use crate::definitions::Definitions;
use crate::error::Error;
use crate::instance::Instance;
use crate::partition::{PartitionSet, PartitionsDefinition};
use crate::text::LIST_LIMIT;

/// The most ranges listed per status before `... and N more`.
const RANGES_SHOWN: usize = 4 * LIST_LIMIT;

#[derive(Subcommand)]
pub(super) enum BackfillCommand {
    /// Launches a backfill of partitions of a selection and runs it here until it ends
    /// (with `--detach`, leaves it to the daemon).
    Launch {
        /// What to backfill: partitioned assets of one partitions definition.
        #[arg(long, num_args = 1.., required = true)]
        select: Vec<String>,
        /// A partition key (repeatable).
        #[arg(long)]
        partition: Vec<String>,
        /// A range `START...END`, END excluded (repeatable).
        #[arg(long)]
        partition_range: Vec<String>,
        /// Every partition that exists now.
        #[arg(long)]
        all: bool,
        /// One run per contiguous range (assets get the whole range).
        #[arg(long, conflicts_with = "per_run")]
        single_run: bool,
        /// Runs of at most this many partitions (1: one run per partition).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        per_run: Option<u64>,
        /// At most this many runs queued or running at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_in_flight: Option<u32>,
        /// Run config file (YAML, JSON or TOML) of every run.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stores the backfill and returns: the daemon runs it.
        #[arg(long)]
        detach: bool,
        /// Prints the backfill as JSON (once stored with `--detach`, else once ended), and
        /// no progress.
        #[arg(long)]
        json: bool,
    },
    /// Lists the newest backfills.
    List {
        /// How many (1 to 100,000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows one backfill: its partitions by status and its runs in flight.
    Show {
        /// The backfill id.
        id: String,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancels a backfill: nothing more launches, its queued runs are cancelled.
    Cancel {
        /// The backfill id.
        id: String,
    },
    /// Resumes a failed or cancelled backfill: launches its failed and unlaunched partitions.
    Resume {
        /// The backfill id.
        id: String,
    },
}

#[derive(Subcommand)]
pub(super) enum PartitionsCommand {
    /// Adds keys to a dynamic partitions definition.
    Add {
        /// The dynamic partitions definition's name.
        name: String,
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Lists the keys of a dynamic partitions definition.
    List {
        /// The dynamic partitions definition's name.
        name: String,
    },
    /// Removes one key of a dynamic partitions definition.
    Delete {
        /// The dynamic partitions definition's name.
        name: String,
        /// The key.
        key: String,
    },
}

/// One line of a partition listing.
#[derive(Serialize)]
struct Row {
    status: &'static str,
    count: u64,
    range: String,
}

/// The rows of `set` under `status`, in order, at most [`RANGES_SHOWN`] and a last one
/// saying how many more.
fn rows(def: &PartitionsDefinition, status: &'static str, set: &PartitionSet) -> Vec<Row> {
    let ranges = def.describe(set);
    let more = ranges.len().saturating_sub(RANGES_SHOWN);
    let mut rows: Vec<Row> = ranges
        .into_iter()
        .take(RANGES_SHOWN)
        .map(|(range, count)| Row {
            status,
            count,
            range: range.key,
        })
        .collect();
    if more > 0 {
        rows.push(Row {
            status,
            count: 0,
            range: format!("... and {more} more ranges"),
        });
    }
    rows
}

fn print_rows(rows: &[Row]) {
    let rows = rows.iter().map(|r| {
        let count = if r.count > 0 {
            r.count.to_string()
        } else {
            String::new()
        };
        vec![r.status.to_owned(), count, r.range.clone()]
    });
    show::rows(&["status", "partitions", "range"], rows);
}

/// `asset partitions X`: the ranges of X's partitions by status.
pub(super) async fn asset_partitions(
    defs: &Definitions,
    instance: &Instance,
    asset: &str,
    json: bool,
) -> Result<ExitCode, Error> {
    let parts = instance.asset_partitions(defs, asset).await?;
    let def = &parts.definition;
    let status = &parts.status;
    let mut all = rows(def, "materialized", &status.materialized);
    all.extend(rows(def, "failed", &status.failed));
    all.extend(rows(def, "in progress", &status.in_progress));
    all.extend(rows(def, "missing", &parts.missing()));
    if json {
        show::print_json(&serde_json::json!({
            "asset": parts.asset,
            "partitions": def.count(&parts.all),
            "ranges": all,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{}: {} partitions exist, {} materialized, {} failed, {} in progress",
        parts.asset,
        def.count(&parts.all),
        def.count(&status.materialized.intersection(&parts.all)),
        def.count(&status.failed.intersection(&parts.all)),
        def.count(&status.in_progress),
    );
    print_rows(&all);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn backfill(
    defs: &Definitions,
    instance: &Instance,
    command: BackfillCommand,
) -> Result<ExitCode, Error> {
    match command {
        BackfillCommand::Launch {
            select,
            partition,
            partition_range,
            all,
            single_run,
            per_run,
            max_in_flight,
            config,
            detach,
            json,
        } => {
            let mut request =
                BackfillRequest::new(select.join(" ")).config(super::config_file(config)?);
            for target in partition.into_iter().chain(partition_range) {
                request = request.partition(target);
            }
            if all {
                request = request.all();
            }
            if single_run {
                request = request.policy(BackfillPolicy::SingleRun);
            }
            if let Some(n) = per_run {
                request = request.policy(BackfillPolicy::MaxPartitionsPerRun(n));
            }
            if let Some(n) = max_in_flight {
                request = request.max_in_flight(n as usize);
            }
            let backfill = instance.launch_backfill(defs, request).await?;
            let def = definition(defs, &backfill)?;
            if !json {
                say!(
                    "backfill {} launched: {} partitions of `{}`, {}",
                    backfill.id,
                    def.count(&backfill.target),
                    backfill.selection,
                    backfill.policy,
                );
            }
            if detach {
                if json {
                    show::print_json(&backfill);
                } else {
                    say!(
                        "the daemon runs it; follow it with `backfill show {}`",
                        backfill.id
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            run_here(defs, instance, &def, &backfill.id, json).await
        }
        BackfillCommand::List { limit, json } => {
            let backfills = instance.backfills(limit as usize).await?;
            if json {
                show::print_json(&backfills);
                return Ok(ExitCode::SUCCESS);
            }
            let rows = backfills.iter().map(|b| {
                let count = |set: &PartitionSet| match definition(defs, b) {
                    Ok(def) => def.count(set).to_string(),
                    Err(_) => format!("{} ranges", set.range_count()),
                };
                vec![
                    b.id.clone(),
                    b.status.to_string(),
                    b.selection.clone(),
                    count(&b.target),
                    count(&b.succeeded),
                    count(&b.failed),
                    b.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                ]
            });
            show::rows(
                &[
                    "id",
                    "status",
                    "selection",
                    "partitions",
                    "succeeded",
                    "failed",
                    "created",
                ],
                rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        BackfillCommand::Show { id, json } => {
            let b = instance.backfill(&id).await?;
            if json {
                show::print_json(&b);
                return Ok(ExitCode::SUCCESS);
            }
            let def = definition(defs, &b)?;
            say!(
                "backfill {}: {} — `{}`, {} partitions, {}{}",
                b.id,
                b.status,
                b.selection,
                def.count(&b.target),
                b.policy,
                b.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            let in_flight = b
                .in_flight
                .iter()
                .fold(PartitionSet::new(), |s, r| s.union(&r.range.to_set()));
            let mut all = rows(&def, "succeeded", &b.succeeded);
            all.extend(rows(&def, "failed", &b.failed));
            all.extend(rows(&def, "in flight", &in_flight));
            all.extend(rows(&def, "not launched", &b.remaining()));
            print_rows(&all);
            for run in b.in_flight.iter().take(RANGES_SHOWN) {
                say!("  run {} — {}", run.run_id, run.range);
            }
            Ok(ExitCode::SUCCESS)
        }
        BackfillCommand::Cancel { id } => {
            let b = instance
                .cancel_backfill(&id, "cancelled from the command line")
                .await?;
            say!(
                "backfill {} is canceling: the daemon cancels its {} runs in flight",
                b.id,
                b.in_flight.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        BackfillCommand::Resume { id } => {
            let b = instance.resume_backfill(&id).await?;
            let def = definition(defs, &b)?;
            say!(
                "backfill {} resumed: {} partitions left to launch",
                b.id,
                def.count(&b.remaining())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs backfill `id` in this process until it ends, printing its progress at most once a
/// second; Ctrl-C, SIGTERM or SIGHUP cancel it (it can be resumed).
async fn run_here(
    defs: &Definitions,
    instance: &Instance,
    def: &PartitionsDefinition,
    id: &str,
    json: bool,
) -> Result<ExitCode, Error> {
    let interrupt = tokio::spawn({
        let (instance, id) = (instance.clone(), id.to_owned());
        async move {
            let signal = show::interrupted().await;
            eprintln!("{signal}: cancelling the backfill (`backfill resume {id}` goes on)");
            if let Err(e) = instance.cancel_backfill(&id, signal).await {
                eprintln!("error: {e}");
            }
        }
    });
    let mut shown = std::time::Instant::now() - std::time::Duration::from_secs(1);
    let progress = |b: &BackfillRecord| {
        if json || shown.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        shown = std::time::Instant::now();
        say!(
            "backfill {}: {} of {} partitions succeeded, {} failed, {} runs in flight",
            b.id,
            def.count(&b.succeeded),
            def.count(&b.target),
            def.count(&b.failed),
            b.in_flight.len()
        );
    };
    let ended = instance.run_backfill(defs, id, progress).await;
    interrupt.abort();
    let ended = ended?;
    if json {
        show::print_json(&ended);
    } else {
        say!(
            "backfill {} {}: {} of {} partitions succeeded, {} failed",
            ended.id,
            ended.status,
            def.count(&ended.succeeded),
            def.count(&ended.target),
            def.count(&ended.failed)
        );
        for (range, _) in def.describe(&ended.failed).iter().take(RANGES_SHOWN) {
            say!("  failed: {}", range.key);
        }
    }
    Ok(
        if ended.status == crate::backfill::BackfillStatus::Completed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// The partitions definition of a stored backfill's selection, in today's definitions.
fn definition(defs: &Definitions, b: &BackfillRecord) -> Result<PartitionsDefinition, Error> {
    crate::backfill::backfill_definition(defs, &b.selection)
}

pub(super) async fn partitions(
    instance: &Instance,
    command: PartitionsCommand,
) -> Result<ExitCode, Error> {
    match command {
        PartitionsCommand::Add { name, keys } => {
            let added = instance.add_dynamic_partitions(&name, &keys).await?;
            say!("added {} of {} keys to `{name}`", added.len(), keys.len());
        }
        PartitionsCommand::List { name } => {
            for key in instance.storage().dynamic_partitions(&name).await? {
                say!("{key}");
            }
        }
        PartitionsCommand::Delete { name, key } => {
            if !instance.delete_dynamic_partition(&name, &key).await? {
                eprintln!("error: `{name}` has no key `{key}`");
                return Ok(ExitCode::from(2));
            }
            say!("deleted `{key}` from `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}
