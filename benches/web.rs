//! The web UI's server time on large stores (SQLite, the embedded default): the asset
//! catalog and the lineage graph of 10,000 assets, the runs page over 100,000 stored runs,
//! a run page over a run of 100,000 events, and how soon an event written to storage
//! reaches an open run page (its live stream, over a real socket).
//!
//! ```text
//! cargo bench --bench web
//! ```
//!
//! Server time is the router's answer to one request, body included (`tower::ServiceExt`,
//! no socket), from the first byte asked to the last byte rendered.

#[path = "../tests/support/web_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::Request;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use dagrs_core::storage::{contract, SqliteStorage, Storage};
use dagrs_core::web::{self, UiOptions};
use dagrs_core::{Event, EventKind, Instance, LogLevel, RunId, RunStatus, JOB_TAG};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn answer(app: &Router, path: &str) -> usize {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .len()
}

/// Writes `events` in batches of 1,000, as concurrent writes (the writer batches them).
async fn append_all(storage: &dyn Storage, events: Vec<Event>) {
    for chunk in events.chunks(1_000) {
        storage.append_events(chunk).await.unwrap();
    }
}

fn graph(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open(dir.path().join("graph.db")).unwrap();
    let defs = fixture::large_definitions(10_000, 100);
    // One materialization of every asset, in one run.
    rt.block_on(async {
        let run = contract::run_record("big", 0);
        store.create_run(&run).await.unwrap();
        let events = defs
            .assets()
            .enumerate()
            .map(|(seq, spec)| Event {
                run_id: RunId::from("big"),
                seq: seq as u64,
                timestamp: contract::at(seq as i64),
                asset: Some(spec.key().clone()),
                kind: EventKind::Materialization {
                    metadata: BTreeMap::from([("rows".to_owned(), serde_json::json!(seq))]),
                    value: serde_json::Value::Null,
                    code_version: None,
                    partition: None,
                },
            })
            .collect();
        append_all(&store, events).await;
    });
    let app = web::router(Instance::new(store), defs);
    let mut group = c.benchmark_group("web 10,000 assets");
    group.sample_size(20);
    for (name, path) in [
        ("catalog", "/"),
        ("catalog, searched", "/?q=asset_099"),
        ("lineage graph", "/lineage"),
        ("lineage graph, 19 of 20 groups collapsed", "/lineage?collapse=group_00,group_01,group_02,group_03,group_04,group_05,group_06,group_07,group_08,group_09,group_10,group_11,group_12,group_13,group_14,group_15,group_16,group_17,group_18"),
        ("asset page", "/assets/asset_05000"),
    ] {
        let bytes = rt.block_on(answer(&app, path));
        println!("{name}: {bytes} bytes");
        group.bench_function(name, |b| b.to_async(&rt).iter(|| answer(&app, path)));
    }
    group.finish();
}

fn runs(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open(dir.path().join("runs.db")).unwrap();
    rt.block_on(async {
        let mut creates = Vec::new();
        for i in 0..100_000i64 {
            let mut run = contract::run_record(&format!("run-{i:06}"), i);
            run.status = [
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
            ][(i % 97 % 3) as usize];
            run.tags = BTreeMap::from([("team".to_owned(), format!("t{}", i % 10))]);
            if i % 5 == 0 {
                run.tags.insert(JOB_TAG.to_owned(), "nightly".to_owned());
            }
            creates.push(run);
        }
        for chunk in creates.chunks(2_000) {
            // Concurrent, so the store's writer commits them in batches.
            let writes = chunk.iter().map(|run| store.create_run(run));
            for result in futures_util::future::join_all(writes).await {
                result.unwrap();
            }
        }
    });
    let app = web::router(Instance::new(store), fixture::definitions());
    let mut group = c.benchmark_group("web 100,000 runs");
    group.sample_size(20);
    let older = rt.block_on(async {
        // The cursor of the 50th page.
        format!(
            "/runs?after={}",
            dagrs_core::storage::RunCursor {
                started_at: contract::at(100_000 - 50 * 50),
                run_id: RunId::from(format!("run-{:06}", 100_000 - 50 * 50)),
            }
        )
    });
    for (name, path) in [
        ("runs page", "/runs"),
        ("runs page 50", older.as_str()),
        ("runs page, failed", "/runs?status=failed"),
        ("runs page, job", "/runs?job=nightly"),
        ("runs page, tag", "/runs?tag=team%3Dt3"),
        (
            "runs page, job and time window",
            "/runs?job=nightly&since=2026-01-10&until=2026-01-20",
        ),
    ] {
        rt.block_on(answer(&app, path));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| answer(&app, path)));
    }
    group.finish();
}

