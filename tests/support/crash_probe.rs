//! A small pipeline with the dagrs command line, for tests that run it as a separate process
//! (and kill it). `first` → `slow` → `last`; with `PROBE_HANG=1`, `slow` never finishes; with
//! `PROBE_SLEEP_MS=N` it takes N ms; with `PROBE_FAIL=1` it fails.
//! Runs are kept in the SQLite store under `$DAGRS_HOME`, or, with `PROBE_DATABASE_URL`, in
//! PostgreSQL (schema `dagrs` of that database). The job `probe_job` runs `first`; the
//! schedule `every_minute` runs it each minute (stopped unless started). With
//! `PROBE_CLOCK_SPEED=N` (and `PROBE_CLOCK_START`, RFC 3339), `daemon` runs on a clock N
//! times faster than real time from that start, with `every_minute` running. With
//! `PROBE_PARTITIONED=1`, the asset `hours` (hourly partitions from 2026-11-01, taking
//! `PROBE_SLEEP_MS` per partition) is defined too, for backfills. With `PROBE_TRACE=1`,
//! `first` logs a warning through `tracing`, as a library would.
//! With `PROBE_CHILD_EXIT`, `run execute` exits 3 at once (a child process that dies).
//! For the step queue (`worker`, `--launcher queue`, with `PROBE_DATABASE_URL`):
//! `PROBE_STEPS=N` defines group `wide` (tests/support/wide.rs): N assets in
//! `PROBE_CHAINS` chains (default 10), each taking `PROBE_SLEEP_MS`, every fourth in pool
//! `PROBE_POOL` if set; `PROBE_TX=1` defines
//! `tx_rows`, which inserts 100 rows into `public.probe_rows` in its step transaction and,
//! on its first attempt with `PROBE_TX_MARK=FILE`, creates FILE and hangs before the commit.

use std::process::ExitCode;

use dagrs_core::prelude::*;
use dagrs_core::{AssetJob, Daemon, MissedTicks, ScaledClock, Schedule};

/// Config of `first`.
#[derive(serde::Deserialize)]
#[serde(default)]
struct FirstConfig {
    value: u64,
}

impl Default for FirstConfig {
    fn default() -> Self {
        FirstConfig { value: 21 }
    }
}

/// A value the later assets need.
#[asset(group = "probe")]
async fn first(ctx: &AssetContext, config: Config<FirstConfig>) -> Result<u64> {
    ctx.log.info("first ran");
    if std::env::var_os("PROBE_TRACE").is_some() {
        // What a library logs through `tracing`: captured into the step's events.
        tracing::warn!(target: "probe_lib", rows = 3, "slow query");
    }
    Ok(config.value)
}

/// Hangs when `PROBE_HANG` is set, so the process can be killed in the middle of it.
#[asset]
async fn slow(ctx: &AssetContext, first: Input<first>) -> Result<u64> {
    ctx.log.info("slow started");
    if std::env::var_os("PROBE_HANG").is_some() {
        std::future::pending::<()>().await;
    }
    if let Some(ms) = std::env::var("PROBE_SLEEP_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    anyhow::ensure!(
        std::env::var_os("PROBE_FAIL").is_none(),
        "slow was told to fail"
    );
    Ok(*first * 2)
}

/// Depends on both.
#[asset]
async fn last(first: Input<first>, slow: Input<slow>) -> Result<u64> {
    Ok(*first + *slow)
}

/// One hour of readings, for backfills; sleeps `PROBE_SLEEP_MS` ms.
#[asset(partitions = hourly("2026-11-01T00:00Z"))]
async fn hours(ctx: &AssetContext) -> Result<String> {
    if let Some(ms) = std::env::var("PROBE_SLEEP_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(ctx.partition_key().unwrap_or_default().to_owned())
}

/// Inserts 100 rows in the step's transaction; with `PROBE_TX_MARK`, its first attempt
/// marks that it wrote them and hangs before the commit (to be killed there).
#[asset(retry = Retry::fixed(1, Duration::from_millis(10)))]
async fn tx_rows(ctx: &AssetContext) -> Result<u64> {
    use dagrs_postgres::PgContext;
    let tx = ctx.pg_transaction().await?;
    tx.execute(
        "INSERT INTO public.probe_rows (run_id, n) SELECT $1, generate_series(1, 100)",
        &[&ctx.run_id().as_str()],
    )
    .await?;
    if let (Some(mark), 1) = (std::env::var_os("PROBE_TX_MARK"), ctx.attempt()) {
        std::fs::write(mark, "written")?;
        std::future::pending::<()>().await;
    }
    Ok(100)
}

#[path = "wide.rs"]
mod wide;

fn main() -> ExitCode {
    // A child of `--launcher subprocess` that dies before it starts its run.
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os("PROBE_CHILD_EXIT").is_some()
        && args.windows(2).any(|w| w[0] == "run" && w[1] == "execute")
    {
        return ExitCode::from(3);
    }
    let scaled = std::env::var("PROBE_CLOCK_SPEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut every_minute = Schedule::new("every_minute", "probe_job", "* * * * *")
        .missed_ticks(MissedTicks::All { limit: 10_000 });
    if scaled.is_some() {
        every_minute = every_minute.running();
    }
    let mut specs = assets![first, slow, last];
    if std::env::var_os("PROBE_PARTITIONED").is_some() {
        specs.extend(assets![hours]);
    }
    if let Some(steps) = std::env::var("PROBE_STEPS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        let chains = std::env::var("PROBE_CHAINS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(10);
        let sleep = std::env::var("PROBE_SLEEP_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        let pool = std::env::var("PROBE_POOL").ok();
        specs.extend(wide::wide(steps, chains, sleep, pool.as_deref()));
    }
    if std::env::var_os("PROBE_TX").is_some() {
        specs.extend(assets![tx_rows]);
    }
    let defs = Definitions::builder()
        .specs(specs)
        .job(AssetJob::new("probe_job", "first"))
        .schedule(every_minute)
        .build()
        .expect("valid definitions");
    if let (Some(speed), Ok(url)) = (scaled, std::env::var("PROBE_DATABASE_URL")) {
        return scaled_daemon(defs, &url, speed);
    }
    let Ok(url) = std::env::var("PROBE_DATABASE_URL") else {
        return dagrs_core::cli::main(defs);
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let store = async {
            let pg = dagrs_postgres::PostgresResource::from_url(&url)?;
            pg.ensure_database().await?;
            dagrs_postgres::PgStorage::connect(pg, dagrs_postgres::DEFAULT_SCHEMA).await
        };
        let store = store.await;
        match store {
            Ok(store) => {
                dagrs_core::cli::run_with(defs, store.instance(), std::env::args_os()).await
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// The daemon on a clock `speed` times faster than real time, until SIGTERM.
fn scaled_daemon(defs: Definitions, url: &str, speed: u32) -> ExitCode {
    let start = std::env::var("PROBE_CLOCK_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(chrono::Utc::now);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let pg = dagrs_postgres::PostgresResource::from_url(url).expect("a valid URL");
        let store = dagrs_postgres::PgStorage::connect(pg, dagrs_postgres::DEFAULT_SCHEMA)
            .await
            .expect("the store");
        let clock = std::sync::Arc::new(ScaledClock::new(start, speed));
        let daemon = Daemon::new(Instance::new(store), defs)
            .with_clock(clock)
            .with_interval(Duration::from_millis(20));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            term.recv().await;
            stop.cancel();
        });
        daemon.run(shutdown).await.expect("the daemon runs");
        ExitCode::SUCCESS
    })
}
