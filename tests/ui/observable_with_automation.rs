use dagrs_core::prelude::*;
use dagrs_core::{observable_source_asset, DataVersion};

#[observable_source_asset(automation = eager())]
async fn influx_readings() -> Result<DataVersion> {
    Ok(DataVersion::new("1"))
}

fn main() {}
