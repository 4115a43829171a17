use dagrs_core::prelude::*;

struct InfluxTags;

#[asset(deps = [InfluxTags])]
async fn influx_data() -> Result<u32> {
    Ok(1)
}

fn main() {
    let _ = assets![influx_data];
}
