//! `#[multi_asset]`: parsing of its arguments and generation, reusing the helpers of
//! `#[asset]` with the same recovery: one error per mistake, the function always emitted, and
//! the markers (the function's and one per out) emitted whenever they can be declared.

use proc_macro2::{Delimiter, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, Ident, ItemFn, LitBool, LitStr, ReturnType, Token, Type};

use crate::attr::{self, Args, Errors};
use crate::expand;

/// The keys `#[multi_asset]` accepts, for the "unknown key" error.
const KEYS: &str = "outs, deps, group, pool, tags, description, retry, timeout, hooks, \
                    code_version, can_subset";

/// The keys an out accepts.
const OUT_KEYS: &str = "key, group, description, code_version, tags";

const OUT_RULE: &str = "an out is `name: Type`, optionally followed by `= (key = \"...\", \
     group = \"...\", description = \"...\", code_version = \"...\", tags(...))`, e.g. \
     `outs(clean: Vec<f64>, stats: Stats = (group = \"silver\"))`";

/// One out: a marker type named `name` producing `ty`.
struct Out {
    name: Ident,
    ty: Type,
    key: Option<LitStr>,
    group: Option<LitStr>,
    description: Option<LitStr>,
    code_version: Option<LitStr>,
    tags: Vec<(LitStr, LitStr)>,
}

impl Out {
    fn key(&self) -> String {
        match &self.key {
            Some(key) => key.value(),
            None => self.name.unraw().to_string(),
        }
    }
}

/// The parsed arguments: those shared with `#[asset]`, the outs and `can_subset`.
#[derive(Default)]
struct MultiArgs {
    common: Args,
    /// `None` when `outs` is not given (or malformed).
    outs: Option<(Ident, Vec<Out>)>,
    /// Whether an out was left out for an error: the return type is not checked then.
    outs_incomplete: bool,
    can_subset: bool,
}

/// Expands `#[multi_asset(args)] item`.
pub(crate) fn multi_asset(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                expand::item_span(&item),
                "`#[multi_asset]` goes on a function (`fn` or `async fn`)",
            )
            .into_compile_error();
            return quote! { #error #item };
        }
    };
    let args = parse(args, &mut errors);
    let generated = expand(&args, &function, &mut errors);
    let errors = errors.into_compile_error();
    quote! { #errors #function #generated }
}

fn parse(tokens: TokenStream, errors: &mut Errors) -> MultiArgs {
    let mut args = MultiArgs::default();
    let parser = |input: ParseStream<'_>| {
        let mut seen: Vec<Ident> = Vec::new();
        while !input.is_empty() {
            let start = input.fork();
            match parse_arg(input, &start, &mut args, &mut seen, errors) {
                Ok(()) if input.is_empty() || input.peek(Token![,]) => {}
                Ok(()) => {
                    errors.push(syn::Error::new(
                        input.span(),
                        "expected `,` between `#[multi_asset]` arguments",
                    ));
                    attr::skip_argument(input);
                }
                Err(error) => {
                    errors.push(error);
                    attr::skip_argument(input);
                }
            }
            let _ = input.parse::<Option<Token![,]>>();
        }
        Ok(())
    };
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    args
}

