//! EcoAnP, the pipeline of the Dagster guide dagrs started from: sensor tag schemas and
//! readings from InfluxDB (or a deterministic [`Simulator`]) into PostgreSQL, then
//! time-bucketed aggregates. `main.rs` beside this file runs it: `cargo run --example ecoanp`.

pub mod assets;
pub mod automation;
pub mod checks;
pub mod influx;
pub mod schema;
pub mod simulator;

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use dagrs_core::partitions::{hourly, PartitionsDefinition};
use dagrs_core::{Definitions, DefinitionsBuilder};
use dagrs_postgres::PostgresResource;
use serde::{Deserialize, Serialize};

pub use assets::{create_aggregates, influx_data, influx_readings, influx_tags};
pub use automation::automation;
pub use checks::{
    aggregates_count_every_row, readings_without_gaps, values_in_declared_range, ValueRanges,
};
pub use influx::{Influx, InfluxError};
pub use simulator::Simulator;

/// The pipeline's definitions: the observable source, the three assets of the seed and
/// their checks, with PostgreSQL `pg`, the readings' `source` and the default value ranges.
/// Add schedules with [`automation()`] and config with `.config(...)`, then `.build()`.
pub fn pipeline(pg: PostgresResource, source: Source) -> DefinitionsBuilder {
    Definitions::builder()
        .specs(dagrs_core::assets![
            influx_readings,
            influx_tags,
            influx_data,
            create_aggregates
        ])
        .checks(dagrs_core::checks![
            readings_without_gaps,
            values_in_declared_range,
            aggregates_count_every_row
        ])
        .resource(pg)
        .resource(source)
        .resource(ValueRanges::default())
}

/// The hours [`influx_data()`] and [`create_aggregates()`] are partitioned by, from 2026.
pub fn hours() -> PartitionsDefinition {
    hourly("2026-01-01T00:00Z").into()
}

/// The schema of one sensor tag: the seed's `DataName`, `DataId`, `DataType` and `Unit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSchema {
    /// The tag's name, e.g. `D100`; in InfluxDB, the name of its measurement.
    pub name: String,
    /// A stable id, e.g. `1`.
    pub tag_id: String,
    /// The type of its values, e.g. `float`.
    pub data_type: String,
    /// The unit of its values, e.g. `V`; empty when unknown.
    pub unit: String,
}

/// One reading: the value of one tag at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// When it was sampled.
    pub ts: DateTime<Utc>,
    /// The tag's name.
    pub tag_name: String,
    /// The value.
    pub value: f64,
    /// Quality code: `1` good, `0` bad.
    pub qc: i32,
}

/// Where tag schemas and readings come from: a resource of [`influx_tags()`] and [`influx_data()`].
pub enum Source {
    /// The built-in, deterministic simulator.
    Simulator(Simulator),
    /// An InfluxDB database.
    Influx(Influx),
}

impl Source {
    /// `simulator` or `influxdb`, as recorded in the rows' `meta`.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Simulator(_) => "simulator",
            Source::Influx(_) => "influxdb",
        }
    }

    /// The tag schemas, in [`natural_cmp`] order of their names.
    pub async fn tag_schemas(&self) -> Result<Vec<TagSchema>, InfluxError> {
        match self {
            Source::Simulator(sim) => Ok(sim.tags().to_vec()),
            Source::Influx(db) => db.tag_schemas().await,
        }
    }

    /// When the newest reading at or before `now` was taken; `None` when there is none.
    pub async fn newest_reading(&self, now: Time) -> Result<Option<Time>, InfluxError> {
        match self {
            Source::Simulator(sim) => Ok(sim.newest(now)),
            Source::Influx(db) => db.newest_reading(now).await,
        }
    }

    /// The readings in `[start, end)`, by time, then tag name in [`natural_cmp`] order.
    pub async fn readings(&self, start: Time, end: Time) -> Result<Vec<Reading>, InfluxError> {
        match self {
            Source::Simulator(sim) => Ok(sim.readings(start, end)),
            Source::Influx(db) => db.readings(start, end).await,
        }
    }
}

/// An instant, in UTC.
pub type Time = DateTime<Utc>;

/// Orders names by the text before their trailing number, then by that number's value, so
/// `D99` comes before `D100`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn key(name: &str) -> (&str, Option<u128>, &str) {
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        (stem, name[stem.len()..].parse().ok(), name)
    }
    key(a).cmp(&key(b))
}
