//! The `#[asset]` and `#[multi_asset]` attributes of dagrs. Use it through `dagrs_core`, which re-exports it.
//!
//! This crate only parses, checks and emits: what a parameter *is* is decided by the
//! `AssetParam` trait in dagrs-core, so errors about parameters come from the type checker,
//! pointed at the parameter.

mod attr;
mod expand;
mod multi;

use proc_macro::TokenStream;

/// Marks a function as an asset; documented on `dagrs_core::asset`.
#[proc_macro_attribute]
pub fn asset(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::asset(args.into(), item.into()).into()
}

/// Marks a function as a multi-asset, one function materializing several assets; documented
/// on `dagrs_core::multi_asset`.
#[proc_macro_attribute]
pub fn multi_asset(args: TokenStream, item: TokenStream) -> TokenStream {
    multi::multi_asset(args.into(), item.into()).into()
}