fn parse_arg(
    input: ParseStream<'_>,
    start: ParseStream<'_>,
    args: &mut MultiArgs,
    seen: &mut Vec<Ident>,
    errors: &mut Errors,
) -> syn::Result<()> {
    if !input.peek(Ident::peek_any) {
        return Err(syn::Error::new(
            input.span(),
            format!("expected a key; `#[multi_asset]` accepts: {KEYS}"),
        ));
    }
    let name = input.call(Ident::parse_any)?;
    let key = name.unraw().to_string();
    match key.as_str() {
        "key" => {
            return Err(syn::Error::new_spanned(
                &name,
                "a multi-asset has no key of its own: each out is an asset with its own key \
                 (default: its name), e.g. `outs(clean: Vec<f64> = (key = \"readings/clean\"))`",
            ))
        }
        "partitions" | "mappings" | "backfill" => {
            return Err(syn::Error::new_spanned(
                &name,
                "multi-assets cannot be partitioned yet; write one `#[asset]` per partitioned \
                 output",
            ))
        }
        _ if !KEYS.split(", ").any(|k| k == key) => {
            return Err(syn::Error::new_spanned(
                &name,
                format!("unknown key `{name}`; `#[multi_asset]` accepts: {KEYS}"),
            ))
        }
        _ => {}
    }
    if let Some(first) = seen.iter().find(|s| s.unraw() == key) {
        return Err(attr::duplicate("key", &key, &name, first));
    }
    seen.push(name.clone());

    if key == "outs" || key == "tags" {
        let list = attr::delimited(input, Delimiter::Parenthesis)
            .ok_or_else(|| malformed(&name, attr::argument_tokens(start)))?;
        if key == "tags" {
            args.common.tags = attr::parse_tags(list, errors);
        } else {
            let (outs, complete) = parse_outs(list, errors);
            args.outs_incomplete = !complete;
            if outs.is_empty() {
                errors.push(syn::Error::new_spanned(
                    &name,
                    "`outs` names at least one out, e.g. `outs(clean: Vec<f64>, stats: Stats)`",
                ));
            }
            args.outs = Some((name, outs));
        }
        return Ok(());
    }
    if input.parse::<Option<Token![=]>>()?.is_none() {
        return Err(malformed(&name, attr::argument_tokens(start)));
    }
    if input.is_empty() || input.peek(Token![,]) {
        return Err(malformed(&name, attr::argument_tokens(start)));
    }
    let common = &mut args.common;
    match key.as_str() {
        "deps" => {
            let list = attr::delimited(input, Delimiter::Bracket)
                .ok_or_else(|| malformed(&name, attr::argument_tokens(input)))?;
            common.deps = attr::parse_deps(list, errors);
        }
        "retry" | "timeout" => {
            let expr: Expr = input
                .parse()
                .map_err(|_| malformed(&name, attr::argument_tokens(input)))?;
            if key == "retry" {
                common.retry = Some(expr);
            } else {
                common.timeout = Some(expr);
            }
        }
        "hooks" => {
            let list = attr::delimited(input, Delimiter::Bracket)
                .ok_or_else(|| malformed(&name, attr::argument_tokens(input)))?;
            let parse = syn::punctuated::Punctuated::<Expr, Token![,]>::parse_terminated;
            match parse.parse2(list) {
                Ok(hooks) => common.hooks = hooks.into_iter().collect(),
                Err(error) => errors.push(error),
            }
        }
        "can_subset" => {
            let value: Expr = input
                .parse()
                .map_err(|_| malformed(&name, attr::argument_tokens(input)))?;
            match value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Bool(LitBool { value, .. }),
                    ..
                }) => args.can_subset = value,
                other => return Err(malformed(&name, other)),
            }
        }
        _ => {
            let text = attr::string_value(input, &name)?;
            match key.as_str() {
                "group" => common.group = Some(text),
                "pool" => common.pool = Some(text),
                "description" => common.description = Some(text),
                _ => common.code_version = Some(text),
            }
        }
    }
    Ok(())
}

/// The error for a key whose value is missing or of the wrong kind.
fn malformed(name: &Ident, tokens: impl ToTokens) -> syn::Error {
    match name.unraw().to_string().as_str() {
        "outs" => syn::Error::new_spanned(
            tokens,
            "`outs` takes a list of `name: Type`, e.g. `outs(clean: Vec<f64>, stats: Stats)`",
        ),
        "can_subset" => syn::Error::new_spanned(
            tokens,
            "`can_subset` takes `true` or `false`, e.g. `can_subset = true`",
        ),
        _ => attr::malformed(name, tokens),
    }
}

