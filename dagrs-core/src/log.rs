//! A run's event log in the making: the drafts that contexts and the executor send, and the
//! writer task that numbers them, stores them in batches and forwards them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify};

use crate::error::Error;
use crate::event::{now, Event, EventKind, LogLevel};
use crate::key::{AssetKey, RunId};
use crate::lock;
use crate::storage::Storage;

/// An event on its way to the run's log; the writer gives it its sequence number.
pub(crate) struct Draft {
    pub(crate) asset: Option<AssetKey>,
    pub(crate) kind: EventKind,
    pub(crate) timestamp: DateTime<Utc>,
}

/// A log line kept by a test context (see
/// [`AssetContextBuilder::logs`](crate::AssetContextBuilder::logs)).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
}

/// Where events go: the run's writer, or a list of log lines kept for a test.
#[derive(Clone)]
pub(crate) enum Sink {
    Run(mpsc::UnboundedSender<Draft>, Arc<Backlog>),
    Local(Arc<Mutex<Vec<LogRecord>>>),
}

/// The drafts sent to a run's writer and not yet stored. The scheduler starts no new step
/// while it is over [`Backlog::LIMIT`], so a run of many fast assets never queues more of its
/// log in memory than that, however slow the store.
#[derive(Default)]
pub(crate) struct Backlog {
    queued: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    /// The most drafts queued before new steps wait for the writer.
    pub(crate) const LIMIT: usize = 4096;

    /// Whether new steps should wait for the writer.
    pub(crate) fn is_full(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > Self::LIMIT
    }

    /// Waits until the writer has stored a batch since the last call.
    pub(crate) async fn drained(&self) {
        self.drained.notified().await;
    }

    /// Counts `stored` drafts as gone and tells the scheduler.
    fn stored(&self, stored: usize) {
        self.queued.fetch_sub(stored, Ordering::Relaxed);
        self.drained.notify_one();
    }
}

impl Sink {
    /// The run's backlog of drafts (none for a test's list).
    pub(crate) fn backlog(&self) -> Option<&Backlog> {
        match self {
            Sink::Run(_, backlog) => Some(backlog),
            Sink::Local(_) => None,
        }
    }

    /// Drafts an event, stamped now.
    pub(crate) fn send(&self, asset: Option<&AssetKey>, kind: EventKind) {
        let timestamp = now();
        match self {
            // A closed channel means the run has ended; late lines of a stray blocking task
            // have nowhere to go.
            Sink::Run(tx, backlog) => {
                backlog.queued.fetch_add(1, Ordering::Relaxed);
                if tx
                    .send(Draft {
                        asset: asset.cloned(),
                        kind,
                        timestamp,
                    })
                    .is_err()
                {
                    backlog.queued.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Sink::Local(records) => {
                if let EventKind::Log { level, message } = kind {
                    lock(records).push(LogRecord {
                        level,
                        message,
                        timestamp,
                    });
                }
            }
        }
    }
}

/// Numbers the run's events, writes them to storage in batches and forwards them; stops
/// after the run's final event. Returns the first storage error, if writing failed (the
/// events were still forwarded).
pub(crate) async fn write_events(
    storage: Arc<dyn Storage>,
    run_id: RunId,
    mut rx: mpsc::UnboundedReceiver<Draft>,
    backlog: Arc<Backlog>,
    forward: Option<mpsc::UnboundedSender<Event>>,
) -> Option<Error> {
    const BATCH: usize = 1024;
    let mut failed = None;
    let mut drafts = Vec::with_capacity(BATCH);
    let mut seq = 0;
    loop {
        let received = rx.recv_many(&mut drafts, BATCH).await;
        if received == 0 {
            break;
        }
        let mut finished = false;
        let mut batch = Vec::with_capacity(drafts.len());
        for draft in drafts.drain(..) {
            if finished {
                break;
            }
            finished = draft.kind.is_final();
            batch.push(Event {
                run_id: run_id.clone(),
                seq,
                timestamp: draft.timestamp,
                asset: draft.asset,
                kind: draft.kind,
            });
            seq += 1;
        }
        if failed.is_none() {
            let writing = std::time::Instant::now();
            let appended = storage.append_events(&batch).await;
            crate::observe::meter::store_write(writing.elapsed());
            if let Err(e) = appended {
                tracing::error!(target: "dagrs::storage", run_id = %run_id, "cannot record events: {e}");
                failed = Some(e);
            }
        }
        backlog.stored(received);
        if let Some(forward) = &forward {
            for event in batch {
                // The receiver may have stopped listening; the run goes on.
                let _ = forward.send(event);
            }
        }
        if finished {
            break;
        }
    }
    failed
}
