use dagrs_core::prelude::*;

#[asset]
struct InfluxTags {
    count: u32,
}

fn main() {}
