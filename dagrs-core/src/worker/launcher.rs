//! [`RunLauncher`]: where a run is driven once it is checked — in this process
//! ([`InProcessLauncher`], the default), in a child process of its own
//! ([`SubprocessLauncher`], like Dagster's default run launcher), or step by step by the
//! workers of the instance's step queue ([`QueueLauncher`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;

use crate::definitions::Definitions;
use crate::error::Error;
use crate::executor::RunOptions;
use crate::instance::Instance;
use crate::key::RunId;

/// The tag of runs a [`SubprocessLauncher`] queued for its child: the daemon leaves them to
/// it.
pub const LAUNCHER_TAG: &str = "dagrs/launcher";

/// Starts checked runs somewhere and returns their ids; the run goes on without the caller,
/// who follows it through the instance ([`Instance::wait_for_end`], its events).
#[async_trait]
pub trait RunLauncher: Send + Sync + 'static {
    /// Checks and starts a run of `selection` with `options` on `instance`.
    async fn launch(
        &self,
        instance: &Instance,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error>;
}

/// Drives the run in this process, in the background ([`Instance::launch`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcessLauncher;

#[async_trait]
impl RunLauncher for InProcessLauncher {
    async fn launch(
        &self,
        instance: &Instance,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        // The handle's task goes on when the handle is dropped.
        Ok(instance
            .launch(defs, selection, options)
            .await?
            .run_id()
            .clone())
    }
}

/// Queues the run's steps for the instance's workers ([`Instance::enqueue`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueLauncher;

#[async_trait]
impl RunLauncher for QueueLauncher {
    async fn launch(
        &self,
        instance: &Instance,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        instance.enqueue(defs, selection, options).await
    }
}

/// Runs each run in a child process: the run is recorded as queued (tagged
/// [`LAUNCHER_TAG`]), then `program args… run execute RUN_ID` is started, which drives it
/// ([`Instance::execute_queued`]; the `run execute` verb of [`cli`](crate::cli)). The child
/// must open the same store. Its output goes to this process's stderr.
#[derive(Debug, Clone)]
pub struct SubprocessLauncher {
    program: PathBuf,
    args: Vec<OsString>,
}

impl SubprocessLauncher {
    /// Starts `program` (the user's own binary, with the dagrs command line) for each run.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        SubprocessLauncher {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Starts this very program again: what a binary built on [`cli`](crate::cli) wants.
    pub fn current_exe() -> Result<Self, Error> {
        let program = std::env::current_exe().map_err(|e| Error::RunInterrupted {
            run_id: String::new(),
            reason: format!("cannot find this program to start it again: {e}"),
        })?;
        Ok(Self::new(program))
    }

    /// Arguments before `run execute RUN_ID` (e.g. global options).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
}

#[async_trait]
impl RunLauncher for SubprocessLauncher {
    async fn launch(
        &self,
        instance: &Instance,
        defs: &Definitions,
        selection: &str,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        let options = options.tag(LAUNCHER_TAG, "subprocess");
        let run_id = instance.submit(defs, selection, options).await?;
        let spawned = std::process::Command::new(&self.program)
            .args(&self.args)
            .args(["run", "execute", run_id.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                // Reap it when it exits (no zombie), and end the run if the child never
                // started it.
                let storage = std::sync::Arc::clone(instance.storage());
                let run = run_id.clone();
                tokio::spawn(async move {
                    let exited = tokio::task::spawn_blocking(move || child.wait()).await;
                    let how = match exited {
                        Ok(Ok(status)) => status.to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    let failure = format!("its process exited ({how}) before starting it");
                    if let Err(e) = fail_queued(&*storage, &run, &failure).await {
                        tracing::warn!(run_id = %run, "cannot end the run its process left: {e}");
                    }
                });
                Ok(run_id)
            }
            Err(e) => {
                let failure = format!("cannot start {} for the run: {e}", self.program.display());
                fail_queued(&**instance.storage(), &run_id, &failure).await?;
                Err(Error::RunInterrupted {
                    run_id: run_id.to_string(),
                    reason: failure,
                })
            }
        }
    }
}

/// Ends queued run `run_id` as failed for `failure`, unless a process started it meanwhile.
async fn fail_queued(
    storage: &dyn crate::storage::Storage,
    run_id: &RunId,
    failure: &str,
) -> Result<(), Error> {
    let owner = crate::storage::recovery::this_process();
    if storage
        .start_run(run_id, &owner, crate::event::now())
        .await?
    {
        storage
            .finish_run(
                run_id,
                crate::event::RunStatus::Failed,
                crate::event::now(),
                Some(failure),
            )
            .await?;
    }
    Ok(())
}
