//! Text that reaches users: secrets masked, echoed input bounded.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most characters of one user-supplied value (a name, a config path, a parser's reason)
/// that a message echoes; the rest is cut with a note.
pub(crate) const ECHO_LIMIT: usize = 120;

/// The most items of one list (unknown names, problems) that a message names.
pub(crate) const LIST_LIMIT: usize = 10;

/// `text` with the password of every URL in it (`scheme://user:password@host`) replaced by
/// `***`, so secrets that reach an error or a log line never reach the event log.
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `text` cut to its first `max` characters, with a note of how much was left out, so a
/// message stays short however large the input was.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!(
            "{}… ({} more bytes)",
            &text[..end],
            text.len() - end
        )),
    }
}

/// `items` joined with `separator`, at most [`LIST_LIMIT`] of them, with "and N more" after.
pub(crate) fn bounded_list<I>(items: I, separator: &str) -> String
where
    I: IntoIterator,
    I::Item: std::fmt::Display,
{
    let mut out = String::new();
    let mut left = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= LIST_LIMIT {
            left += 1;
            continue;
        }
        if i > 0 {
            out.push_str(separator);
        }
        let _ = write!(out, "{item}");
    }
    if left > 0 {
        let _ = write!(out, "{separator}and {left} more");
    }
    out
}

/// Names of a status as text: `as_str` and `FromStr` agree with the serde names, the one
/// spelling every store, the CLI and JSON output use.
macro_rules! named {
    ($type:ident, $what:literal, { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $type {
            /// The name, as stored and printed.
            pub fn as_str(self) -> &'static str {
                match self { $($type::$variant => $name),* }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($name => Ok($type::$variant),)*
                    other => Err(format!(
                        concat!("unknown ", $what, " `{}`; expected one of: ", $($name, " "),*),
                        crate::text::bounded(other, crate::text::ECHO_LIMIT)
                    )),
                }
            }
        }
    };
}

pub(crate) use named;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_secrets("cannot reach postgres://app:hunter2@db:5432/x (timeout)"),
            "cannot reach postgres://app:***@db:5432/x (timeout)"
        );
        assert_eq!(
            mask_secrets("a http://u:p@h b https://v:q:r@i/path?x=1 c"),
            "a http://u:***@h b https://v:***@i/path?x=1 c"
        );
        assert_eq!(mask_secrets("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(mask_secrets("no url: a:b@c"), "no url: a:b@c");
        assert_eq!(mask_secrets("ends with ://"), "ends with ://");
        assert_eq!(mask_secrets("ünï://ü:ß@h"), "ünï://ü:***@h");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let long = "é".repeat(50);
        let cut = bounded(&long, 4);
        assert_eq!(cut, "éééé… (92 more bytes)");
    }

    #[test]
    fn long_lists_name_the_first_few() {
        assert_eq!(bounded_list(["a", "b"], ", "), "a, b");
        let many = bounded_list(0..25, ", ");
        assert!(many.ends_with("9, and 15 more"), "{many}");
    }
}
