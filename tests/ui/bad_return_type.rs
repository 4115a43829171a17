use dagrs_core::prelude::*;

// Two errors, the second inherent: `deps = [influx_tags]` and `assets![..]` add nothing, but
// `Input<influx_tags>` needs the asset's output type, `<u32 as IntoAssetResult>::Output`,
// which does not exist, so rustc repeats the error there. The macro does not guess `u32`:
// a return type not written `Result<T, ..>` may be an alias of one (`Fallible<T>`), and a
// guess would mis-type those.

#[asset]
async fn influx_tags() -> u32 {
    1
}

#[asset(deps = [influx_tags])]
async fn influx_data(tags: Input<influx_tags>) -> Result<u32> {
    let _ = &*tags;
    Ok(1)
}

fn main() {
    let _ = assets![influx_tags, influx_data];
}
