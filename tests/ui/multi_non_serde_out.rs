use dagrs_core::prelude::*;

struct Handle;

#[multi_asset(outs(a: u32, b: Handle))]
async fn pair() -> Result<(u32, Handle)> {
    Ok((1, Handle))
}

fn main() {}
