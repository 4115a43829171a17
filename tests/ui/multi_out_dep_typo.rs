use dagrs_core::prelude::*;

#[multi_asset(outs(clean: Vec<f64>, count: usize))]
async fn split() -> Result<(Vec<f64>, usize)> {
    Ok((vec![1.0], 1))
}

#[asset(deps = [claen])]
async fn total() -> Result<u32> {
    Ok(0)
}

fn main() {}
