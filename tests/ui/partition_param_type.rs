use dagrs_core::prelude::*;

#[asset(partitions = hourly("2026-01-01T00:00Z"))]
async fn hours(hour: Partition<u32>) -> Result<u32> {
    Ok(*hour)
}

fn main() {
    let _ = assets![hours];
}
