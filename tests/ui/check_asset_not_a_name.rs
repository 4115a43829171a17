use dagrs_core::prelude::*;
use dagrs_core::{asset_check, CheckResult};

#[asset]
async fn readings() -> Result<Vec<f64>> {
    Ok(vec![])
}

#[asset_check(asset = readings(), blocking = true)]
async fn no_gaps() -> CheckResult {
    CheckResult::passed()
}

fn main() {}
