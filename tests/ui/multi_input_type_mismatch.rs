use dagrs_core::prelude::*;

#[multi_asset(outs(clean: Vec<f64>, count: usize))]
async fn split() -> Result<(Vec<f64>, usize)> {
    Ok((vec![1.0], 1))
}

#[asset]
async fn total(clean: Input<clean, Vec<u32>>) -> Result<u32> {
    Ok(clean.iter().sum())
}

fn main() {}
