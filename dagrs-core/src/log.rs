//! A run's event log in the making: the drafts that contexts and the executor send, and the
//! writer task that numbers them, stores them in batches and forwards them.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

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
    Run(mpsc::UnboundedSender<Draft>),
    Local(Arc<Mutex<Vec<LogRecord>>>),
}

impl Sink {
    /// Drafts an event, stamped now.
    pub(crate) fn send(&self, asset: Option<&AssetKey>, kind: EventKind) {
        let timestamp = now();
        match self {
            // A closed channel means the run has ended; late lines of a stray blocking task
            // have nowhere to go.
            Sink::Run(tx) => drop(tx.send(Draft {
                asset: asset.cloned(),
                kind,
                timestamp,
            })),
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
    forward: Option<mpsc::UnboundedSender<Event>>,
) -> Option<Error> {
    const BATCH: usize = 1024;
    let mut failed = None;
    let mut drafts = Vec::with_capacity(BATCH);
    let mut seq = 0;
    loop {
        if rx.recv_many(&mut drafts, BATCH).await == 0 {
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
