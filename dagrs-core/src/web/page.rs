//! The page layout and the small pieces every page uses: navigation, status badges, times,
//! the CSRF field of forms.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::event::RunStatus;

/// The navigation, in order: `(path, label)`.
const NAV: &[(&str, &str)] = &[
    ("/", "Assets"),
    ("/lineage", "Lineage"),
    ("/runs", "Runs"),
    ("/backfills", "Backfills"),
    ("/launchpad", "Launchpad"),
    ("/schedules", "Schedules"),
    ("/sensors", "Sensors"),
    ("/workers", "Workers"),
];

/// A full page: `title`, the navigation with `active` marked, and `content`. `csrf` is the
/// secret that forms carry (also on `<body data-csrf>`, for the script's forms).
pub(crate) fn layout(title: &str, active: &str, csrf: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dagrs" }
                link rel="stylesheet" href="/static/dagrs.css";
                script src="/static/dagrs.js" defer {}
            }
            body data-csrf=(csrf) {
                header.top {
                    a.brand href="/" { "dagrs" }
                    nav {
                        @for (path, label) in NAV {
                            a href=(path) class=[(*path == active).then_some("active")] { (label) }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// A page without navigation (sign-in, refusals).
pub(crate) fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · dagrs" }
                link rel="stylesheet" href="/static/dagrs.css";
            }
            body { main.narrow { (content) } }
        }
    }
}

/// The hidden field every state-changing form carries.
pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A run status as a coloured badge.
pub(crate) fn run_badge(status: RunStatus) -> Markup {
    badge(status.as_str())
}

/// A status word as a coloured badge (`class="badge s-<word>"`).
pub(crate) fn badge(word: &str) -> Markup {
    html! { span class={ "badge s-" (word) } { (word) } }
}

/// An instant as UTC text, with the full instant in its title.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) title=(at.to_rfc3339()) {
            (at.format("%Y-%m-%d %H:%M:%S"))
        }
    }
}

/// A duration as short text: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub(crate) fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, ms / 1_000 % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60)
    }
}

/// The time between two instants, as [`duration`] writes it.
pub(crate) fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    duration((to - from).to_std().unwrap_or_default())
}

/// A link to a run.
pub(crate) fn run_link(run_id: &str) -> Markup {
    html! { a.mono href={ "/runs/" (run_id) } { (short(run_id)) } }
}

/// A link to an asset.
pub(crate) fn asset_link(key: &str) -> Markup {
    html! { a href={ "/assets/" (key) } { (key) } }
}

/// The first 8 characters of an id.
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(duration(Duration::from_secs(7_380)), "2 h 03 min");
    }
}
