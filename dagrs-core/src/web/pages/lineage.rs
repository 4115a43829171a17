//! The lineage graph: every asset laid out left to right, coloured by status (kept live by
//! the script), groups collapsible, click-through to each asset, and a selection box that
//! materializes the assets picked.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;

use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use maud::{html, Markup, PreEscaped};

use super::catalog::{states, Status};
use crate::web::app::{ok, PageResult, State};
use crate::web::graph::{self, Layout, NODE_H, NODE_W};
use crate::web::page::{csrf_field, layout};

/// Labels longer than this are cut (the full key is in the node's tooltip).
const LABEL_CHARS: usize = 24;

/// `GET /lineage?collapse=g1,g2&focus=asset&selection=...`.
pub(crate) async fn page(state: State, Query(query): Query<Vec<(String, String)>>) -> PageResult {
    let app = &*state.0;
    let get = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    // Checkboxes arrive as repeated `collapse=` pairs; links carry one comma-separated list.
    let collapsed: BTreeSet<String> = query
        .iter()
        .filter(|(k, _)| k == "collapse")
        .flat_map(|(_, v)| v.split(','))
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let focus = get("focus").trim();
    let keep: Option<HashSet<String>> = if focus.is_empty() {
        None
    } else {
        let selection = format!("+{focus} {focus}+");
        let keys = app.defs.select(&selection).map_err(|e| app.fail(e))?;
        Some(keys.iter().map(|k| k.to_string()).collect())
    };
    let statuses: HashMap<String, Status> = states(app)
        .await
        .map_err(|e| app.fail(e))?
        .into_iter()
        .map(|(s, st)| (s.key.to_string(), st))
        .collect();
    let drawing = graph::layout(&app.defs, &collapsed, |key| {
        keep.as_ref().is_none_or(|k| k.contains(key))
    });
    let groups: BTreeSet<&str> = app.defs.assets().filter_map(|a| a.group_name()).collect();
    let markup = html! {
        h1 { "Lineage " span.muted { "(" (drawing.nodes.len()) " nodes, " (drawing.edges.len()) " edges)" } }
        form.filters method="post" action="/launch" {
            (csrf_field(&app.csrf))
            label { "Selection (click the circle of a node to pick it)"
                input #selection type="text" name="selection" size="60" value=(get("selection"))
                    placeholder="asset names, or a selection such as group:x or name+";
            }
            button type="submit" { "Materialize selection" }
            label { "Zoom" input #zoom type="range" min="20" max="150" value="100"; }
        }
        form.groups method="get" action="/lineage" data-auto {
            @if !focus.is_empty() { input type="hidden" name="focus" value=(focus); }
            span.muted { "Collapse groups:" }
            @for g in &groups {
                label { input type="checkbox" name="collapse" value=(g) checked[collapsed.contains(*g)]; " " (g) }
            }
            noscript { button type="submit" { "Apply" } }
            @if !focus.is_empty() { a href="/lineage" { "Show every asset" } }
        }
        p.legend.muted {
            span { i.st-fresh {} "fresh" } span { i.st-stale {} "stale" }
            span { i.st-never {} "never materialized" } span { i.st-running {} "running" }
            span { i.group {} "collapsed group (click to expand)" }
        }
        div.graph-wrap { (svg(&drawing, &statuses, &collapsed)) }
    };
    ok(layout("Lineage", "/lineage", &app.csrf, markup))
}

/// The drawing as SVG, written into one string (thousands of nodes stay fast).
fn svg(
    drawing: &Layout,
    statuses: &HashMap<String, Status>,
    collapsed: &BTreeSet<String>,
) -> Markup {
    let mut out = String::with_capacity(drawing.nodes.len() * 400 + drawing.edges.len() * 90);
    let _ = write!(
        out,
        r#"<svg class="graph" data-status="/lineage/status" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}">"#,
        w = drawing.width.max(200.0),
        h = drawing.height.max(60.0)
    );
    out.push_str("<g class=\"edges\">");
    for &(from, to) in &drawing.edges {
        let (a, b) = (&drawing.nodes[from], &drawing.nodes[to]);
        let (x1, y1) = (a.x + NODE_W, a.y + NODE_H / 2.0);
        let (x2, y2) = (b.x, b.y + NODE_H / 2.0);
        let bend = ((x2 - x1).abs() / 2.0).max(30.0);
        let _ = write!(
            out,
            r#"<path class="edge" d="M{x1:.0},{y1:.0} C{:.0},{y1:.0} {:.0},{y2:.0} {x2:.0},{y2:.0}"/>"#,
            x1 + bend,
            x2 - bend
        );
    }
    out.push_str("</g>");
    for node in &drawing.nodes {
        let id = escape(&node.id);
        let label = escape(&cut(&node.id, LABEL_CHARS));
        if node.group {
            let rest: Vec<&str> = collapsed
                .iter()
                .filter(|g| **g != node.id)
                .map(String::as_str)
                .collect();
            let _ = write!(
                out,
                r#"<g class="node group" transform="translate({:.0},{:.0})"><a href="/lineage?collapse={}"><title>group {id}: {} assets (click to expand)</title><rect width="{NODE_W}" height="{NODE_H}"/><text x="10" y="19">▸ {label} ({})</text></a></g>"#,
                node.x,
                node.y,
                escape(&rest.join(",")),
                node.size,
                node.size
            );
        } else {
            let status = statuses.get(&node.id).copied().unwrap_or(Status::Never);
            let _ = write!(
                out,
                r#"<g class="node st-{}" data-key="{id}" transform="translate({:.0},{:.0})"><a href="/assets/{id}"><title>{id} ({})</title><rect width="{NODE_W}" height="{NODE_H}"/><text x="10" y="19">{label}</text></a><circle class="pick" cx="{:.0}" cy="{:.0}" r="6"><title>pick {id}</title></circle></g>"#,
                status.as_str(),
                node.x,
                node.y,
                status.as_str(),
                NODE_W - 14.0,
                NODE_H / 2.0
            );
        }
    }
    out.push_str("</svg>");
    PreEscaped(out)
}

/// `GET /lineage/status`: one line per asset, `<key> <status>`, for the live colours.
pub(crate) async fn statuses(state: State) -> axum::response::Response {
    let app = &*state.0;
    match states(app).await {
        Ok(all) => {
            let mut text = String::with_capacity(all.len() * 24);
            for (s, st) in all {
                let _ = writeln!(text, "{} {}", s.key, st.as_str());
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Err(e) => app.fail(e).into_response(),
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Escapes text for HTML and SVG (text and attribute values).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
