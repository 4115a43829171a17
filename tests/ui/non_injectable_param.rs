use dagrs_core::prelude::*;

#[asset]
async fn influx_tags(batch_size: usize) -> Result<usize> {
    Ok(batch_size)
}

#[asset(deps = [influx_tags])]
async fn influx_data(tags: Input<influx_tags>) -> Result<usize> {
    Ok(*tags + 1)
}

fn main() {
    let _ = assets![influx_tags, influx_data];
}
