//! The `#[asset]`, `#[multi_asset]`, `#[asset_check]` and `#[observable_source_asset]`
//! attributes of dagrs. Use them through `dagrs_core`, which re-exports them.
//!
//! This crate only parses, checks and emits: what a parameter *is* is decided by the
//! `AssetParam` trait in dagrs-core, so errors about parameters come from the type checker,
//! pointed at the parameter.

mod attr;
mod check;
mod expand;
mod multi;

use proc_macro::TokenStream;

/// Marks a function as an asset; documented on `dagrs_core::asset`.
#[proc_macro_attribute]
pub fn asset(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::asset(args.into(), item.into(), attr::ASSET).into()
}

/// Marks a function as an observable source asset; documented on
/// `dagrs_core::observable_source_asset`.
#[proc_macro_attribute]
pub fn observable_source_asset(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::asset(args.into(), item.into(), attr::OBSERVABLE).into()
}

/// Marks a function as an asset check; documented on `dagrs_core::asset_check`.
#[proc_macro_attribute]
pub fn asset_check(args: TokenStream, item: TokenStream) -> TokenStream {
    check::asset_check(args.into(), item.into()).into()
}

/// Marks a function as a multi-asset, one function materializing several assets; documented
/// on `dagrs_core::multi_asset`.
#[proc_macro_attribute]
pub fn multi_asset(args: TokenStream, item: TokenStream) -> TokenStream {
    multi::multi_asset(args.into(), item.into()).into()
}
