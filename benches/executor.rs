//! Executor overhead on no-op assets: `Definitions::build` and materialization, measured
//! separately, on four graph shapes (and `Definitions::build` of 100,000 and 1,000,000
//! independent assets).
//!
//! ```text
//! cargo bench --bench executor
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dagrs_core::{materialize, AssetSpec, Definitions, RunConfig};

fn noop(name: String) -> AssetSpec {
    AssetSpec::new(name, |_| async { Ok(()) })
}

/// The graph shapes: name and specs.
fn shapes() -> Vec<(&'static str, Vec<AssetSpec>)> {
    let chain = (0..100)
        .map(|i| {
            let spec = noop(format!("c{i}"));
            if i == 0 {
                spec
            } else {
                spec.dep(format!("c{}", i - 1))
            }
        })
        .collect();
    let independent = |n: usize| (0..n).map(|i| noop(format!("a{i}"))).collect();
    let lattice = (0..10)
        .flat_map(|layer| {
            (0..10).map(move |i| {
                let mut spec = noop(format!("l{layer}_{i}"));
                if layer > 0 {
                    for j in 0..10 {
                        spec = spec.dep(format!("l{}_{j}", layer - 1));
                    }
                }
                spec
            })
        })
        .collect();
    vec![
        ("chain_100", chain),
        ("independent_1000", independent(1000)),
        ("lattice_10x10", lattice),
        ("independent_10000", independent(10_000)),
    ]
}

/// Larger graphs, for `Definitions::build` alone: does it stay linear?
fn large_shapes() -> Vec<(&'static str, Vec<AssetSpec>)> {
    let independent = |n: usize| (0..n).map(|i| noop(format!("a{i}"))).collect();
    vec![
        ("independent_100000", independent(100_000)),
        ("independent_1000000", independent(1_000_000)),
    ]
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("definitions_build");
    group.sample_size(10);
    for (name, specs) in shapes().into_iter().chain(large_shapes()) {
        group.throughput(Throughput::Elements(specs.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &specs, |b, specs| {
            b.iter_batched(
                || specs.clone(),
                |specs| Definitions::builder().specs(specs).build().unwrap(),
                BatchSize::LargeInput,
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
    let mut group = c.benchmark_group("materialize");
    group.sample_size(20);
    for (name, specs) in shapes() {
        group.throughput(Throughput::Elements(specs.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &specs, |b, specs| {
            // Fresh definitions (and so a fresh in-memory event store) for every run.
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
