use dagrs_core::prelude::*;

struct InfluxTagsConfig {
    batch_size: u32,
}

#[asset]
async fn influx_tags(config: Config<InfluxTagsConfig>) -> Result<u32> {
    Ok(config.batch_size)
}

#[asset(deps = [influx_tags])]
async fn influx_data(tags: Input<influx_tags>) -> Result<u32> {
    Ok(*tags + 1)
}

fn main() {
    let _ = assets![influx_tags, influx_data];
}
