//! SQL identifiers that are validated once and always quoted when rendered.

use std::fmt;

use crate::error::{Error, Result};

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

const RULE_EMPTY: &str = "must not be empty";
const RULE_LONG: &str = "must be at most 63 bytes long (PostgreSQL's limit for names)";
const RULE_NUL: &str = "must not contain a NUL character";
const RULE_PLAIN: &str = "must match [a-z_][a-z0-9_]* (lowercase ASCII letters, digits and \
                          underscores, not starting with a digit)";
const RULE_DOTS: &str = "must be `table` or `schema.table`, with at most one dot";

/// A validated SQL identifier: a table, column, schema, view or database name.
///
/// [`Ident::new`] accepts any name PostgreSQL can store (1 to 63 bytes, no NUL);
/// [`Ident::plain`] accepts only `[a-z_][a-z0-9_]*`, for names built from
/// configuration such as view names (serde deserializes through `plain`). Either
/// way the name is used exactly as written: `Display` renders it double-quoted,
/// with any `"` doubled, so it can never end the identifier early. Note that
/// quoting makes names case-sensitive: `Ident::new("Readings")` is not the table
/// `readings`.
///
/// ```
/// use dagrs_postgres::Ident;
/// let column = Ident::new("tag name")?;
/// assert_eq!(column.to_string(), r#""tag name""#);
/// assert_eq!(Ident::new(r#"a"b"#)?.to_string(), r#""a""b""#);
/// assert!(Ident::plain("influx_agg_1_minute").is_ok());
/// assert!(Ident::plain("Influx-Agg").is_err());
/// # Ok::<(), dagrs_postgres::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Validates any name PostgreSQL can store: 1 to 63 bytes, no NUL.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let rule = if name.is_empty() {
            Some(RULE_EMPTY)
        } else if name.len() > MAX_IDENT_BYTES {
            Some(RULE_LONG)
        } else if name.contains('\0') {
            Some(RULE_NUL)
        } else {
            None
        };
        match rule {
            Some(rule) => Err(Error::InvalidIdent { value: name, rule }),
            None => Ok(Self(name)),
        }
    }

    /// Validates a plain name, `[a-z_][a-z0-9_]*`, at most 63 bytes: the form
    /// to use for names derived from configuration (view names and the like).
    pub fn plain(name: impl Into<String>) -> Result<Self> {
        let ident = Self::new(name)?;
        let mut chars = ident.0.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok {
            Ok(ident)
        } else {
            Err(Error::InvalidIdent {
                value: ident.0,
                rule: RULE_PLAIN,
            })
        }
    }

    /// The name as written, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name this crate knows to be valid.
    pub(crate) fn known(name: &'static str) -> Self {
        debug_assert!(
            Self::plain(name).is_ok(),
            "{name} is not a plain identifier"
        );
        Self(name.to_owned())
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&postgres_protocol::escape::escape_identifier(&self.0))
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({self})")
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Ident {
    /// Deserializes through [`Ident::plain`]: a name read from configuration (a view
    /// prefix, a table) must be `[a-z_][a-z0-9_]*`, so a bad one is rejected, naming it, when
    /// the config is read. Build other names in code with [`Ident::new`].
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::plain(name).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Ident {
    /// Serializes as the name as written, unquoted.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A table or view name with an optional schema, rendered as `"schema"."name"`.
///
/// Without a schema, PostgreSQL looks the name up on the connection's
/// `search_path` (normally `public`).
///
/// ```
/// use dagrs_postgres::QualifiedName;
/// assert_eq!(QualifiedName::parse("influx_hist")?.to_string(), r#""influx_hist""#);
/// assert_eq!(QualifiedName::parse("ecoanp.influx_hist")?.to_string(), r#""ecoanp"."influx_hist""#);
/// assert!(QualifiedName::parse("a.b.c").is_err());
/// # Ok::<(), dagrs_postgres::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    schema: Option<Ident>,
    name: Ident,
}

impl QualifiedName {
    /// A name without a schema.
    pub fn new(name: Ident) -> Self {
        Self { schema: None, name }
    }

    /// A name inside `schema`.
    pub fn with_schema(schema: Ident, name: Ident) -> Self {
        Self {
            schema: Some(schema),
            name,
        }
    }

    /// Parses `table` or `schema.table`; each part must pass [`Ident::new`].
    /// A name that itself contains a dot must be built with [`QualifiedName::new`].
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = text.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => Ok(Self::new(Ident::new(name)?)),
            (Some(schema), Some(name), None) => {
                Ok(Self::with_schema(Ident::new(schema)?, Ident::new(name)?))
            }
            _ => Err(Error::InvalidIdent {
                value: text.to_owned(),
                rule: RULE_DOTS,
            }),
        }
    }

    /// The schema, when one was given.
    pub fn schema(&self) -> Option<&Ident> {
        self.schema.as_ref()
    }

    /// The table or view name.
    pub fn name(&self) -> &Ident {
        &self.name
    }
}

