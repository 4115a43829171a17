//! Parsing of `#[asset(...)]` arguments.
//!
//! Parsing recovers from a bad argument: its error is recorded, the argument is skipped up to
//! the next top-level `,`, and the rest is parsed. The asset is then generated as if the bad
//! argument were absent, so one mistake gives one error instead of one more at every place
//! that names the asset.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{Expr, Ident, LitStr, Path, Token};

/// Which attribute is parsed: its name and the keys it accepts (for the "unknown key" error).
#[derive(Clone, Copy)]
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    keys: &'static str,
}

/// `#[asset]`.
pub(crate) const ASSET: Kind = Kind {
    name: "asset",
    keys: "deps, group, pool, tags, description, retry, timeout, hooks, code_version, key, \
           partitions, mappings, backfill, automation",
};

/// `#[observable_source_asset]`: what a source asset can have.
pub(crate) const OBSERVABLE: Kind = Kind {
    name: "observable_source_asset",
    keys: "group, tags, description, retry, timeout, code_version, key",
};

/// `#[asset_check]`.
pub(crate) const CHECK: Kind = Kind {
    name: "asset_check",
    keys: "asset, name, blocking, description",
};

/// What each key takes, and an example, for the errors about malformed values.
pub(crate) fn usage(key: &str) -> (&'static str, &'static str) {
    match key {
        "deps" => (
            "a list of assets",
            "deps = [upstream_asset, \"external/key\"]",
        ),
        "tags" => (
            "a list of `key = \"value\"` pairs",
            "tags(kind = \"raw\", owner = \"ops\")",
        ),
        "retry" => (
            "a `Retry`",
            "retry = Retry::fixed(3, Duration::from_secs(10))",
        ),
        "timeout" => ("a `Duration`", "timeout = Duration::from_secs(60)"),
        "partitions" => (
            "a `PartitionsDefinition`",
            "partitions = hourly(\"2024-01-01T00:00Z\")",
        ),
        "mappings" => (
            "a list of `dependency = PartitionMapping` pairs",
            "mappings(hourly_data = PartitionMapping::TimeWindow)",
        ),
        "backfill" => ("a `BackfillPolicy`", "backfill = BackfillPolicy::SingleRun"),
        "automation" => ("an `AutomationCondition`", "automation = eager()"),
        "asset" => ("the asset it checks", "asset = influx_data"),
        "blocking" => ("`true` or `false`", "blocking = true"),
        "name" => ("a string literal", "name = \"no_gaps\""),
        "hooks" => ("a list of `Hook`s", "hooks = [alert_on_failure()]"),
        "group" => ("a string literal", "group = \"...\""),
        "pool" => ("a string literal", "pool = \"warehouse\""),
        "description" => ("a string literal", "description = \"...\""),
        "code_version" => ("a string literal", "code_version = \"...\""),
        _ => ("a string literal", "key = \"...\""),
    }
}

/// A dependency: an asset named by path (checked by the compiler) or by string.
pub(crate) enum Dep {
    Path(Path),
    Key(LitStr),
}

/// The parsed arguments.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) deps: Vec<Dep>,
    pub(crate) group: Option<LitStr>,
    /// The concurrency pool of the asset's steps.
    pub(crate) pool: Option<LitStr>,
    pub(crate) tags: Vec<(LitStr, LitStr)>,
    pub(crate) description: Option<LitStr>,
    pub(crate) retry: Option<Expr>,
    pub(crate) timeout: Option<Expr>,
    pub(crate) hooks: Vec<Expr>,
    pub(crate) code_version: Option<LitStr>,
    pub(crate) key: Option<LitStr>,
    pub(crate) partitions: Option<Expr>,
    pub(crate) mappings: Vec<(Dep, Expr)>,
    pub(crate) backfill: Option<Expr>,
    pub(crate) automation: Option<Expr>,
    /// `#[asset_check]`: the asset checked, the check's name, whether it blocks.
    pub(crate) asset: Option<Dep>,
    pub(crate) name: Option<LitStr>,
    pub(crate) blocking: Option<syn::LitBool>,
    /// Every key given, even with a bad value (so a bad value is not also "missing").
    pub(crate) given: Vec<String>,
}

