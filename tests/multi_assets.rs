//! Multi-assets as users rely on them: one run of the function for all its outs, subsets,
//! typed outputs handed downstream, failures and retries, stored outputs of unselected outs,
//! and key collisions reported by `Definitions::build`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use dagrs_core::prelude::*;
use dagrs_core::{
    AssetOut, AssetSpec, Event, EventKind, MultiAssetSpec, MultiOutputs, Problem, RunStatus,
    StepStatus,
};
use serde::{Deserialize, Serialize};

fn kinds_of<'a>(events: &'a [Event], asset: &str) -> Vec<&'a EventKind> {
    events
        .iter()
        .filter(|e| e.asset.as_deref() == Some(asset))
        .map(|e| &e.kind)
        .collect()
}

fn materializations(events: &[Event], asset: &str) -> usize {
    kinds_of(events, asset)
        .into_iter()
        .filter(|k| matches!(k, EventKind::Materialization { .. }))
        .count()
}

/// What `split` says about the readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    count: usize,
    mean: f64,
}

#[asset]
async fn raw() -> Result<Vec<f64>> {
    Ok(vec![1.0, -5.0, 2.0, 3.0])
}

static SPLIT_CALLS: AtomicUsize = AtomicUsize::new(0);
/// Held by the tests that count calls of `split` or call it, which run in parallel.
static SPLIT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Splits readings into the clean ones and their statistics.
#[multi_asset(outs(clean: Vec<f64>, stats: Stats = (key = "readings/stats", group = "silver")),
              group = "bronze", tags(layer = "core"))]
async fn split(raw: Input<raw>) -> Result<(Vec<f64>, Stats)> {
    SPLIT_CALLS.fetch_add(1, Ordering::SeqCst);
    let clean: Vec<f64> = raw.iter().copied().filter(|v| *v >= 0.0).collect();
    let mean = clean.iter().sum::<f64>() / clean.len() as f64;
    let stats = Stats {
        count: clean.len(),
        mean,
    };
    Ok((clean, stats))
}

#[asset]
async fn total(clean: Input<clean>) -> Result<f64> {
    Ok(clean.iter().sum())
}

#[asset]
async fn report(stats: Input<stats>) -> Result<String> {
    Ok(format!("{} readings", stats.count))
}

fn split_defs() -> Definitions {
    Definitions::builder()
        .specs(assets![raw, split, total, report])
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_function_runs_once_for_all_outs_and_each_out_is_an_asset() {
    let _counting = SPLIT_LOCK.lock().await;
    let defs = split_defs();
    let out = defs.asset("readings/stats").unwrap();
    assert_eq!(out.group_name(), Some("silver"));
    assert_eq!(out.multi_asset_name(), Some("split"));
    assert_eq!(defs.asset("clean").unwrap().group_name(), Some("bronze"));
    assert_eq!(defs.asset("clean").unwrap().tags()["layer"], "core");
    assert_eq!(
        defs.asset("clean").unwrap().description_text(),
        Some("Splits readings into the clean ones and their statistics.")
    );
    assert_eq!(defs.asset("clean").unwrap().deps(), ["raw"]);
    assert_eq!(defs.select("group:silver").unwrap(), ["readings/stats"]);

    let before = SPLIT_CALLS.load(Ordering::SeqCst);
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success());
    assert_eq!(SPLIT_CALLS.load(Ordering::SeqCst) - before, 1);
    assert_eq!(result.output::<clean>(), Some(&vec![1.0, 2.0, 3.0]));
    assert_eq!(result.output::<stats>().unwrap().count, 3);
    // Downstream of each out gets its typed output.
    assert_eq!(result.output::<total>(), Some(&6.0));
    assert_eq!(result.output::<report>().unwrap(), "3 readings");
    // Each out's events are recorded under its own key.
    let events = result.events().await.unwrap();
    for key in ["clean", "readings/stats"] {
        let kinds = kinds_of(&events, key);
        assert!(matches!(
            kinds[0],
            EventKind::StepStarted { attempt: 1, .. }
        ));
        assert!(matches!(kinds[1], EventKind::Materialization { .. }));
        assert!(matches!(
            kinds[2],
            EventKind::StepSucceeded { attempt: 1, .. }
        ));
        assert_eq!(result.step(key).unwrap().status, StepStatus::Succeeded);
    }
}

