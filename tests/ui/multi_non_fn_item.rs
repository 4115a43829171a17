use dagrs_core::prelude::*;

#[multi_asset(outs(a: u32, b: u32))]
struct Pair;

fn main() {}