/// Errors collected while parsing and checking, all reported.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn into_compile_error(self) -> TokenStream {
        self.0
            .map(|error| error.into_compile_error())
            .unwrap_or_default()
    }
}

/// Parses the arguments, recording every error in `errors` and keeping what was valid.
pub(crate) fn parse(tokens: TokenStream, kind: Kind, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let parser = |input: ParseStream<'_>| {
        parse_args(input, kind, &mut args, errors);
        Ok(())
    };
    // `parse_args` consumes every token and reports its own errors, so this cannot fail.
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    args
}

fn parse_args(input: ParseStream<'_>, kind: Kind, args: &mut Args, errors: &mut Errors) {
    let mut seen: Vec<Ident> = Vec::new();
    while !input.is_empty() {
        let start = input.fork();
        match parse_arg(input, &start, kind, args, &mut seen, errors) {
            Ok(()) if input.is_empty() || input.peek(Token![,]) => {}
            Ok(()) => {
                errors.push(syn::Error::new(
                    input.span(),
                    format!("expected `,` between `#[{}]` arguments", kind.name),
                ));
                skip_argument(input);
            }
            Err(error) => {
                errors.push(error);
                skip_argument(input);
            }
        }
        // Cannot fail: the argument ends at a `,` or at the end of the input.
        let _ = input.parse::<Option<Token![,]>>();
    }
}

/// One `key = value` (or `tags(...)`) argument. An `Err` makes the caller skip the rest of
/// the argument; errors about single list items go to `errors` and the item is dropped.
fn parse_arg(
    input: ParseStream<'_>,
    start: ParseStream<'_>,
    kind: Kind,
    args: &mut Args,
    seen: &mut Vec<Ident>,
    errors: &mut Errors,
) -> syn::Result<()> {
    if !input.peek(Ident::peek_any) {
        return Err(syn::Error::new(
            input.span(),
            format!("expected a key; `#[{}]` accepts: {}", kind.name, kind.keys),
        ));
    }
    let name = input.call(Ident::parse_any)?;
    let key = name.unraw().to_string();
    if !kind.keys.split(", ").any(|k| k == key) {
        return Err(syn::Error::new_spanned(
            &name,
            format!(
                "unknown key `{name}`; `#[{}]` accepts: {}",
                kind.name, kind.keys
            ),
        ));
    }
    if let Some(first) = seen.iter().find(|s| s.unraw() == key) {
        return Err(duplicate("key", &key, &name, first));
    }
    seen.push(name.clone());
    args.given.push(key.clone());

    if key == "tags" || key == "mappings" {
        let list = delimited(input, Delimiter::Parenthesis)
            .ok_or_else(|| malformed(&name, argument_tokens(start)))?;
        if key == "tags" {
            args.tags = parse_tags(list, errors);
        } else {
            args.mappings = parse_mappings(list, errors);
        }
        return Ok(());
    }
    if input.parse::<Option<Token![=]>>()?.is_none() {
        return Err(malformed(&name, argument_tokens(start)));
    }
    if input.is_empty() || input.peek(Token![,]) {
        return Err(malformed(&name, argument_tokens(start)));
    }
    match key.as_str() {
        "deps" => {
            let list = delimited(input, Delimiter::Bracket)
                .ok_or_else(|| malformed(&name, argument_tokens(input)))?;
            args.deps = parse_deps(list, errors);
        }
        "retry" => {
            let expr = input
                .parse()
                .map_err(|_| malformed(&name, argument_tokens(input)))?;
            args.retry = Some(expr);
        }
        "timeout" | "partitions" | "backfill" | "automation" => {
            let expr = input
                .parse()
                .map_err(|_| malformed(&name, argument_tokens(input)))?;
            match key.as_str() {
                "timeout" => args.timeout = Some(expr),
                "partitions" => args.partitions = Some(expr),
                "automation" => args.automation = Some(expr),
                _ => args.backfill = Some(expr),
            }
        }
        "asset" => {
            let expr: Expr = input
                .parse()
                .map_err(|_| malformed(&name, argument_tokens(input)))?;
            args.asset = Some(match expr {
                Expr::Path(path) if path.qself.is_none() => Dep::Path(path.path),
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) => {
                    check_key(&text)?;
                    Dep::Key(text)
                }
                other => return Err(malformed(&name, other)),
            });
        }
        "blocking" => {
            let expr: Expr = input
                .parse()
                .map_err(|_| malformed(&name, argument_tokens(input)))?;
            match expr {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Bool(flag),
                    ..
                }) => args.blocking = Some(flag),
                other => return Err(malformed(&name, other)),
            }
        }
        "hooks" => {
            let list = delimited(input, Delimiter::Bracket)
                .ok_or_else(|| malformed(&name, argument_tokens(input)))?;
            let parse = syn::punctuated::Punctuated::<Expr, Token![,]>::parse_terminated;
            match parse.parse2(list) {
                Ok(hooks) => args.hooks = hooks.into_iter().collect(),
                Err(error) => errors.push(error),
            }
        }
        _ => {
            let text = string_value(input, &name)?;
            match key.as_str() {
                "group" => args.group = Some(text),
                "pool" => args.pool = Some(text),
                "description" => args.description = Some(text),
                "code_version" => args.code_version = Some(text),
                "name" => {
                    if !is_valid_key(&text.value()) {
                        return Err(syn::Error::new_spanned(
                            &text,
                            "check names are non-empty and use only letters, digits, `_`, \
                             `-`, `.` and `/`",
                        ));
                    }
                    args.name = Some(text);
                }
                _ => {
                    check_key(&text)?;
                    args.key = Some(text);
                }
            }
        }
    }
    Ok(())
}

