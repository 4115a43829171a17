use dagrs_core::prelude::*;

#[multi_asset(group = "g")]
async fn pair() -> Result<(u32, u32)> {
    Ok((1, 2))
}

fn main() {}
