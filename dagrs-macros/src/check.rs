//! Code generation for `#[asset_check]`: the function as written, a marker type of the same
//! name implementing `AssetCheck`, whose spec evaluates the function after its asset.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType};

use crate::attr::{self, Dep, Errors};
use crate::expand::{common_calls, compute_closure, item_span, params};

/// Expands `#[asset_check(args)] item`.
pub(crate) fn asset_check(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                item_span(&item),
                "`#[asset_check]` goes on a function (`fn` or `async fn`)",
            )
            .into_compile_error();
            return quote! { #error #item };
        }
    };
    let args = attr::parse(args, attr::CHECK, &mut errors);
    let generated = expand(&args, &function, &mut errors);
    let errors = errors.into_compile_error();
    quote! { #errors #function #generated }
}

fn expand(args: &attr::Args, function: &ItemFn, errors: &mut Errors) -> TokenStream {
    let sig = &function.sig;
    let name = &sig.ident;
    let vis = &function.vis;
    if let Some(receiver) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            receiver,
            "asset check functions take no `self`; write a free function",
        ));
        return TokenStream::new();
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "asset check functions cannot be generic; each check is one concrete function",
        ));
    }
    let asset = match &args.asset {
        Some(Dep::Path(path)) => quote_spanned! {path.span()=>
            <#path as ::dagrs_core::__private::Asset>::KEY
        },
        Some(Dep::Key(key)) => quote! { #key },
        None => {
            // A bad `asset = ...` was reported where it is.
            if !args.given.iter().any(|k| k == "asset") {
                errors.push(syn::Error::new_spanned(
                    name,
                    "say which asset this checks: `#[asset_check(asset = some_asset)]`",
                ));
            }
            quote! { "" }
        }
    };
    let check_name = match &args.name {
        Some(text) => text.value(),
        None => name.unraw().to_string(),
    };
    let marker_doc = format!(
        "The asset check `{check_name}`, evaluated by the function [`{name}`](fn@{name}): \
         register it with `Definitions::builder().checks(checks![{name}])`."
    );
    let marker = quote_spanned! {name.span()=>
        #[doc = #marker_doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #name {}
    };
    if !sig.generics.params.is_empty() {
        return marker;
    }
    let params = params(sig);
    let declare = &params.declare;
    let return_span = match &sig.output {
        ReturnType::Default => name.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let into_result = quote_spanned! {return_span=>
        ::dagrs_core::__private::IntoCheckResult::into_check_result(__dagrs_value)
    };
    let compute = compute_closure(sig, &params, into_result, Span::call_site());
    let blocking = args.blocking.iter().map(|b| quote! { .blocking(#b) });
    let description = common_calls(args, function);
    quote! {
        #marker

        impl ::dagrs_core::__private::AssetCheck for #name {
            fn spec() -> ::dagrs_core::__private::CheckSpec {
                ::dagrs_core::__private::CheckSpec::new(#asset, #check_name, #compute)
                    .needs(|__dagrs_needs: &mut ::dagrs_core::__private::Requirements| { #(#declare)* })
                    #(#blocking)*
                    #description
            }
        }
    }
}