#[tokio::test]
async fn selecting_one_out_of_a_multi_asset_that_cannot_subset_materializes_all() {
    let _counting = SPLIT_LOCK.lock().await;
    let defs = split_defs();
    let instance = Instance::ephemeral();
    instance
        .materialize(&defs, "raw", RunConfig::new())
        .await
        .unwrap();
    let before = SPLIT_CALLS.load(Ordering::SeqCst);
    let result = instance
        .materialize(&defs, "clean", RunConfig::new())
        .await
        .unwrap();
    assert!(result.success());
    assert_eq!(SPLIT_CALLS.load(Ordering::SeqCst) - before, 1);
    assert_eq!(
        materializations(&result.events().await.unwrap(), "clean"),
        1
    );
    assert_eq!(
        materializations(&result.events().await.unwrap(), "readings/stats"),
        1
    );
    let EventKind::RunStarted { selection } = &result.events().await.unwrap()[0].kind else {
        panic!("the run starts with RunStarted");
    };
    assert_eq!(selection, &["clean", "readings/stats"]);
}

#[tokio::test]
async fn a_downstream_only_run_reads_the_outs_from_storage() {
    let _counting = SPLIT_LOCK.lock().await;
    let defs = split_defs();
    let instance = Instance::ephemeral();
    let first = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert!(first.success());
    let before = SPLIT_CALLS.load(Ordering::SeqCst);
    let again = instance
        .materialize(&defs, "total report", RunConfig::new())
        .await
        .unwrap();
    assert!(again.success());
    assert_eq!(
        SPLIT_CALLS.load(Ordering::SeqCst),
        before,
        "split is not run again"
    );
    assert_eq!(again.output::<total>(), Some(&6.0));
    assert_eq!(again.output::<report>().unwrap(), "3 readings");
    assert_eq!(materializations(&again.events().await.unwrap(), "clean"), 0);
}

static SUBSET_SEEN: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());

#[multi_asset(outs(left: u32, right: String), can_subset = true)]
fn sides(ctx: &AssetContext) -> Result<(Option<u32>, Option<String>)> {
    let selected = ctx
        .selected_outputs()
        .iter()
        .map(|k| k.to_string())
        .collect();
    SUBSET_SEEN.lock().unwrap().push(selected);
    let left = ctx.is_selected("left").then_some(7);
    // A value for an unselected out is dropped.
    Ok((left, Some("right".to_owned())))
}

#[asset]
async fn after_left(left: Input<left>) -> Result<u32> {
    Ok(*left + 1)
}

#[tokio::test]
async fn a_subset_run_materializes_only_the_selected_outs() {
    let defs = Definitions::builder()
        .specs(assets![sides, after_left])
        .build()
        .unwrap();
    let result = materialize(&defs, "left+", RunConfig::new()).await.unwrap();
    assert!(result.success());
    assert_eq!(result.output::<left>(), Some(&7));
    assert_eq!(result.output::<after_left>(), Some(&8));
    assert_eq!(result.output::<right>(), None);
    assert!(kinds_of(&result.events().await.unwrap(), "right").is_empty());
    assert_eq!(result.steps().len(), 2);
    assert!(SUBSET_SEEN
        .lock()
        .unwrap()
        .contains(&vec!["left".to_owned()]));

    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success());
    assert_eq!(result.output::<right>().unwrap(), "right");
    assert!(SUBSET_SEEN
        .lock()
        .unwrap()
        .contains(&vec!["left".to_owned(), "right".to_owned()]));
}

#[multi_asset(outs(first: u32, second: u32), can_subset = true)]
async fn forgetful() -> Result<(Option<u32>, Option<u32>)> {
    Ok((Some(1), None))
}

