//! `cargo run --example ecoanp` materializes the EcoAnP pipeline (see the `ecoanp` library);
//! with arguments it is the dagrs command line (`asset list`, `run list`, ...), runs kept in
//! `$DAGRS_HOME/dagrs.db` (default `./.dagrs/dagrs.db`). `DATABASE_URL` names the PostgreSQL
//! database (default `postgres://postgres@127.0.0.1:5432/ecoanp`), created by the first run
//! when missing.
//! Readings come from a simulator unless `INFLUX_URL` names an InfluxDB (database `INFLUX_DB`,
//! default `ecoanp`), which is seeded with the simulator's last two hours when missing.
//! `-- daemon` runs the seed's schedules; `SLACK_WEBHOOK_URL` turns on the failure alert.
//! `influx_data` and `create_aggregates` are hourly partitions: `-- backfill launch --select
//! 'influx_data+' --partition-range 2026-11-01-00:00...2026-11-02-00:00` fills a day, and
//! `-- asset partitions influx_data` shows which hours are there.
//! `DAGRS_STORAGE=postgres` keeps the runs in that PostgreSQL database instead (schema
//! `dagrs`), where they can be run by workers on any machine: `-- worker` in as many shells
//! as you like, then `-- asset materialize --select '*' --launcher queue` (docs/scale-out.md).

use std::ffi::OsString;
use std::process::ExitCode;

use chrono::{DurationRound, TimeDelta, Utc};
use dagrs_core::prelude::*;
use dagrs_postgres::{PgStorage, PostgresResource, DEFAULT_SCHEMA};
use ecoanp::{automation, pipeline, Influx, Simulator, Source};
use tracing::level_filters::LevelFilter;

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(e) = subscriber() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let (defs, instance) = match setup().await {
        Ok(set_up) => set_up,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let hour = Utc::now()
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or_default();
    let last = (hour - TimeDelta::hours(1))
        .format("%Y-%m-%d-%H:%M")
        .to_string();
    if args.len() == 1 {
        // No arguments: the main job, materialize everything for the hour that just closed.
        args.extend(["asset", "materialize", "--all", "--partition", &last].map(OsString::from));
    } else if is_materialize(&args)
        && !args
            .iter()
            .any(|a| a.to_string_lossy().starts_with("--partition"))
    {
        // `asset materialize` without a partition: the hour that just closed, as above.
        note(&format!(
            "materializing partition {last} (the hour that just closed)"
        ));
        args.extend(["--partition", &last].map(OsString::from));
    }
    match instance {
        Some(instance) => dagrs_core::cli::run_with(defs, instance, args).await,
        None => dagrs_core::cli::run(defs, args).await,
    }
}

/// Whether `args` are `asset materialize ...`.
fn is_materialize(args: &[OsString]) -> bool {
    let words: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    words
        .windows(2)
        .any(|w| w[0] == "asset" && w[1] == "materialize")
}

/// Says something about the set-up: on stderr for people, or as a `tracing` event (info,
/// target `ecoanp`) with `--log-format json`, so that stderr stays JSON lines.
fn note(text: &str) {
    let args: Vec<OsString> = std::env::args_os().collect();
    match dagrs_core::observe::LogFormat::from_args(&args) {
        dagrs_core::observe::LogFormat::Json => tracing::info!(target: "ecoanp", "{text}"),
        _ => eprintln!("ecoanp: {text}"),
    }
}

/// The `tracing` subscriber a service embedding dagrs would have: its own output — here the
/// command line's, `--log-format text|json` on stderr, filtered by `DAGRS_LOG` or `RUST_LOG` —
/// and dagrs' capture layer, which records what the assets and the libraries they call log
/// through `tracing` in the run's event log, under the step that logged it (`run show ID
/// --logs`, the web UI). Captured: `info` and up, `debug` too for `influx_data`, or the
/// levels of `DAGRS_CAPTURE` (e.g. `warn,create_aggregates=debug`). Without a subscriber of
/// its own, the command line installs the same (without the `influx_data` override).
fn subscriber() -> Result<(), dagrs_core::observe::ObserveError> {
    use dagrs_core::observe::{output_layer, CaptureLayer, LogFormat, CAPTURE_ENV};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let args: Vec<OsString> = std::env::args_os().collect();
    let mut capture = CaptureLayer::new().asset_level("influx_data", LevelFilter::DEBUG);
    if let Ok(levels) = std::env::var(CAPTURE_ENV) {
        capture = capture.parse_levels(&levels)?;
    }
    // `try_init` also forwards `log` records (tokio-postgres, deadpool) into `tracing`.
    let _ = tracing_subscriber::registry()
        .with(output_layer(LogFormat::from_args(&args))?)
        .with(capture.filtered())
        .try_init();
    Ok(())
}

/// Connects the resources (creating what is missing) and builds the definitions; with
/// `DAGRS_STORAGE=postgres`, also the instance on PostgreSQL (else the command line uses the
/// embedded SQLite store).
async fn setup() -> anyhow::Result<(Definitions, Option<dagrs_core::Instance>)> {
    let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let url = var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ecoanp");
    let pg = PostgresResource::from_url(&url)?;
    let source = match std::env::var("INFLUX_URL") {
        Err(_) => Source::Simulator(Simulator::default()),
        Ok(url) => {
            let influx = Influx::new(&url, &var("INFLUX_DB", "ecoanp"))?;
            let end = Utc::now().duration_trunc(TimeDelta::hours(1))?;
            let (url, db) = (influx.url(), influx.database());
            if let Some(written) = influx.seed_if_missing(end).await? {
                note(&format!(
                    "seeded InfluxDB database {db} with {written} readings"
                ));
            }
            note(&format!("reading InfluxDB {url} database {db}"));
            Source::Influx(influx)
        }
    };
    note(&format!(
        "PostgreSQL {}, {}",
        pg.masked_url(),
        source.name()
    ));
    let instance = match std::env::var("DAGRS_STORAGE").as_deref() {
        Err(_) | Ok("sqlite") => None,
        Ok("postgres") => {
            pg.ensure_database().await?;
            let store = PgStorage::connect(pg.clone(), DEFAULT_SCHEMA).await?;
            note(&format!(
                "runs kept in PostgreSQL {}, schema {DEFAULT_SCHEMA}",
                pg.masked_url()
            ));
            Some(store.instance())
        }
        Ok(other) => {
            anyhow::bail!("DAGRS_STORAGE is {other:?}: use `sqlite` (the default) or `postgres`")
        }
    };
    Ok((automation(pipeline(pg, source)).build()?, instance))
}
