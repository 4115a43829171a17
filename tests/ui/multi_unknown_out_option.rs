use dagrs_core::prelude::*;

#[multi_asset(outs(a: u32, b: u32 = (colour = "blue")))]
async fn pair() -> Result<(u32, u32)> {
    Ok((1, 2))
}

fn main() {}
