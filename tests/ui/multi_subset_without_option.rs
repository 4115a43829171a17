use dagrs_core::prelude::*;

#[multi_asset(outs(a: u32, b: u32), can_subset = true)]
fn pair(ctx: &AssetContext) -> Result<(u32, u32)> {
    let _ = ctx.is_selected("a");
    Ok((1, 2))
}

fn main() {}
