//! Types shared by the EcoAnP sources: the built-in simulator
//! (`simulator.rs`) and the InfluxDB client (`influx.rs`) both produce
//! [`TagSchema`]s (what `influx_tags` stores) and [`Reading`]s (what
//! `influx_data` stores).
//!
//! The seed pipeline describes a tag as
//! `{"DataName": "D100", "DataId": "1", "DataType": "float", "Unit": "V"}`;
//! [`TagSchema`] keeps those four fields under Rust names and adds the
//! measurement the tag's readings are stored in.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schema of one sensor tag (the seed's `DataName`/`DataId`/`DataType`/`Unit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSchema {
    /// The tag's name, e.g. `"D100"` (the seed's `DataName`); readings refer
    /// to the tag by this name ([`Reading::tag_name`]).
    pub name: String,
    /// A stable identifier of the tag, e.g. `"1"` (the seed's `DataId`).
    pub tag_id: String,
    /// The type of the tag's values, e.g. `"float"` (the seed's `DataType`).
    pub data_type: String,
    /// The unit of the tag's values, e.g. `"V"` (the seed's `Unit`); empty
    /// when the source does not know it.
    pub unit: String,
    /// Where the source keeps the tag's readings: for InfluxDB the
    /// measurement's name (equal to [`TagSchema::name`] in the EcoAnP data
    /// model); for the simulator the tag's name as well.
    pub measurement: String,
}

/// One sensor reading: a value of one tag at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// When the value was sampled (UTC, nanosecond precision).
    pub ts: DateTime<Utc>,
    /// The name of the tag the value belongs to ([`TagSchema::name`]).
    pub tag_name: String,
    /// The sampled value.
    pub value: f64,
    /// Quality code: `1` for a good sample, `0` for a bad one.
    pub qc: i32,
}

/// Compares tag names in natural order: runs of ASCII digits compare by
/// their numeric value, everything else byte by byte, so `"D99"` sorts
/// before `"D100"`. Both sources return tags and readings in this order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (da, db) = (trim_zeros(&a[si..i]), trim_zeros(&b[sj..j]));
            // Longer digit runs (without leading zeros) are larger numbers;
            // equal lengths compare digit by digit; then fewer leading zeros first.
            let ord = da
                .len()
                .cmp(&db.len())
                .then_with(|| da.cmp(db))
                .then_with(|| (i - si).cmp(&(j - sj)));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            let ord = a[i].cmp(&b[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[start..]
}

/// Sorts readings by timestamp, then by tag name in [`natural_cmp`] order:
/// the order in which both sources return them.
pub fn sort_readings(readings: &mut [Reading]) {
    readings.sort_by(|x, y| {
        x.ts.cmp(&y.ts)
            .then_with(|| natural_cmp(&x.tag_name, &y.tag_name))
    });
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn natural_order_compares_digit_runs_by_value() {
        let mut names = vec!["D100", "D99", "D1000", "D101", "A2", "D100a", "D0100", "D"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["A2", "D", "D99", "D100", "D100a", "D0100", "D101", "D1000"]
        );
        assert_eq!(natural_cmp("D100", "D100"), Ordering::Equal);
        assert_eq!(natural_cmp("x", "x1"), Ordering::Less);
    }
}
