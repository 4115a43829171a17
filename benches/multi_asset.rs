//! A multi-asset of N outs against N single assets: `Definitions::build` and materialization
//! of no-op outputs, in memory. The multi-asset runs its function once and records each out's
//! events; the single assets run N steps.
//!
//! ```text
//! cargo bench --bench multi_asset
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dagrs_core::{
    materialize, AssetOut, AssetSpec, Definitions, MultiAssetSpec, MultiOutputs, RunConfig,
};

const N: usize = 1000;

fn singles() -> Vec<AssetSpec> {
    (0..N)
        .map(|i| AssetSpec::new(format!("a{i}"), |_| async { Ok(()) }))
        .collect()
}

fn multi() -> Vec<AssetSpec> {
    let mut spec = MultiAssetSpec::new("many", |scope| async move {
        let mut outs = MultiOutputs::new();
        for key in scope.context().selected_outputs() {
            outs.set(key.clone(), ())?;
        }
        Ok(outs)
    });
    for i in 0..N {
        spec = spec.out(AssetOut::new::<()>(format!("o{i}")));
    }
    spec.into_specs()
}

fn shapes() -> Vec<(&'static str, Vec<AssetSpec>)> {
    vec![
        ("single_assets_1000", singles()),
        ("multi_asset_1000_outs", multi()),
    ]
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("multi_definitions_build");
    for (name, specs) in shapes() {
        group.throughput(Throughput::Elements(specs.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &specs, |b, specs| {
            b.iter_batched(
                || specs.clone(),
                |specs| Definitions::builder().specs(specs).build().unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn run(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("multi_materialize");
    group.sample_size(20);
    for (name, specs) in shapes() {
        group.throughput(Throughput::Elements(specs.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &specs, |b, specs| {
            b.to_async(&runtime).iter_batched(
                || Definitions::builder().specs(specs.clone()).build().unwrap(),
                |defs| async move {
                    let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
                    assert!(result.success());
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, build, run);
criterion_main!(benches);
