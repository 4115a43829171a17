use dagrs_core::prelude::*;

#[asset]
async fn raw() -> Result<u32> {
    Ok(1)
}

#[asset(deps = [raw], automation = "eager")]
async fn clean() -> Result<u32> {
    Ok(2)
}

fn main() {}