/// `(a: A, b: B = (key = "..."))`: bad or repeated outs are reported and left out (and the
/// flag is false then).
fn parse_outs(list: TokenStream, errors: &mut Errors) -> (Vec<Out>, bool) {
    let mut outs: Vec<Out> = Vec::new();
    let mut complete = true;
    for item in attr::split_list(list) {
        let parsed = match item {
            Err(comma) => Err(syn::Error::new(comma, OUT_RULE)),
            Ok(tokens) => {
                let parser = |input: ParseStream<'_>| parse_out(input, errors);
                parser
                    .parse2(tokens.clone())
                    .map_err(|_| syn::Error::new_spanned(tokens, OUT_RULE))
            }
        };
        let out = match parsed {
            Ok(out) => out,
            Err(error) => {
                errors.push(error);
                complete = false;
                continue;
            }
        };
        if let Some(first) = outs.iter().find(|o| o.name.unraw() == out.name.unraw()) {
            let name = out.name.unraw().to_string();
            errors.push(attr::duplicate("out", &name, &out.name, &first.name));
            complete = false;
            continue;
        }
        if let Some(first) = outs.iter().find(|o| o.key() == out.key()) {
            let key = out.key();
            let at = out
                .key
                .as_ref()
                .map_or(out.name.to_token_stream(), ToTokens::to_token_stream);
            let first_at = first
                .key
                .as_ref()
                .map_or(first.name.to_token_stream(), ToTokens::to_token_stream);
            errors.push(attr::duplicate("out key", &key, at, first_at));
            complete = false;
            continue;
        }
        outs.push(out);
    }
    (outs, complete)
}

/// `name: Type` or `name: Type = (key = "...", ...)`; errors in the options are reported and
/// the options left out.
fn parse_out(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Out> {
    let name: Ident = input.parse()?;
    input.parse::<Token![:]>()?;
    let ty: Type = input.parse()?;
    let mut out = Out {
        name,
        ty,
        key: None,
        group: None,
        description: None,
        code_version: None,
        tags: Vec::new(),
    };
    if input.is_empty() {
        return Ok(out);
    }
    input.parse::<Token![=]>()?;
    let options = attr::delimited(input, Delimiter::Parenthesis)
        .ok_or_else(|| input.error("expected `(...)`"))?;
    if !input.is_empty() {
        return Err(input.error("unexpected tokens after the out's options"));
    }
    let parser = |input: ParseStream<'_>| {
        let mut seen: Vec<Ident> = Vec::new();
        while !input.is_empty() {
            if let Err(error) = parse_out_option(input, &mut out, &mut seen, errors) {
                errors.push(error);
                attr::skip_argument(input);
            } else if !input.is_empty() && !input.peek(Token![,]) {
                errors.push(syn::Error::new(
                    input.span(),
                    "expected `,` between the out's options",
                ));
                attr::skip_argument(input);
            }
            let _ = input.parse::<Option<Token![,]>>();
        }
        Ok(())
    };
    parser.parse2(options)?;
    Ok(out)
}

fn parse_out_option(
    input: ParseStream<'_>,
    out: &mut Out,
    seen: &mut Vec<Ident>,
    errors: &mut Errors,
) -> syn::Result<()> {
    let name = input.call(Ident::parse_any)?;
    let key = name.unraw().to_string();
    if !OUT_KEYS.split(", ").any(|k| k == key) {
        return Err(syn::Error::new_spanned(
            &name,
            format!("unknown out option `{name}`; an out accepts: {OUT_KEYS}"),
        ));
    }
    if let Some(first) = seen.iter().find(|s| s.unraw() == key) {
        return Err(attr::duplicate("key", &key, &name, first));
    }
    seen.push(name.clone());
    if key == "tags" {
        let list = attr::delimited(input, Delimiter::Parenthesis)
            .ok_or_else(|| attr::malformed(&name, attr::argument_tokens(input)))?;
        out.tags = attr::parse_tags(list, errors);
        return Ok(());
    }
    if input.parse::<Option<Token![=]>>()?.is_none() || input.is_empty() {
        return Err(attr::malformed(&name, attr::argument_tokens(input)));
    }
    let text = attr::string_value(input, &name)?;
    match key.as_str() {
        "key" => {
            attr::check_key(&text)?;
            out.key = Some(text);
        }
        "group" => out.group = Some(text),
        "description" => out.description = Some(text),
        _ => out.code_version = Some(text),
    }
    Ok(())
}