/// The error for a key whose value is missing or of the wrong kind, spanning `tokens`.
pub(crate) fn malformed(name: &Ident, tokens: impl ToTokens) -> syn::Error {
    let (what, example) = usage(&name.unraw().to_string());
    syn::Error::new_spanned(tokens, format!("`{name}` takes {what}, e.g. `{example}`"))
}

/// The one error for anything given twice: at the repetition, and at the first.
pub(crate) fn duplicate(
    what: &str,
    name: &str,
    again: impl ToTokens,
    first: impl ToTokens,
) -> syn::Error {
    let mut error = syn::Error::new_spanned(again, format!("duplicate {what} `{name}`"));
    error.combine(syn::Error::new_spanned(first, "first given here"));
    error
}

/// The rule of `AssetKey`: checked here so that a bad key is a compile error at its span
/// rather than an error when `Definitions` are built.
pub(crate) fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

pub(crate) const KEY_RULE: &str =
    "asset keys are non-empty and use only letters, digits, `_`, `-`, `.` and `/`";

pub(crate) fn check_key(key: &LitStr) -> syn::Result<()> {
    if is_valid_key(&key.value()) {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(key, KEY_RULE))
    }
}

/// `= "text"` after `name`: the value must be one string literal.
pub(crate) fn string_value(input: ParseStream<'_>, name: &Ident) -> syn::Result<LitStr> {
    let expr: Expr = input
        .parse()
        .map_err(|_| malformed(name, argument_tokens(input)))?;
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        }) => Ok(text),
        other => Err(malformed(name, other)),
    }
}

/// The contents of the next token if it is a group with `delimiter`.
pub(crate) fn delimited(input: ParseStream<'_>, delimiter: Delimiter) -> Option<TokenStream> {
    input
        .step(|cursor| match cursor.token_tree() {
            Some((TokenTree::Group(group), rest)) if group.delimiter() == delimiter => {
                Ok((group.stream(), rest))
            }
            _ => Err(cursor.error("not this group")),
        })
        .ok()
}

/// The tokens from the cursor to the end of the current argument, without consuming them.
pub(crate) fn argument_tokens(input: ParseStream<'_>) -> TokenStream {
    skip_argument(&input.fork())
}

