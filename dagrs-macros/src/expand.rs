//! Code generation for `#[asset]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

use crate::attr::{Args, Dep};

/// Expands `#[asset(args)] item`. The item is always emitted as written, even when the
/// arguments are wrong, so one mistake does not cascade into many.
pub(crate) fn asset(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                first_token_span(&item),
                "`#[asset]` goes on a function (`fn` or `async fn`)",
            );
            let error = error.to_compile_error();
            return quote! { #error #item };
        }
    };
    let args: Args = match syn::parse2(args) {
        Ok(args) => args,
        Err(error) => {
            let error = error.to_compile_error();
            return quote! { #error #function };
        }
    };
    match expand(&args, &function) {
        Ok(generated) => quote! { #function #generated },
        Err(error) => {
            let error = error.to_compile_error();
            quote! { #error #function }
        }
    }
}

fn first_token_span(item: &TokenStream) -> proc_macro2::Span {
    item.clone()
        .into_iter()
        .find(|t| !matches!(t, proc_macro2::TokenTree::Punct(p) if p.as_char() == '#'))
        .map(|t| t.span())
        .unwrap_or_else(proc_macro2::Span::call_site)
}

fn expand(args: &Args, function: &ItemFn) -> syn::Result<TokenStream> {
    let sig = &function.sig;
    if let Some(param) = sig.generics.params.first() {
        return Err(syn::Error::new_spanned(
            param,
            "asset functions cannot be generic; each asset is one concrete function",
        ));
    }
    let name = &sig.ident;
    let vis = &function.vis;
    let key = match &args.key {
        Some(key) => key.value(),
        None => name.to_string().trim_start_matches("r#").to_owned(),
    };

    let mut extract = Vec::new();
    let mut declare = Vec::new();
    let mut call_args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let ty = match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "asset functions take no `self`; write a free function",
                ))
            }
            FnArg::Typed(pat) => &pat.ty,
        };
        let var = format_ident!("__dagrs_p{}", i);
        extract.push(quote_spanned! {ty.span()=>
            let #var = <#ty as ::dagrs_core::__private::AssetParam<'_>>::extract(&__dagrs_scope)?;
        });
        declare.push(quote_spanned! {ty.span()=>
            <#ty as ::dagrs_core::__private::AssetParam<'_>>::declare(__dagrs_needs);
        });
        call_args.push(var);
    }

    let output_ty = match &sig.output {
        ReturnType::Default => quote! { () },
        ReturnType::Type(_, ty) => ty.to_token_stream(),
    };
    let output_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let output_assoc = quote_spanned! {output_span=>
        <#output_ty as ::dagrs_core::__private::IntoAssetResult>::Output
    };
    let into_result = quote_spanned! {output_span=>
        ::dagrs_core::__private::IntoAssetResult::into_asset_result
    };

    let compute = if sig.asyncness.is_some() {
        quote! {
            |__dagrs_scope: ::dagrs_core::__private::StepScope| async move {
                #(#extract)*
                #into_result(#name(#(#call_args),*).await)
            }
        }
    } else {
        quote! {
            |__dagrs_scope: ::dagrs_core::__private::StepScope| {
                ::dagrs_core::__private::run_blocking(move || {
                    #(#extract)*
                    #into_result(#name(#(#call_args),*))
                })
            }
        }
    };

    let deps = args.deps.iter().map(|dep| match dep {
        Dep::Path(path) => quote_spanned! {path.span()=>
            .dep(<#path as ::dagrs_core::__private::Asset>::KEY)
        },
        Dep::Key(key) => quote! { .dep(#key) },
    });
    let group = args.group.iter().map(|g| quote! { .group(#g) });
    let tags = args.tags.iter().map(|(k, v)| quote! { .tag(#k, #v) });
    let description = args
        .description
        .as_ref()
        .map(|d| d.value())
        .or_else(|| doc_comment(function))
        .map(|d| quote! { .description(#d) });
    let retry = args.retry.iter().map(|r| quote! { .retry(#r) });
    let timeout = args.timeout.iter().map(|t| quote! { .timeout(#t) });
    let code_version = args
        .code_version
        .iter()
        .map(|c| quote! { .code_version(#c) });
    let marker_doc = format!(
        "The asset `{key}`, computed by the function [`{name}`](fn@{name}): name it in \
         `deps = [...]`, `Input<{name}>`, `Definitions::builder().asset::<{name}>()` and \
         `RunResult::output::<{name}>()`."
    );

    Ok(quote! {
        #[doc = #marker_doc]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        impl ::dagrs_core::__private::Asset for #name {
            type Output = #output_assoc;
            const KEY: &'static str = #key;
            fn spec() -> ::dagrs_core::__private::AssetSpec {
                ::dagrs_core::__private::AssetSpec::new(#key, #compute)
                    .needs(|__dagrs_needs: &mut ::dagrs_core::Requirements| { #(#declare)* })
                    #(#deps)*
                    #(#group)*
                    #(#tags)*
                    #description
                    #(#retry)*
                    #(#timeout)*
                    #(#code_version)*
            }
        }
    })
}

/// The function's doc comment, lines trimmed and joined.
fn doc_comment(function: &ItemFn) -> Option<String> {
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
