//! `Definitions::build` and selections: every problem reported at once, before anything runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dagrs_core::prelude::*;
use dagrs_core::{AssetSpec, Instance, Problem};
use serde::Deserialize;

fn noop(name: &str) -> AssetSpec {
    AssetSpec::new(name, |_| async { Ok(()) })
}

struct Warehouse;

#[test]
fn every_cycle_is_reported_by_name() {
    let err = Definitions::builder()
        .specs([
            noop("a").dep("b"),
            noop("b").dep("c"),
            noop("c").dep("a"),
            noop("x").dep("y"),
            noop("y").dep("x"),
            noop("fine").dep("a"),
        ])
        .build()
        .unwrap_err();
    let cycles: Vec<Vec<String>> = err
        .problems()
        .iter()
        .filter_map(|p| match p {
            Problem::Cycle { cycle } => Some(cycle.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(cycles.len(), 2, "{err}");
    assert!(
        cycles.contains(&vec!["a".into(), "c".into(), "b".into(), "a".into()])
            || cycles.contains(&vec!["a".into(), "b".into(), "c".into(), "a".into()]),
        "{cycles:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("dependency cycle: `x` feeds `y`, `y` feeds `x`; break it"),
        "{text}"
    );
}

#[test]
fn a_cycle_through_typed_dependencies_is_caught_at_build() {
    #[asset(deps = [second])]
    async fn first() -> Result<()> {
        Ok(())
    }
    #[asset(deps = [first])]
    async fn second() -> Result<()> {
        Ok(())
    }
    let err = Definitions::builder()
        .specs(assets![first, second])
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid definitions: dependency cycle: `first` feeds `second`, `second` feeds \
         `first`; break it by removing one of these dependencies"
    );
}

#[tokio::test]
async fn a_missing_resource_is_reported_before_any_asset_runs() {
    static RAN: AtomicBool = AtomicBool::new(false);
    #[asset]
    async fn loads(_warehouse: Res<Warehouse>) -> Result<()> {
        RAN.store(true, Ordering::SeqCst);
        Ok(())
    }
    #[asset]
    async fn unrelated() -> Result<()> {
        RAN.store(true, Ordering::SeqCst);
        Ok(())
    }
    let err = Definitions::builder()
        .specs(assets![loads, unrelated])
        .build()
        .unwrap_err();
    assert!(
        matches!(err.problems().iter().next(), Some(Problem::MissingResource { asset, resource, .. })
        if asset == "loads" && resource.ends_with("Warehouse")),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("add it with `Definitions::builder().resource(...)`"));
    assert!(!RAN.load(Ordering::SeqCst));

    let defs = Definitions::builder()
        .specs(assets![loads, unrelated])
        .resource(Warehouse)
        .build()
        .unwrap();
    assert!(materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap()
        .success());
    assert!(RAN.load(Ordering::SeqCst));
}

#[test]
fn all_problems_come_back_together() {
    let err = Definitions::builder()
        .specs([
            noop("load"),
            noop("load"),
            noop("clean").dep("lod"),
            noop("bad key!"),
        ])
        .config(RunConfig::new().asset("claen", serde_json::json!({})))
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("invalid definitions: 4 problems found:"),
        "{text}"
    );
    assert!(
        text.contains("duplicate asset key `load`: it is defined 2 times"),
        "{text}"
    );
    assert!(text.contains("asset `clean` depends on `lod`, which is not registered in these Definitions; did you mean `load`?"), "{text}");
    assert!(text.contains("invalid asset key `bad key!`"), "{text}");
    assert!(text.contains("config given for `claen`, which is not an asset of these Definitions; did you mean `clean`?"), "{text}");
}

#[test]
fn unknown_selection_names_get_suggestions() {
    let defs = Definitions::builder()
        .specs([
            noop("influx_tags").group("ecoanp"),
            noop("influx_data")
                .dep("influx_tags")
                .group("ecoanp")
                .tag("domain", "ingest"),
            noop("create_aggregates").dep("influx_data").group("ecoanp"),
        ])
        .build()
        .unwrap();
    let err = defs.select("influx_tag+").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid selection `influx_tag+`: unknown asset `influx_tag`; did you mean one of `influx_tags`, `influx_data`?"
    );
    let err = defs.select("group:ecoamp").unwrap_err();
    assert!(
        err.to_string()
            .contains("no asset is in group `ecoamp`; did you mean `ecoanp`?"),
        "{err}"
    );
    assert!(defs
        .select("")
        .unwrap_err()
        .to_string()
        .contains("selects nothing"));
    assert!(defs
        .select("a+b")
        .unwrap_err()
        .to_string()
        .contains("bad depth `b`"));
}

#[test]
fn selection_errors_stay_short_however_long_the_selection() {
    let defs = Definitions::builder()
        .specs((0..1000).map(|i| noop(&format!("asset_{i}"))))
        .build()
        .unwrap();
    // 10 kB of one unknown name, repeated: named once.
    let repeated = "x,".repeat(5120);
    let text = defs.select(&repeated).unwrap_err().to_string();
    assert!(text.len() < 400, "{} bytes: {text}", text.len());
    assert_eq!(text.matches("unknown asset `x`").count(), 1, "{text}");
    // Thousands of distinct unknown names, each long: the first few, and a count.
    let distinct: String = (0..3000)
        .map(|i| format!("missing_{i}_{} ", "y".repeat(200)))
        .collect();
    let text = defs.select(&distinct).unwrap_err().to_string();
    assert!(text.len() < 4000, "{} bytes", text.len());
    assert!(text.ends_with("and 2990 more"), "{text}");
}

