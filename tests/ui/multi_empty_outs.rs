use dagrs_core::prelude::*;

#[multi_asset(outs())]
async fn nothing() -> Result<()> {
    Ok(())
}

fn main() {}
