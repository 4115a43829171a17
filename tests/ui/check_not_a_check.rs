use dagrs_core::prelude::*;
use dagrs_core::checks;

#[asset]
async fn readings() -> Result<Vec<f64>> {
    Ok(vec![])
}

fn main() {
    let _ = checks![readings];
}
