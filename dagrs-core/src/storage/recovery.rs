//! Crash safety: runs whose process died are found by their heartbeat (or, on the same host,
//! by the process being gone) and marked failed, never left "running" forever.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Storage;
use crate::error::Error;
use crate::event::{Event, EventKind, RunStatus};
use crate::key::RunId;

/// How often a running run records a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How long a run may go without a heartbeat before it counts as abandoned.
pub const LEASE: Duration = Duration::from_secs(30);

/// This process, as `host:pid`.
pub(crate) fn this_process() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".into())
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

/// Marks every running run whose process is gone, or whose last heartbeat is older than
/// `lease`, as failed, with the reason in the run record and a final `RunAbandoned` event
/// after whatever the run had logged. Returns the runs it marked.
pub async fn recover_abandoned_runs(
    storage: &dyn Storage,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<RunId>, Error> {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let mut recovered = Vec::new();
    for run in storage.running_runs().await? {
        let reason = if is_gone(&run.owner) {
            format!("its process {} is gone", run.owner)
        } else if run.heartbeat_at < now - lease {
            format!(
                "no heartbeat from its process {} since {}",
                run.owner,
                run.heartbeat_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        } else {
            continue;
        };
        let failure = format!(
            "run abandoned: {reason}; re-execute it with `run reexecute {} --from-failure`",
            run.run_id
        );
        if storage
            .finish_run(&run.run_id, RunStatus::Failed, now, Some(&failure))
            .await?
        {
            let next = storage
                .events(&run.run_id, None)
                .await?
                .last()
                .map_or(0, |e| e.seq + 1);
            storage
                .append_events(&[Event {
                    run_id: run.run_id.clone(),
                    seq: next,
                    timestamp: now,
                    asset: None,
                    kind: EventKind::RunAbandoned { reason: failure },
                }])
                .await?;
            recovered.push(run.run_id);
        }
    }
    Ok(recovered)
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