/// Consumes the tokens up to (not including) the next top-level `,` and returns them.
pub(crate) fn skip_argument(input: ParseStream<'_>) -> TokenStream {
    input
        .step(|cursor| {
            let mut rest = *cursor;
            let mut skipped = TokenStream::new();
            while let Some((token, next)) = rest.token_tree() {
                if is_comma(&token) {
                    break;
                }
                skipped.extend([token]);
                rest = next;
            }
            Ok((skipped, rest))
        })
        .unwrap_or_default()
}

fn is_comma(token: &TokenTree) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == ',')
}

/// The items of a `,`-separated list; an empty item (`a,,b`) is given as the span of its `,`.
pub(crate) fn split_list(list: TokenStream) -> Vec<Result<TokenStream, Span>> {
    let mut items = Vec::new();
    let mut item = TokenStream::new();
    for token in list {
        if is_comma(&token) {
            if item.is_empty() {
                items.push(Err(token.span()));
            } else {
                items.push(Ok(std::mem::take(&mut item)));
            }
        } else {
            item.extend([token]);
        }
    }
    if !item.is_empty() {
        items.push(Ok(item));
    }
    items
}

const DEP_RULE: &str = "a dependency is an asset function's name (a path) or a string key";

/// `[a, b::c, "external/key"]`: bad items are reported and left out.
pub(crate) fn parse_deps(list: TokenStream, errors: &mut Errors) -> Vec<Dep> {
    let mut deps = Vec::new();
    for item in split_list(list) {
        let dep = match item {
            Err(comma) => Err(syn::Error::new(comma, DEP_RULE)),
            Ok(tokens) => syn::parse2::<Dep>(tokens.clone())
                .map_err(|_| syn::Error::new_spanned(tokens, DEP_RULE))
                .and_then(|dep| match &dep {
                    Dep::Key(key) => check_key(key).map(|()| dep),
                    Dep::Path(_) => Ok(dep),
                }),
        };
        match dep {
            Ok(dep) => deps.push(dep),
            Err(error) => errors.push(error),
        }
    }
    deps
}

impl Parse for Dep {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            input.parse().map(Dep::Key)
        } else {
            input.parse().map(Dep::Path)
        }
    }
}

const MAPPING_RULE: &str = "a mapping is `dependency = PartitionMapping`, the dependency an \
     asset function's name or a string key, e.g. `mappings(hourly = PartitionMapping::TimeWindow)`";

/// `(a = PartitionMapping::All, "ext/key" = ...)`: bad items are reported and left out.
fn parse_mappings(list: TokenStream, errors: &mut Errors) -> Vec<(Dep, Expr)> {
    let mut mappings = Vec::new();
    for item in split_list(list) {
        let parsed = match item {
            Err(comma) => Err(syn::Error::new(comma, MAPPING_RULE)),
            Ok(tokens) => {
                let parser = |input: ParseStream<'_>| {
                    let dep: Dep = input.parse()?;
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    Ok((dep, expr))
                };
                parser
                    .parse2(tokens.clone())
                    .map_err(|_| syn::Error::new_spanned(tokens, MAPPING_RULE))
            }
        };
        match parsed {
            Ok(mapping) => mappings.push(mapping),
            Err(error) => errors.push(error),
        }
    }
    mappings
}

/// `(kind = "raw", "owner" = "ops")`: bad or repeated items are reported and left out.
pub(crate) fn parse_tags(list: TokenStream, errors: &mut Errors) -> Vec<(LitStr, LitStr)> {
    let mut tags: Vec<(LitStr, LitStr)> = Vec::new();
    for item in split_list(list) {
        let tag = match item {
            Err(comma) => Err(syn::Error::new(comma, TAG_KEY_RULE)),
            Ok(tokens) => parse_tag(tokens),
        };
        match tag {
            Ok((key, value)) => match tags.iter().find(|(k, _)| k.value() == key.value()) {
                Some((first, _)) => errors.push(duplicate("tag", &key.value(), &key, first)),
                None => tags.push((key, value)),
            },
            Err(error) => errors.push(error),
        }
    }
    tags
}

const TAG_KEY_RULE: &str =
    "a tag is `key = \"value\"` with an identifier or a string literal as key, e.g. `tags(kind = \"raw\")`";

