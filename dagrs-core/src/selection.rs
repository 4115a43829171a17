//! Asset selections: `name`, `name+` / `+name` with optional depth (`name+2`, `2+name`), `*`,
//! `group:x`, `tag:k=v` (or `tag:k`), separated by spaces or commas; the result is their union.

use crate::definitions::Definitions;
use crate::error::{Error, Hint};

/// Resolves `selection` against `defs` to asset indices in topological order.
pub(crate) fn resolve(defs: &Definitions, selection: &str) -> Result<Vec<usize>, Error> {
    let inner = defs.inner();
    let invalid = |reason: String| Error::InvalidSelection {
        selection: selection.to_owned(),
        reason,
    };
    let mut marks = vec![false; inner.assets.len()];
    let mut problems = Vec::new();
    let terms: Vec<&str> = selection
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    if terms.is_empty() {
        return Err(invalid(
            "it selects nothing; name assets, or use `*` for all".into(),
        ));
    }
    for term in terms {
        if term == "*" {
            marks.iter_mut().for_each(|m| *m = true);
        } else if let Some(group) = term.strip_prefix("group:") {
            let mut found = false;
            for (i, spec) in inner.assets.iter().enumerate() {
                if spec.group.as_deref() == Some(group) {
                    marks[i] = true;
                    found = true;
                }
            }
            if !found {
                let groups = inner.assets.iter().filter_map(|s| s.group.as_deref());
                let hint = Hint::closest(group, groups);
                problems.push(invalid(format!("no asset is in group `{group}`{hint}")));
            }
        } else if let Some(tag) = term.strip_prefix("tag:") {
            let (key, value) = match tag.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (tag, None),
            };
            let mut found = false;
            for (i, spec) in inner.assets.iter().enumerate() {
                if spec
                    .tags
                    .get(key)
                    .is_some_and(|v| value.is_none_or(|want| v == want))
                {
                    marks[i] = true;
                    found = true;
                }
            }
            if !found {
                problems.push(invalid(format!("no asset has tag `{tag}`")));
            }
        } else {
            match parse_graph_term(term) {
                Ok((up, name, down)) => match inner.index.get(name) {
                    Some(&i) => {
                        marks[i] = true;
                        if let Some(depth) = up {
                            inner.graph.mark_ancestors(i, depth, &mut marks);
                        }
                        if let Some(depth) = down {
                            inner.graph.mark_descendants(i, depth, &mut marks);
                        }
                    }
                    None => problems.push(Error::UnknownAsset {
                        name: name.to_owned(),
                        selection: selection.to_owned(),
                        hint: Hint::closest(name, inner.assets.iter().map(|s| s.key.as_str())),
                    }),
                },
                Err(reason) => problems.push(invalid(reason)),
            }
        }
    }
    crate::error::Problems::check(problems)?;
    Ok(inner.order.iter().copied().filter(|&i| marks[i]).collect())
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
        return Err(format!("`{term}` names no asset"));
    }
    if name.contains('+') || name.contains(':') || name.contains('*') {
        return Err(format!(
            "cannot read `{term}`; write `name`, `name+`, `+name`, `name+2`, `2+name`, `*`, `group:x` or `tag:k=v`"
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
            "bad depth `{digits}` in `{term}`; a depth is a positive whole number"
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