fn expand(args: &MultiArgs, function: &ItemFn, errors: &mut Errors) -> TokenStream {
    let sig = &function.sig;
    if let Some(receiver) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            receiver,
            "multi-asset functions take no `self`; write a free function",
        ));
        return TokenStream::new();
    }
    let name = &sig.ident;
    let vis = &function.vis;
    let multi_name = name.unraw().to_string();
    let Some((outs_ident, outs)) = &args.outs else {
        errors.push(syn::Error::new(
            Span::call_site(),
            "`#[multi_asset]` needs its outs, one asset each: `outs(name: Type, ...)`, e.g. \
             `#[multi_asset(outs(clean: Vec<f64>, stats: Stats))]`",
        ));
        return multi_marker(name, vis, &multi_name, &[], None);
    };
    for out in outs {
        let key = out.key();
        if out.key.is_none() && !attr::is_valid_key(&key) {
            errors.push(syn::Error::new_spanned(
                &out.name,
                format!(
                    "the out name `{key}` is not a valid asset key ({}); give the out a key \
                     with `{key}: Type = (key = \"...\")`",
                    attr::KEY_RULE
                ),
            ));
        }
    }
    let markers = out_markers(name, vis, &multi_name, outs);

    let return_span = match &sig.output {
        ReturnType::Default => name.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let out_types: Vec<TokenStream> = outs
        .iter()
        .map(|out| {
            let ty = &out.ty;
            if args.can_subset {
                quote_spanned! {ty.span()=> ::core::option::Option<#ty> }
            } else {
                ty.to_token_stream()
            }
        })
        .collect();

    // The out types as the user wrote them, for messages.
    let shown: Vec<String> = outs
        .iter()
        .map(|out| {
            let ty = pretty(&out.ty);
            if args.can_subset {
                format!("Option<{ty}>")
            } else {
                ty
            }
        })
        .collect();
    let mut broken = false;
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "multi-asset functions cannot be generic; each multi-asset is one concrete function",
        ));
        broken = true;
    }
    if outs.is_empty() || args.outs_incomplete {
        broken = true;
    } else if let Some(error) = check_return(&sig.output, name, outs.len(), &shown, outs_ident) {
        errors.push(error);
        broken = true;
    }
    if broken {
        return multi_marker(name, vis, &multi_name, outs, None);
    }

    let params = expand::params(sig);
    let declare = &params.declare;
    let vars: Vec<Ident> = (0..outs.len())
        .map(|i| format_ident!("__dagrs_o{}", i))
        .collect();
    let sets = outs.iter().zip(&vars).map(|(out, var)| {
        let marker = &out.name;
        let key = quote! { <#marker as ::dagrs_core::__private::Asset>::KEY };
        // At the out's type, where the marker's `Output` reports a type that cannot be one.
        let set = quote_spanned! {out.ty.span()=>
            __dagrs_outs.set::<<#marker as ::dagrs_core::__private::Asset>::Output>
        };
        if args.can_subset {
            quote! {
                if let ::core::option::Option::Some(__dagrs_v) = #var {
                    #set(#key, __dagrs_v)?;
                }
            }
        } else {
            quote! { #set(#key, #var)?; }
        }
    });
    let convert = quote_spanned! {return_span=>
        let (#(#vars,)*) = ::dagrs_core::__private::IntoMultiResult::<(#(#out_types,)*)>::into_multi_result(__dagrs_value)?;
        let mut __dagrs_outs = ::dagrs_core::__private::MultiOutputs::new();
        #(#sets)*
        ::core::result::Result::Ok(__dagrs_outs)
    };
    let compute = expand::compute_closure(sig, &params, convert, Span::call_site());

    let common = &args.common;
    let out_specs = outs.iter().map(|out| {
        let ty = &out.ty;
        let marker = &out.name;
        let out_name = marker.unraw().to_string();
        let group = out.group.iter().map(|g| quote! { .group(#g) });
        let description = out.description.iter().map(|d| quote! { .description(#d) });
        let code_version = out.code_version.iter().map(|c| quote! { .code_version(#c) });
        let tags = out.tags.iter().map(|(k, v)| quote! { .tag(#k, #v) });
        let new = quote_spanned! {ty.span()=>
            ::dagrs_core::__private::AssetOut::new::<<#marker as ::dagrs_core::__private::Asset>::Output>
        };
        quote! {
            .out(#new(<#marker as ::dagrs_core::__private::Asset>::KEY)
                .name(#out_name) #(#group)* #(#description)* #(#code_version)* #(#tags)*)
        }
    });
    let common = expand::common_calls(common, function);
    let can_subset = args.can_subset;
    let body = quote! {
        ::dagrs_core::__private::MultiAssetSpec::new(#multi_name, #compute)
            #(#out_specs)*
            .can_subset(#can_subset)
            .needs(|__dagrs_needs: &mut ::dagrs_core::__private::Requirements| { #(#declare)* })
            #common
    };
    let multi = multi_marker(name, vis, &multi_name, outs, Some(body));
    quote! { #markers #multi }
}

/// Checks the return type's shape when it is written `Result<(..)>`: a tuple of one value per
/// out. Anything else is left to `IntoMultiResult`, whose error names the expected type.
fn check_return(
    output: &ReturnType,
    name: &Ident,
    count: usize,
    out_types: &[String],
    outs_ident: &Ident,
) -> Option<syn::Error> {
    let mut values: Vec<String> = out_types.to_vec();
    if count == 1 {
        values.push(String::new()); // `(T,)`
    }
    let expected = format!("Result<({})>", values.join(", ").trim_end_matches(' '));
    let ty = match output {
        ReturnType::Default => {
            return Some(syn::Error::new_spanned(
                name,
                format!("a multi-asset function returns one value per out: `-> {expected}`"),
            ))
        }
        ReturnType::Type(_, ty) => &**ty,
    };
    let ok = expand::result_ok_type(ty)?;
    let values = match ok {
        Type::Tuple(tuple) => tuple.elems.len(),
        _ => 1,
    };
    let tuple = matches!(ok, Type::Tuple(_));
    if tuple && values == count {
        return None;
    }
    let outs = if count == 1 { "out" } else { "outs" };
    let mut error = syn::Error::new_spanned(
        ty,
        format!(
            "`{name}` declares {count} {outs}, so it returns a tuple of {count} value{} in \
             their order: `{expected}`{}",
            if count == 1 { "" } else { "s" },
            if tuple {
                format!(", not {values}")
            } else {
                String::new()
            }
        ),
    );
    error.combine(syn::Error::new_spanned(
        outs_ident,
        "the outs are declared here",
    ));
    Some(error)
}

/// `tokens` as code is usually written: `Vec<f64>`, not `Vec < f64 >`.
fn pretty(tokens: impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        ("& ", "&"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// One marker type per out, implementing `Asset` with the out's key and type.
fn out_markers(name: &Ident, vis: &syn::Visibility, multi_name: &str, outs: &[Out]) -> TokenStream {
    outs.iter()
        .map(|out| {
            let marker = &out.name;
            let key = out.key();
            let ty = &out.ty;
            let doc = format!(
                "The asset `{key}`, an out of the multi-asset [`{multi_name}`](fn@{name}): name \
                 it in `deps = [...]`, `Input<{marker}>` and `RunResult::output::<{marker}>()`."
            );
            let output_item = quote_spanned! {ty.span()=>
                type Output = <#ty as ::dagrs_core::__private::OutValue>::Output;
            };
            quote_spanned! {marker.span()=>
                #[doc = #doc]
                #[allow(non_camel_case_types, dead_code)]
                #vis struct #marker {}

                #[diagnostic::do_not_recommend]
                impl ::dagrs_core::__private::Asset for #marker {
                    #output_item
                    const KEY: &'static str = #key;
                    fn spec() -> ::dagrs_core::__private::AssetSpec {
                        <#name as ::dagrs_core::__private::MultiAsset>::multi_spec()
                            .out_spec(<Self as ::dagrs_core::__private::Asset>::KEY)
                    }
                }
            }
        })
        .collect()
}

/// The function's marker, implementing `MultiAsset` (with `body` as its spec, or a stub after
/// an error) and `IntoSpecs`.
fn multi_marker(
    name: &Ident,
    vis: &syn::Visibility,
    multi_name: &str,
    outs: &[Out],
    body: Option<TokenStream>,
) -> TokenStream {
    let list: Vec<String> = outs.iter().map(|o| format!("`{}`", o.key())).collect();
    let doc = format!(
        "The multi-asset `{multi_name}`, computed by the function [`{name}`](fn@{name}), with \
         the outs {}: name it in `assets![...]` or `Definitions::builder().multi_asset::<{name}>()`.",
        list.join(", ")
    );
    let body = body.unwrap_or_else(|| {
        quote! { ::core::unreachable!("`#[multi_asset]` reported a compile error for this multi-asset") }
    });
    quote_spanned! {name.span()=>
        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #name {}

        #[diagnostic::do_not_recommend]
        impl ::dagrs_core::__private::MultiAsset for #name {
            const NAME: &'static str = #multi_name;
            fn multi_spec() -> ::dagrs_core::__private::MultiAssetSpec {
                #body
            }
        }

        #[diagnostic::do_not_recommend]
        impl ::dagrs_core::__private::IntoSpecs for #name {
            fn into_specs() -> ::std::vec::Vec<::dagrs_core::__private::AssetSpec> {
                <Self as ::dagrs_core::__private::MultiAsset>::specs()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(args: TokenStream, item: TokenStream) -> Vec<String> {
        let out = multi_asset(args, item).to_string();
        out.split("compile_error !")
            .skip(1)
            .map(|s| s.split('"').nth(1).unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn valid_arguments_expand_without_errors() {
        let errors = errors_of(
            quote!(outs(a: u32, b: Vec<String> = (key = "x/b", group = "g", tags(k = "v"))),
                   deps = [up], group = "g", pool = "w", can_subset = true, retry = Retry::none()),
            quote!(
                async fn f() -> Result<(Option<u32>, Option<Vec<String>>)> {
                    todo!()
                }
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn one_error_per_mistake() {
        let item = quote!(
            fn f() -> Result<(u32, u32)> {
                todo!()
            }
        );
        for (args, message) in [
            (
                quote!(outs(a: u32, b: u32), retires = 3),
                "unknown key `retires`",
            ),
            (
                quote!(outs(a: u32, b: u32), key = "k"),
                "a multi-asset has no key",
            ),
            (
                quote!(outs(a: u32, b: u32), partitions = daily("2026-01-01")),
                "multi-assets cannot be partitioned",
            ),
            (
                quote!(outs(a: u32, b: u32), can_subset = yes),
                "`can_subset` takes",
            ),
            (
                quote!(outs(a: u32, b: u32 = (colour = "x"))),
                "unknown out option",
            ),
            (quote!(outs(a: u32, 3)), "an out is"),
            (quote!(group = "g"), "`#[multi_asset]` needs its outs"),
            (quote!(outs(a: u32, b: u32, c: u32)), "`f` declares 3 outs"),
        ] {
            let mut errors = errors_of(args.clone(), item.clone());
            errors.retain(|e| e != "the outs are declared here");
            assert_eq!(errors.len(), 1, "{args}: {errors:?}");
            assert!(errors[0].starts_with(message), "{args}: {errors:?}");
        }
        let errors = errors_of(quote!(outs(a: u32, a: u32)), item.clone());
        assert!(errors[0].starts_with("duplicate out `a`"), "{errors:?}");
        let errors = errors_of(quote!(outs()), item);
        assert!(
            errors[0].starts_with("`outs` names at least one out"),
            "{errors:?}"
        );
    }
}
