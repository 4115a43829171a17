//! The web UI in a real browser: Debian's Chromium, driven over WebDriver (chromedriver)
//! from this test. It opens the catalog and the lineage graph, launches a materialization
//! from the launchpad and watches its run page reach "succeeded" live, checks that a log
//! line `<script>alert(1)</script>` shows as text, toggles a schedule, and opens a
//! partitioned asset's status bar and a backfill from the backfills page; it saves a
//! screenshot of each page under its temp dir and prints the paths.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them), or `CHROMIUM` and `CHROMEDRIVER` naming
//! others. Without them it fails, saying so: it never passes without a browser.
//! With `DAGRS_SCREENSHOTS=<dir>`, the catalog, lineage, run, schedules and partitions
//! screenshots are also copied there (how `docs/screenshots/` is made).

#[path = "support/web_fixture.rs"]
mod fixture;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dagrs_core::storage::InstigatorStatus;
use dagrs_core::web;
use dagrs_core::{Instance, RunConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Where a program is: `$var`, else `default`; fails loudly when it is missing.
fn program(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "the browser tests need {} (Debian package `{package}`): install it with \
         `apt-get install chromium chromium-driver` (.ci/run does), or set {var}",
        path.display()
    );
    path
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn start_browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = program("CHROMIUM", "/usr/bin/chromium", "chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Saves a screenshot of the page as `<dir>/<name>.png` and prints its path.
async fn shot(client: &Client, dir: &Path, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("a screenshot");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// Waits until `check` holds (polling), at most `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Ticks of the hourly schedule, as a daemon records them: fired with the stored runs, and
/// one skipped.
async fn record_ticks(instance: &Instance) {
    use dagrs_core::storage::{InstigatorKind, TickRecord, TickStatus};
    let runs = instance.runs(10).await.unwrap();
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    let mut ticks = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        ticks.push(TickRecord {
            name: "sensors_hourly".into(),
            kind: InstigatorKind::Schedule,
            tick: now - hour * (i as i32 + 1),
            status: TickStatus::Fired,
            run_ids: vec![run.run_id.clone()],
            reason: None,
        });
    }
    ticks.push(TickRecord {
        name: "sensors_hourly".into(),
        kind: InstigatorKind::Schedule,
        tick: now - hour * (runs.len() as i32 + 1),
        status: TickStatus::Skipped,
        run_ids: vec![],
        reason: Some("the previous run was still running".into()),
    });
    let storage = instance.storage();
    assert!(storage
        .claim_ticks(&ticks)
        .await
        .unwrap()
        .iter()
        .all(|c| *c));
    storage.update_ticks(&ticks).await.unwrap();
}

/// A UI over partitioned assets: the first day of `hourly_sensor` with a partition failed
/// and a few missing, and a backfill of its second day, one run per partition (05:00
/// fails).
/// Returns its address and the backfill's id.
async fn partitioned_ui(dir: &Path, shutdown: CancellationToken) -> (String, String) {
    use dagrs_core::{BackfillPolicy, BackfillRequest, RunOptions};
    let instance = Instance::sqlite(dir.join("partitions.db")).unwrap();
    let defs = fixture::partitioned_definitions(Default::default());
    let h = fixture::hour_key;
    for key in [
        h(0, 5),
        format!("{}...{}", h(0, 0), h(0, 4)),
        format!("{}...{}", h(0, 6), h(0, 20)),
    ] {
        let handle = instance
            .launch(&defs, "hourly_sensor", RunOptions::new().partition(key))
            .await
            .unwrap();
        instance
            .wait_for_end(handle.run_id(), Duration::from_secs(30))
            .await
            .unwrap();
    }
    let request = BackfillRequest::new("hourly_sensor")
        .range(&h(1, 0), &h(2, 0))
        .policy(BackfillPolicy::RunPerPartition);
    let backfill = instance.launch_backfill(&defs, request).await.unwrap();
    instance
        .run_backfill(&defs, &backfill.id, |_| {})
        .await
        .unwrap();
    let app = web::router(instance, defs);
    let server = web::serve(SocketAddr::from(([127, 0, 0, 1], 0)), app, shutdown)
        .await
        .unwrap();
    (format!("http://{}", server.addr()), backfill.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_a_real_browser() {
    let driver = start_driver();
    let dir = tempfile::Builder::new()
        .prefix("dagrs-web-browser-")
        .tempdir()
        .unwrap()
        .keep();
    let profile = dir.join("chromium-profile");
    // A realistic store: SQLite, a few runs, one of them failed.
    let instance = Instance::sqlite(dir.join("dagrs.db")).unwrap();
    let defs = fixture::definitions();
    for config in [
        "",
        "assets: { sensor_readings: { hours: 2 } }",
        "assets: { sensor_readings: { fail: true } }",
    ] {
        let config = if config.is_empty() {
            RunConfig::new()
        } else {
            RunConfig::from_yaml(config).unwrap()
        };
        instance.materialize(&defs, "*", config).await.unwrap();
    }
    instance
        .materialize(&defs, "sensor_tags+", RunConfig::new())
        .await
        .unwrap();
    record_ticks(&instance).await;
    let shutdown = CancellationToken::new();
    let app = web::router(instance.clone(), defs.clone());
    let server = web::serve(SocketAddr::from(([127, 0, 0, 1], 0)), app, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr());
    let client = start_browser(&driver, &profile).await;
    let mut docs = Vec::new();

    // The catalog.
    client.goto(&format!("{base}/")).await.unwrap();
    let catalog = text(&client, "#catalog").await;
    for asset in [
        "sensor_tags",
        "sensor_readings",
        "daily_report",
        "sensor_health",
    ] {
        assert!(
            catalog.contains(asset),
            "{asset} in the catalog:\n{catalog}"
        );
    }
    assert!(catalog.contains("fresh"), "{catalog}");
    docs.push(("catalog", shot(&client, &dir, "catalog").await));
    client
        .goto(&format!("{base}/assets/sensor_readings"))
        .await
        .unwrap();
    assert!(text(&client, "main").await.contains("step duration"));
    shot(&client, &dir, "asset").await;

    // The lineage graph: every node drawn; picking a node fills the selection box.
    client.goto(&format!("{base}/lineage")).await.unwrap();
    let nodes = client
        .find_all(Locator::Css("svg.graph .node"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 7, "one node per asset");
    let pick = client
        .find(Locator::Css(".node[data-key='sensor_health'] .pick"))
        .await
        .unwrap();
    pick.click().await.unwrap();
    let selection = client.find(Locator::Id("selection")).await.unwrap();
    assert_eq!(
        selection.prop("value").await.unwrap().as_deref(),
        Some("sensor_health")
    );
    docs.push(("lineage", shot(&client, &dir, "lineage").await));

    // The launchpad: launch with config, then watch the run page reach "succeeded" live.
    client.goto(&format!("{base}/launchpad")).await.unwrap();
    let selection = client.find(Locator::Id("selection")).await.unwrap();
    selection.clear().await.unwrap();
    selection.send_keys("sensor_tags+").await.unwrap();
    let config = client.find(Locator::Id("config")).await.unwrap();
    config.clear().await.unwrap();
    config
        .send_keys("assets:\n  sensor_readings:\n    delay_ms: 2500\n")
        .await
        .unwrap();
    shot(&client, &dir, "launchpad").await;
    client
        .find(Locator::Id("launch"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(Duration::from_secs(15), "the run page", || async {
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/runs/")
    })
    .await;
    // A marker that a reload would wipe.
    client
        .execute("window.dagrsMarker = 42; return null;", vec![])
        .await
        .unwrap();
    let first = text(&client, "#run-status").await;
    assert!(
        matches!(first.as_str(), "running" | "queued"),
        "the run page opens while it runs: {first}"
    );
    until(
        Duration::from_secs(60),
        "the run to reach succeeded",
        || async { text(&client, "#run-status").await == "succeeded" },
    )
    .await;
    until(Duration::from_secs(10), "the run's end time", || async {
        text(&client, "#facts").await.contains("took")
    })
    .await;
    let marker = client
        .execute("return window.dagrsMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!(42), "the page was not reloaded");
    until(Duration::from_secs(10), "the last events", || async {
        text(&client, "#log").await.contains("run succeeded")
    })
    .await;
    // The log line that looks like a script is text, and ran nothing.
    let lines = client.find_all(Locator::Css("#log pre.msg")).await.unwrap();
    let mut shown = false;
    for line in lines {
        shown |= line.text().await.unwrap() == fixture::SCRIPT_LINE;
    }
    assert!(shown, "the log line shows as text");
    let scripts = client
        .execute(
            "return document.querySelectorAll('main script').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(scripts, json!(0), "no script element came from the log");
    assert!(client.get_alert_text().await.is_err(), "no alert opened");
    client
        .execute("window.scrollTo(0, 0); return null;", vec![])
        .await
        .unwrap();
    docs.push(("run", shot(&client, &dir, "run").await));
    client.goto(&format!("{base}/runs")).await.unwrap();
    assert!(text(&client, "#runs").await.contains("failed"));
    shot(&client, &dir, "runs").await;

    // Schedules: turn one on.
    client.goto(&format!("{base}/schedules")).await.unwrap();
    let state = "tr[data-name='sensors_nightly'] .badge.instigator";
    assert_eq!(text(&client, state).await, "stopped");
    client
        .find(Locator::Css(
            "tr[data-name='sensors_nightly'] button.toggle",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        Duration::from_secs(10),
        "the schedule to show as running",
        || async { text(&client, state).await == "running" },
    )
    .await;
    let states = instance.storage().instigator_states().await.unwrap();
    assert_eq!(
        states.get("sensors_nightly"),
        Some(&InstigatorStatus::Running)
    );
    docs.push(("schedules", shot(&client, &dir, "schedules").await));
    client.goto(&format!("{base}/sensors")).await.unwrap();
    shot(&client, &dir, "sensors").await;

    // Partitions and backfills, on a store of their own with partitioned assets.
    let (partitions_base, backfill) = partitioned_ui(&dir, shutdown.clone()).await;
    client
        .goto(&format!("{partitions_base}/assets/hourly_sensor"))
        .await
        .unwrap();
    let summary = text(&client, "#partition-summary").await;
    assert!(summary.contains("2 failed"), "{summary}");
    assert_eq!(
        client
            .find_all(Locator::Css("#partitions svg.pbar rect.p-failed"))
            .await
            .unwrap()
            .len(),
        2,
        "05:00 of each day"
    );
    docs.push(("partitions", shot(&client, &dir, "partitions").await));
    client
        .goto(&format!("{partitions_base}/backfills"))
        .await
        .unwrap();
    let row = format!("#backfills tr[data-id='{backfill}']");
    assert!(
        text(&client, &row).await.contains("failed"),
        "the backfill's row"
    );
    shot(&client, &dir, "backfills").await;
    client
        .find(Locator::Css(&format!("{row} a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(Duration::from_secs(10), "the backfill's page", || async {
        text(&client, "#backfill-summary")
            .await
            .contains("23 of 24 partitions succeeded, 1 failed")
    })
    .await;
    assert!(client.find(Locator::Id("resume-backfill")).await.is_ok());
    shot(&client, &dir, "backfill").await;

    if let Some(out) = std::env::var_os("DAGRS_SCREENSHOTS") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        for (name, path) in docs {
            std::fs::copy(&path, out.join(format!("{name}.png"))).unwrap();
        }
    }
    client.close().await.unwrap();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server.wait()).await;
    println!("screenshots and the store are in {}", dir.display());
}
