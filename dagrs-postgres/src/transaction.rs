//! Transactional materialization: an asset run by a [`Worker`](dagrs_core::worker::Worker)
//! on a [`PgStorage`](crate::PgStorage) instance writes its data in a transaction that also
//! records its materialization, its events and the end of its lease — all committed together,
//! or none of them.

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use dagrs_core::AssetContext;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{query_error, Error, Result};
use crate::resource::PostgresResource;

/// The transaction of one claimed step, opened by the first
/// [`pg_transaction`](PgContext::pg_transaction) of an attempt, and committed by the queue
/// with the step's end.
pub(crate) struct StepTransaction {
    pg: PostgresResource,
    state: Arc<Mutex<State>>,
    opened: std::sync::atomic::AtomicBool,
}

enum State {
    /// Not opened (yet).
    Unused,
    /// Open (`BEGIN` sent) for attempt `attempt`.
    Open {
        client: Box<deadpool_postgres::Client>,
        attempt: u32,
    },
    /// Taken by the queue to end the step.
    Spent,
}

impl StepTransaction {
    pub(crate) fn new(pg: PostgresResource) -> Self {
        StepTransaction {
            pg,
            state: Arc::new(Mutex::new(State::Unused)),
            opened: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the asset opened it: then the step's end is written in it.
    pub(crate) fn was_opened(&self) -> bool {
        self.opened.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The open transaction's connection, taken for the step's end; `None` once taken.
    pub(crate) async fn take_open(&self) -> Option<deadpool_postgres::Client> {
        let mut state = self.state.lock().await;
        match std::mem::replace(&mut *state, State::Spent) {
            State::Open { client, .. } => Some(*client),
            State::Unused | State::Spent => None,
        }
    }
}

/// A transaction on the instance's database that commits with the step's materialization:
/// derefs to [`tokio_postgres::Client`], so run statements on it as on any client. Hold it
/// only inside the asset; it is committed (or rolled back) by the worker after the asset
/// returns.
pub struct PgTransaction {
    guard: OwnedMutexGuard<State>,
}

impl Deref for PgTransaction {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &Self::Target {
        match &*self.guard {
            State::Open { client, .. } => client,
            State::Unused | State::Spent => unreachable!("a PgTransaction is made open"),
        }
    }
}

impl std::fmt::Debug for PgTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTransaction").finish_non_exhaustive()
    }
}

/// Transactional materialization for assets: `use dagrs_postgres::PgContext;` then
/// `ctx.pg_transaction().await?` in an asset run by a worker of a PostgreSQL instance.
///
/// ```no_run
/// use dagrs_core::prelude::*;
/// use dagrs_postgres::PgContext;
///
/// /// Loads the day's totals; the rows and the materialization commit together.
/// #[asset]
/// async fn daily_totals(ctx: &AssetContext) -> Result<u64> {
///     let tx = ctx.pg_transaction().await?;
///     let rows = tx
///         .execute("INSERT INTO totals SELECT day, sum(v) FROM readings GROUP BY day", &[])
///         .await?;
///     Ok(rows)
/// }
/// ```
#[async_trait]
pub trait PgContext {
    /// The step's transaction on the database of the instance's store, opened on first use
    /// in each attempt (a retry starts a fresh one; what a failed attempt wrote is rolled
    /// back). Its writes, the step's materialization record, its events and the release of
    /// its lease commit together when the step succeeds; if the worker dies first, or lost
    /// its lease, none of them do. Only steps run by a [`Worker`](dagrs_core::worker::Worker)
    /// on a [`PgStorage`](crate::PgStorage) have one: elsewhere this is
    /// [`Error::NoStepTransaction`].
    async fn pg_transaction(&self) -> Result<PgTransaction>;
}

#[async_trait]
impl PgContext for AssetContext {
    async fn pg_transaction(&self) -> Result<PgTransaction> {
        let step = self
            .extension::<StepTransaction>()
            .ok_or(Error::NoStepTransaction)?;
        let mut guard = Arc::clone(&step.state).lock_owned().await;
        let attempt = self.attempt();
        let current = matches!(&*guard, State::Open { attempt: a, .. } if *a == attempt);
        if !current {
            if let State::Open { client, .. } = &*guard {
                // An earlier attempt's writes do not count.
                client.batch_execute("ROLLBACK").await.map_err(query_error(
                    "rolling back the previous attempt's transaction",
                ))?;
            }
            let client = step.pg.get().await?;
            client
                .batch_execute("BEGIN")
                .await
                .map_err(query_error("starting the step's transaction"))?;
            *guard = State::Open {
                client: Box::new(client),
                attempt,
            };
            step.opened
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(PgTransaction { guard })
    }
}
