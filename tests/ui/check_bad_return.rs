use dagrs_core::prelude::*;
use dagrs_core::asset_check;

#[asset]
async fn readings() -> Result<Vec<f64>> {
    Ok(vec![])
}

#[asset_check(asset = readings)]
async fn no_gaps(readings: Input<readings>) -> bool {
    !readings.is_empty()
}

fn main() {}
