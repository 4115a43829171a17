//! EcoAnP: sensor tag schemas and readings into PostgreSQL, then time-bucketed aggregates —
//! the pipeline of the Dagster guide this project started from, in Rust.
//!
//! ```text
//! cargo run --example ecoanp
//! ```
//!
//! - `DATABASE_URL` picks the PostgreSQL server and database (default
//!   `postgres://postgres@127.0.0.1:5432/ecoanp`); the database and tables are created when
//!   missing.
//! - Readings come from a deterministic simulator unless `INFLUX_URL` points at an InfluxDB
//!   (`INFLUX_DB`, default `ecoanp`). If that database does not exist yet, it is created and
//!   filled with the simulator's last two hours first, so the pipeline has data to read.
//!
//! With arguments it is the dagrs command line (`asset list`, `asset materialize --select
//! influx_tags+`, `run list`, `run show ID --logs`, ...); without, it materializes everything.
//! Runs are recorded in `$DAGRS_HOME/dagrs.db` (default `./.dagrs/dagrs.db`).

mod assets;
#[allow(dead_code)]
mod influx;
mod schema;
#[allow(dead_code)]
mod simulator;
#[allow(dead_code)]
mod source;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DurationRound, TimeDelta, Utc};
use dagrs_core::prelude::*;
use dagrs_postgres::PostgresResource;

use assets::{create_aggregates, influx_data, influx_tags, Source};

/// The default database URL.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/ecoanp";

/// The pipeline's definitions over the given resources.
fn definitions(
    pg: PostgresResource,
    source: Source,
) -> Result<Definitions, dagrs_core::DefinitionsError> {
    Definitions::builder()
        .specs(assets![influx_tags, influx_data, create_aggregates])
        .resource(pg)
        .resource(source)
        .build()
}

/// The source named by the environment: InfluxDB when `INFLUX_URL` is set, else the simulator.
fn source_from_env() -> anyhow::Result<Source> {
    let Ok(url) = std::env::var("INFLUX_URL") else {
        return Ok(Source::Simulator(simulator::Simulator::default()));
    };
    let database = std::env::var("INFLUX_DB").unwrap_or_else(|_| "ecoanp".into());
    let client = influx::InfluxClient::new(&url, database.clone())?;
    if !client.databases()?.contains(&database) {
        let sim = simulator::Simulator::default();
        let end = Utc::now().duration_trunc(TimeDelta::hours(1))?;
        let readings = sim.readings(end - TimeDelta::hours(2), end);
        client.create_database(&database)?;
        let written = client.write_readings(sim.tags(), &readings)?;
        eprintln!("seeded InfluxDB database {database} with {written} simulated readings");
    }
    Ok(Source::Influx(Arc::new(client)))
}

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
        // No arguments: the main job, materialize everything.
        args.extend(["asset", "materialize", "--all"].map(OsString::from));
    }
    dagrs_core::cli::run(defs, args).await
}

/// Connects the resources (creating the database when missing) and builds the definitions.
async fn setup() -> anyhow::Result<Definitions> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
    let pg = PostgresResource::from_url(&url)?;
    if pg.ensure_database().await? {
        eprintln!("created database {}", pg.dbname());
    }
    let source = tokio::task::spawn_blocking(source_from_env).await??;
    eprintln!(
        "ecoanp: PostgreSQL {}, source {}",
        pg.masked_url(),
        source.describe()
    );
    Ok(definitions(pg, source)?)
}
