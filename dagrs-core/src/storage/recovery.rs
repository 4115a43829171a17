//! Crash safety: runs whose process died are found by their heartbeat (or, on the same host,
//! by the process being gone) and ended, never left "running" forever.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Storage;
use crate::error::Error;
use crate::event::{Event, EventKind, RunStatus};
use crate::key::RunId;

/// How long a run may go without a heartbeat before it counts as abandoned.
pub const LEASE: Duration = Duration::from_secs(30);

/// This process, as `host:pid`.
pub(crate) fn this_process() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whether `owner` (`host:pid`) is a process on this host that no longer runs.
fn is_gone(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != host_name() || pid == std::process::id() || !cfg!(target_os = "linux") {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its parent has not collected it yet.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Ends every active run whose process is gone, or whose last heartbeat is older than
/// `lease`: as failed, with the reason in the run record and a final `RunAbandoned` event
/// after whatever the run had logged — or, when its log already ends with a final event
/// (the process died just before recording the status), with the status that event tells.
/// Returns the runs it ended. A run that another process ends or prunes meanwhile is left
/// to it.
pub async fn recover_abandoned_runs(
    storage: &dyn Storage,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<RunId>, Error> {
    // A lease beyond what dates can express never expires.
    let expired_before = chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_sub_signed(lease));
    let mut recovered = Vec::new();
    for run in storage.running_runs().await? {
        // Runs on the step queue are kept by their steps' leases, not by one process.
        if run.owner == crate::worker::QUEUE_OWNER {
            continue;
        }
        let reason = if is_gone(&run.owner) {
            format!("its process {} is gone", run.owner)
        } else if expired_before.is_some_and(|before| run.heartbeat_at < before) {
            format!(
                "no heartbeat from its process {} since {}",
                run.owner,
                run.heartbeat_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        } else {
            continue;
        };
        match end_abandoned(storage, &run.run_id, &reason, now).await {
            Ok(true) => recovered.push(run.run_id),
            Ok(false) | Err(Error::RunNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(recovered)
}

async fn end_abandoned(
    storage: &dyn Storage,
    run_id: &RunId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let events = storage.events(run_id, None).await?;
    let ended_by_log = events.last().and_then(|last| match &last.kind {
        EventKind::RunSucceeded => Some(RunStatus::Succeeded),
        EventKind::RunFailed { .. } => Some(RunStatus::Failed),
        EventKind::RunCancelled => Some(RunStatus::Cancelled),
        _ => None,
    });
    if let Some(status) = ended_by_log {
        return storage.finish_run(run_id, status, now, None).await;
    }
    let failure = format!(
        "run abandoned: {reason}; re-execute it with `run reexecute {run_id} --from-failure`"
    );
    if !storage
        .finish_run(run_id, RunStatus::Failed, now, Some(&failure))
        .await?
    {
        return Ok(false);
    }
    storage
        .append_events(&[Event {
            run_id: run_id.clone(),
            seq: events.last().map_or(0, |e| e.seq + 1),
            timestamp: now,
            asset: None,
            kind: EventKind::RunAbandoned { reason: failure },
        }])
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_runs_is_not_gone() {
        assert!(!is_gone(&this_process()));
        assert!(!is_gone("another-host:1"));
        assert!(!is_gone("no-pid"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_exited_process_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(is_gone(&format!("{}:{pid}", host_name())));
    }
}
