use dagrs_core::prelude::*;
use dagrs_core::observable_source_asset;

#[observable_source_asset]
async fn influx_readings() -> Result<u64> {
    Ok(1)
}

fn main() {}
