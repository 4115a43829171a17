//! Partition status as inline SVG, drawn from range sets, never partition by partition: a
//! minutely asset over two years (a million partitions) is a few ranges, and so a few
//! rectangles. One bar per combination of discrete keys with time left to right; without a
//! time dimension, one bar with a cell per key combination. Also: the counts' legend, a
//! small progress bar, and the ranges as users write them (bounded, like the command line's
//! `asset partitions`).

use std::collections::BTreeMap;

use maud::{html, Markup};

use crate::partition::{PartitionSet, PartitionsDefinition, RangeSet};
use crate::text::LIST_LIMIT;

/// The most bars drawn (key combinations); the rest are counted.
pub(crate) const MAX_BARS: usize = 50;
/// The most ranges listed per status before "and N more".
pub(crate) const RANGES_SHOWN: usize = 4 * LIST_LIMIT;

const WIDTH: f64 = 900.0;
const RIGHT: f64 = 4.0;
const ROW: f64 = 22.0;
const BAR: f64 = 16.0;
const AXIS: f64 = 16.0;

/// One status: its CSS class (`p-<class>`), its label, and its partitions.
#[derive(Clone, Copy)]
pub(crate) struct Layer<'a> {
    pub(crate) class: &'static str,
    pub(crate) label: &'static str,
    pub(crate) set: &'a PartitionSet,
}

impl<'a> Layer<'a> {
    pub(crate) fn new(class: &'static str, label: &'static str, set: &'a PartitionSet) -> Self {
        Layer { class, label, set }
    }
}

