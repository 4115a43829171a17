use dagrs_core::prelude::*;

// One error in two messages: `syn` has no secondary labels, so "first given here" is a
// `compile_error!` of its own. The asset is still generated (with the first value), so its
// uses below add nothing.

#[asset(group = "ecoanp", group = "other")]
async fn influx_tags() -> Result<u32> {
    Ok(1)
}

#[asset(deps = [influx_tags])]
async fn influx_data(tags: Input<influx_tags>) -> Result<u32> {
    Ok(*tags + 1)
}

fn main() {
    let _ = assets![influx_tags, influx_data];
}
