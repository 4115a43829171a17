use dagrs_core::prelude::*;

#[asset(group = ecoanp)]
async fn influx_tags() -> Result<u32> {
    Ok(1)
}

#[asset(deps = [influx_tags])]
async fn influx_data(tags: Input<influx_tags>) -> Result<u32> {
    Ok(*tags + 1)
}

fn main() {
    let _ = assets![influx_tags, influx_data];
}
