use dagrs_core::prelude::*;

// Two errors, the second inherent: `deps = [influx_tags]` and `assets![..]` add nothing, but
// `Input<influx_tags>` needs the asset's output type, taken as
// `<Result<Tags, anyhow::Error> as IntoAssetResult>::Output`, which does not exist for a
// `Tags` without serde, so rustc repeats the error there. Naming `Tags` directly would spare
// that, but show serde's raw `Serialize` and `Deserialize` errors (and serde's list of
// implementors, which changes between versions) instead of this one: rustc checks the
// `AssetValue` supertraits of `Asset::Output` without `#[diagnostic::do_not_recommend]`.

struct Tags(Vec<String>);

#[asset]
async fn influx_tags() -> Result<Tags> {
    Ok(Tags(Vec::new()))
}

#[asset(deps = [influx_tags])]
async fn influx_data(tags: Input<influx_tags>) -> Result<u32> {
    let _ = &*tags;
    Ok(1)
}

fn main() {
    let _ = assets![influx_tags, influx_data];
}
