//! Asset selections: `name`, `name+` / `+name` with optional depth (`name+2`, `2+name`), `*`,
//! `group:x`, `tag:k=v` (or `tag:k`), separated by spaces or commas; the result is their union.

use std::collections::HashSet;

use super::AssetGraph;
use crate::error::{Error, Hint};
use crate::source::AssetKind;
use crate::text::{bounded, ECHO_LIMIT, LIST_LIMIT};

/// Resolves `selection` against `graph` to asset indices in topological order.
///
/// Every problem is reported together, each distinct one once; the error stays a few hundred
/// bytes however long the selection is (names are cut, and only the first few unknown names
/// get "did you mean" advice).
pub(crate) fn resolve(graph: &AssetGraph, selection: &str) -> Result<Vec<usize>, Error> {
    let mut marks = vec![false; graph.assets.len()];
    let mut reasons = Vec::new();
    let mut seen_unknown = HashSet::new();
    let mut terms = selection
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .peekable();
    if terms.peek().is_none() {
        return Err(Error::selection(
            selection,
            vec!["it selects nothing; name assets, or use `*` for all".into()],
        ));
    }
    let echo = |text: &str| bounded(text, ECHO_LIMIT).into_owned();
    for term in terms {
        if term == "*" {
            marks.iter_mut().for_each(|m| *m = true);
        } else if let Some(group) = term.strip_prefix("group:") {
            let mut found = false;
            for (i, spec) in graph.assets.iter().enumerate() {
                if spec.group.as_deref() == Some(group) {
                    marks[i] = true;
                    found = true;
                }
            }
            if !found && seen_unknown.insert(term) {
                let groups = graph.assets.iter().filter_map(|s| s.group.as_deref());
                let hint = Hint::closest(group, groups);
                reasons.push(format!("no asset is in group `{}`{hint}", echo(group)));
            }
        } else if let Some(tag) = term.strip_prefix("tag:") {
            let (key, value) = match tag.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (tag, None),
            };
            let mut found = false;
            for (i, spec) in graph.assets.iter().enumerate() {
                if spec
                    .tags
                    .get(key)
                    .is_some_and(|v| value.is_none_or(|want| v == want))
                {
                    marks[i] = true;
                    found = true;
                }
            }
            if !found && seen_unknown.insert(term) {
                reasons.push(format!("no asset has tag `{}`", echo(tag)));
            }
        } else {
            match parse_graph_term(term) {
                Ok((up, name, down)) => match graph.index.get(name) {
                    Some(&i) => {
                        marks[i] = true;
                        if let Some(depth) = up {
                            graph.edges.mark_ancestors(i, depth, &mut marks);
                        }
                        if let Some(depth) = down {
                            graph.edges.mark_descendants(i, depth, &mut marks);
                        }
                    }
                    None if seen_unknown.insert(name) => {
                        // Advice costs a pass over every key: only for the names shown.
                        let hint = if seen_unknown.len() <= LIST_LIMIT {
                            Hint::closest(name, graph.keys())
                        } else {
                            Hint::default()
                        };
                        reasons.push(format!("unknown asset `{}`{hint}", echo(name)));
                    }
                    None => {}
                },
                Err(reason) => reasons.push(reason),
            }
        }
    }
    if !reasons.is_empty() {
        return Err(Error::selection(selection, reasons));
    }
    // External assets are never run: a selection passes over them.
    let selected: Vec<usize> = graph
        .order
        .iter()
        .copied()
        .filter(|&i| marks[i] && graph.assets[i].kind != AssetKind::External)
        .collect();
    if let (true, Some(&i)) = (selected.is_empty(), graph.order.iter().find(|&&i| marks[i])) {
        let reason = format!(
            "`{}` is an external asset: something else writes it and dagrs never \
                     materializes it; select what depends on it (`{}+`)",
            graph.assets[i].key, graph.assets[i].key
        );
        return Err(Error::selection(selection, vec![reason]));
    }
    Ok(selected)
}

/// One level of depth: `None` means no traversal, `Some(None)` unlimited, `Some(Some(n))` n levels.
type Depth = Option<Option<usize>>;

/// Splits `[N]+name+[N]` into upstream depth, name and downstream depth.
fn parse_graph_term(term: &str) -> Result<(Depth, &str, Depth), String> {
    let digits_then_plus = term
        .find('+')
        .filter(|&p| term[..p].chars().all(|c| c.is_ascii_digit()));
    let (up, rest) = match digits_then_plus {
        Some(p) => (Some(parse_depth(&term[..p], term)?), &term[p + 1..]),
        None => (None, term),
    };
    let (name, down) = match rest.find('+') {
        Some(p) => (&rest[..p], Some(parse_depth(&rest[p + 1..], term)?)),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(format!("`{}` names no asset", bounded(term, ECHO_LIMIT)));
    }
    if name.contains('+') || name.contains(':') || name.contains('*') {
        return Err(format!(
            "cannot read `{}`; write `name`, `name+`, `+name`, `name+2`, `2+name`, `*`, `group:x` or `tag:k=v`",
            bounded(term, ECHO_LIMIT)
        ));
    }
    Ok((up, name, down))
}

fn parse_depth(digits: &str, term: &str) -> Result<Option<usize>, String> {
    if digits.is_empty() {
        return Ok(None);
    }
    match digits.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!(
            "bad depth `{}` in `{}`; a depth is a positive whole number",
            bounded(digits, ECHO_LIMIT),
            bounded(term, ECHO_LIMIT)
        )),
        Ok(n) => Ok(Some(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_graph_term;

    #[test]
    fn graph_terms_parse() {
        assert_eq!(parse_graph_term("a"), Ok((None, "a", None)));
        assert_eq!(parse_graph_term("a+"), Ok((None, "a", Some(None))));
        assert_eq!(parse_graph_term("+a"), Ok((Some(None), "a", None)));
        assert_eq!(
            parse_graph_term("2+a+3"),
            Ok((Some(Some(2)), "a", Some(Some(3))))
        );
        assert!(parse_graph_term("a+x").is_err());
        assert!(parse_graph_term("+").is_err());
        assert!(parse_graph_term("a+0").is_err());
        assert!(parse_graph_term("a++").is_err());
    }
}
