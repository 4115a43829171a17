//! The in-memory store.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MaterializationRecord, RunRecord, Storage};
use crate::error::Error;
use crate::event::{Event, EventKind, RunStatus};
use crate::key::{AssetKey, RunId};

/// Keeps runs and events in the process; everything is gone when it exits. The default
/// storage of [`Definitions`](crate::Definitions), and the one for tests.
#[derive(Debug, Default)]
pub struct InMemoryStorage {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: Vec<RunRecord>,
    events: HashMap<RunId, Vec<Event>>,
    latest: HashMap<AssetKey, MaterializationRecord>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Storage for InMemoryStorage {
    async fn create_run(&self, run: &RunRecord) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.runs.iter().any(|r| r.run_id == run.run_id) {
            return Err(Error::storage(
                "create a run",
                format!("run `{}` already exists", run.run_id),
            ));
        }
        inner.runs.push(run.clone());
        Ok(())
    }

    async fn append_events(&self, events: &[Event]) -> Result<(), Error> {
        let mut inner = self.lock();
        for event in events {
            if let (
                Some(asset),
                EventKind::Materialization {
                    metadata,
                    value,
                    code_version,
                },
            ) = (&event.asset, &event.kind)
            {
                inner.latest.insert(
                    asset.clone(),
                    MaterializationRecord {
                        asset: asset.clone(),
                        run_id: event.run_id.clone(),
                        timestamp: event.timestamp,
                        metadata: metadata.clone(),
                        value: value.clone(),
                        code_version: code_version.clone(),
                    },
                );
            }
            inner
                .events
                .entry(event.run_id.clone())
                .or_default()
                .push(event.clone());
        }
        Ok(())
    }

    async fn set_run_status(
        &self,
        run_id: &RunId,
        status: RunStatus,
        ended_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        let run = inner
            .runs
            .iter_mut()
            .find(|r| &r.run_id == run_id)
            .ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
        run.status = status;
        run.ended_at = ended_at;
        Ok(())
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, Error> {
        Ok(self
            .lock()
            .runs
            .iter()
            .find(|r| &r.run_id == run_id)
            .cloned())
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
        Ok(self.lock().runs.iter().rev().take(limit).cloned().collect())
    }

    async fn events(&self, run_id: &RunId, after: Option<u64>) -> Result<Vec<Event>, Error> {
        let inner = self.lock();
        let events = inner.events.get(run_id).map(Vec::as_slice).unwrap_or(&[]);
        Ok(events
            .iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .cloned()
            .collect())
    }

    async fn latest_materialization(
        &self,
        asset: &AssetKey,
    ) -> Result<Option<MaterializationRecord>, Error> {
        Ok(self.lock().latest.get(asset).cloned())
    }
}