#[tokio::test]
async fn no_value_for_a_selected_out_fails_the_step() {
    let defs = Definitions::builder()
        .specs(assets![forgetful])
        .build()
        .unwrap();
    let result = materialize(&defs, "second", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(result.status(), RunStatus::Failed);
    let error = result.step("second").unwrap().error.as_ref().unwrap();
    assert_eq!(
        error.message,
        "multi-asset `forgetful` returned no value for selected out `second`"
    );
    let result = materialize(&defs, "first", RunConfig::new()).await.unwrap();
    assert!(result.success());
}

static FLAKY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[multi_asset(outs(up_a: u32, up_b: u32), retry = Retry::fixed(2, Duration::ZERO))]
async fn flaky() -> Result<(u32, u32)> {
    FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    anyhow::bail!("source unreachable")
}

#[asset]
async fn below_a(up_a: Input<up_a>) -> Result<u32> {
    Ok(*up_a)
}

#[asset(deps = [up_b])]
async fn below_b() -> Result<u32> {
    Ok(0)
}

#[asset]
async fn independent() -> Result<u32> {
    Ok(1)
}

#[tokio::test]
async fn a_failure_fails_every_out_skips_what_lies_below_and_retries_rerun_the_function() {
    let defs = Definitions::builder()
        .specs(assets![flaky, below_a, below_b, independent])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert_eq!(result.status(), RunStatus::Failed);
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst), 3);
    for key in ["up_a", "up_b"] {
        let step = result.step(key).unwrap();
        assert_eq!(step.status, StepStatus::Failed);
        assert_eq!(step.attempts, 3);
        let failed = kinds_of(&result.events().await.unwrap(), key)
            .into_iter()
            .filter(|k| matches!(k, EventKind::StepFailed { .. }))
            .count();
        assert_eq!(failed, 3);
    }
    assert_eq!(result.step("below_a").unwrap().status, StepStatus::Skipped);
    assert_eq!(result.step("below_b").unwrap().status, StepStatus::Skipped);
    assert_eq!(
        result.step("independent").unwrap().status,
        StepStatus::Succeeded
    );
}

static SECOND_TRY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[multi_asset(outs(once_a: u32, once_b: u32), retry = Retry::fixed(1, Duration::ZERO))]
async fn second_try(ctx: &AssetContext) -> Result<(u32, u32)> {
    SECOND_TRY_CALLS.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() == 1 {
        anyhow::bail!("first attempt fails");
    }
    Ok((1, 2))
}

#[tokio::test]
async fn a_retry_that_succeeds_materializes_every_out() {
    let defs = Definitions::builder()
        .specs(assets![second_try])
        .build()
        .unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert!(result.success());
    assert_eq!(SECOND_TRY_CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(result.output::<once_b>(), Some(&2));
    assert_eq!(result.step("once_a").unwrap().attempts, 2);
}

#[asset]
async fn clean_copy() -> Result<u32> {
    Ok(0)
}

#[tokio::test]
async fn an_out_key_that_collides_with_an_asset_is_a_build_error_naming_both() {
    let twin = AssetSpec::new("clean", |_| async { Ok(0u32) });
    let error = Definitions::builder()
        .specs(assets![raw, split])
        .specs([twin])
        .build()
        .unwrap_err();
    let problem = error.problems().iter().next().unwrap();
    assert!(matches!(problem, Problem::DuplicateAsset { key, .. } if key == "clean"));
    assert_eq!(
        problem.to_string(),
        "duplicate asset key `clean`: it is defined 2 times (by multi-asset `split` and asset \
         `clean`); rename one of them (`#[asset(key = \"...\")]`) or register it once"
    );
    // Registering assets alone keeps the message as it was.
    let error = Definitions::builder()
        .specs(assets![clean_copy, clean_copy])
        .build()
        .unwrap_err();
    assert!(!error.to_string().contains("multi-asset"));
}

#[tokio::test]
async fn hand_built_multi_assets_share_the_executor() {
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let spec = MultiAssetSpec::new("parts", move |scope| {
        let calls = std::sync::Arc::clone(&counted);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut outs = MultiOutputs::new();
            for key in scope.context().selected_outputs() {
                outs.set(key.clone(), format!("value of {key}"))?;
            }
            Ok(outs)
        }
    })
    .out(AssetOut::new::<String>("part/a"))
    .out(AssetOut::new::<String>("part/b").group("other"))
    .out(AssetOut::new::<u32>("part/c"))
    .can_subset(true);
    let defs = Definitions::builder()
        .specs(spec.into_specs())
        .build()
        .unwrap();
    let result = materialize(&defs, "part/a part/b", RunConfig::new())
        .await
        .unwrap();
    assert!(result.success());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        result.output_value("part/b").and_then(|v| v.as_str()),
        Some("value of part/b")
    );
    // A value of another type than the out's is a failure.
    let result = materialize(&defs, "part/c", RunConfig::new())
        .await
        .unwrap();
    assert_eq!(result.status(), RunStatus::Failed);
    let error = &result
        .step("part/c")
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .message;
    assert!(
        error.contains("returned a `alloc::string::String` for out `part/c`"),
        "{error}"
    );
}

