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

use std::ffi::OsString;
use std::process::ExitCode;

use chrono::{DurationRound, TimeDelta, Utc};
use dagrs_core::prelude::*;
use dagrs_postgres::PostgresResource;
use ecoanp::{automation, pipeline, Influx, Simulator, Source};

#[tokio::main]
async fn main() -> ExitCode {
    let defs = match setup().await {
        Ok(defs) => defs,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.len() == 1 {
        // No arguments: the main job, materialize everything for the hour that just closed.
        let hour = Utc::now()
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or_default();
        let last = (hour - TimeDelta::hours(1))
            .format("%Y-%m-%d-%H:%M")
            .to_string();
        args.extend(["asset", "materialize", "--all", "--partition", &last].map(OsString::from));
    }
    dagrs_core::cli::run(defs, args).await
}

/// Connects the resources (creating what is missing) and builds the definitions.
async fn setup() -> anyhow::Result<Definitions> {
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
                eprintln!("ecoanp: seeded InfluxDB database {db} with {written} readings");
            }
            eprintln!("ecoanp: reading InfluxDB {url} database {db}");
            Source::Influx(influx)
        }
    };
    eprintln!("ecoanp: PostgreSQL {}, {}", pg.masked_url(), source.name());
    Ok(automation(pipeline(pg, source)).build()?)
}
