//! EcoAnP's data-quality checks, run right after their asset in the same run: no gaps in an
//! hour's readings, values within each tag's declared range, and aggregates that count every
//! raw row. They read what was written from PostgreSQL, so they check the stored data.

use std::collections::BTreeMap;

use dagrs_core::partitions::TimeWindow;
use dagrs_core::prelude::*;
use dagrs_core::{asset_check, CheckResult, CheckSeverity};
use dagrs_postgres::{Ident, PostgresResource};
use serde::{Deserialize, Serialize};

use crate::assets::{create_aggregates, influx_data};

/// The most tags named in a check's description; the rest are counted.
const NAMED: usize = 10;

/// [`readings_without_gaps()`]'s query: per tag, its readings in the hour `[$1, $2)`, their
/// typical and widest spacing.
pub const GAPS_SQL: &str = "WITH spacing AS (
        SELECT tag_name,
               extract(epoch FROM ts - lag(ts) OVER (PARTITION BY tag_name ORDER BY ts))
                   AS gap
        FROM influx_hist WHERE ts >= $1 AND ts < $2),
    per_tag AS (
        SELECT tag_name, count(*) AS readings,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS typical,
               max(gap) AS widest
        FROM spacing GROUP BY tag_name)
    SELECT t.key, coalesce(p.readings, 0), p.typical, p.widest::float8
    FROM influx_tag t LEFT JOIN per_tag p ON p.tag_name = t.key ORDER BY t.key";

/// [`values_in_declared_range()`]'s query: per tag, its unit and the range of its values in
/// the hour `[$1, $2)`.
pub const RANGES_SQL: &str = "SELECT h.tag_name, t.unit, min(h.value), max(h.value)
    FROM influx_hist h JOIN influx_tag t ON t.key = h.tag_name
    WHERE h.ts >= $1 AND h.ts < $2 GROUP BY h.tag_name, t.unit ORDER BY h.tag_name";

/// [`aggregates_count_every_row()`]'s count of the raw rows in the hour `[$1, $2)`.
pub const RAW_COUNT_SQL: &str = "SELECT count(*) FROM influx_hist WHERE ts >= $1 AND ts < $2";

/// [`aggregates_count_every_row()`]'s count of the rows aggregated in `view`'s buckets of the
/// hour `[$1, $2)`.
pub fn bucket_count_sql(view: &Ident) -> String {
    format!(
        "SELECT coalesce(sum(record_count), 0)::int8 FROM {view} \
         WHERE bucket >= $1 AND bucket < $2"
    )
}

/// The range each tag's values must stay in: by unit, and per tag where a tag differs.
/// A resource of [`values_in_declared_range()`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueRanges {
    /// By unit (`V`, `A`, ...): `[min, max]`.
    pub by_unit: BTreeMap<String, (f64, f64)>,
    /// By tag name, over its unit's range.
    pub by_tag: BTreeMap<String, (f64, f64)>,
}

impl Default for ValueRanges {
    /// Line voltages: 0 to 1,000 V.
    fn default() -> Self {
        ValueRanges {
            by_unit: BTreeMap::from([("V".to_owned(), (0.0, 1000.0))]),
            by_tag: BTreeMap::new(),
        }
    }
}

impl ValueRanges {
    /// The declared range of `tag` (of unit `unit`), if any.
    pub fn of(&self, tag: &str, unit: &str) -> Option<(f64, f64)> {
        self.by_tag
            .get(tag)
            .or_else(|| self.by_unit.get(unit))
            .copied()
    }
}

/// `a, b, c and 7 more`.
fn named(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED {
        text.push_str(&format!(" and {} more", names.len() - NAMED));
    }
    text
}

