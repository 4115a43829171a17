//! Concurrency pools (Dagster's pools, or op concurrency limits): an asset names a pool
//! (`#[asset(pool = "warehouse")]`, [`AssetSpec::pool`](crate::AssetSpec::pool)), an
//! [`Instance`](crate::Instance) limits how many steps of a pool run at once across every
//! run it drives (`Instance::with_pool_limit`). [`Pools`] holds the limits and one semaphore
//! per limited pool; the executor takes a slot before each attempt and gives it back when
//! the attempt ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::event::{EventKind, LogLevel};

/// The most bytes a pool name may have.
pub(crate) const MAX_POOL_NAME: usize = 255;

/// Why `name` is not a valid pool name, or `None` when it is: non-empty, at most
/// [`MAX_POOL_NAME`] bytes, no control characters.
pub(crate) fn pool_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("pool names are non-empty")
    } else if name.len() > MAX_POOL_NAME {
        Some("pool names are at most 255 bytes long")
    } else if name.chars().any(char::is_control) {
        Some("pool names hold no control characters")
    } else {
        None
    }
}

/// The pools of an instance: their limits and, for each, the semaphore of its slots, shared
/// by every run the instance drives (clones share the semaphores, and are cheap). A pool
/// without a limit is unlimited.
#[derive(Clone, Default)]
pub(crate) struct Pools(Arc<Limits>);

#[derive(Clone, Default)]
struct Limits {
    limits: BTreeMap<String, usize>,
    slots: BTreeMap<String, Arc<Semaphore>>,
}

/// The event a step records when it has to wait for a slot of pool `pool`.
pub(crate) fn waiting_log(pool: &str) -> EventKind {
    EventKind::Log {
        level: LogLevel::Info,
        message: format!("waiting for a slot in pool `{pool}`"),
    }
}

/// The step was cancelled while it waited for a slot.
pub(crate) struct Cancelled;

impl Pools {
    /// Limits pool `name` to `slots` steps at once, with fresh slots (0: none ever start).
    pub(crate) fn set_limit(&mut self, name: String, slots: usize) {
        let permits = slots.min(Semaphore::MAX_PERMITS);
        let pools = Arc::make_mut(&mut self.0);
        pools
            .slots
            .insert(name.clone(), Arc::new(Semaphore::new(permits)));
        pools.limits.insert(name, slots);
    }

    /// The limit of each limited pool.
    pub(crate) fn limits(&self) -> &BTreeMap<String, usize> {
        &self.0.limits
    }

    /// A slot of pool `name` once one is free; `None` at once for a pool without a limit.
    /// The slot is given back when the permit is dropped.
    pub(crate) async fn acquire(&self, name: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = self.0.slots.get(name)?;
        let permit = Arc::clone(semaphore).acquire_owned().await;
        Some(permit.expect("a pool's semaphore is never closed"))
    }

    /// The slot of pool `pool` (if the step has one and it is limited) for one attempt:
    /// taken at once when one is free; else `waiting` is called, then the slot is awaited,
    /// unless `cancel` fires first.
    pub(crate) async fn slot(
        &self,
        pool: Option<&str>,
        cancel: &CancellationToken,
        waiting: impl FnOnce(&str),
    ) -> Result<Option<OwnedSemaphorePermit>, Cancelled> {
        let Some((name, semaphore)) = pool.and_then(|p| self.0.slots.get_key_value(p)) else {
            return Ok(None);
        };
        if let Ok(permit) = Arc::clone(semaphore).try_acquire_owned() {
            return Ok(Some(permit));
        }
        waiting(name);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Cancelled),
            permit = self.acquire(name) => Ok(permit),
        }
    }
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(&self.0.limits).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(pool_name_problem("warehouse").is_none());
        assert!(pool_name_problem("db/écrire 1").is_none());
        assert!(pool_name_problem("").is_some());
        assert!(pool_name_problem("a\nb").is_some());
        assert!(pool_name_problem(&"x".repeat(255)).is_none());
        assert!(pool_name_problem(&"x".repeat(256)).is_some());
    }

    #[tokio::test]
    async fn a_limited_pool_hands_out_its_slots_and_an_unlimited_one_none() {
        let mut pools = Pools::default();
        pools.set_limit("warehouse".into(), 1);
        pools.set_limit("never".into(), 0);
        let cancel = CancellationToken::new();
        assert!(pools.acquire("elsewhere").await.is_none());
        let waited = std::cell::RefCell::new(Vec::new());
        let wait = |p: &str| waited.borrow_mut().push(p.to_owned());
        let held = pools
            .slot(Some("warehouse"), &cancel, wait)
            .await
            .ok()
            .flatten()
            .expect("a free slot");
        assert!(
            waited.borrow().is_empty(),
            "a free slot is taken without waiting"
        );
        // The shared semaphore: a clone sees the slot taken.
        let clone = pools.clone();
        let second = clone.slot(Some("warehouse"), &cancel, wait);
        tokio::pin!(second);
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        assert_eq!(*waited.borrow(), ["warehouse"]);
        drop(held);
        assert!(second.await.ok().flatten().is_some());
        cancel.cancel();
        assert!(pools.slot(Some("never"), &cancel, |_| {}).await.is_err());
        assert!(matches!(pools.slot(None, &cancel, |_| {}).await, Ok(None)));
    }

    /// Polls `future` once: its output if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
