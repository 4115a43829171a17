//! Parsing of `#[asset(...)]` arguments.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, parenthesized, Expr, Ident, LitStr, Path, Token};

/// The keys `#[asset]` accepts, for the "unknown key" error.
const KEYS: &str = "deps, group, tags, description, retry, timeout, code_version, key";

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
    pub(crate) tags: Vec<(LitStr, LitStr)>,
    pub(crate) description: Option<LitStr>,
    pub(crate) retry: Option<Expr>,
    pub(crate) timeout: Option<Expr>,
    pub(crate) code_version: Option<LitStr>,
    pub(crate) key: Option<LitStr>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut seen: Vec<Ident> = Vec::new();
        while !input.is_empty() {
            let name: Ident = input.parse()?;
            if let Some(first) = seen.iter().find(|s| **s == name) {
                let mut error = syn::Error::new_spanned(&name, format!("duplicate key `{name}`"));
                error.combine(syn::Error::new_spanned(first, "first given here"));
                return Err(error);
            }
            match name.to_string().as_str() {
                "deps" => {
                    input.parse::<Token![=]>()?;
                    let content;
                    bracketed!(content in input);
                    let items = Punctuated::<Dep, Token![,]>::parse_terminated(&content)?;
                    args.deps = items.into_iter().collect();
                }
                "group" => args.group = Some(string_value(input, &name)?),
                "description" => args.description = Some(string_value(input, &name)?),
                "code_version" => args.code_version = Some(string_value(input, &name)?),
                "key" => {
                    let key = string_value(input, &name)?;
                    let text = key.value();
                    let valid = !text.is_empty()
                        && text.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
                        });
                    if !valid {
                        return Err(syn::Error::new_spanned(
                            &key,
                            "asset keys are non-empty and use only letters, digits, `_`, `-`, `.` and `/`",
                        ));
                    }
                    args.key = Some(key);
                }
                "retry" => {
                    input.parse::<Token![=]>()?;
                    args.retry = Some(input.parse()?);
                }
                "timeout" => {
                    input.parse::<Token![=]>()?;
                    args.timeout = Some(input.parse()?);
                }
                "tags" => {
                    let content;
                    parenthesized!(content in input);
                    let items = Punctuated::<Tag, Token![,]>::parse_terminated(&content)?;
                    args.tags = items.into_iter().map(|t| (t.key, t.value)).collect();
                }
                _ => {
                    return Err(syn::Error::new_spanned(
                        &name,
                        format!("unknown key `{name}`; `#[asset]` accepts: {KEYS}"),
                    ))
                }
            }
            seen.push(name);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// `= "text"`, with an error naming the key when the value is not a string literal.
fn string_value(input: ParseStream<'_>, key: &Ident) -> syn::Result<LitStr> {
    input.parse::<Token![=]>()?;
    let expr: Expr = input.parse()?;
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        }) => Ok(text),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` takes a string literal, e.g. `{key} = \"...\"`"),
        )),
    }
}

impl Parse for Dep {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            Ok(Dep::Key(input.parse()?))
        } else {
            input.parse().map(Dep::Path).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "a dependency is an asset function's name (a path) or a string key",
                )
            })
        }
    }
}

/// `key = "value"` inside `tags(...)`; the key may be an identifier or a string.
struct Tag {
    key: LitStr,
    value: LitStr,
}

impl Parse for Tag {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(LitStr) {
            input.parse()?
        } else {
            let ident: Ident = input.parse()?;
            LitStr::new(&ident.to_string(), ident.span())
        };
        let name = Ident::new("tag", key.span());
        let value = string_value(input, &name)?;
        Ok(Tag { key, value })
    }
}
