use dagrs_core::prelude::*;

#[asset]
async fn influx_tags() -> Result<u32> {
    Ok(1)
}

#[asset(deps = [influx_tag])]
async fn influx_data() -> Result<u32> {
    Ok(2)
}

fn main() {}