/// `key = "value"` inside `tags(...)`; the key may be an identifier or a string.
fn parse_tag(tokens: TokenStream) -> syn::Result<(LitStr, LitStr)> {
    let mut rest = tokens.clone().into_iter();
    let first = rest.next();
    let key = match &first {
        Some(TokenTree::Ident(ident)) => LitStr::new(&ident.unraw().to_string(), ident.span()),
        Some(token @ TokenTree::Literal(_)) => syn::parse2::<LitStr>(token.to_token_stream())
            .map_err(|_| syn::Error::new_spanned(token, TAG_KEY_RULE))?,
        _ => return Err(syn::Error::new_spanned(tokens, TAG_KEY_RULE)),
    };
    let tag_value_error = |tokens: TokenStream| {
        let name = key.value();
        syn::Error::new_spanned(
            tokens,
            format!("the tag `{name}` takes a string literal, e.g. `{name} = \"...\"`"),
        )
    };
    let rest: TokenStream = rest.collect();
    let mut after_eq = rest.clone().into_iter();
    match after_eq.next() {
        Some(TokenTree::Punct(eq)) if eq.as_char() == '=' => {}
        _ => return Err(tag_value_error(tokens)),
    }
    let value: TokenStream = after_eq.collect();
    if value.is_empty() {
        return Err(tag_value_error(tokens));
    }
    let value = syn::parse2::<LitStr>(value.clone()).map_err(|_| tag_value_error(value))?;
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse_str(tokens: TokenStream) -> (Args, Vec<String>) {
        let mut errors = Errors::default();
        let args = parse(tokens, ASSET, &mut errors);
        let messages = errors
            .0
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        (args, messages)
    }

    #[test]
    fn valid_arguments_parse() {
        let (args, errors) = parse_str(quote! {
            deps = [a, b::c, "ext/key",], group = "g", pool = "warehouse", tags(kind = "raw", "owner" = "ops"),
            description = "d", retry = Retry::fixed(3, Duration::from_secs(1)),
            timeout = f::<A, B>(1), code_version = "1", key = "k.v",
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.deps.len(), 3);
        assert_eq!(args.tags.len(), 2);
        assert_eq!(args.tags[1].0.value(), "owner");
        assert!(args.retry.is_some() && args.timeout.is_some());
        assert_eq!(args.key.unwrap().value(), "k.v");
        assert_eq!(args.pool.unwrap().value(), "warehouse");
    }

    #[test]
    fn a_bad_argument_is_skipped_and_the_rest_kept() {
        let (args, errors) = parse_str(quote! {
            retires = 3, group = ecoanp, deps = [a, f(), "bad key"], key = "k", tags(x = 1, y = "z")
        });
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(args.group.is_none());
        assert_eq!(args.deps.len(), 1);
        assert_eq!(args.key.unwrap().value(), "k");
        assert_eq!(args.tags.len(), 1);
    }

    #[test]
    fn one_error_per_mistake() {
        for (tokens, message) in [
            (quote!(group = "a" retry = 3), "expected `,`"),
            (quote!("group" = "a"), "expected a key"),
            (quote!(retry), "`retry` takes a `Retry`"),
            (quote!(retry = ), "`retry` takes a `Retry`"),
            (quote!(deps = a), "`deps` takes a list"),
            (quote!(tags = (a = "b")), "`tags` takes a list"),
            (quote!(deps = [a,, b]), "a dependency is"),
            (quote!(tags(a)), "the tag `a` takes"),
            (quote!(tags(a = "x", a = "y")), "duplicate tag `a`"),
            (quote!(key = ""), "asset keys are"),
            (quote!(pool = warehouse), "`pool` takes a string literal"),
            (quote!(pool = "a", pool = "b"), "duplicate key `pool`"),
        ] {
            let (_, errors) = parse_str(tokens.clone());
            let expected = if message.starts_with("duplicate") {
                2
            } else {
                1
            };
            assert_eq!(errors.len(), expected, "{tokens}: {errors:?}");
            assert!(errors[0].starts_with(message), "{tokens}: {errors:?}");
        }
    }
}
