use dagrs_core::prelude::*;

// No use of the asset: a method lives in an `impl` block, where the marker type cannot be
// declared, so there is no `influx_tags` type to name elsewhere. (On a free function, `self`
// also gets rustc's own "`self` parameter is only allowed in associated functions".)
struct Influx;

impl Influx {
    #[asset]
    async fn influx_tags(&self) -> Result<u32> {
        Ok(1)
    }
}

fn main() {}