/// Every partition of `all` drawn in `background`'s colour, then each of `layers` over it in
/// order (the last on top), clipped to `all`.
pub(crate) fn bars(
    def: &PartitionsDefinition,
    all: &PartitionSet,
    background: Layer<'_>,
    layers: &[Layer<'_>],
) -> Markup {
    let parts: Vec<(&str, &RangeSet)> = all.parts().filter(|(_, r)| !r.is_empty()).collect();
    if parts.is_empty() {
        return html! { p.muted { "No partition exists yet." } };
    }
    let by_layer: Vec<BTreeMap<&str, &RangeSet>> =
        layers.iter().map(|l| l.set.parts().collect()).collect();
    match def.time_windows() {
        Some(_) => time_bars(def, &parts, background, layers, &by_layer),
        None => key_bar(&parts, background, layers, &by_layer),
    }
}

/// A run of rectangles merged at pixel resolution: at most one per two pixels per layer.
struct Span {
    x0: f64,
    x1: f64,
    /// The coordinates covered: window starts and ends, or key indices.
    first: i64,
    last: i64,
    /// How many ranges (or keys) it merges.
    n: usize,
}

/// `ranges` (sorted coordinate pairs) mapped to pixels by `x` and merged where less than a
/// pixel apart; every span at least a pixel wide, so one failed partition in a million
/// still shows.
fn spans(ranges: impl Iterator<Item = (i64, i64)>, x: impl Fn(i64) -> f64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for (start, end) in ranges {
        let x0 = x(start);
        let x1 = x(end).max(x0 + 1.0);
        match out.last_mut() {
            Some(last) if x0 <= last.x1 + 1.0 => {
                last.x1 = last.x1.max(x1);
                last.last = end;
                last.n += 1;
            }
            _ => out.push(Span {
                x0,
                x1,
                first: start,
                last: end,
                n: 1,
            }),
        }
    }
    out
}

fn rects(
    class: &str,
    label: &str,
    y: f64,
    spans: &[Span],
    what: impl Fn(&Span) -> String,
) -> Markup {
    html! {
        @for s in spans {
            rect class={ "p-" (class) } x=(format!("{:.1}", s.x0)) y=(y) width=(format!("{:.1}", s.x1 - s.x0)) height=(BAR) {
                title { (label) ": " (what(s)) }
            }
        }
    }
}

fn time_bars(
    def: &PartitionsDefinition,
    parts: &[(&str, &RangeSet)],
    background: Layer<'_>,
    layers: &[Layer<'_>],
    by_layer: &[BTreeMap<&str, &RangeSet>],
) -> Markup {
    let lo = parts
        .iter()
        .filter_map(|(_, r)| r.ranges().first().map(|r| r.0))
        .min()
        .unwrap_or(0);
    let hi = parts
        .iter()
        .filter_map(|(_, r)| r.ranges().last().map(|r| r.1))
        .max()
        .unwrap_or(1);
    let labelled = parts.len() > 1 || !parts[0].0.is_empty();
    let left = if labelled { 170.0 } else { 0.0 };
    let plot = WIDTH - left - RIGHT;
    let x = |t: i64| left + (t - lo) as f64 / (hi - lo).max(1) as f64 * plot;
    let shown = &parts[..parts.len().min(MAX_BARS)];
    let height = shown.len() as f64 * ROW + AXIS;
    let (first_key, last_key) = match def.time_windows() {
        Some(w) => (w.key(lo), w.key(w.window_start(hi - 1).unwrap_or(lo))),
        None => (String::new(), String::new()),
    };
    html! {
        svg.pbar width=(WIDTH) height=(height) viewBox={ "0 0 " (WIDTH) " " (height) } role="img" {
            title { "partition status, " (first_key) " to " (last_key) }
            @for (row, (dims, ranges)) in shown.iter().enumerate() {
                @let y = row as f64 * ROW + 2.0;
                @let what = |s: &Span| {
                    let key = def.range(dims, s.first, s.last).key;
                    if s.n == 1 { key } else { format!("{} ranges within {key}", s.n) }
                };
                @if labelled {
                    text x="4" y=(y + 12.0) { (crate::bounded(dims, 22)) title { (dims) } }
                }
                (rects(background.class, background.label, y, &spans(ranges.ranges().iter().copied(), x), what))
                @for (layer, map) in layers.iter().zip(by_layer) {
                    @if let Some(set) = map.get(dims) {
                        @let clipped = set.intersection(ranges);
                        (rects(layer.class, layer.label, y, &spans(clipped.ranges().iter().copied(), x), what))
                    }
                }
            }
            text x=(left) y=(height - 3.0) { (first_key) }
            text x=(WIDTH - RIGHT) y=(height - 3.0) text-anchor="end" { (last_key) }
        }
        @if parts.len() > MAX_BARS {
            p.muted { "… and " (parts.len() - MAX_BARS) " more key combinations (counted above, listed below)." }
        }
    }
}

/// Without time: one bar, a cell per key combination in order.
fn key_bar(
    parts: &[(&str, &RangeSet)],
    background: Layer<'_>,
    layers: &[Layer<'_>],
    by_layer: &[BTreeMap<&str, &RangeSet>],
) -> Markup {
    let n = parts.len() as i64;
    let plot = WIDTH - RIGHT;
    let x = |i: i64| i as f64 / n as f64 * plot;
    let height = ROW + AXIS;
    let what = |s: &Span| {
        let first = parts[s.first as usize].0;
        let last = parts[(s.last - 1).max(0) as usize].0;
        if s.last - s.first == 1 {
            first.to_owned()
        } else {
            format!("{} partitions, {first} to {last}", s.last - s.first)
        }
    };
    let cells = |keep: &dyn Fn(&str) -> bool| {
        spans(
            (0..n)
                .filter(|&i| keep(parts[i as usize].0))
                .map(|i| (i, i + 1)),
            x,
        )
    };
    html! {
        svg.pbar width=(WIDTH) height=(height) viewBox={ "0 0 " (WIDTH) " " (height) } role="img" {
            title { "partition status by key" }
            (rects(background.class, background.label, 2.0, &cells(&|_| true), what))
            @for (layer, map) in layers.iter().zip(by_layer) {
                (rects(layer.class, layer.label, 2.0, &cells(&|dims| map.get(dims).is_some_and(|r| !r.is_empty())), what))
            }
            text x="0" y=(height - 3.0) { (crate::bounded(parts[0].0, 40)) }
            text x=(WIDTH - RIGHT) y=(height - 3.0) text-anchor="end" { (crate::bounded(parts[parts.len() - 1].0, 40)) }
        }
    }
}

/// The colours' legend with a count each.
pub(crate) fn legend(items: &[(&'static str, &'static str, u64)]) -> Markup {
    html! {
        div.plegend {
            @for (class, label, count) in items {
                span data-status=(label) { i class={ "p-" (class) } {} (label) " " b { (count) } }
            }
        }
    }
}

/// A small bar of `segments` side by side, each as wide as its share of their sum.
pub(crate) fn progress(segments: &[(&'static str, &'static str, u64)]) -> Markup {
    let (width, height) = (200.0, 12.0);
    let total: u64 = segments.iter().map(|s| s.2).sum();
    let mut at = 0.0;
    let mut drawn = Vec::with_capacity(segments.len());
    for &(class, label, count) in segments.iter().filter(|s| s.2 > 0) {
        let w = count as f64 / total.max(1) as f64 * width;
        drawn.push((class, label, count, at, w));
        at += w;
    }
    html! {
        svg.progress width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } role="img" {
            rect class="p-track" x="0" y="0" width=(width) height=(height) {}
            @for (class, label, count, x, w) in drawn {
                rect class={ "p-" (class) } x=(format!("{x:.1}")) y="0" width=(format!("{w:.1}")) height=(height) {
                    title { (label) ": " (count) }
                }
            }
        }
    }
}

/// The ranges of each status as users write them, with how many partitions each holds: at
/// most [`RANGES_SHOWN`] per status, then how many more.
pub(crate) fn ranges_table(
    def: &PartitionsDefinition,
    statuses: &[(&str, &PartitionSet)],
) -> Markup {
    html! {
        table.ranges {
            thead { tr { th { "Status" } th { "Partitions" } th { "Range" } } }
            tbody {
                @for (status, set) in statuses {
                    @let ranges = def.describe(set);
                    @for (range, count) in ranges.iter().take(RANGES_SHOWN) {
                        tr data-status=(status) { td { (status) } td { (count) } td.mono { (range.key) } }
                    }
                    @if ranges.len() > RANGES_SHOWN {
                        tr { td { (status) } td {} td.muted { "… and " (ranges.len() - RANGES_SHOWN) " more ranges" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::PartitionContext;
    use crate::partitions::{minutely, static_keys};

    fn at(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp()
    }

    /// A minutely asset over two years (a million partitions) with thousands of
    /// materialized ranges and one failed minute: a bounded number of rectangles, the
    /// failed minute among them, drawn from ranges.
    #[test]
    fn a_million_partitions_are_a_few_rectangles() {
        let def: PartitionsDefinition = minutely("2024-11-30T00:00Z").into();
        let ctx = PartitionContext {
            now: at("2026-11-30T00:00:00Z"),
            dynamic: Default::default(),
        };
        let all = def.all(&ctx);
        assert!(def.count(&all) > 1_000_000);
        let start = at("2024-11-30T00:00:00Z");
        // 20,000 ranges of 30 minutes, 30 minutes apart.
        let rows =
            (0..20_000).map(|i| (String::new(), start + i * 3_600, start + i * 3_600 + 1_800));
        let materialized = PartitionSet::from_rows(rows).unwrap();
        let failed_at = at("2025-06-01T12:34:00Z");
        let failed = PartitionSet::of("", RangeSet::span(failed_at, failed_at + 60));
        let missing = PartitionSet::new();
        let began = std::time::Instant::now();
        let svg = bars(
            &def,
            &all,
            Layer::new("missing", "missing", &missing),
            &[
                Layer::new("materialized", "materialized", &materialized),
                Layer::new("failed", "failed", &failed),
            ],
        )
        .into_string();
        println!("drawn in {:?}", began.elapsed());
        let rects = svg.matches("<rect").count();
        assert!(rects < 1_000, "{rects} rectangles");
        assert_eq!(svg.matches("class=\"p-failed\"").count(), 1);
        assert!(
            svg.contains("failed: 2025-06-01-12:34"),
            "the failed minute"
        );
        assert!(
            svg.contains(" ranges within "),
            "merged at pixel resolution"
        );
        assert!(svg.len() < 300_000, "{} bytes", svg.len());
    }

    #[test]
    fn keys_without_time_are_cells_of_one_bar() {
        let def = static_keys(["a", "b", "c", "d"]);
        let all = def.all(&PartitionContext::default());
        let done = PartitionSet::of("a", RangeSet::span(0, 1))
            .union(&PartitionSet::of("b", RangeSet::span(0, 1)))
            .union(&PartitionSet::of("d", RangeSet::span(0, 1)));
        let missing = PartitionSet::new();
        let svg = bars(
            &def,
            &all,
            Layer::new("missing", "missing", &missing),
            &[Layer::new("materialized", "materialized", &done)],
        )
        .into_string();
        // a and b merge; d alone.
        assert_eq!(svg.matches("class=\"p-materialized\"").count(), 2, "{svg}");
        assert!(svg.contains("materialized: 2 partitions, a to b"), "{svg}");
        assert!(svg.contains("materialized: d<"), "{svg}");
    }
}
