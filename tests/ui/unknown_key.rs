use dagrs_core::prelude::*;

#[asset(group = "ecoanp", retires = 3)]
async fn influx_tags() -> Result<u32> {
    Ok(1)
}

fn main() {}
