//! The seed's three-asset pipeline — influx_tags → influx_data → create_aggregates — with
//! in-memory stand-ins for InfluxDB and PostgreSQL, so it runs anywhere:
//!
//! ```text
//! cargo run --example hello
//! ```
//!
//! `examples/ecoanp` is the same pipeline against real servers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dagrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// A stand-in for the sensor database: tag names and readings kept in memory.
#[derive(Default)]
struct MemoryWarehouse {
    tags: Mutex<Vec<String>>,
    readings: Mutex<Vec<(String, f64)>>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct InfluxTagsConfig {
    batch_size: usize,
    retry_count: u32,
}

impl Default for InfluxTagsConfig {
    fn default() -> Self {
        InfluxTagsConfig {
            batch_size: 100,
            retry_count: 3,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct TagSummary {
    tags_created: usize,
    total_tags: usize,
}

/// Creates sensor tags from the source's schema.
#[asset(group = "ecoanp", tags(team = "data_engineering", domain = "influxdb"))]
async fn influx_tags(
    ctx: &AssetContext,
    config: Config<InfluxTagsConfig>,
    warehouse: Res<MemoryWarehouse>,
) -> Result<TagSummary> {
    ctx.log.info(format!(
        "creating tags (batch size {}, {} retries)",
        config.batch_size, config.retry_count
    ));
    let mut tags = warehouse.tags.lock().unwrap();
    let before = tags.len();
    for n in 100..109 {
        let name = format!("D{n}");
        if !tags.contains(&name) {
            tags.push(name);
        }
    }
    ctx.add_metadata("rows", tags.len());
    Ok(TagSummary {
        tags_created: tags.len() - before,
        total_tags: tags.len(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct InfluxDataConfig {
    time_window_hours: u32,
    batch_size: usize,
}

impl Default for InfluxDataConfig {
    fn default() -> Self {
        InfluxDataConfig {
            time_window_hours: 1,
            batch_size: 1000,
        }
    }
}

/// Collects readings for every tag into the warehouse.
#[asset(group = "ecoanp", retry = Retry::exponential(3, Duration::from_secs(60)),
        tags(team = "data_engineering", domain = "data_collection"))]
fn influx_data(
    ctx: &AssetContext,
    config: Config<InfluxDataConfig>,
    tags: Input<influx_tags>,
    warehouse: Res<MemoryWarehouse>,
) -> Result<usize> {
    let names = warehouse.tags.lock().unwrap().clone();
    let mut readings = warehouse.readings.lock().unwrap();
    readings.clear();
    for i in 0..config.batch_size {
        let tag = &names[i % names.len()];
        readings.push((tag.clone(), 10.0 + i as f64 * 0.1));
    }
    ctx.log.info(format!(
        "collected {} readings for {} tags over {} h",
        readings.len(),
        tags.total_tags,
        config.time_window_hours
    ));
    ctx.add_metadata("rows", readings.len());
    Ok(readings.len())
}

/// Averages the readings per tag.
#[asset(
    group = "ecoanp",
    tags(team = "data_engineering", domain = "aggregation")
)]
async fn create_aggregates(
    ctx: &AssetContext,
    rows: Input<influx_data>,
    warehouse: Res<MemoryWarehouse>,
) -> Result<BTreeMap<String, f64>> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (tag, value) in warehouse.readings.lock().unwrap().iter() {
        let entry = sums.entry(tag.clone()).or_default();
        entry.0 += value;
        entry.1 += 1;
    }
    ctx.log.info(format!("aggregated {} readings", *rows));
    ctx.add_metadata("aggregates", sums.len());
    Ok(sums
        .into_iter()
        .map(|(tag, (sum, n))| (tag, sum / n as f64))
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let defs = Definitions::builder()
        .specs(assets![influx_tags, influx_data, create_aggregates])
        .resource(MemoryWarehouse::default())
        .build()?;
    let result = materialize(&defs, "*", RunConfig::new()).await?;
    print!("{result}");
    let averages = result
        .output::<create_aggregates>()
        .expect("create_aggregates ran");
    println!("average of D100: {:.2}", averages["D100"]);
    anyhow::ensure!(result.success(), "the run failed");
    Ok(())
}