#[test]
fn selections_follow_the_graph() {
    let defs = Definitions::builder()
        .specs([
            noop("a").group("g"),
            noop("b").dep("a").tag("tier", "gold"),
            noop("c").dep("b"),
            noop("d").dep("c"),
            noop("e"),
        ])
        .build()
        .unwrap();
    let select = |s: &str| -> Vec<String> {
        defs.select(s)
            .unwrap()
            .iter()
            .map(|k| k.to_string())
            .collect()
    };
    assert_eq!(select("*"), ["a", "e", "b", "c", "d"]);
    assert_eq!(select("b+"), ["b", "c", "d"]);
    assert_eq!(select("b+1"), ["b", "c"]);
    assert_eq!(select("+c"), ["a", "b", "c"]);
    assert_eq!(select("1+c"), ["b", "c"]);
    assert_eq!(select("group:g, e"), ["a", "e"]);
    assert_eq!(select("tag:tier=gold"), ["b"]);
    assert_eq!(select("tag:tier"), ["b"]);
    assert!(defs.select("tag:tier=silver").is_err());
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct WindowConfig {
    time_window_hours: u32,
    batch_size: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            time_window_hours: 1,
            batch_size: 1000,
        }
    }
}

#[asset]
async fn windowed(ctx: &AssetContext, config: Config<WindowConfig>) -> Result<u32> {
    ctx.add_metadata("batch_size", config.batch_size);
    Ok(config.time_window_hours)
}

#[tokio::test]
async fn config_defaults_apply_and_bad_config_fails_before_the_run() {
    let defs = Definitions::builder()
        .asset::<windowed>()
        .config(RunConfig::new().asset("windowed", serde_json::json!({"batch_size": 10})))
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert_eq!(result.output::<windowed>(), Some(&1));
    assert_eq!(result.step("windowed").unwrap().metadata["batch_size"], 10);

    let run = RunConfig::new().asset("windowed", serde_json::json!({"time_window_hours": 3}));
    let result = materialize(&defs, "*", run).await.unwrap();
    assert_eq!(result.output::<windowed>(), Some(&3));
    assert_eq!(result.step("windowed").unwrap().metadata["batch_size"], 10);

    let instance = Instance::ephemeral();
    let bad = RunConfig::new().asset("windowed", serde_json::json!({"time_window_hours": "two"}));
    let err = instance.materialize(&defs, "*", bad).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config for asset `windowed` at `time_window_hours`: invalid type: string \"two\", expected u32"
    );
    let typo = RunConfig::new().asset("windowed", serde_json::json!({"batch_sise": 5}));
    assert!(instance
        .materialize(&defs, "*", typo)
        .await
        .unwrap_err()
        .to_string()
        .contains("unknown field `batch_sise`"));
    assert!(
        instance.runs(100).await.unwrap().is_empty(),
        "invalid config starts no run"
    );

    // A per-run retry policy replaces the asset's own, and is checked like config.
    let retries = RunConfig::new().retry("windowed", Retry::fixed(2, Duration::ZERO));
    assert!(instance
        .materialize(&defs, "*", retries)
        .await
        .unwrap()
        .success());
    let unknown = RunConfig::new().retry("windowd", Retry::fixed(2, Duration::ZERO));
    let err = instance.materialize(&defs, "*", unknown).await.unwrap_err();
    assert!(
        err.to_string().contains("did you mean `windowed`?"),
        "{err}"
    );
}

#[test]
fn invalid_default_config_fails_the_build() {
    let err = Definitions::builder()
        .asset::<windowed>()
        .config(RunConfig::new().asset("windowed", serde_json::json!({"batch_size": -1})))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid definitions: invalid config for asset `windowed` at `batch_size`"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn build_asset_context_runs_one_asset_with_what_the_test_gives() {
    #[asset]
    async fn uses_everything(
        ctx: &AssetContext,
        config: Config<WindowConfig>,
        warehouse: Res<Arc<str>>,
        hours: Input<windowed>,
    ) -> Result<String> {
        ctx.log.warn("checking");
        ctx.add_metadata("attempt", ctx.attempt());
        Ok(format!(
            "{}:{}:{}:{}",
            ctx.run_id(),
            &**warehouse,
            *hours,
            config.batch_size
        ))
    }
    let test = build_asset_context()
        .run_id("run-7")
        .attempt(2)
        .resource::<Arc<str>>("wh".into())
        .input::<windowed>(5)
        .config(serde_json::json!({"batch_size": 3}));
    assert_eq!(
        test.invoke::<uses_everything>().await.unwrap(),
        "run-7:wh:5:3"
    );
    assert_eq!(test.metadata()["attempt"], 2);
    assert_eq!(test.logs()[0].message, "checking");

    let err = build_asset_context()
        .invoke::<uses_everything>()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "needs resource `alloc::sync::Arc<str>`, which was not provided; give it to the \
             test with `build_asset_context().resource(...)`"
        ),
        "{text}"
    );
    assert!(
        text.contains("needs the output of `windowed`, which the test does not provide; give it with `build_asset_context().input::<windowed>(...)`"),
        "{text}"
    );
    let wrong = build_asset_context()
        .resource::<Arc<str>>("wh".into())
        .input::<windowed>(5)
        .config(serde_json::json!({"batch_size": "three"}));
    let text = wrong
        .invoke::<uses_everything>()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("invalid config for asset `uses_everything` at `batch_size`"),
        "{text}"
    );
}