impl From<Ident> for QualifiedName {
    fn from(name: Ident) -> Self {
        Self::new(name)
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}.")?;
        }
        write!(f, "{}", self.name)
    }
}

impl fmt::Debug for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QualifiedName({self})")
    }
}

/// Renders `text` as an SQL string literal the way libpq's `PQescapeLiteral` does: `'`
/// doubled, and the ` E''` form with `\` doubled when a backslash occurs, so the literal
/// means the same whatever `standard_conforming_strings` is set to.
pub(crate) fn string_literal(text: &str) -> String {
    postgres_protocol::escape::escape_literal(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_accepts_any_storable_name_and_quotes_it() {
        let cases = [
            ("ts", r#""ts""#),
            ("Tag Name", r#""Tag Name""#),
            (r#"a"b"#, r#""a""b""#),
            (r#"""#, r#""""""#),
            ("x; DROP TABLE y", r#""x; DROP TABLE y""#),
            ("한글", r#""한글""#),
        ];
        for (name, quoted) in cases {
            let ident = Ident::new(name).unwrap();
            assert_eq!(ident.to_string(), quoted, "{name}");
            assert_eq!(ident.as_str(), name);
        }
        assert!(Ident::new("a".repeat(63)).is_ok());
    }

    #[test]
    fn new_rejects_empty_long_and_nul() {
        let cases = [
            (String::new(), RULE_EMPTY),
            ("a".repeat(64), RULE_LONG),
            ("한".repeat(22), RULE_LONG), // 66 bytes in 22 characters
            ("a\0b".to_owned(), RULE_NUL),
        ];
        for (name, expected) in cases {
            match Ident::new(name.clone()) {
                Err(Error::InvalidIdent { value, rule }) => {
                    assert_eq!(value, name);
                    assert_eq!(rule, expected);
                }
                other => panic!("{name:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn plain_accepts_only_lowercase_snake_case() {
        for ok in ["a", "_", "influx_agg_1_minute", "_x9", "abc_123"] {
            assert!(Ident::plain(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "1abc",
            "Abc",
            "a-b",
            "a b",
            "a.b",
            "a\"b",
            "é",
            "x;drop",
            &"a".repeat(64),
        ] {
            assert!(Ident::plain(bad).is_err(), "{bad:?} should be rejected");
        }
        let err = Ident::plain("Bad-Name").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid SQL identifier \"Bad-Name\": must match [a-z_][a-z0-9_]* (lowercase ASCII \
             letters, digits and underscores, not starting with a digit)"
        );
    }

    #[test]
    fn qualified_names_parse_and_render() {
        let name = QualifiedName::parse("s.t").unwrap();
        assert_eq!(name.schema().unwrap().as_str(), "s");
        assert_eq!(name.name().as_str(), "t");
        assert_eq!(name.to_string(), r#""s"."t""#);
        assert_eq!(QualifiedName::parse("t").unwrap().to_string(), r#""t""#);
        for bad in ["", ".", "a.", ".b", "a.b.c"] {
            assert!(
                QualifiedName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let dotted = QualifiedName::new(Ident::new("a.b").unwrap());
        assert_eq!(dotted.to_string(), r#""a.b""#);
    }

    #[test]
    fn deserialization_accepts_only_plain_names() {
        let ident: Ident = serde_json::from_str(r#""influx_agg_""#).unwrap();
        assert_eq!(ident.as_str(), "influx_agg_");
        assert_eq!(serde_json::to_string(&ident).unwrap(), r#""influx_agg_""#);
        let err = serde_json::from_str::<Ident>(r#""agg\"; DROP TABLE x; --""#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                r#"invalid SQL identifier "agg\"; DROP TABLE x; --": must match [a-z_][a-z0-9_]*"#
            ),
            "{err}"
        );
        assert!(serde_json::from_str::<Ident>("3").is_err());
    }

    #[test]
    fn string_literals_escape_quotes_and_backslashes() {
        assert_eq!(string_literal("abc"), "'abc'");
        assert_eq!(string_literal("it's"), "'it''s'");
        assert_eq!(string_literal(r"a\b"), r" E'a\\b'");
        assert_eq!(string_literal(r#""s"."t""#), r#"'"s"."t"'"#);
    }
}
