use dagrs_core::prelude::*;
use dagrs_core::{Hook, HookContext};

fn alert() -> Hook {
    Hook::on_failure("alert", |_ctx: HookContext| async { Ok(()) })
}

#[asset(hooks = alert())]
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
