use dagrs_core::prelude::*;
use dagrs_core::{asset_check, CheckResult};

#[asset_check(blocking = true)]
async fn no_gaps() -> CheckResult {
    CheckResult::passed()
}

fn main() {}
