use dagrs_core::prelude::*;

#[asset]
async fn influx_tags() -> Result<u32> {
    Ok(1)
}

#[asset(deps = [influx_tags()])]
async fn influx_data(tags: Input<influx_tags>) -> Result<u32> {
    Ok(*tags + 1)
}

#[asset(deps = [influx_data])]
async fn create_aggregates(data: Input<influx_data>) -> Result<u32> {
    Ok(*data * 2)
}

fn main() {
    let _ = assets![influx_tags, influx_data, create_aggregates];
}
