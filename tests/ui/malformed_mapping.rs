use dagrs_core::prelude::*;

#[asset(partitions = hourly("2026-01-01T00:00Z"))]
async fn hours() -> Result<u32> {
    Ok(1)
}

#[asset(partitions = daily("2026-01-01"), mappings(hours PartitionMapping::TimeWindow))]
async fn days(hours: Input<hours>) -> Result<u32> {
    Ok(*hours + 1)
}

fn main() {
    let _ = assets![hours, days];
}
