//! One asset: what it is, where it sits in the graph, its materializations with metadata,
//! and charts of its step duration and of each numeric metadata over time.

use std::collections::BTreeMap;

use axum::extract::Path;
use chrono::{DateTime, Utc};
use maud::html;

use crate::event::EventKind;
use crate::partition::AssetPartitions;
use crate::storage::{AutomationRecord, CheckRecord, EventFilter, MaterializationRecord};
use crate::web::app::{ok, PageError, PageResult, State};
use crate::web::chart;
use crate::web::page::{self, badge, csrf_field, layout};
use crate::web::pages::runs::encode;
use crate::web::partition_bar::{self, Layer};

/// How many materializations the page lists and plots.
const HISTORY: usize = 50;

/// `GET /assets/{key}`.
pub(crate) async fn page(state: State, Path(key): Path<String>) -> PageResult {
    let app = &*state.0;
    let spec = app.defs.asset(&key).ok_or_else(|| {
        app.fail(PageError::NotFound(format!(
            "no asset `{}` in these definitions",
            crate::bounded(&key, 120)
        )))
    })?;
    let states = super::catalog::states(app).await.map_err(|e| app.fail(e))?;
    let (current, status) = states
        .iter()
        .find(|(s, _)| s.key == *spec.key())
        .map(|(s, st)| (s.clone(), *st))
        .ok_or_else(|| app.fail(PageError::NotFound("asset state missing".into())))?;
    let storage = app.instance.storage();
    let history = storage
        .materializations(spec.key(), HISTORY)
        .await
        .map_err(|e| app.fail(e))?;
    // The step duration of each materialization, from its run's step events.
    let mut durations: Vec<(DateTime<Utc>, f64)> = Vec::new();
    for m in &history {
        let filter = EventFilter {
            asset: Some(spec.key().clone()),
            skip_logs: true,
            ..EventFilter::default()
        };
        let events = storage
            .events_page(&m.run_id, &filter, 64)
            .await
            .map_err(|e| app.fail(e))?;
        if let Some(d) = events.iter().rev().find_map(|e| match &e.kind {
            EventKind::StepSucceeded { duration, .. } => Some(*duration),
            _ => None,
        }) {
            durations.push((m.timestamp, d.as_secs_f64()));
        }
    }
    let numeric = numeric_metadata(&history);
    let partitions = match spec.partitions {
        Some(_) => Some(
            app.instance
                .asset_partitions(&app.defs, &key)
                .await
                .map_err(|e| app.fail(e))?,
        ),
        None => None,
    };
    let dependents = app.defs.dependents(&key);
    let checks = storage
        .check_records(spec.key(), CHECK_HISTORY)
        .await
        .map_err(|e| app.fail(e))?;
    let automation = match spec.automation_condition() {
        Some(_) => storage
            .automation_records(Some(spec.key()), AUTOMATION_HISTORY)
            .await
            .map_err(|e| app.fail(e))?,
        None => Vec::new(),
    };
    let markup = html! {
        h1 { (spec.key()) " " (badge(status.as_str())) }
        @if let Some(d) = spec.description_text() { p { (d) } }
        dl.facts {
            dt { "Group" } dd { (spec.group_name().unwrap_or("—")) }
            dt { "Tags" } dd.tags { @for (k, v) in spec.tags() { span { (k) "=" (v) } } }
            dt { "Code version" } dd.mono { (spec.code_version_text().unwrap_or("—")) }
            dt { "Kind" } dd { (spec.kind().as_str()) }
            dt { "Output type" } dd.mono { (spec.output_type_name()) }
            @if let Some(condition) = spec.automation_condition() {
                dt { "Automation" } dd.mono #automation-condition { (condition.to_string()) }
            }
            dt { "Upstream" } dd {
                @for dep in spec.deps() { (page::asset_link(dep.as_str())) " " }
                @if spec.deps().is_empty() { span.muted { "none" } }
            }
            dt { "Downstream" } dd {
                @for dep in &dependents { (page::asset_link(dep.as_str())) " " }
                @if dependents.is_empty() { span.muted { "none" } }
            }
            dt { "Stale" } dd {
                @match &current.stale { Some(why) => (why.to_string()), None => "no" }
            }
        }
        div.actions {
            form.inline method="post" action="/launch" {
                (csrf_field(&app.csrf))
                input type="hidden" name="selection" value=(spec.key());
                button type="submit" { "Materialize" }
            }
            form.inline method="post" action="/launch" {
                (csrf_field(&app.csrf))
                input type="hidden" name="selection" value={ (spec.key()) "+" };
                button.secondary type="submit" { "Materialize with downstream" }
            }
            a href={ "/launchpad?selection=" (encode(spec.key().as_str())) } { "Launchpad…" }
            @if partitions.is_some() {
                a href={ "/backfills?selection=" (encode(spec.key().as_str())) } { "Backfill…" }
            }
            a href={ "/lineage?focus=" (encode(spec.key().as_str())) } { "Lineage" }
        }
        @if let Some(parts) = &partitions { (partitions_section(parts)) }
        (checks_section(app, spec, &checks))
        @if spec.automation_condition().is_some() { (automation_section(&automation)) }
        h2 { "Over time" }
        div.charts {
            (chart::line("step duration (s)", &durations, chart::number))
            @for (name, points) in &numeric { (chart::line(name, points, chart::number)) }
            @if durations.is_empty() && numeric.is_empty() { p.muted { "Nothing to plot yet." } }
        }
        h2 { "Materializations " span.muted { "(latest " (history.len()) ")" } }
        table {
            thead { tr { th { "When" } th { "Run" } th { "Metadata" } th { "Code version" } } }
            tbody {
                @for m in &history {
                    tr {
                        td { (page::time(m.timestamp)) }
                        td { (page::run_link(m.run_id.as_str())) }
                        td.mono { @for (k, v) in &m.metadata { div { (k) ": " (metadata_text(v)) } } }
                        td.mono { (m.code_version.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if history.is_empty() { p.muted { "Never materialized." } }
    };
    ok(layout(spec.key().as_str(), "/", &app.csrf, markup))
}

/// How many check evaluations the page reads.
const CHECK_HISTORY: usize = 50;

/// How many automation evaluations the page lists.
const AUTOMATION_HISTORY: usize = 20;

/// The asset's checks with their latest result, then the latest evaluations.
fn checks_section(
    app: &crate::web::app::App,
    spec: &crate::AssetSpec,
    records: &[CheckRecord],
) -> maud::Markup {
    let checks = crate::check::summaries(app.defs.checks_of(spec.key().as_str()), records);
    let verdict = |r: &CheckRecord| match (r.passed, r.severity) {
        (true, _) => badge("passed"),
        (false, crate::CheckSeverity::Warn) => badge("warn"),
        (false, crate::CheckSeverity::Error) => badge("failed"),
    };
    html! {
        @if !checks.is_empty() {
            h2 { "Checks" }
            table #checks {
                thead { tr { th { "Check" } th { "Blocking" } th { "Latest" } th { "When" } th { "Run" } th { "Found" } } }
                tbody {
                    @for check in &checks {
                        @let latest = check.latest;
                        tr {
                            td.mono { (check.name) }
                            td { (check.blocking_text()) }
                            td { @match latest { Some(r) => (verdict(r)), None => span.muted { "never run" } } }
                            td { @if let Some(r) = latest { (page::time(r.timestamp)) } }
                            td { @if let Some(r) = latest { (page::run_link(r.run_id.as_str())) } }
                            td {
                                @if let Some(d) = latest.and_then(|r| r.description.as_deref()) { (d) " " }
                                @if let Some(r) = latest {
                                    span.mono.muted { @for (k, v) in &r.metadata { (k) "=" (metadata_text(v)) " " } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The daemon's latest evaluations of the asset's automation condition.
fn automation_section(records: &[AutomationRecord]) -> maud::Markup {
    html! {
        h2 { "Automation" }
        @if records.is_empty() {
            p.muted { "No evaluation yet: the daemon evaluates conditions (`daemon`, or `dev`)." }
        } @else {
            table #automation {
                thead { tr { th { "Evaluated" } th { "Result" } th { "Runs" } th { "Why" } } }
                tbody {
                    @for r in records {
                        tr {
                            td { (page::time(r.evaluated_at)) }
                            td { @if r.requested { (badge("requested")) } @else { span.muted { "skipped" } } }
                            td { @for id in &r.run_ids { (page::run_link(id.as_str())) " " } }
                            td { (r.reason) }
                        }
                    }
                }
            }
        }
    }
}

/// A partitioned asset's partitions: counts by status, the status bar, the ranges.
fn partitions_section(parts: &AssetPartitions) -> maud::Markup {
    let def = &parts.definition;
    let status = &parts.status;
    let materialized = status.materialized.intersection(&parts.all);
    let failed = status.failed.intersection(&parts.all);
    let in_progress = status.in_progress.intersection(&parts.all);
    let missing = parts.missing();
    let counts = [
        ("materialized", "materialized", def.count(&materialized)),
        ("failed", "failed", def.count(&failed)),
        ("progress", "in progress", def.count(&in_progress)),
        ("missing", "missing", def.count(&missing)),
    ];
    html! {
        h2 { "Partitions" }
        p #partition-summary {
            (def.count(&parts.all)) " partitions exist: "
            @for (i, (_, label, count)) in counts.iter().enumerate() {
                @if i > 0 { ", " }
                (count) " " (label)
            }
        }
        div #partitions {
            (partition_bar::legend(&counts))
            (partition_bar::bars(
                def,
                &parts.all,
                Layer::new("missing", "missing", &missing),
                &[
                    Layer::new("materialized", "materialized", &materialized),
                    Layer::new("failed", "failed", &failed),
                    Layer::new("progress", "in progress", &in_progress),
                ],
            ))
        }
        details.ranges open[materialized.range_count() + failed.range_count() + missing.range_count() <= 12] {
            summary { "Ranges by status" }
            (partition_bar::ranges_table(def, &[
                ("materialized", &materialized),
                ("failed", &failed),
                ("in progress", &in_progress),
                ("missing", &missing),
            ]))
        }
    }
}

/// Every metadata entry that is a number in at least one materialization, as points.
fn numeric_metadata(
    history: &[MaterializationRecord],
) -> BTreeMap<String, Vec<(DateTime<Utc>, f64)>> {
    let mut series: BTreeMap<String, Vec<(DateTime<Utc>, f64)>> = BTreeMap::new();
    for m in history {
        for (name, value) in &m.metadata {
            if let Some(v) = value.as_f64() {
                series
                    .entry(name.clone())
                    .or_default()
                    .push((m.timestamp, v));
            }
        }
    }
    series
}

/// A metadata value as text: strings without quotes, anything else as JSON, at most 400
/// characters.
fn metadata_text(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    crate::bounded(&text, 400).into_owned()
}
