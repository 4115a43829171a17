//! Group `wide`: `n` no-op assets `w0`… in `chains` chains (`wI` after `wI-chains`), each
//! sleeping `sleep` if given and retried up to 20 times; with `pool`, every fourth is in that
//! concurrency pool. Shared by the crash probe (its workers) and the benches that queue runs
//! of them.

use std::time::Duration;

use dagrs_core::{AssetSpec, Retry};

/// The assets; `chains` is at least 1.
pub fn wide(
    n: usize,
    chains: usize,
    sleep: Option<Duration>,
    pool: Option<&str>,
) -> Vec<AssetSpec> {
    let chains = chains.max(1);
    (0..n)
        .map(|i| {
            let mut spec = AssetSpec::new(format!("w{i}"), move |_| async move {
                if let Some(sleep) = sleep {
                    tokio::time::sleep(sleep).await;
                }
                Ok(i as u64)
            })
            .group("wide")
            .retry(Retry::fixed(20, Duration::from_millis(10)));
            if i >= chains {
                spec = spec.dep(format!("w{}", i - chains));
            }
            if let (Some(pool), 0) = (pool, i % 4) {
                spec = spec.pool(pool);
            }
            spec
        })
        .collect()
}
