use dagrs_core::prelude::*;

#[asset]
async fn données_influx() -> Result<u32> {
    Ok(1)
}

#[asset(deps = [données_influx])]
async fn influx_data(tags: Input<données_influx>) -> Result<u32> {
    Ok(*tags + 1)
}

fn main() {
    let _ = assets![données_influx, influx_data];
}
