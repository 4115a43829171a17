//! Code generation for `#[asset]`.
//!
//! The item is always emitted as written, and so is the marker type whenever it can be
//! declared: after an error, as a stub whose `Output` is the best guess, so that the places
//! naming the asset (`Input<x>`, `deps = [x]`, `assets![x]`) add no errors of their own.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, Item, ItemFn, PathArguments, ReturnType, Type};

use crate::attr::{self, Args, Dep, Errors};

/// Expands `#[asset(args)] item`, or `#[observable_source_asset(args)] item` (`kind`).
pub(crate) fn asset(args: TokenStream, item: TokenStream, kind: attr::Kind) -> TokenStream {
    let mut errors = Errors::default();
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                item_span(&item),
                format!("`#[{}]` goes on a function (`fn` or `async fn`)", kind.name),
            );
            let stub = stub_for_type_item(&item);
            let error = error.into_compile_error();
            return quote! { #error #item #stub };
        }
    };
    let args = attr::parse(args, kind, &mut errors);
    let generated = expand(&args, &function, kind, &mut errors);
    let errors = errors.into_compile_error();
    quote! { #errors #function #generated }
}

/// The span of the item's first token after its attributes (`struct`, `pub`, `const`, ...).
pub(crate) fn item_span(item: &TokenStream) -> Span {
    let mut tokens = item.clone().into_iter().peekable();
    while let Some(token) = tokens.next() {
        match &token {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                if matches!(tokens.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '!') {
                    tokens.next();
                }
                if matches!(tokens.peek(), Some(TokenTree::Group(_))) {
                    tokens.next();
                }
            }
            _ => return token.span(),
        }
    }
    Span::call_site()
}

/// `#[asset]` on a struct, enum or union: the type itself gets a stub `Asset` impl, so that
/// the places naming it add no errors.
fn stub_for_type_item(item: &TokenStream) -> TokenStream {
    let (name, generics) = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(s)) => (s.ident, s.generics),
        Ok(Item::Enum(e)) => (e.ident, e.generics),
        Ok(Item::Union(u)) => (u.ident, u.generics),
        _ => return TokenStream::new(),
    };
    if !generics.params.is_empty() {
        return TokenStream::new();
    }
    let key = name.unraw().to_string();
    stub_impl(&name, &key, &quote! { () }, name.span())
}