fn log_event(run: &str, seq: u64, message: String) -> Event {
    let mut event = contract::event(
        run,
        seq,
        Some(["sensor_tags", "sensor_readings", "minute_averages"][(seq % 3) as usize]),
        EventKind::Log {
            level: [LogLevel::Debug, LogLevel::Info, LogLevel::Warn][(seq % 3) as usize],
            message,
        },
    );
    event.timestamp = contract::at(0) + chrono::Duration::milliseconds(seq as i64);
    event
}

fn events(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open(dir.path().join("events.db")).unwrap();
    let defs = fixture::definitions();
    rt.block_on(async {
        let mut run = contract::run_record("long", 0);
        run.assets = defs.assets().map(|a| a.key().clone()).collect();
        store.create_run(&run).await.unwrap();
        let mut events = Vec::with_capacity(100_000);
        for seq in 0..100_000u64 {
            let event = match seq % 1_000 {
                0 => contract::event(
                    "long",
                    seq,
                    Some("sensor_readings"),
                    EventKind::StepStarted {
                        attempt: 1,
                        worker: None,
                    },
                ),
                999 => contract::event(
                    "long",
                    seq,
                    Some("sensor_readings"),
                    EventKind::StepSucceeded {
                        attempt: 1,
                        duration: Duration::from_millis(900),
                    },
                ),
                _ => log_event("long", seq, format!("line {seq}: {}", "x".repeat(60))),
            };
            events.push(event);
        }
        append_all(&store, events).await;
    });
    let instance = Instance::new(store.clone());
    let app = web::router(instance.clone(), defs.clone());
    let mut group = c.benchmark_group("web run of 100,000 events");
    group.sample_size(20);
    for (name, path) in [
        ("run page", "/runs/long"),
        ("run page, level warn", "/runs/long?level=warn"),
        ("run page, one step", "/runs/long?step=minute_averages"),
        ("run page, an earlier page", "/runs/long?before=50000"),
    ] {
        rt.block_on(answer(&app, path));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| answer(&app, path)));
    }
    group.finish();

    // Latency of the live stream: append one event, time until the open stream delivers it.
    let mut group = c.benchmark_group("web live event");
    group.sample_size(20);
    let live = rt.block_on(async {
        let mut run = contract::run_record("live", 0);
        run.status = RunStatus::Running;
        store.create_run(&run).await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let app = web::router_with(instance.clone(), defs.clone(), UiOptions::default());
        let server = web::serve("127.0.0.1:0".parse().unwrap(), app, shutdown.clone())
            .await
            .unwrap();
        let mut socket = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        socket
            .write_all(b"GET /runs/live/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        (BufReader::new(socket).lines(), shutdown, server)
    });
    let (lines, shutdown, _server) = live;
    let lines = std::sync::Arc::new(tokio::sync::Mutex::new(lines));
    let seq = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("written -> on an open run page (poll 100 ms)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (lines, store) = (std::sync::Arc::clone(&lines), store.clone());
            let seq = &seq;
            async move {
                let mut total = Duration::ZERO;
                let mut lines = lines.lock().await;
                for _ in 0..iters {
                    let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let marker = format!("marker-{n}");
                    let start = Instant::now();
                    store
                        .append_events(&[log_event("live", n, marker.clone())])
                        .await
                        .unwrap();
                    while let Some(line) = lines.next_line().await.unwrap() {
                        if line.contains(&marker) {
                            break;
                        }
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, graph, runs, events);
criterion_main!(benches);
