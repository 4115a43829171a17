use dagrs_core::prelude::*;

#[asset(group = ecoanp)]
async fn influx_tags() -> Result<u32> {
    Ok(1)
}

fn main() {}