fn expand(args: &Args, function: &ItemFn, kind: attr::Kind, errors: &mut Errors) -> TokenStream {
    let sig = &function.sig;
    if let Some(receiver) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            receiver,
            "asset functions take no `self`; write a free function",
        ));
        // A method lives in an `impl` block, where the marker type cannot be declared.
        return TokenStream::new();
    }
    let name = &sig.ident;
    let vis = &function.vis;
    let key = match &args.key {
        Some(key) => key.value(),
        None => {
            let key = name.unraw().to_string();
            if !attr::is_valid_key(&key) {
                errors.push(syn::Error::new_spanned(
                    name,
                    format!(
                        "the function name `{key}` is not a valid asset key ({}); \
                         give the asset a key with `#[asset(key = \"...\")]`",
                        attr::KEY_RULE
                    ),
                ));
            }
            key
        }
    };
    let marker_doc = format!(
        "The asset `{key}`, computed by the function [`{name}`](fn@{name}): name it in \
         `deps = [...]`, `Input<{name}>`, `Definitions::builder().asset::<{name}>()` and \
         `RunResult::output::<{name}>()`."
    );
    // Spanned at the function's name, where rustc's "defined here" notes then point. Never
    // constructed: an unused asset is reported once, by the function's own `dead_code`.
    let marker = quote_spanned! {name.span()=>
        #[doc = #marker_doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #name {}
    };

    // The generated code about the return type is spanned at its first token, so that
    // rustc reports a trait error about it at one place, where its copies are shown once.
    let return_span = match &sig.output {
        ReturnType::Default => name.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let output = output_type(&sig.output);

    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "asset functions cannot be generic; each asset is one concrete function",
        ));
        let output = if mentions(&output, &sig.generics) {
            quote! { () }
        } else {
            output
        };
        let stub = stub_impl(name, &key, &output, return_span);
        return quote! { #marker #stub };
    }

    let params = params(sig);
    let declare = &params.declare;

    // The `IntoAssetResult` impl is inferred, not named with the user's tokens, which rustc
    // would report over the whole type, beside the same error at its first token.
    let into_result = quote_spanned! {return_span=>
        ::dagrs_core::__private::IntoAssetResult::into_asset_result(__dagrs_value)
    };
    let compute = compute_closure(sig, &params, into_result, return_span);
    let spec_new = if kind.name == attr::OBSERVABLE.name {
        quote_spanned! {return_span=> ::dagrs_core::__private::AssetSpec::observable }
    } else {
        quote_spanned! {return_span=>
            ::dagrs_core::__private::AssetSpec::new::<#output, _, _>
        }
    };
    let output_item = quote_spanned! {return_span=> type Output = #output; };

    let common = common_calls(args, function);
    // Partition expressions see `dagrs_core::partitions::*` (`hourly`, `PartitionMapping`,
    // `BackfillPolicy`, ...) unless the user's own names shadow them.
    let scoped = |expr: &syn::Expr| {
        quote! {{
            #[allow(unused_imports)]
            use ::dagrs_core::partitions::*;
            #expr
        }}
    };
    let partitions = args.partitions.iter().map(|p| {
        let p = scoped(p);
        quote! { .partitions(#p) }
    });
    let backfill = args.backfill.iter().map(|b| {
        let b = scoped(b);
        quote! { .backfill_policy(#b) }
    });
    let automation = args.automation.iter().map(|condition| {
        quote! {
            .automation({
                #[allow(unused_imports)]
                use ::dagrs_core::automation::*;
                #condition
            })
        }
    });
    let mappings = args.mappings.iter().map(|(dep, mapping)| {
        let mapping = scoped(mapping);
        match dep {
            Dep::Path(path) => quote_spanned! {path.span()=>
                .mapping(<#path as ::dagrs_core::__private::Asset>::KEY, #mapping)
            },
            Dep::Key(key) => quote! { .mapping(#key, #mapping) },
        }
    });

    quote! {
        #marker

        #[diagnostic::do_not_recommend]
        impl ::dagrs_core::__private::Asset for #name {
            #output_item
            const KEY: &'static str = #key;
            fn spec() -> ::dagrs_core::__private::AssetSpec {
                #spec_new(#key, #compute)
                    .needs(|__dagrs_needs: &mut ::dagrs_core::__private::Requirements| { #(#declare)* })
                    #common
                    #(#partitions)*
                    #(#mappings)*
                    #(#backfill)*
                    #(#automation)*
            }
        }
    }
}

/// What the parameters of a function marked `#[asset]`, `#[multi_asset]` or `#[asset_check]`
/// become.
pub(crate) struct Params {
    /// `let __dagrs_pN = <T as AssetParam>::extract(&__dagrs_scope)?;` per parameter.
    pub(crate) extract: Vec<TokenStream>,
    /// `<T as AssetParam>::declare(__dagrs_needs);` per parameter.
    pub(crate) declare: Vec<TokenStream>,
    /// The variables passed to the function.
    pub(crate) call_args: Vec<Ident>,
}

/// Each typed parameter, extracted from `__dagrs_scope` and declared into `__dagrs_needs`
/// through `AssetParam`, spanned at its type so that errors point there.
pub(crate) fn params(sig: &syn::Signature) -> Params {
    let mut params = Params {
        extract: Vec::new(),
        declare: Vec::new(),
        call_args: Vec::new(),
    };
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pat) = input else {
            continue; // a receiver is rejected by the caller
        };
        let ty = &pat.ty;
        let var = format_ident!("__dagrs_p{}", i, span = ty.span());
        params.extract.push(quote_spanned! {ty.span()=>
            let #var = <#ty as ::dagrs_core::__private::AssetParam<'_>>::extract(&__dagrs_scope)?;
        });
        params.declare.push(quote_spanned! {ty.span()=>
            <#ty as ::dagrs_core::__private::AssetParam<'_>>::declare(__dagrs_needs);
        });
        params.call_args.push(var);
    }
    params
}

/// The compute closure of a spec: extracts the parameters from `__dagrs_scope`, calls the
/// function (awaited when `async`, else on tokio's blocking pool) and turns its value,
/// `__dagrs_value`, into the result with `convert`; spanned at `span`.
pub(crate) fn compute_closure(
    sig: &syn::Signature,
    params: &Params,
    convert: TokenStream,
    span: Span,
) -> TokenStream {
    let name = &sig.ident;
    let (extract, call_args) = (&params.extract, &params.call_args);
    if sig.asyncness.is_some() {
        quote_spanned! {span=>
            |__dagrs_scope: ::dagrs_core::__private::StepScope| async move {
                #(#extract)*
                let __dagrs_value = #name(#(#call_args),*).await;
                #convert
            }
        }
    } else {
        quote_spanned! {span=>
            |__dagrs_scope: ::dagrs_core::__private::StepScope| {
                ::dagrs_core::__private::run_blocking(move || {
                    #(#extract)*
                    let __dagrs_value = #name(#(#call_args),*);
                    #convert
                })
            }
        }
    }
}

/// The builder calls every kind of spec takes from its attribute: `deps`, `group`, `pool`,
/// `tags`, `description` (default: the doc comment), `retry`, `timeout`, `hooks` and
/// `code_version`.
pub(crate) fn common_calls(args: &Args, function: &ItemFn) -> TokenStream {
    let deps = args.deps.iter().map(|dep| match dep {
        Dep::Path(path) => quote_spanned! {path.span()=>
            .dep(<#path as ::dagrs_core::__private::Asset>::KEY)
        },
        Dep::Key(key) => quote! { .dep(#key) },
    });
    let group = args.group.iter().map(|g| quote! { .group(#g) });
    let pool = args.pool.iter().map(|p| quote! { .pool(#p) });
    let tags = args.tags.iter().map(|(k, v)| quote! { .tag(#k, #v) });
    let description = args
        .description
        .as_ref()
        .map(|d| d.value())
        .or_else(|| doc_comment(function))
        .map(|d| quote! { .description(#d) });
    let retry = args.retry.iter().map(|r| quote! { .retry(#r) });
    let timeout = args.timeout.iter().map(|t| quote! { .timeout(#t) });
    let hooks = args.hooks.iter().map(|h| quote! { .hook(#h) });
    let code_version = args
        .code_version
        .iter()
        .map(|c| quote! { .code_version(#c) });
    quote! {
        #(#deps)*
        #(#group)*
        #(#pool)*
        #(#tags)*
        #description
        #(#retry)*
        #(#timeout)*
        #(#hooks)*
        #(#code_version)*
    }
}

/// The `Asset` impl of a marker after an error: the right key and the best guess of the
/// output, and a `spec` that is never called because the crate does not compile.
fn stub_impl(name: &Ident, key: &str, output: &TokenStream, output_span: Span) -> TokenStream {
    let output_item = quote_spanned! {output_span=> type Output = #output; };
    quote! {
        #[diagnostic::do_not_recommend]
        impl ::dagrs_core::__private::Asset for #name {
            #output_item
            const KEY: &'static str = #key;
            fn spec() -> ::dagrs_core::__private::AssetSpec {
                ::core::unreachable!("`#[asset]` reported a compile error for this asset")
            }
        }
    }
}

/// The asset's output type: `T` for a return type written `Result<T>` or `Result<T, E>`
/// (through `IntoAssetResult`, which checks that `T` can be an output), `()` for no return
/// type, else `<R as IntoAssetResult>::Output` (an alias of a `Result`, or a mistake that the
/// trait reports).
///
/// Naming `T` with `E` fixed keeps a wrong error type from making the output type unknown,
/// so that the places naming the output (`Input<x>`) add no error of their own.
fn output_type(output: &ReturnType) -> TokenStream {
    let ty = match output {
        ReturnType::Default => return quote! { () },
        ReturnType::Type(_, ty) => &**ty,
    };
    if matches!(ty, Type::Tuple(t) if t.elems.is_empty()) {
        return quote! { () };
    }
    let into = quote_spanned! {ty.span()=> ::dagrs_core::__private::IntoAssetResult };
    match result_ok_type(ty) {
        Some(ok) => quote_spanned! {ty.span()=>
            <::core::result::Result<#ok, ::dagrs_core::__private::anyhow::Error> as #into>::Output
        },
        None => {
            // All at the first token, like the rest: rustc reports a failing projection at
            // its self type, which would otherwise span the whole type and show twice.
            let span = ty.span();
            let ty = relocate(ty.to_token_stream(), span);
            quote_spanned! {span=> <#ty as #into>::Output }
        }
    }
}

/// `tokens`, every one (also inside groups) moved to `location`, keeping its hygiene.
pub(crate) fn relocate(tokens: TokenStream, location: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            let span = token.span().located_at(location);
            if let TokenTree::Group(group) = &token {
                let mut moved = Group::new(group.delimiter(), relocate(group.stream(), location));
                moved.set_span(span);
                token = TokenTree::Group(moved);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// `T` when `ty` is written `Result<T>`, `Result<T, E>` or `path::Result<T, ...>`.
pub(crate) fn result_ok_type(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Paren(inner) => result_ok_type(&inner.elem),
        Type::Group(inner) => result_ok_type(&inner.elem),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            if last.ident != "Result" {
                return None;
            }
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            match args.args.first()? {
                GenericArgument::Type(ok) => Some(ok),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `tokens` name one of the generic parameters, which do not exist outside the
/// function.
pub(crate) fn mentions(tokens: &TokenStream, generics: &syn::Generics) -> bool {
    fn walk(tokens: TokenStream, names: &[Ident]) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => names.contains(&ident),
            TokenTree::Group(group) => walk(group.stream(), names),
            _ => false,
        })
    }
    let names: Vec<Ident> = generics
        .params
        .iter()
        .map(|param| match param {
            syn::GenericParam::Type(t) => t.ident.clone(),
            syn::GenericParam::Lifetime(l) => l.lifetime.ident.clone(),
            syn::GenericParam::Const(c) => c.ident.clone(),
        })
        .collect();
    walk(tokens.clone(), &names)
}

/// The function's doc comment, lines trimmed and joined.
pub(crate) fn doc_comment(function: &ItemFn) -> Option<String> {
    let lines: Vec<String> = function
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let text = lines.join("\n").trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        asset(args, item, attr::ASSET).to_string()
    }

    #[test]
    fn output_is_the_ok_type_of_a_result_else_the_trait_projection() {
        let ok = |ret: TokenStream| {
            let sig: syn::Signature = syn::parse2(quote! { fn f() #ret }).unwrap();
            output_type(&sig.output).to_string()
        };
        assert!(ok(quote!(-> Result<Vec<u8>>))
            .contains("Result < Vec < u8 > , :: dagrs_core :: __private :: anyhow :: Error >"));
        assert!(ok(quote!(-> std::io::Result<u8>)).contains("Result < u8 , :: dagrs_core"));
        assert!(ok(quote!(-> Fallible<u8>)).starts_with("< Fallible < u8 > as"));
        assert_eq!(ok(quote!()), "()");
        assert_eq!(ok(quote!(-> ())), "()");
    }

    #[test]
    fn an_error_still_emits_the_function_and_the_marker() {
        let out = expand_str(
            quote!(retires = 3),
            quote!(
                async fn a() -> Result<u32> {
                    Ok(1)
                }
            ),
        );
        assert!(out.contains("compile_error"));
        assert!(out.contains("async fn a ()"));
        assert!(out.contains("struct a"));
        assert!(out.contains("AssetSpec :: new"));

        let out = expand_str(
            quote!(),
            quote!(
                fn a<T: Default>() -> Result<T> {
                    todo!()
                }
            ),
        );
        assert!(out.contains("compile_error"));
        assert!(out.contains("struct a"));
        assert!(out.contains("type Output = () ;"), "{out}");
        assert!(out.contains("unreachable"));

        let out = expand_str(
            quote!(),
            quote!(
                fn a<T: Default>() -> Result<u32> {
                    todo!()
                }
            ),
        );
        assert!(
            out.contains("type Output = < :: core :: result :: Result < u32"),
            "{out}"
        );

        let out = expand_str(
            quote!(),
            quote!(
                fn a(&self) -> Result<u32> {
                    Ok(1)
                }
            ),
        );
        assert!(out.contains("compile_error"));
        assert!(!out.contains("struct a"));

        let out = expand_str(
            quote!(),
            quote!(
                struct A;
            ),
        );
        assert!(out.contains("compile_error"));
        assert!(out.contains("Asset for A"));
    }
}
