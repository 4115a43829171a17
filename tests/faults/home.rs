//! A `DAGRS_HOME` of a test's own and the probe binary run in it, with the checks every
//! fault case makes: a known exit code, no panic, bounded output.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dagrs_core::storage::{SqliteStorage, Storage};
use dagrs_core::{EventKind, RunId};

/// The probe: `first` → `slow` → `last` with the dagrs command line (tests/support).
pub const PROBE: &str = env!("CARGO_BIN_EXE_dagrs-crash-probe");

/// The most output (stdout and stderr together) one command may print in these tests.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// A `DAGRS_HOME` of its own, removed at the end.
pub struct Home(tempfile::TempDir);

impl Home {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dagrs-{name}-"))
            .tempdir()
            .unwrap();
        Home(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The probe with `args`, in this home, with no probe switches set.
    pub fn probe(&self, args: &[&str]) -> Command {
        let mut command = Command::new(PROBE);
        command
            .args(args)
            .env("DAGRS_HOME", self.path())
            .env_remove("PROBE_HANG")
            .env_remove("PROBE_FAIL")
            .env_remove("PROBE_DATABASE_URL")
            .env_remove("PROBE_TRACE")
            .env_remove("DAGRS_LOG")
            .env_remove("DAGRS_CAPTURE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs the probe to its end and prints what it said.
    pub fn run(&self, args: &[&str]) -> Output {
        let output = self.probe(args).output().expect("the probe runs");
        println!(
            "$ probe {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    pub fn store(&self) -> SqliteStorage {
        SqliteStorage::open(self.path().join("dagrs.db")).expect("the store opens")
    }
}

/// What every command must hold to, whatever its input: an exit code of 0, 1 or 2, no
/// panic, and output of bounded size.
pub fn assert_clean(what: &str, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code();
    assert!(
        matches!(code, Some(0..=2)),
        "{what}: exit code {code:?}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked\n{stderr}");
    let size = output.stdout.len() + output.stderr.len();
    assert!(
        size <= OUTPUT_LIMIT,
        "{what}: {size} bytes of output (limit {OUTPUT_LIMIT}): {}",
        crate::home::head(&stderr)
    );
}

/// The start of `text`, for messages about text that is too long.
pub fn head(text: &str) -> &str {
    &text[..text.char_indices().nth(300).map_or(text.len(), |(i, _)| i)]
}

pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Waits until the store shows `slow` started in a run that is still running (bounded, so a
/// broken probe fails the test instead of hanging it).
pub async fn wait_for_slow(store: &dyn Storage) -> RunId {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(run) = store.running_runs().await.unwrap().into_iter().last() {
            let events = store.events(&run.run_id, None).await.unwrap();
            if events.iter().any(|e| {
                e.asset.as_deref() == Some("slow")
                    && matches!(e.kind, EventKind::StepStarted { .. })
            }) {
                return run.run_id;
            }
        }
        assert!(Instant::now() < deadline, "the probe never started `slow`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
