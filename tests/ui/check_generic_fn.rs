use dagrs_core::prelude::*;
use dagrs_core::{asset_check, CheckResult};

#[asset]
async fn readings() -> Result<Vec<f64>> {
    Ok(vec![])
}

#[asset_check(asset = readings)]
async fn no_gaps<T: Default>() -> CheckResult {
    let _ = T::default();
    CheckResult::passed()
}

fn main() {}
