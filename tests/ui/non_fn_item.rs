use dagrs_core::prelude::*;

#[asset]
struct InfluxTags {
    count: u32,
}

#[asset(deps = [InfluxTags])]
async fn influx_data(_tags: Input<InfluxTags>) -> Result<u32> {
    Ok(1)
}

fn main() {
    let _ = assets![InfluxTags, influx_data];
}
