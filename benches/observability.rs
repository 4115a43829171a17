//! What spans and log capture add to a step: materializing 1,000 independent no-op assets on
//! a single-threaded runtime, with no `tracing` subscriber, with a bare registry, and with
//! dagrs' capture layer installed (nothing logged). The difference per asset is the cost.
//!
//! ```text
//! cargo bench --bench observability -- --measurement-time 5
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dagrs_core::observe::CaptureLayer;
use dagrs_core::{materialize, AssetSpec, Definitions, RunConfig};
use tracing_subscriber::layer::SubscriberExt;

const ASSETS: usize = 1000;

fn specs() -> Vec<AssetSpec> {
    (0..ASSETS)
        .map(|i| AssetSpec::new(format!("a{i}"), |_| async { Ok(()) }))
        .collect()
}

fn runs(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let specs = specs();
    let mut group = c.benchmark_group("observability");
    group.sample_size(20);
    group.throughput(Throughput::Elements(ASSETS as u64));
    let subscribers: [(&str, Option<tracing::Dispatch>); 3] = [
        ("no_subscriber", None),
        (
            "registry_only",
            Some(tracing::Dispatch::new(tracing_subscriber::registry())),
        ),
        (
            "capture_layer",
            Some(tracing::Dispatch::new(
                tracing_subscriber::registry().with(CaptureLayer::new().filtered()),
            )),
        ),
    ];
    for (name, dispatch) in subscribers {
        // Scoped to this thread, which runs the whole single-threaded runtime.
        let _default = dispatch.as_ref().map(tracing::dispatcher::set_default);
        group.bench_with_input(BenchmarkId::from_parameter(name), &specs, |b, specs| {
            b.iter_batched(
                || Definitions::builder().specs(specs.clone()).build().unwrap(),
                |defs| {
                    runtime.block_on(async {
                        let result = materialize(&defs, "*", RunConfig::new()).await.unwrap();
                        assert!(result.success());
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, runs);
criterion_main!(benches);