/// Every tag's readings in the hour come at its usual interval: no gap wider than twice its
/// typical spacing. A gap blocks the aggregates; a tag with no reading at all in the hour is
/// only a warning (the source may not have it yet).
#[asset_check(asset = influx_data, blocking = true)]
pub async fn readings_without_gaps(
    window: Partition<TimeWindow>,
    pg: Res<PostgresResource>,
) -> Result<CheckResult> {
    let TimeWindow { start, end } = *window;
    let client = pg.get().await?;
    let rows = client.query(GAPS_SQL, &[&start, &end]).await?;
    let (mut silent, mut gaps, mut readings) = (Vec::new(), Vec::new(), 0_i64);
    for row in &rows {
        let (tag, count): (String, i64) = (row.get(0), row.get(1));
        let (typical, widest): (Option<f64>, Option<f64>) = (row.get(2), row.get(3));
        readings += count;
        match (count, typical, widest) {
            (0, ..) => silent.push(tag),
            (_, Some(typical), Some(widest)) if widest > 2.0 * typical => {
                gaps.push(format!("{tag} ({widest:.0} s, usually {typical:.0} s)"))
            }
            _ => {}
        }
    }
    let result = if !gaps.is_empty() {
        CheckResult::failed(format!("gaps in {}", named(&gaps)))
    } else if !silent.is_empty() {
        CheckResult::failed(format!("no readings from {}", named(&silent)))
            .severity(CheckSeverity::Warn)
    } else {
        CheckResult::passed()
    };
    Ok(result
        .metadata("tags", rows.len())
        .metadata("readings", readings)
        .metadata("tags_with_gaps", gaps.len())
        .metadata("tags_without_readings", silent.len()))
}

/// Every tag's values in the hour lie within its declared range ([`ValueRanges`]).
#[asset_check(asset = influx_data)]
pub async fn values_in_declared_range(
    window: Partition<TimeWindow>,
    pg: Res<PostgresResource>,
    ranges: Res<ValueRanges>,
) -> Result<CheckResult> {
    let TimeWindow { start, end } = *window;
    let client = pg.get().await?;
    let rows = client.query(RANGES_SQL, &[&start, &end]).await?;
    let (mut outside, mut undeclared) = (Vec::new(), 0);
    for row in &rows {
        let (tag, unit): (String, String) = (row.get(0), row.get(1));
        let (low, high): (f64, f64) = (row.get(2), row.get(3));
        match ranges.of(&tag, &unit) {
            Some((min, max)) if low < min || high > max => outside.push(format!(
                "{tag} ({low} to {high} {unit}, declared {min} to {max})"
            )),
            Some(_) => {}
            None => undeclared += 1,
        }
    }
    let result = match outside.is_empty() {
        true => CheckResult::passed(),
        false => CheckResult::failed(format!("values out of range: {}", named(&outside))),
    };
    Ok(result
        .metadata("tags", rows.len())
        .metadata("tags_out_of_range", outside.len())
        .metadata("tags_without_a_range", undeclared))
}

/// Each aggregate's buckets in the hour count exactly the raw rows of the hour.
#[asset_check(asset = create_aggregates)]
pub async fn aggregates_count_every_row(
    aggregates: Input<create_aggregates>,
    window: Partition<TimeWindow>,
    pg: Res<PostgresResource>,
) -> Result<CheckResult> {
    let TimeWindow { start, end } = *window;
    let client = pg.get().await?;
    let raw: i64 = client
        .query_one(RAW_COUNT_SQL, &[&start, &end])
        .await?
        .get(0);
    let mut wrong = Vec::new();
    for view in &aggregates.aggregate_list {
        let view = Ident::new(view)?;
        let sql = bucket_count_sql(&view);
        let counted: i64 = client.query_one(&sql, &[&start, &end]).await?.get(0);
        if counted != raw {
            wrong.push(format!("{view} counts {counted}"));
        }
    }
    let result = match wrong.is_empty() {
        true => CheckResult::passed(),
        false => CheckResult::failed(format!("{raw} raw rows, but {}", named(&wrong))),
    };
    Ok(result
        .metadata("raw_rows", raw)
        .metadata("aggregates", aggregates.aggregate_list.len()))
}
