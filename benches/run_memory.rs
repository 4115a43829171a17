//! Peak memory of one run of 100,000 independent no-op assets, in memory and on SQLite: the
//! process's resident set before the run (the definitions built, the store open) and its peak
//! during the run (`VmHWM` of `/proc/self/status`, reset before the run through
//! `/proc/self/clear_refs`). Linux only. Not a criterion bench: it measures bytes, not time.
//!
//! ```text
//! cargo bench --bench run_memory
//! ```

use std::sync::Arc;

use dagrs_core::storage::{InMemoryStorage, SqliteStorage, Storage};
use dagrs_core::{AssetSpec, Definitions, Instance, RunConfig};

/// Assets in the run.
const ASSETS: usize = 100_000;

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The stores measured, each in a process of its own (so that one's freed memory is not the
/// next one's baseline).
const STORES: [&str; 2] = ["in_memory", "sqlite"];

fn main() {
    match std::env::var("DAGRS_RUN_MEMORY_STORE") {
        Ok(store) => measure(&store),
        Err(_) => {
            // `cargo bench` passes `--bench`; a filter, if any, names the stores to measure.
            let filter: Vec<String> = std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with("--"))
                .collect();
            println!("run_memory: one run of {ASSETS} independent no-op assets");
            for store in STORES {
                if !filter.is_empty() && !filter.iter().any(|f| store.contains(f.as_str())) {
                    continue;
                }
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .env("DAGRS_RUN_MEMORY_STORE", store)
                    .status()
                    .unwrap();
                assert!(status.success(), "measuring {store} failed");
            }
        }
    }
}

fn measure(store: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = match store {
        "in_memory" => Arc::new(InMemoryStorage::new()),
        "sqlite" => Arc::new(SqliteStorage::open(dir.path().join("memory.db")).unwrap()),
        other => panic!("unknown store {other}"),
    };
    let instance = Instance::from_shared(storage);
    let defs = Definitions::builder()
        .specs((0..ASSETS).map(|i| AssetSpec::new(format!("a{i}"), |_| async { Ok(()) })))
        .build()
        .unwrap();
    let before = status_kib("VmRSS");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident set");
    let result = runtime
        .block_on(instance.materialize(&defs, "*", RunConfig::new()))
        .unwrap();
    assert!(result.success());
    assert_eq!(result.steps().len(), ASSETS);
    let peak = status_kib("VmHWM");
    println!(
        "{store:>10}: resident before the run {:.1} MiB, peak during it {:.1} MiB \
         (+{:.1} MiB, {:.0} bytes per asset)",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        peak.saturating_sub(before) as f64 * 1024.0 / ASSETS as f64,
    );
}
