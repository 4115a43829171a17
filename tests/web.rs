//! The web UI over plain HTTP (no browser): pages, auth, cross-site protection, escaping,
//! pagination, the launchpad's checks, toggles, the live event stream, partition status
//! bars and health, and backfills (list, detail, launch, cancel, resume).

#[path = "support/web_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use dagrs_core::storage::{contract, InstigatorStatus, RunRecord};
use dagrs_core::web::{self, UiOptions};
use dagrs_core::{
    BackfillPolicy, BackfillRequest, BackfillStatus, Definitions, Instance, RunConfig, RunId,
    RunOptions, RunStatus, JOB_TAG,
};
use tower::ServiceExt;

/// A response's status, headers and body text.
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &Router, request: Request<Body>) -> Page {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 64 << 20).await.unwrap();
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, path: &str) -> Page {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, path: &str, form: &str) -> Page {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:3000")
        .body(Body::from(form.to_owned()))
        .unwrap();
    send(app, request).await
}

/// The CSRF secret written into a page's forms.
fn csrf_of(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with the csrf field")
        + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn setup() -> (Instance, Router) {
    let instance = Instance::ephemeral();
    let app = web::router(instance.clone(), fixture::definitions());
    (instance, app)
}

#[tokio::test]
async fn the_catalog_lists_assets_and_filters_them() {
    let (instance, app) = setup();
    let defs = fixture::definitions();
    instance
        .materialize(&defs, "sensor_tags", RunConfig::new())
        .await
        .unwrap();
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    for asset in [
        "sensor_tags",
        "sensor_readings",
        "daily_report",
        "sensor_health",
    ] {
        assert!(
            page.body.contains(&format!("href=\"/assets/{asset}\"")),
            "{asset}"
        );
    }
    assert!(page.body.contains("never materialized"), "stale and why");
    let group = get(&app, "/?group=transform").await.body;
    assert!(group.contains("/assets/hourly_averages") && !group.contains("/assets/sensor_tags\""));
    let search = get(&app, "/?q=health").await.body;
    assert!(search.contains("/assets/sensor_health") && !search.contains("/assets/daily_report\""));
    let fresh = get(&app, "/?status=fresh").await.body;
    assert!(fresh.contains("/assets/sensor_tags") && !fresh.contains("/assets/sensor_health\""));
    let tag = get(&app, "/?tag=domain%3Dinfluxdb").await.body;
    assert!(tag.contains("/assets/sensor_readings") && !tag.contains("/assets/daily_report\""));
}

#[tokio::test]
async fn every_page_answers() {
    let (instance, app) = setup();
    let defs = fixture::definitions();
    let result = instance
        .materialize(&defs, "*", RunConfig::new())
        .await
        .unwrap();
    assert!(result.success());
    let run = format!("/runs/{}", result.run_id());
    for path in [
        "/",
        "/assets/sensor_readings",
        "/lineage",
        "/lineage?collapse=transform",
        "/lineage?focus=minute_averages",
        "/runs",
        run.as_str(),
        "/launchpad?selection=sensor_tags%2B",
        "/backfills",
        "/schedules",
        "/sensors",
        "/workers",
        "/static/dagrs.js",
        "/static/dagrs.css",
    ] {
        let page = get(&app, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        let csp = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}");
    }
    let asset = get(&app, "/assets/sensor_readings").await.body;
    assert!(
        asset.contains("step duration") && asset.contains("<h3>rows</h3>"),
        "charts"
    );
    assert!(asset.contains("simulator"), "metadata");
    assert_eq!(
        get(&app, "/assets/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&app, "/runs/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/nowhere").await.status, StatusCode::NOT_FOUND);
    let nav = get(&app, "/").await.body;
    assert!(
        nav.contains("<a href=\"/backfills\">Backfills</a>"),
        "in the navigation"
    );
    let lineage = get(&app, "/lineage?collapse=transform").await.body;
    assert!(
        lineage.contains("group transform: 3 assets"),
        "collapsed group"
    );
}

#[tokio::test]
async fn user_text_is_escaped_everywhere() {
    let (instance, app) = setup();
    let defs = fixture::definitions();
    let result = instance
        .materialize(&defs, "sensor_tags+", RunConfig::new())
        .await
        .unwrap();
    let page = get(&app, &format!("/runs/{}", result.run_id())).await.body;
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the log line as text"
    );
    assert!(!page.contains(fixture::SCRIPT_LINE), "never as markup");
    // Filters, run ids and config echo back escaped too.
    let evil = encode("\"><script>alert(2)</script>");
    for path in [
        format!("/?q={evil}"),
        format!("/runs?tag={evil}"),
        format!("/runs?since={evil}"),
        format!("/assets/{evil}"),
        format!("/runs/{evil}"),
        format!("/launchpad?selection={evil}"),
    ] {
        let page = get(&app, &path).await;
        assert!(
            !page.body.contains("<script>alert(2)"),
            "{path}: {}",
            page.body
        );
    }
    let csrf = csrf_of(&get(&app, "/launchpad").await.body);
    let page = post(
        &app,
        "/launchpad",
        &format!("csrf={csrf}&selection={evil}&config=assets%3A%20%7B%7D&action=validate"),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(!page.body.contains("<script>alert(2)"), "{}", page.body);
}

#[tokio::test]
async fn a_token_guards_every_request() {
    let instance = Instance::ephemeral();
    let app = web::router_with(
        instance,
        fixture::definitions(),
        UiOptions::with_token("s3cret-token"),
    );
    let denied = get(&app, "/").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(denied.body.contains("needs its token"));
    for path in [
        "/runs",
        "/lineage/status",
        "/runs/x/stream",
        "/?token=wrong",
    ] {
        assert_eq!(
            get(&app, path).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        get(&app, "/static/dagrs.css").await.status,
        StatusCode::OK,
        "public"
    );
    let bearer = Request::get("/runs")
        .header(header::AUTHORIZATION, "Bearer s3cret-token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, bearer).await.status, StatusCode::OK);
    let first = get(&app, "/runs?token=s3cret-token&status=failed").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(
        first.headers[header::LOCATION],
        "/runs?status=failed",
        "the token leaves the address"
    );
    let cookie = first.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let with_cookie = Request::get("/runs")
        .header(header::COOKIE, cookie.split(';').next().unwrap())
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, with_cookie).await.status, StatusCode::OK);
    // POSTs need the token as well, before anything else.
    assert_eq!(
        post(&app, "/launch", "selection=*").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn binding_beyond_loopback_needs_a_token_or_no_auth() {
    let open: std::net::SocketAddr = "0.0.0.0:3000".parse().unwrap();
    let local: std::net::SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let err = web::check_bind(open, None, false).unwrap_err().to_string();
    assert!(
        err.contains("without a token") && err.contains("--no-auth"),
        "{err}"
    );
    assert!(
        web::check_bind(open, Some(""), false).is_err(),
        "an empty token is no token"
    );
    assert!(web::check_bind(open, Some("t"), false).is_ok());
    assert!(web::check_bind(open, None, true).is_ok());
    assert!(web::check_bind(local, None, false).is_ok());
    // The CLI refuses before binding anything.
    let code = dagrs_core::cli::run_with(
        fixture::definitions(),
        Instance::ephemeral(),
        ["ui-test", "ui", "--bind", "0.0.0.0:0"],
    )
    .await;
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::from(2))
    );
}

#[tokio::test]
async fn state_changes_need_a_same_site_post_with_the_csrf_secret() {
    let (instance, app) = setup();
    let csrf = csrf_of(&get(&app, "/assets/sensor_tags").await.body);
    let form = format!("csrf={csrf}&selection=sensor_tags");
    for refused in [
        post(&app, "/launch", "selection=sensor_tags").await,
        post(&app, "/launch", "csrf=wrong&selection=sensor_tags").await,
        post(&app, "/instigators/sensors_nightly", "status=running").await,
    ] {
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        assert!(refused.body.contains("csrf"), "{}", refused.body);
    }
    let cross_site = Request::post("/launch")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(form.clone()))
        .unwrap();
    assert_eq!(send(&app, cross_site).await.status, StatusCode::FORBIDDEN);
    let other_origin = Request::post("/launch")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from(form.clone()))
        .unwrap();
    assert_eq!(send(&app, other_origin).await.status, StatusCode::FORBIDDEN);
    let put = Request::put("/launch")
        .body(Body::from(form.clone()))
        .unwrap();
    assert_eq!(send(&app, put).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        instance.runs(10).await.unwrap().is_empty(),
        "nothing was launched"
    );
    let same_origin = Request::post("/launch")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::ORIGIN, "http://127.0.0.1:3000")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(form))
        .unwrap();
    let launched = send(&app, same_origin).await;
    assert_eq!(launched.status, StatusCode::SEE_OTHER, "{}", launched.body);
    let run = launched.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let run_id = RunId::from(run.trim_start_matches("/runs/"));
    let ended = instance
        .wait_for_end(&run_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn runs_are_listed_a_page_at_a_time_with_filters() {
    let (instance, app) = setup();
    let storage = instance.storage();
    for i in 0..120 {
        let mut run: RunRecord = contract::run_record(&format!("run-{i:03}"), i);
        run.status = if i % 10 == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        run.tags = BTreeMap::from([("team".to_owned(), format!("t{}", i % 3))]);
        if i % 2 == 0 {
            run.tags
                .insert(JOB_TAG.to_owned(), "sensors_pipeline".to_owned());
        }
        storage.create_run(&run).await.unwrap();
    }
    let rows = |page: &str| page.matches("href=\"/runs/run-").count();
    let first = get(&app, "/runs").await.body;
    assert_eq!(rows(&first), web::RUNS_PER_PAGE);
    assert!(first.contains("href=\"/runs/run-119\"") && !first.contains("href=\"/runs/run-069\""));
    let older = first.split("id=\"older\" href=\"").nth(1).unwrap();
    let older = older[..older.find('"').unwrap()].replace("&amp;", "&");
    let second = get(&app, &older).await.body;
    assert_eq!(rows(&second), web::RUNS_PER_PAGE);
    assert!(
        second.contains("href=\"/runs/run-069\"") && !second.contains("href=\"/runs/run-070\"")
    );
    let failed = get(&app, "/runs?status=failed").await.body;
    assert_eq!(rows(&failed), 12);
    let job = get(&app, "/runs?job=sensors_pipeline&tag=team%3Dt0")
        .await
        .body;
    assert_eq!(rows(&job), 20, "even runs of team t0: every sixth of 120");
    let window = get(&app, "/runs?since=2026-01-01T00:10&until=2026-01-01T00:20")
        .await
        .body;
    assert_eq!(rows(&window), 10);
    let bad = get(&app, "/runs?since=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("since `yesterday`"), "{}", bad.body);
}

#[tokio::test]
async fn the_launchpad_checks_config_as_the_cli_does_then_launches() {
    let (instance, app) = setup();
    let defs = fixture::definitions();
    let csrf = csrf_of(&get(&app, "/launchpad").await.body);
    let submit = |selection: &str, config: &str, action: &str| {
        format!(
            "csrf={csrf}&selection={}&config={}&action={action}",
            encode(selection),
            encode(config)
        )
    };
    // Not YAML: the parser's error, as RunConfig::from_yaml (the CLI's --config) gives it.
    let broken = "assets: [unclosed";
    let page = post(&app, "/launchpad", &submit("*", broken, "validate")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let expected = RunConfig::from_yaml(broken).unwrap_err().to_string();
    assert!(
        page.body.contains(&escape(&expected)),
        "{expected}\n{}",
        page.body
    );
    // YAML, but a bad field: the instance's own check, naming asset and field.
    let wrong = "assets:\n  sensor_readings:\n    hours: many\n";
    let page = post(&app, "/launchpad", &submit("*", wrong, "launch")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let expected = instance
        .check_launch(
            &defs,
            "*",
            &RunOptions::new().config(RunConfig::from_yaml(wrong).unwrap()),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        expected.contains("sensor_readings") && expected.contains("hours"),
        "{expected}"
    );
    assert!(page.body.contains(&escape(&expected)), "{}", page.body);
    let page = post(&app, "/launchpad", &submit("sensor_tagz", "", "validate")).await;
    assert!(
        page.body.contains("sensor_tags"),
        "did you mean: {}",
        page.body
    );
    assert!(instance.runs(10).await.unwrap().is_empty(), "nothing ran");
    // Valid: says what would run, then launches with the config.
    let good = "assets:\n  sensor_readings:\n    hours: 2\n";
    let page = post(
        &app,
        "/launchpad",
        &submit("sensor_readings+", good, "validate"),
    )
    .await;
    assert!(
        page.body.contains("sensor_tags"),
        "an input never stored: {}",
        page.body
    );
    let page = post(
        &app,
        "/launchpad",
        &submit("sensor_tags+", good, "validate"),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Valid: would materialize 7 asset(s)"),
        "{}",
        page.body
    );
    let page = post(
        &app,
        "/launchpad",
        &submit("sensor_tags sensor_readings", good, "launch"),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let run_id = RunId::from(
        page.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .trim_start_matches("/runs/"),
    );
    let run = instance
        .wait_for_end(&run_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.config, RunConfig::from_yaml(good).unwrap());
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test]
async fn schedules_and_sensors_toggle() {
    let (instance, app) = setup();
    let page = get(&app, "/schedules").await.body;
    assert!(page.contains("sensors_hourly") && page.contains("Asia/Seoul"));
    let csrf = csrf_of(&page);
    let toggled = post(
        &app,
        "/instigators/sensors_nightly",
        &format!("csrf={csrf}&status=running"),
    )
    .await;
    assert_eq!(toggled.status, StatusCode::SEE_OTHER);
    let states = instance.storage().instigator_states().await.unwrap();
    assert_eq!(
        states.get("sensors_nightly"),
        Some(&InstigatorStatus::Running)
    );
    let off = post(
        &app,
        "/instigators/failure_alert",
        &format!("csrf={csrf}&status=stopped"),
    )
    .await;
    assert_eq!(off.headers[header::LOCATION], "/sensors");
    let unknown = post(
        &app,
        "/instigators/nope",
        &format!("csrf={csrf}&status=running"),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reexecute_and_cancel_buttons() {
    let (instance, app) = setup();
    let defs = fixture::definitions();
    let first = instance
        .materialize(&defs, "sensor_tags", RunConfig::new())
        .await
        .unwrap();
    let page = get(&app, &format!("/runs/{}", first.run_id())).await.body;
    let csrf = csrf_of(&page);
    let again = post(
        &app,
        &format!("/runs/{}/reexecute", first.run_id()),
        &format!("csrf={csrf}&mode=all"),
    )
    .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let nothing = post(
        &app,
        &format!("/runs/{}/reexecute", first.run_id()),
        &format!("csrf={csrf}&mode=failure"),
    )
    .await;
    assert_eq!(nothing.status, StatusCode::CONFLICT, "{}", nothing.body);
    let ended = post(
        &app,
        &format!("/runs/{}/cancel", first.run_id()),
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(ended.status, StatusCode::CONFLICT);
    assert!(ended.body.contains("already ended"));
}

/// Reads server-sent events from a real server until `end`; returns `(event, data)` pairs.
async fn read_stream(addr: std::net::SocketAddr, path: &str) -> Vec<(String, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let (mut messages, mut event, mut data) = (Vec::new(), String::new(), String::new());
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(name) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                event = name.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(d);
            } else if line.is_empty() && !event.is_empty() {
                let done = event == "end";
                messages.push((std::mem::take(&mut event), std::mem::take(&mut data)));
                if done {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the stream ends");
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_page_follows_the_run_live() {
    let (instance, app) = setup();
    let defs = fixture::definitions();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = web::serve("127.0.0.1:0".parse().unwrap(), app, shutdown.clone())
        .await
        .unwrap();
    let config = RunConfig::from_yaml("assets: { sensor_readings: { delay_ms: 300 } }").unwrap();
    let handle = instance
        .launch(&defs, "*", dagrs_core::RunOptions::new().config(config))
        .await
        .unwrap();
    let path = format!("/runs/{}/stream", handle.run_id());
    let messages = read_stream(server.addr(), &path).await;
    let kinds: Vec<&str> = messages.iter().map(|(e, _)| e.as_str()).collect();
    assert!(
        kinds.contains(&"events") && kinds.contains(&"gantt") && kinds.contains(&"facts"),
        "{kinds:?}"
    );
    let statuses: Vec<&str> = messages
        .iter()
        .filter(|(e, _)| e == "status")
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{statuses:?}");
    assert_eq!(
        messages.last().unwrap(),
        &("end".to_owned(), "succeeded".to_owned())
    );
    let rows: String = messages
        .iter()
        .filter(|(e, _)| e == "events")
        .map(|(_, d)| d.as_str())
        .collect();
    assert!(rows.contains("run succeeded"), "the whole log arrives");
    assert!(
        rows.contains("&lt;script&gt;") && !rows.contains("<script>"),
        "escaped live too"
    );
    // Resuming after the last event sent: nothing more than the end.
    let events = instance.events(handle.run_id()).await.unwrap();
    let last = events.last().unwrap().seq;
    let resumed = read_stream(server.addr(), &format!("{path}?after={last}")).await;
    assert!(resumed.iter().all(|(e, _)| e != "events"), "{resumed:?}");
    // Filtered by level: no debug lines.
    let warnings = read_stream(server.addr(), &format!("{path}?level=warn")).await;
    let rows: String = warnings.iter().map(|(_, d)| d.as_str()).collect();
    assert!(rows.contains("two sensors reported gaps") && !rows.contains("reading 1 hours"));
    shutdown.cancel();
    server.wait().await.unwrap();
}

/// The partitioned fixture: its instance, definitions, router, and the switch that holds
/// `hourly_sensor`'s 07:00 partitions.
fn partitioned() -> (Instance, Definitions, Router, Arc<AtomicBool>) {
    let hold = Arc::new(AtomicBool::new(false));
    let defs = fixture::partitioned_definitions(hold.clone());
    let instance = Instance::ephemeral();
    let app = web::router(instance.clone(), defs.clone());
    (instance, defs, app, hold)
}

/// Materializes partition (or range) `partition` of `selection`; how the run ended.
async fn materialize_partition(
    instance: &Instance,
    defs: &Definitions,
    selection: &str,
    partition: &str,
) -> RunStatus {
    let handle = instance
        .launch(defs, selection, RunOptions::new().partition(partition))
        .await
        .unwrap();
    let run = instance
        .wait_for_end(handle.run_id(), Duration::from_secs(20))
        .await
        .unwrap();
    run.status
}

/// The part of `page` from `start` to the next `end`.
fn section<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` in the page:\n{page}"));
    let rest = &page[from..];
    &rest[..rest.find(end).map_or(rest.len(), |at| at + end.len())]
}

#[tokio::test]
async fn a_partitioned_asset_shows_its_partitions_and_the_catalog_their_health() {
    let (instance, defs, app, _) = partitioned();
    let (h, day) = (fixture::hour_key, fixture::partitions_start());
    // 4 + 18 hours materialized, 05:00 of the first day failed.
    let first = format!("{}...{}", h(0, 0), h(0, 4));
    let rest = format!("{}...{}", h(0, 6), h(1, 0));
    for (key, expected) in [
        (h(0, 5), RunStatus::Failed),
        (first.clone(), RunStatus::Succeeded),
        (rest, RunStatus::Succeeded),
    ] {
        let status = materialize_partition(&instance, &defs, "hourly_sensor", &key).await;
        assert_eq!(status, expected, "{key}");
    }
    let eu = format!("eu|{}", day.format("%Y-%m-%d"));
    let status = materialize_partition(&instance, &defs, "region_daily", &eu).await;
    assert_eq!(status, RunStatus::Succeeded);
    let parts = instance
        .asset_partitions(&defs, "hourly_sensor")
        .await
        .unwrap();
    let total = parts.definition.count(&parts.all);
    assert!(total >= 48, "two whole days and today's hours: {total}");

    let page = get(&app, "/assets/hourly_sensor").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let summary = section(&page.body, "id=\"partition-summary\"", "</p>");
    let expected = format!(
        "{total} partitions exist: 22 materialized, 1 failed, 0 in progress, {} missing",
        total - 23
    );
    assert!(summary.contains(&expected), "{summary}");
    let bar = section(&page.body, "<svg class=\"pbar\"", "</svg>");
    assert_eq!(bar.matches("class=\"p-failed\"").count(), 1, "{bar}");
    assert!(bar.contains(&format!("failed: {}", h(0, 5))), "{bar}");
    assert!(bar.contains(&format!("materialized: {first}")), "{bar}");
    assert!(
        bar.contains(&h(0, 0)),
        "the axis starts at the first partition"
    );
    assert!(
        page.body.contains("Backfill…"),
        "a partitioned asset links to backfills"
    );
    let ranges = section(&page.body, "<table class=\"ranges\">", "</table>");
    assert!(
        ranges.contains(&format!("<td>4</td><td class=\"mono\">{first}</td>")),
        "{ranges}"
    );

    // Three regions, one bar each; the region that looks like markup is text.
    let page = get(&app, "/assets/region_daily").await.body;
    let bar = section(&page, "<svg class=\"pbar\"", "</svg>");
    assert_eq!(bar.matches("<text x=\"4\"").count(), 3, "{bar}");
    assert!(bar.contains("&lt;i&gt;ap&lt;/i&gt;"), "{bar}");
    assert!(!page.contains("<i>ap</i>"), "never as markup");
    assert!(bar.contains(&format!("materialized: {eu}")), "{bar}");
    let days = instance
        .asset_partitions(&defs, "region_daily")
        .await
        .unwrap();
    let days = days.definition.count(&days.all);

    // The catalog: health of the partitioned assets, nothing for the others.
    let catalog = get(&app, "/").await.body;
    let row = section(&catalog, "<tr data-key=\"hourly_sensor\">", "</tr>");
    assert!(
        row.contains(&format!("22/{total} materialized, 1 failed")),
        "{row}"
    );
    let row = section(&catalog, "<tr data-key=\"region_daily\">", "</tr>");
    assert!(row.contains(&format!("1/{days} materialized<")), "{row}");
    let row = section(&catalog, "<tr data-key=\"sensor_tags\">", "</tr>");
    assert!(row.contains("<td class=\"partitions\"></td>"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_are_listed_shown_resumed_and_cancelled() {
    let (instance, defs, app, hold) = partitioned();
    let h = fixture::hour_key;
    let request = BackfillRequest::new("hourly_sensor")
        .range(&h(1, 0), &h(1, 6))
        .policy(BackfillPolicy::RunPerPartition);
    let backfill = instance.launch_backfill(&defs, request).await.unwrap();
    let id = backfill.id.clone();
    let ended = instance.run_backfill(&defs, &id, |_| {}).await.unwrap();
    assert_eq!(ended.status, BackfillStatus::Failed, "05:00 fails");

    let list = get(&app, "/backfills").await;
    assert_eq!(list.status, StatusCode::OK);
    let row = section(&list.body, &format!("<tr data-id=\"{id}\">"), "</tr>");
    assert!(row.contains(&format!("href=\"/backfills/{id}\"")), "{row}");
    assert!(row.contains("badge s-failed"), "{row}");
    assert!(row.contains("hourly_sensor"), "{row}");
    assert!(
        row.contains("<td>6</td><td>5</td><td>1</td><td>0 "),
        "partitions, succeeded, failed, in flight: {row}"
    );
    assert!(row.contains("<svg class=\"progress\""), "{row}");

    let path = format!("/backfills/{id}");
    let page = get(&app, &path).await.body;
    assert!(
        page.contains("5 of 6 partitions succeeded, 1 failed, 0 in flight, 0 not launched"),
        "{page}"
    );
    assert!(page.contains(&format!("failed: {}", h(1, 5))), "the bar");
    assert!(page.contains("id=\"resume-backfill\"") && !page.contains("id=\"cancel-backfill\""));
    let csrf = csrf_of(&page);

    // Resume, then cancel: each changes the stored backfill.
    let resumed = post(&app, &format!("{path}/resume"), &format!("csrf={csrf}")).await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER, "{}", resumed.body);
    assert_eq!(resumed.headers[header::LOCATION], path.as_str());
    assert_eq!(
        instance.backfill(&id).await.unwrap().status,
        BackfillStatus::Requested
    );
    let page = get(&app, &path).await.body;
    assert!(page.contains("id=\"cancel-backfill\"") && page.contains("data-refresh"));
    let cancelled = post(&app, &format!("{path}/cancel"), &format!("csrf={csrf}")).await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.body
    );
    let stored = instance.backfill(&id).await.unwrap();
    assert_eq!(stored.status, BackfillStatus::Canceling);
    assert_eq!(stored.reason.as_deref(), Some("cancelled from the web UI"));
    let again = post(&app, &format!("{path}/cancel"), &format!("csrf={csrf}")).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.body.contains("nothing to cancel"), "{}", again.body);
    let early = post(&app, &format!("{path}/resume"), &format!("csrf={csrf}")).await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    let forged = post(&app, &format!("{path}/resume"), "csrf=wrong").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Unknown backfills.
    let missing = get(&app, "/backfills/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no backfill has the id `nope`"));
    let missing = post(&app, "/backfills/nope/cancel", &format!("csrf={csrf}")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // A backfill with a run in flight links to it.
    hold.store(true, Ordering::SeqCst);
    let request = BackfillRequest::new("hourly_sensor").partition(h(1, 7));
    let held = instance.launch_backfill(&defs, request).await.unwrap();
    let running = tokio::spawn({
        let (instance, defs, id) = (instance.clone(), defs.clone(), held.id.clone());
        async move { instance.run_backfill(&defs, &id, |_| {}).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run_id = loop {
        let b = instance.backfill(&held.id).await.unwrap();
        if let Some(run) = b.in_flight.first() {
            if instance.storage().run(&run.run_id).await.unwrap().is_some() {
                break run.run_id.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no run in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let page = get(&app, &format!("/backfills/{}", held.id)).await.body;
    let flying = section(&page, "<table id=\"in-flight\">", "</table>");
    assert!(
        flying.contains(&format!("href=\"/runs/{run_id}\"")),
        "{flying}"
    );
    assert!(flying.contains(&h(1, 7)), "{flying}");
    assert!(
        page.contains("0 of 1 partitions succeeded, 0 failed, 1 in flight"),
        "{page}"
    );
    let run_page = get(&app, &format!("/runs/{run_id}")).await.body;
    assert!(
        run_page.contains(&format!("href=\"/backfills/{}\"", held.id)),
        "the run links back to its backfill"
    );
    hold.store(false, Ordering::SeqCst);
    let done = running.await.unwrap().unwrap();
    assert_eq!(done.status, BackfillStatus::Completed);
}

#[tokio::test]
async fn the_backfill_form_launches_and_echoes_only_escaped_text() {
    let (instance, _, app, _) = partitioned();
    let h = fixture::hour_key;
    let page = get(&app, "/backfills?selection=hourly_sensor").await.body;
    assert!(page.contains("value=\"hourly_sensor\""), "prefilled");
    let csrf = csrf_of(&page);
    let submit = |selection: &str, partitions: &str, extra: &str| {
        format!(
            "csrf={csrf}&selection={}&partitions={}{extra}",
            encode(selection),
            encode(partitions)
        )
    };
    let range = format!("{}...{}, {}", h(1, 0), h(1, 2), h(1, 10));
    let launched = post(
        &app,
        "/backfills",
        &submit(
            "hourly_sensor",
            &range,
            "&policy=single_run&max_in_flight=2",
        ),
    )
    .await;
    assert_eq!(launched.status, StatusCode::SEE_OTHER, "{}", launched.body);
    let location = launched.headers[header::LOCATION].to_str().unwrap();
    let id = location.trim_start_matches("/backfills/");
    let stored = instance.backfill(id).await.unwrap();
    assert_eq!(stored.policy, BackfillPolicy::SingleRun);
    assert_eq!(stored.max_in_flight, 2);
    assert_eq!(
        stored.target.range_count(),
        2,
        "two ranges: {:?}",
        stored.target
    );
    assert_eq!(
        stored.tags.get("dagrs/source").map(String::as_str),
        Some("web")
    );
    let page = get(&app, location).await.body;
    assert!(page.contains("0 of 3 partitions succeeded"), "{page}");

    // Refused: what launch_backfill refuses, and what the form itself checks.
    let evil = "\"><script>alert(2)</script>";
    for (form, says) in [
        (submit(evil, &h(1, 0), ""), "alert(2)"),
        (submit("hourly_sensor", evil, ""), "is not a key"),
        (submit("sensor_tags", &h(1, 0), ""), "is not partitioned"),
        (submit("hourly_sensor", "", ""), "names no partition"),
        (
            submit("hourly_sensor", &h(1, 0), "&policy=max&per_run=0"),
            "not a whole number",
        ),
    ] {
        let page = post(&app, "/backfills", &form).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{form}: {}",
            page.body
        );
        let result = section(&page.body, "id=\"backfill-result\"", "</div>");
        assert!(result.contains(says), "{form}: {result}");
        assert!(!page.body.contains("<script>alert(2)"), "{}", page.body);
    }
    let echoed = get(
        &app,
        &format!(
            "/backfills?selection={}&partitions={}",
            encode(evil),
            encode(evil)
        ),
    )
    .await
    .body;
    assert!(!echoed.contains("<script>alert(2)"), "{echoed}");
    assert_eq!(
        instance.backfills(10).await.unwrap().len(),
        1,
        "one launched"
    );
}

#[tokio::test]
async fn an_asset_page_shows_its_checks_and_automation() {
    use dagrs_core::automation::eager;
    use dagrs_core::{AssetSpec, CheckResult, CheckSeverity, CheckSpec, Daemon};
    let defs = Definitions::builder()
        .spec(AssetSpec::new("rows", |_| async { Ok(3_u64) }))
        .spec(
            AssetSpec::new("summary", |_| async { Ok(()) })
                .dep("rows")
                .automation(eager()),
        )
        .check(
            CheckSpec::new("rows", "enough_rows", |scope| async move {
                let rows = scope.input::<u64>("rows")?;
                Ok(CheckResult::new(*rows >= 10).description(format!("only {rows} <rows>")))
            })
            .blocking(true),
        )
        .check(CheckSpec::new("rows", "soft", |_| async {
            Ok(CheckResult::failed("a warning").severity(CheckSeverity::Warn))
        }))
        .build()
        .unwrap();
    let instance = Instance::ephemeral();
    let app = web::router(instance.clone(), defs.clone());
    let before = get(&app, "/assets/rows").await.body;
    assert!(before.contains("enough_rows") && before.contains("never run"));

    instance
        .materialize(&defs, "rows", RunConfig::new())
        .await
        .unwrap();
    let page = get(&app, "/assets/rows").await.body;
    let checks = &page[page.find("id=\"checks\"").expect("a checks table")..];
    assert!(checks.contains("enough_rows") && checks.contains("s-failed"));
    assert!(checks.contains("only 3 &lt;rows&gt;"), "escaped: {checks}");
    assert!(checks.contains("soft") && checks.contains("s-warn"));

    let summary = get(&app, "/assets/summary").await.body;
    assert!(summary.contains("(missing | deps_updated) &amp; !deps_missing"));
    assert!(summary.contains("No evaluation yet"));
    Daemon::new(instance.clone(), defs.clone())
        .evaluate()
        .await
        .unwrap();
    let summary = get(&app, "/assets/summary").await.body;
    let automation = &summary[summary.find("id=\"automation\"").expect("evaluations")..];
    assert!(
        automation.contains("s-requested") && automation.contains("never materialized"),
        "{automation}"
    );
}
