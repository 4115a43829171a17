use dagrs_core::prelude::*;

#[asset]
async fn influx_tags() -> Result<Vec<String>> {
    Ok(vec!["D100".into()])
}

#[asset]
async fn influx_data(tags: Input<influx_tags, Vec<u32>>) -> Result<usize> {
    Ok(tags.len())
}

fn main() {}
