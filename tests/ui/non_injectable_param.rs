use dagrs_core::prelude::*;

#[asset]
async fn influx_tags(batch_size: usize) -> Result<usize> {
    Ok(batch_size)
}

fn main() {}
