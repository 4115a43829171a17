//! Driving backfills: launching one (checked like a run), advancing each by compare-and-set
//! — noting ended runs, queueing the next chunks, ending it — cancelling, resuming, and
//! running one in the caller's process.

use super::{
    BackfillPolicy, BackfillRecord, BackfillRequest, BackfillRun, BackfillStatus, BACKFILL_TAG,
};
use crate::definitions::Definitions;
use crate::error::{Error, Problem};
use crate::event::{now, RunStatus};
use crate::executor::plan::{Plan, Request};
use crate::executor::RunOptions;
use crate::instance::Instance;
use crate::key::RunId;
use crate::partition::{PartitionContext, PartitionRange, PartitionSet, PartitionsDefinition};
use crate::storage::RunRecord;
use crate::text::{bounded, ECHO_LIMIT};

impl Instance {
    /// Stores a backfill of `request` for the daemon to run, after checking everything a
    /// run would check: the selection (partitioned assets of one definition), every key
    /// and range (known, in range, in order), and a plan of its first run (config, inputs,
    /// upstream partitions).
    pub async fn launch_backfill(
        &self,
        defs: &Definitions,
        request: BackfillRequest,
    ) -> Result<BackfillRecord, Error> {
        let storage = &**self.storage();
        let def = backfill_definition(defs, &request.selection)?;
        let ctx = PartitionContext::load(storage, [&def], now().timestamp()).await?;
        let mut target = if request.all {
            def.all(&ctx)
        } else {
            PartitionSet::new()
        };
        let mut problems = Vec::new();
        for text in &request.targets {
            match def.parse_target(text, &ctx) {
                Ok(range) => target = target.union(&range.to_set()),
                Err(reason) => problems.push(Problem::InvalidPartition {
                    target: bounded(text, ECHO_LIMIT).into_owned(),
                    reason,
                }),
            }
        }
        if problems.is_empty() && target.is_empty() {
            problems.push(Problem::InvalidPartition {
                target: String::new(),
                reason: "the backfill names no partition: give keys, ranges, or all".into(),
            });
        }
        if !problems.is_empty() {
            return Err(Error::invalid(problems));
        }
        let policy = request
            .policy
            .unwrap_or_else(|| default_policy(defs, &request.selection));
        if let Some(first) = def.chunks(&target, policy.per_run()).next() {
            let options = RunOptions::new()
                .config(request.config.clone())
                .partition(first.key);
            Plan::new(defs, storage, Request::new(&request.selection, &options)).await?;
        }
        let at = now();
        let mut record = BackfillRecord {
            id: new_id(),
            status: BackfillStatus::Requested,
            selection: request.selection,
            target,
            policy,
            config: request.config,
            tags: request.tags,
            launched: PartitionSet::new(),
            succeeded: PartitionSet::new(),
            failed: PartitionSet::new(),
            in_flight: Vec::new(),
            max_in_flight: request
                .max_in_flight
                .unwrap_or(2 * self.run_queue().max_concurrent_runs()),
            created_at: at,
            updated_at: at,
            reason: None,
            version: 0,
        };
        // Ids are short and random: one taken already is drawn again.
        loop {
            match storage.create_backfill(&record).await {
                Ok(()) => return Ok(record),
                Err(_) if storage.backfill(&record.id).await?.is_some() => record.id = new_id(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Backfill `id`.
    pub async fn backfill(&self, id: &str) -> Result<BackfillRecord, Error> {
        self.storage().backfill(id).await?.ok_or_else(|| {
            backfill_error(id, "no backfill has this id; `backfill list` shows them")
        })
    }

    /// The newest backfills first, at most `limit`.
    pub async fn backfills(&self, limit: usize) -> Result<Vec<BackfillRecord>, Error> {
        self.storage().backfills(None, limit).await
    }

    /// Cancels backfill `id`: it launches nothing more, its queued runs are cancelled and
    /// its running runs asked to stop (by the daemon, on its next pass); it ends as
    /// cancelled once they have ended. Resume it to launch what is left.
    pub async fn cancel_backfill(&self, id: &str, reason: &str) -> Result<BackfillRecord, Error> {
        self.change_backfill(id, |b| match b.status {
            BackfillStatus::Requested => {
                b.status = BackfillStatus::Canceling;
                b.reason = Some(reason.to_owned());
                Ok(())
            }
            status => Err(format!("it is {status}, not running: nothing to cancel")),
        })
        .await
    }

    /// Resumes backfill `id` after it failed or was cancelled: its failed partitions and
    /// those never launched are launched again; those that succeeded are not.
    pub async fn resume_backfill(&self, id: &str) -> Result<BackfillRecord, Error> {
        self.change_backfill(id, |b| match b.status {
            BackfillStatus::Failed | BackfillStatus::Cancelled => {
                b.status = BackfillStatus::Requested;
                b.launched = b.succeeded.clone();
                b.failed = PartitionSet::new();
                b.reason = None;
                Ok(())
            }
            status => Err(format!(
                "it is {status}; only a failed or cancelled backfill resumes"
            )),
        })
        .await
    }

    /// Runs backfill `id` in this process until it ends — what the daemon does, for this
    /// backfill's runs only, within the run queue's limits — and returns it as it ended.
    /// `progress` hears of every change of its record. Dropping the future leaves the
    /// backfill requested, for a daemon (or another call) to finish.
    pub async fn run_backfill(
        &self,
        defs: &Definitions,
        id: &str,
        mut progress: impl FnMut(&BackfillRecord),
    ) -> Result<BackfillRecord, Error> {
        self.recover_abandoned_runs().await?;
        let mut handles: Vec<crate::RunHandle> = Vec::new();
        let mut version = None;
        loop {
            let backfill = self.backfill(id).await?;
            if version != Some(backfill.version) {
                version = Some(backfill.version);
                progress(&backfill);
            }
            if !backfill.status.is_active() {
                for handle in handles {
                    let _ = handle.wait().await;
                }
                return Ok(backfill);
            }
            let ended = self.run_ended();
            self.advance(defs, backfill).await?;
            let mine = |run: &RunRecord| run.tags.get(BACKFILL_TAG).is_some_and(|b| b == id);
            handles.retain(|h| !h.is_finished());
            handles.extend(self.start_queued(defs, mine).await?);
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    }

    /// Applies `change` to backfill `id` by compare-and-set, again on a newer version when
    /// another writer got there first.
    async fn change_backfill(
        &self,
        id: &str,
        change: impl Fn(&mut BackfillRecord) -> Result<(), String>,
    ) -> Result<BackfillRecord, Error> {
        loop {
            let mut backfill = self.backfill(id).await?;
            change(&mut backfill).map_err(|reason| backfill_error(id, &reason))?;
            backfill.updated_at = now();
            if self.storage().update_backfill(&backfill).await? {
                backfill.version += 1;
                return Ok(backfill);
            }
        }
    }

    /// One pass over the active backfills: notes the runs that ended, cancels runs of
    /// cancelled backfills, launches (queues) the next runs within each backfill's limit,
    /// and ends backfills with nothing left. Returns the runs it queued.
    pub(crate) async fn advance_backfills(&self, defs: &Definitions) -> Result<Vec<RunId>, Error> {
        let storage = &**self.storage();
        let active = [BackfillStatus::Requested, BackfillStatus::Canceling];
        let mut queued = Vec::new();
        for backfill in storage.backfills(Some(&active), usize::MAX).await? {
            let id = backfill.id.clone();
            match self.advance(defs, backfill).await {
                Ok(runs) => queued.extend(runs),
                Err(e) => {
                    tracing::warn!(target: "dagrs::daemon", backfill = %id, "cannot advance the backfill: {e}")
                }
            }
        }
        Ok(queued)
    }

    async fn advance(
        &self,
        defs: &Definitions,
        mut b: BackfillRecord,
    ) -> Result<Vec<RunId>, Error> {
        let storage = &**self.storage();
        let canceling = b.status == BackfillStatus::Canceling;
        let mut changed = false;
        let mut to_submit = Vec::new();
        let mut still = Vec::with_capacity(b.in_flight.len());
        for run in std::mem::take(&mut b.in_flight) {
            match storage.run(&run.run_id).await? {
                // Planned by a pass that stopped before submitting it.
                None if canceling => {
                    b.launched = b.launched.difference(&run.range.to_set());
                    changed = true;
                }
                None => {
                    to_submit.push(run.clone());
                    still.push(run);
                }
                Some(record) if record.status.is_final() => {
                    let set = run.range.to_set();
                    if record.status == RunStatus::Succeeded {
                        b.succeeded = b.succeeded.union(&set);
                    } else {
                        b.failed = b.failed.union(&set);
                    }
                    changed = true;
                }
                Some(record) => {
                    if canceling && record.status != RunStatus::Canceling {
                        let reason = format!("backfill `{}` was cancelled", b.id);
                        storage.request_cancel(&run.run_id, &reason, now()).await?;
                    }
                    still.push(run);
                }
            }
        }
        b.in_flight = still;
        if !canceling && b.in_flight.len() < b.max_in_flight {
            let def = backfill_definition(defs, &b.selection)?;
            let room = b.max_in_flight - b.in_flight.len();
            let chunks: Vec<PartitionRange> = def
                .chunks(&b.remaining(), b.policy.per_run())
                .take(room)
                .collect();
            for range in chunks {
                b.launched = b.launched.union(&range.to_set());
                let run = BackfillRun {
                    run_id: RunId::new(),
                    range,
                };
                to_submit.push(run.clone());
                b.in_flight.push(run);
                changed = true;
            }
        }
        if b.in_flight.is_empty() {
            let end = if canceling {
                Some(BackfillStatus::Cancelled)
            } else if b.remaining().is_empty() {
                Some(if b.failed.is_empty() {
                    BackfillStatus::Completed
                } else {
                    BackfillStatus::Failed
                })
            } else {
                None
            };
            if let Some(end) = end {
                b.status = end;
                changed = true;
            }
        }
        if changed {
            b.updated_at = now();
            if !storage.update_backfill(&b).await? {
                // Another daemon advanced it first; its runs are its own to submit.
                return Ok(Vec::new());
            }
        }
        let mut queued = Vec::with_capacity(to_submit.len());
        for run in to_submit {
            if self.submit_backfill_run(defs, &b, &run).await? {
                queued.push(run.run_id);
            }
        }
        Ok(queued)
    }

    /// Queues one run of backfill `b`; a run that cannot be planned is recorded as failed,
    /// saying why, so the backfill counts its partitions failed. `false` when the run
    /// exists already (another daemon submitted it).
    async fn submit_backfill_run(
        &self,
        defs: &Definitions,
        b: &BackfillRecord,
        run: &BackfillRun,
    ) -> Result<bool, Error> {
        let mut options = RunOptions::new()
            .config(b.config.clone())
            .run_id(run.run_id.clone())
            .partition(run.range.key.clone())
            .tag(BACKFILL_TAG, b.id.clone());
        for (key, value) in &b.tags {
            options = options.tag(key.clone(), value.clone());
        }
        let tags = options.tags.clone();
        match self.submit(defs, &b.selection, options).await {
            Ok(_) => Ok(true),
            Err(e @ (Error::Invalid(_) | Error::InvalidSelection { .. })) => {
                let at = now();
                let failed = RunRecord {
                    run_id: run.run_id.clone(),
                    status: RunStatus::Failed,
                    selection: b.selection.clone(),
                    assets: Vec::new(),
                    config: b.config.clone(),
                    tags,
                    started_at: at,
                    ended_at: Some(at),
                    owner: String::new(),
                    heartbeat_at: at,
                    parent_run_id: None,
                    failure: Some(format!("cannot plan the backfill's run: {e}")),
                };
                match self.storage().create_run(&failed).await {
                    Ok(()) => Ok(true),
                    Err(_) if self.storage().run(&run.run_id).await?.is_some() => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(_) if self.storage().run(&run.run_id).await?.is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The partitions definition a backfill of `selection` materializes: the one its assets
/// share; every selected asset must be partitioned.
pub(crate) fn backfill_definition(
    defs: &Definitions,
    selection: &str,
) -> Result<PartitionsDefinition, Error> {
    let keys = defs.select(selection)?;
    let specs: Vec<&crate::AssetSpec> = keys.iter().filter_map(|k| defs.asset(k)).collect();
    let invalid = |reason: String| {
        Error::from(Problem::InvalidPartition {
            target: String::new(),
            reason,
        })
    };
    if let Some(spec) = specs.iter().find(|s| s.partitions.is_none()) {
        return Err(invalid(format!(
            "`{}` is not partitioned; a backfill materializes partitioned assets: leave it out \
             of the selection (run it on its own)",
            spec.key
        )));
    }
    match crate::partition::shared(specs) {
        Ok(Some(def)) => Ok(def.clone()),
        Ok(None) => Err(Error::selection(
            selection,
            vec!["it selects no asset".into()],
        )),
        Err(reason) => Err(invalid(reason)),
    }
}

/// The policy of the selected assets: the smallest number of partitions per run any of them
/// asks for, a single run when all ask for that, else one run per partition.
fn default_policy(defs: &Definitions, selection: &str) -> BackfillPolicy {
    let keys = defs.select(selection).unwrap_or_default();
    let policies: Vec<Option<BackfillPolicy>> = keys
        .iter()
        .filter_map(|k| defs.asset(k))
        .map(|spec| spec.backfill_policy)
        .collect();
    if policies.iter().any(Option::is_none) || policies.is_empty() {
        return BackfillPolicy::RunPerPartition;
    }
    policies
        .into_iter()
        .flatten()
        .min_by_key(|p| p.per_run().unwrap_or(u64::MAX))
        .unwrap_or(BackfillPolicy::RunPerPartition)
}

/// A new backfill id: 12 random hex digits (48 bits).
fn new_id() -> String {
    RunId::new()
        .as_str()
        .replace('-', "")
        .chars()
        .take(12)
        .collect()
}

fn backfill_error(id: &str, reason: &str) -> Error {
    Error::Backfill {
        id: bounded(id, ECHO_LIMIT).into_owned(),
        reason: reason.to_owned(),
    }
}
