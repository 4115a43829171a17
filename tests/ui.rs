//! Compile-fail tests of `#[asset]` and `#[multi_asset]` (files `multi_*`): one file per
//! diagnostic, named after it; the `.stderr` files are the specification of the error messages.

#[test]
fn asset_macro_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
