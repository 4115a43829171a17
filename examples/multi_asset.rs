//! A multi-asset: one pass over sensor readings makes two assets, the clean readings and
//! their statistics, each with its own key, group and downstream assets.
//!
//! ```text
//! cargo run --example multi_asset
//! ```

use dagrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// What one pass over the readings learns about them.
#[derive(Debug, Serialize, Deserialize)]
struct Stats {
    kept: usize,
    dropped: usize,
    mean: f64,
}

/// Raw readings, some of them invalid (negative).
#[asset(group = "bronze")]
async fn readings() -> Result<Vec<f64>> {
    Ok(vec![21.5, -1.0, 22.0, 23.5, -7.0, 22.5])
}

/// Drops invalid readings and counts them, in one pass; computes only what the run selects.
#[multi_asset(
    outs(clean: Vec<f64> = (key = "readings/clean"), stats: Stats = (key = "readings/stats")),
    group = "silver",
    can_subset = true
)]
async fn split(
    ctx: &AssetContext,
    readings: Input<readings>,
) -> Result<(Option<Vec<f64>>, Option<Stats>)> {
    let clean: Vec<f64> = readings.iter().copied().filter(|v| *v >= 0.0).collect();
    ctx.log
        .info(format!("selected: {:?}", ctx.selected_outputs()));
    let stats = ctx.is_selected("stats").then(|| Stats {
        kept: clean.len(),
        dropped: readings.len() - clean.len(),
        mean: clean.iter().sum::<f64>() / clean.len() as f64,
    });
    Ok((ctx.is_selected("clean").then_some(clean), stats))
}

/// The highest clean reading.
#[asset(group = "gold")]
async fn peak(clean: Input<clean>) -> Result<f64> {
    Ok(clean.iter().copied().fold(f64::MIN, f64::max))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let defs = Definitions::builder()
        .specs(assets![readings, split, peak])
        .build()?;
    let instance = Instance::ephemeral();

    let result = instance.materialize(&defs, "*", RunConfig::new()).await?;
    assert!(result.success());
    println!("stats: {:?}", result.output::<stats>().unwrap());
    println!("peak:  {}", result.output::<peak>().unwrap());

    // Only `readings/clean` and what lies below it: `split` runs for that out alone.
    let result = instance
        .materialize(&defs, "readings/clean+", RunConfig::new())
        .await?;
    assert!(result.success() && result.output::<stats>().is_none());
    println!(
        "second run materialized: {:?}",
        result
            .steps()
            .iter()
            .map(|s| s.key.as_str())
            .collect::<Vec<_>>()
    );
    Ok(())
}
