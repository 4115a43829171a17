//! Small line charts as inline SVG, rendered on the server: a value over time.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;

/// A chart titled `title` of `points` (any order), each value written with `label`.
pub(crate) fn line(
    title: &str,
    points: &[(DateTime<Utc>, f64)],
    label: impl Fn(f64) -> String,
) -> Markup {
    let mut points: Vec<(DateTime<Utc>, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    points.sort_by_key(|(t, _)| *t);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return html! {};
    };
    let (t0, t1) = (
        first.0.timestamp_millis() as f64,
        last.0.timestamp_millis() as f64,
    );
    let lo = points
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let x = |t: DateTime<Utc>| {
        if t1 > t0 {
            LEFT + (t.timestamp_millis() as f64 - t0) / (t1 - t0) * (WIDTH - LEFT - RIGHT)
        } else {
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0
        }
    };
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM);
    let path: String = points
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            format!(
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(*t),
                y(*v)
            )
        })
        .collect();
    html! {
        div.chart {
            h3 { (title) }
            svg width=(WIDTH) height=(HEIGHT) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" {
                title { (title) }
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) stroke="#c8cdd8" {}
                line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - RIGHT) y2=(HEIGHT - BOTTOM) stroke="#c8cdd8" {}
                text x=(LEFT - 4.0) y=(TOP + 8.0) text-anchor="end" { (label(hi)) }
                text x=(LEFT - 4.0) y=(HEIGHT - BOTTOM) text-anchor="end" { (label(lo)) }
                text x=(LEFT) y=(HEIGHT - 6.0) { (first.0.format("%m-%d %H:%M")) }
                text x=(WIDTH - RIGHT) y=(HEIGHT - 6.0) text-anchor="end" { (last.0.format("%m-%d %H:%M")) }
                path d=(path) fill="none" stroke="#4f46e5" stroke-width="1.8" {}
                @for (t, v) in &points {
                    circle cx=(format!("{:.1}", x(*t))) cy=(format!("{:.1}", y(*v))) r="2.5" fill="#4f46e5" {
                        title { (t.format("%Y-%m-%d %H:%M:%S")) ": " (label(*v)) }
                    }
                }
            }
        }
    }
}

/// A number as short text: integers without decimals, others with up to 3.
pub(crate) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}