#[tokio::test]
async fn an_out_can_be_invoked_in_a_test() {
    let _counting = SPLIT_LOCK.lock().await;
    let ctx = build_asset_context().input::<raw>(vec![4.0, -1.0]);
    let clean = ctx.invoke::<clean>().await.unwrap();
    assert_eq!(clean, vec![4.0]);
    let left = build_asset_context().invoke::<left>().await.unwrap();
    assert_eq!(left, 7);
    // Or call the function itself.
    let (clean, stats) = split(Input::new(vec![2.0])).await.unwrap();
    assert_eq!((clean, stats.count), (vec![2.0], 1));
}

#[multi_asset(outs(slow_a: u32, slow_b: u32), timeout = Duration::from_millis(50))]
async fn slow(ctx: &AssetContext) -> Result<(u32, u32)> {
    if ctx.attempt() > 0 {
        std::future::pending::<()>().await;
    }
    Ok((1, 2))
}

#[tokio::test]
async fn the_timeout_and_cancellation_are_the_steps() {
    let defs = Definitions::builder().specs(assets![slow]).build().unwrap();
    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
    assert_eq!(result.status(), RunStatus::Failed);
    for key in ["slow_a", "slow_b"] {
        let error = &result.step(key).unwrap().error.as_ref().unwrap().message;
        assert!(error.starts_with("timed out after"), "{error}");
    }

    let defs = Definitions::builder()
        .specs(
            MultiAssetSpec::new("waits", |_| async {
                std::future::pending::<()>().await;
                Ok(MultiOutputs::new())
            })
            .out(AssetOut::new::<u32>("wait_a"))
            .out(AssetOut::new::<u32>("wait_b"))
            .into_specs(),
        )
        .build()
        .unwrap();
    let handle = Instance::ephemeral()
        .launch(&defs, "*", dagrs_core::RunOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.cancel();
    let result = handle.wait().await.unwrap();
    assert_eq!(result.status(), RunStatus::Cancelled);
    for key in ["wait_a", "wait_b"] {
        assert_eq!(result.step(key).unwrap().status, StepStatus::Cancelled);
        assert!(kinds_of(&result.events().await.unwrap(), key)
            .iter()
            .any(|k| matches!(k, EventKind::StepCancelled { attempt: 1 })));
    }
}

#[tokio::test]
async fn an_out_given_dependencies_of_its_own_is_a_build_error() {
    let mut specs = MultiAssetSpec::new("pair", |_| async { Ok(MultiOutputs::new()) })
        .out(AssetOut::new::<u32>("pair/a"))
        .out(AssetOut::new::<u32>("pair/b"))
        .into_specs();
    let b = specs.pop().unwrap().dep("pair/a");
    specs.push(b);
    let error = Definitions::builder().specs(specs).build().unwrap_err();
    assert!(
        error.to_string().contains(
            "multi-asset `pair`: its out `pair/b` depends on `pair/a`, its out `pair/a` on \
             nothing; every out depends on what the function depends on"
        ),
        "{error}"
    );
}
