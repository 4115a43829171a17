//! The asset catalog: every asset with its status, last materialization and staleness;
//! search, group, tag and status filters.

use std::collections::{BTreeSet, HashMap, HashSet};

use axum::extract::Query;
use maud::html;
use serde::Deserialize;

use crate::error::Error;
use crate::key::AssetKey;
use crate::state::AssetState;
use crate::web::app::{ok, App, PageResult, State, MAX_CATALOG_ROWS};
use crate::web::page::{self, badge, layout};

/// What an asset looks like now, as the catalog and the lineage graph colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// A run that selected it is running.
    Running,
    /// Materialized and up to date.
    Fresh,
    /// Materialized, but stale.
    Stale,
    /// Never materialized.
    Never,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Fresh => "fresh",
            Status::Stale => "stale",
            Status::Never => "never",
        }
    }
}

/// Every asset's state (dependencies first) and status.
pub(crate) async fn states(app: &App) -> Result<Vec<(AssetState, Status)>, Error> {
    let running: HashSet<AssetKey> = app
        .instance
        .storage()
        .running_runs()
        .await?
        .into_iter()
        .flat_map(|run| run.assets)
        .collect();
    Ok(app
        .instance
        .asset_states(&app.defs)
        .await?
        .into_iter()
        .map(|state| {
            let status = if running.contains(&state.key) {
                Status::Running
            } else if state.latest.is_none() {
                Status::Never
            } else if state.stale.is_some() {
                Status::Stale
            } else {
                Status::Fresh
            };
            (state, status)
        })
        .collect())
}

/// The catalog's filters, from the query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    status: String,
}

/// `GET /` and `GET /assets`.
pub(crate) async fn page(state: State, Query(filters): Query<Filters>) -> PageResult {
    let app = &*state.0;
    let all = states(app).await.map_err(|e| app.fail(e))?;
    let groups: BTreeSet<&str> = app.defs.assets().filter_map(|a| a.group_name()).collect();
    let tags: BTreeSet<String> = app
        .defs
        .assets()
        .flat_map(|a| a.tags().iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    let q = filters.q.trim().to_lowercase();
    let tag = filters.tag.split_once('=');
    let shown: Vec<&(AssetState, Status)> = all
        .iter()
        .filter(|(state, status)| {
            let spec = app.defs.asset(state.key.as_str());
            (q.is_empty()
                || state.key.as_str().to_lowercase().contains(&q)
                || spec
                    .and_then(|s| s.description_text())
                    .is_some_and(|d| d.to_lowercase().contains(&q)))
                && (filters.group.is_empty() || state.group.as_deref() == Some(&*filters.group))
                && tag.is_none_or(|(k, v)| {
                    spec.is_some_and(|s| s.tags().get(k).map(String::as_str) == Some(v))
                })
                && (filters.status.is_empty() || status.as_str() == filters.status)
        })
        .collect();
    let total = shown.len();
    let health = health(
        app,
        shown.iter().take(MAX_CATALOG_ROWS).map(|(s, _)| &s.key),
    )
    .await
    .map_err(|e| app.fail(e))?;
    let markup = html! {
        h1 { "Assets " span.muted { "(" (total) " of " (all.len()) ")" } }
        form.filters method="get" action="/" data-auto {
            label { "Search" input type="search" name="q" value=(filters.q) placeholder="name or description"; }
            label { "Group" select name="group" {
                option value="" { "all" }
                @for g in &groups { option value=(g) selected[*g == filters.group] { (g) } }
            } }
            label { "Tag" select name="tag" {
                option value="" { "any" }
                @for t in &tags { option value=(t) selected[*t == filters.tag] { (t) } }
            } }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in ["running", "fresh", "stale", "never"] {
                    option value=(s) selected[s == filters.status] { (s) }
                }
            } }
            button type="submit" { "Filter" }
            a href="/launchpad" { "Materialize…" }
        }
        table #catalog {
            thead { tr {
                th { "Asset" } th { "Group" } th { "Status" } th { "Last materialization" }
                th { "Partitions" } th { "Stale because" } th { "Description" }
            } }
            tbody {
                @for (state, status) in shown.iter().take(MAX_CATALOG_ROWS) {
                    @let spec = app.defs.asset(state.key.as_str());
                    tr data-key=(state.key) {
                        td {
                            (page::asset_link(state.key.as_str()))
                            @if let Some(spec) = spec {
                                @if !spec.tags().is_empty() {
                                    div.tags { @for (k, v) in spec.tags() { span { (k) "=" (v) } } }
                                }
                            }
                        }
                        td { (state.group.as_deref().unwrap_or("")) }
                        td { (badge(status.as_str())) }
                        td {
                            @if let Some(m) = &state.latest {
                                (page::time(m.timestamp)) " · " (page::run_link(m.run_id.as_str()))
                            } @else { span.muted { "never" } }
                        }
                        td.partitions {
                            @if let Some((text, failed)) = health.get(&state.key) {
                                span class=[failed.then_some("p-has-failed")] { (text) }
                            }
                        }
                        td { @if let Some(why) = &state.stale { (why.to_string()) } }
                        td.muted { (spec.and_then(|s| s.description_text()).map(first_line).unwrap_or("")) }
                    }
                }
            }
        }
        @if total > MAX_CATALOG_ROWS {
            p.muted { "Showing the first " (MAX_CATALOG_ROWS) " of " (total) "; search or filter to see the rest." }
        }
    };
    ok(layout("Assets", "/", &app.csrf, markup))
}

/// The partition health of the partitioned assets among `keys`: "720/744 materialized, 2
/// failed, 1 in progress", and whether any failed. Unpartitioned assets cost nothing.
async fn health<'a>(
    app: &App,
    keys: impl Iterator<Item = &'a AssetKey>,
) -> Result<HashMap<AssetKey, (String, bool)>, Error> {
    let specs: Vec<&crate::AssetSpec> = keys
        .filter_map(|k| app.defs.asset(k.as_str()))
        .filter(|s| s.partitions.is_some())
        .collect();
    let mut out = HashMap::with_capacity(specs.len());
    for parts in app.instance.partitions_of(&specs).await? {
        let def = &parts.definition;
        let count = |set: &crate::partition::PartitionSet| def.count(&set.intersection(&parts.all));
        let failed = count(&parts.status.failed);
        let in_progress = count(&parts.status.in_progress);
        let mut text = format!(
            "{}/{} materialized",
            count(&parts.status.materialized),
            def.count(&parts.all)
        );
        if failed > 0 {
            text.push_str(&format!(", {failed} failed"));
        }
        if in_progress > 0 {
            text.push_str(&format!(", {in_progress} in progress"));
        }
        out.insert(parts.asset, (text, failed > 0));
    }
    Ok(out)
}

/// The first line of a text, at most 160 characters.
fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(160) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}
