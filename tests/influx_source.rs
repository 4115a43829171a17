//! Integration tests of the EcoAnP sources: the InfluxDB client
//! (`examples/ecoanp/influx.rs`) against a real influxd, and the built-in
//! simulator (`examples/ecoanp/simulator.rs`).
//!
//! The InfluxDB tests need an InfluxDB 1.x (or the v1 API of 2.x/3.x) at
//! `INFLUX_URL` (default `http://127.0.0.1:8086`) with authentication off:
//! `bash .ci/influxd.sh` starts one. They fail — never pass silently — when
//! it cannot be reached. Each test works in a database of its own, named
//! after the test and the process, and drops it at the end.

// The modules are shared with the example, which uses parts these tests don't.
#[allow(dead_code)]
#[path = "../examples/ecoanp/influx.rs"]
mod influx;
#[allow(dead_code)]
#[path = "../examples/ecoanp/simulator.rs"]
mod simulator;
#[allow(dead_code)]
#[path = "../examples/ecoanp/source.rs"]
mod source;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use influx::{InfluxClient, InfluxError};
use simulator::{Simulator, SimulatorError};
use source::{Reading, TagSchema};

fn influx_url() -> String {
    std::env::var(influx::URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| influx::DEFAULT_URL.to_owned())
}

/// `2024-05-01T00:00:00Z`, the start of the simulated data in these tests.
fn t0() -> DateTime<Utc> {
    "2024-05-01T00:00:00Z".parse().unwrap()
}

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

/// Panics with a clear message unless an InfluxDB answers at `INFLUX_URL`.
fn require_influx(client: &InfluxClient) {
    if let Err(e) = client.ping() {
        panic!(
            "these tests need a running InfluxDB 1.x at {} (set INFLUX_URL, or start one \
             with `bash .ci/influxd.sh`): {e}",
            client.url()
        );
    }
}

/// A database of its own for one test, dropped when the test ends.
struct TestDb {
    client: InfluxClient,
}

impl TestDb {
    fn new(label: &str) -> Self {
        let name = unique_name(label);
        let client = InfluxClient::new(&influx_url(), &name)
            .unwrap_or_else(|e| panic!("bad INFLUX_URL: {e}"));
        require_influx(&client);
        client
            .create_database(&name)
            .unwrap_or_else(|e| panic!("cannot create the test database `{name}`: {e}"));
        Self { client }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a failing test must still report its own failure.
        let _ = self.client.drop_database(self.client.database());
    }
}

fn unique_name(label: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "dagrs_test_{label}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros()
    )
}

/// Writes two hours of the default simulator's data (from `t0`) into `db`.
fn seed_two_hours(db: &TestDb) -> (Simulator, Vec<Reading>) {
    let sim = Simulator::default();
    let rows = sim.readings(t0(), t0() + minutes(120));
    assert_eq!(rows.len(), 9 * 720);
    let written = db
        .client
        .write_readings(sim.tags(), &rows)
        .unwrap_or_else(|e| panic!("writing simulated readings failed: {e}"));
    assert_eq!(written, rows.len());
    (sim, rows)
}

// ---------------------------------------------------------------------------
// InfluxDB: schemas and readings
// ---------------------------------------------------------------------------

#[test]
fn written_simulator_points_come_back_as_the_simulators_tag_schemas() {
    let db = TestDb::new("schemas");
    let (sim, rows) = seed_two_hours(&db);
    // All of it came back, across the client's 5,000-point write batches.
    assert_eq!(db.client.readings(t0(), t0() + minutes(120)).unwrap(), rows);

    let schemas = db.client.tag_schemas().unwrap();
    assert_eq!(schemas, sim.tags());
    let names: Vec<&str> = schemas.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["D100", "D101", "D102", "D103", "D104", "D105", "D106", "D107", "D108"]
    );
    assert!(schemas
        .iter()
        .all(|t| t.unit == "V" && t.data_type == "float" && t.measurement == t.name));
    let ids: Vec<&str> = schemas.iter().map(|t| t.tag_id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
}

#[test]
fn schemas_without_tag_ids_are_numbered_in_natural_order_and_typed_by_their_value_field() {
    let db = TestDb::new("schema_fallbacks");
    db.client
        .write_lines(
            "S10,unit=A value=1.5,qc=1i 1714521600000000000\n\
             S9,unit=mA value=2i 1714521600000000000\n\
             S9,unit=uA value=3i 1714521610000000000\n\
             S11 value=4.5 1714521600000000000\n\
             notes text=\"not a sensor\" 1714521600000000000\n",
        )
        .unwrap();
    let schema = |name: &str, tag_id: &str, data_type: &str, unit: &str| TagSchema {
        name: name.to_owned(),
        tag_id: tag_id.to_owned(),
        data_type: data_type.to_owned(),
        unit: unit.to_owned(),
        measurement: name.to_owned(),
    };
    assert_eq!(
        db.client.tag_schemas().unwrap(),
        [
            // Two units in S9's series: the first in sorted order is reported.
            schema("S9", "1", "integer", "mA"),
            schema("S10", "2", "float", "A"),
            schema("S11", "3", "float", ""),
        ]
    );

    // Integer values read as f64; a missing qc reads as 1.
    let rows = db.client.readings(t0(), t0() + minutes(1)).unwrap();
    let got: Vec<(&str, f64, i32, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.tag_name.as_str(),
                r.value,
                r.qc,
                (r.ts - t0()).num_seconds(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("S9", 2.0, 1, 0),
            ("S10", 1.5, 1, 0),
            ("S11", 4.5, 1, 0),
            ("S9", 3.0, 1, 10)
        ]
    );
}

#[test]
fn readings_cover_exactly_the_half_open_window() {
    let db = TestDb::new("window");
    let (sim, all) = seed_two_hours(&db);

    let (start, end) = (t0() + minutes(10), t0() + minutes(40));
    let rows = db.client.readings(start, end).unwrap();
    let expected: Vec<Reading> = all
        .iter()
        .filter(|r| r.ts >= start && r.ts < end)
        .cloned()
        .collect();
    assert_eq!(expected.len(), 9 * 180);
    assert_eq!(rows, expected);
    assert_eq!(rows, sim.readings(start, end));
    // The point at `start` is in, the one at `end` is out.
    assert_eq!(rows.first().unwrap().ts, start);
    assert_eq!(rows.last().unwrap().ts, end - TimeDelta::seconds(10));
    assert!(rows.iter().all(|r| r.ts != end));
    // Both quality codes made the round trip.
    assert!(rows.iter().any(|r| r.qc == 0) && rows.iter().any(|r| r.qc == 1));

    // The same window through readings_for, naming every tag.
    assert_eq!(
        db.client.readings_for(sim.tags(), start, end).unwrap(),
        rows
    );

    // A window off the sampling grid starts at the next sample.
    let (start, end) = (
        t0() + minutes(10) + TimeDelta::seconds(3),
        t0() + minutes(20) + TimeDelta::seconds(3),
    );
    let rows = db.client.readings(start, end).unwrap();
    assert_eq!(rows.len(), 9 * 60);
    assert_eq!(rows[0].ts, t0() + minutes(10) + TimeDelta::seconds(10));
    assert_eq!(rows.last().unwrap().ts, t0() + minutes(20));
    assert_eq!(rows, sim.readings(start, end));

    // A nanosecond before a sample excludes it; the sample itself includes it.
    let sample = t0() + minutes(30);
    let just_before = db
        .client
        .readings(
            sample - TimeDelta::seconds(5),
            sample - TimeDelta::nanoseconds(1),
        )
        .unwrap();
    assert!(just_before.is_empty(), "{just_before:?}");
    let at = db
        .client
        .readings(sample, sample + TimeDelta::nanoseconds(1))
        .unwrap();
    assert_eq!(at.len(), 9);
    assert!(at.iter().all(|r| r.ts == sample));
}

#[test]
fn readings_for_returns_only_the_named_tags() {
    let db = TestDb::new("subset");
    let (sim, all) = seed_two_hours(&db);
    let chosen = &sim.tags()[2..4];
    let (start, end) = (t0() + minutes(5), t0() + minutes(15));
    let rows = db.client.readings_for(chosen, start, end).unwrap();
    let expected: Vec<Reading> = all
        .into_iter()
        .filter(|r| r.ts >= start && r.ts < end && (r.tag_name == "D102" || r.tag_name == "D103"))
        .collect();
    assert_eq!(expected.len(), 2 * 60);
    assert_eq!(rows, expected);
    assert!(db.client.readings_for(&[], start, end).unwrap().is_empty());
}

#[test]
fn empty_windows_and_empty_databases_give_no_rows() {
    let db = TestDb::new("empty");
    // A database without any points has neither tags nor readings.
    assert_eq!(db.client.tag_schemas().unwrap(), []);
    assert_eq!(db.client.readings(t0(), t0() + minutes(60)).unwrap(), []);

    seed_two_hours(&db);
    // Before the data (its end, t0, is excluded), after the data, and empty.
    for (start, end) in [
        (t0() - minutes(60), t0()),
        (t0() + minutes(120), t0() + minutes(180)),
        (t0() + minutes(30), t0() + minutes(30)),
    ] {
        let rows = db.client.readings(start, end).unwrap();
        assert!(rows.is_empty(), "[{start}, {end}) gave {} rows", rows.len());
    }

    let err = db
        .client
        .readings(t0() + minutes(30), t0() + minutes(10))
        .unwrap_err();
    assert!(matches!(err, InfluxError::InvalidWindow { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("start 2024-05-01 00:30:00 UTC is after end"),
        "{err}"
    );
}

#[test]
fn names_with_special_characters_are_quoted_and_escaped() {
    let db = TestDb::new("escaping");
    let odd = TagSchema {
        name: r#"we ird,"D"=1\x7 'q'"#.to_owned(),
        tag_id: "id with space,comma=eq".to_owned(),
        data_type: "float".to_owned(),
        unit: "k W,h=\"".to_owned(),
        measurement: r#"we ird,"D"=1\x7 'q'"#.to_owned(),
    };
    let plain = Simulator::new(1, Duration::from_secs(10)).unwrap();
    let rows: Vec<Reading> = plain
        .readings(t0(), t0() + minutes(1))
        .into_iter()
        .map(|r| Reading {
            tag_name: odd.name.clone(),
            ..r
        })
        .collect();
    assert_eq!(rows.len(), 6);
    let tags = [odd.clone(), plain.tags()[0].clone()];
    db.client.write_readings(&tags, &rows).unwrap();

    let schemas = db.client.tag_schemas().unwrap();
    assert_eq!(schemas, std::slice::from_ref(&odd));
    assert_eq!(
        db.client
            .readings_for(&schemas, t0(), t0() + minutes(1))
            .unwrap(),
        rows
    );
}

#[test]
fn databases_are_created_and_dropped() {
    let client = InfluxClient::new(&influx_url(), "unused").unwrap();
    require_influx(&client);
    let name = unique_name("create_drop");
    client.create_database(&name).unwrap();
    client.create_database(&name).unwrap(); // already exists: fine
    assert!(client.databases().unwrap().contains(&name));
    client.drop_database(&name).unwrap();
    assert!(!client.databases().unwrap().contains(&name));
    client.drop_database(&name).unwrap(); // already gone: fine

    let err = client.create_database("").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, InfluxError::Query { .. }), "{err:?}");
    assert!(message.contains("invalid name"), "{message}");
    assert!(message.contains(r#"CREATE DATABASE """#), "{message}");
}

// ---------------------------------------------------------------------------
// InfluxDB: errors
// ---------------------------------------------------------------------------

#[test]
fn a_missing_database_is_a_clear_error() {
    let name = unique_name("missing");
    let client = InfluxClient::new(&influx_url(), &name).unwrap();
    require_influx(&client);

    // Reported inside a 200 answer (results[i].error).
    for err in [
        client.tag_schemas().unwrap_err(),
        client.readings(t0(), t0() + minutes(1)).unwrap_err(),
    ] {
        let message = err.to_string();
        assert!(matches!(err, InfluxError::Query { .. }), "{err:?}");
        assert!(message.contains(&format!("database `{name}`")), "{message}");
        assert!(message.contains("database not found"), "{message}");
        assert!(message.contains("CREATE DATABASE"), "{message}");
        assert!(message.contains(&client.url()), "{message}");
    }

    // Reported as HTTP 404 by /write.
    let sim = Simulator::default();
    let err = client
        .write_readings(sim.tags(), &sim.readings(t0(), t0() + minutes(1)))
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, InfluxError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(message.contains("POST /write"), "{message}");
    assert!(message.contains("database not found"), "{message}");
    assert!(message.contains("create the database first"), "{message}");
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // A port nothing listens on: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = InfluxClient::new(
        &format!("http://alice:s3cr3t-pw@127.0.0.1:{port}"),
        "ecoanp",
    )
    .unwrap();
    let err = client.tag_schemas().unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, InfluxError::Unreachable { .. }), "{err:?}");
    assert!(
        message.contains(&format!("alice:***@127.0.0.1:{port}")),
        "{message}"
    );
    assert!(message.contains("is influxd running?"), "{message}");
    assert!(message.contains("INFLUX_URL"), "{message}");
    assert!(message.contains("database `ecoanp`"), "{message}");
    assert!(!message.contains("s3cr3t-pw"), "{message}");
    assert!(!format!("{err:?}").contains("s3cr3t-pw"), "{err:?}");
    assert!(matches!(
        client.ping(),
        Err(InfluxError::Unreachable { .. })
    ));
}

#[test]
fn the_password_is_masked_in_debug_and_in_server_errors() {
    let url = influx_url();
    let with_password = url.replacen("://", "://alice:s3cr3t-pw@", 1);
    let client = InfluxClient::new(&with_password, unique_name("masked")).unwrap();
    require_influx(&client);

    let debug = format!("{client:?}");
    assert!(!debug.contains("s3cr3t-pw"), "{debug}");
    assert!(debug.contains("alice:***@"), "{debug}");

    // The database does not exist: the server's error names the URL.
    let err = client.tag_schemas().unwrap_err();
    let (message, debug) = (err.to_string(), format!("{err:?}"));
    assert!(message.contains("alice:***@"), "{message}");
    assert!(!message.contains("s3cr3t-pw"), "{message}");
    assert!(!debug.contains("s3cr3t-pw"), "{debug}");

    let client = client.with_credentials("bob", "an0ther-pw");
    let err = client.readings(t0(), t0() + minutes(1)).unwrap_err();
    assert!(err.to_string().contains("bob:***@"), "{err}");
    assert!(!err.to_string().contains("an0ther-pw"), "{err}");
    assert!(!format!("{client:?}").contains("an0ther-pw"));
}

/// Serves one canned HTTP response on a loopback port; returns the URL and
/// a handle yielding the request it received.
fn one_shot_server(response: String) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let request = read_request(&mut stream);
        stream.write_all(response.as_bytes()).unwrap();
        stream.flush().unwrap();
        request
    });
    (url, handle)
}

/// Reads one HTTP request (headers and a Content-Length body).
fn read_request(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if data.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn http_error_statuses_report_the_servers_message_and_a_hint() {
    let (url, server) = one_shot_server(http_response(
        "401 Unauthorized",
        "application/json",
        r#"{"error":"authorization failed"}"#,
    ));
    let url = url.replacen("://", "://alice:s3cr3t-pw@", 1);
    let client = InfluxClient::new(&url, "ecoanp").unwrap();
    let err = client.tag_schemas().unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, InfluxError::Http { status: 401, message, .. } if message == "authorization failed"),
        "{err:?}"
    );
    assert!(
        message.contains("check the username and password"),
        "{message}"
    );
    assert!(message.contains("SHOW MEASUREMENTS"), "{message}");
    assert!(message.contains("alice:***@"), "{message}");
    assert!(!message.contains("s3cr3t-pw"), "{message}");

    // The credentials travel as HTTP Basic auth, the query in the body.
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /query HTTP/1.1\r\n"), "{request}");
    // base64("alice:s3cr3t-pw")
    assert!(
        request.contains("Basic YWxpY2U6czNjcjN0LXB3"),
        "no Basic credentials in:\n{request}"
    );
    assert!(request.contains("q=SHOW+MEASUREMENTS"), "{request}");
    assert!(request.contains("db=ecoanp"), "{request}");
    assert!(!request.contains("s3cr3t-pw"), "{request}");
}

#[test]
fn a_non_influx_answer_is_an_invalid_response() {
    let (url, server) = one_shot_server(http_response(
        "200 OK",
        "text/html",
        "<html>not influx</html>",
    ));
    let client = InfluxClient::new(&url, "ecoanp").unwrap();
    let err = client.readings(t0(), t0() + minutes(1)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, InfluxError::InvalidResponse { .. }),
        "{err:?}"
    );
    assert!(message.contains("bad JSON"), "{message}");
    assert!(
        message.contains(r#"SELECT "value", "qc" FROM /.*/ WHERE time >= '2024-05-01T00:00:00.000000000Z' AND time < '2024-05-01T00:01:00.000000000Z'"#),
        "{message}"
    );
    server.join().unwrap();

    let (url, server) = one_shot_server(http_response(
        "502 Bad Gateway",
        "text/plain",
        "upstream down",
    ));
    let client = InfluxClient::new(&url, "ecoanp").unwrap();
    let err = client.ping().unwrap_err();
    assert!(
        matches!(&err, InfluxError::Http { status: 502, message, .. } if message == "upstream down"),
        "{err:?}"
    );
    assert!(err.to_string().contains("see influxd's log"), "{err}");
    server.join().unwrap();
}

// ---------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------

#[test]
fn the_default_simulator_has_nine_voltage_tags() {
    let sim = Simulator::default();
    assert_eq!(sim.interval(), Duration::from_secs(10));
    assert_eq!(sim.seed(), 0);
    let tags = sim.tags();
    assert_eq!(tags.len(), 9);
    for (i, tag) in tags.iter().enumerate() {
        assert_eq!(tag.name, format!("D{}", 100 + i));
        assert_eq!(tag.tag_id, (i + 1).to_string());
        assert_eq!((tag.unit.as_str(), tag.data_type.as_str()), ("V", "float"));
        assert_eq!(tag.measurement, tag.name);
    }
    assert_eq!(
        Simulator::new(3, Duration::from_secs(1))
            .unwrap()
            .tags()
            .len(),
        3
    );
}

#[test]
fn the_simulator_is_deterministic() {
    let (start, end) = (t0(), t0() + minutes(60));
    let a = Simulator::default().readings(start, end);
    let b = Simulator::default().readings(start, end);
    assert_eq!(a.len(), 9 * 360);
    assert_eq!(a, b);
    // A sub-window yields the same rows as the matching slice of a wider one.
    let part = Simulator::default().readings(t0() + minutes(20), t0() + minutes(21));
    assert_eq!(part, a[9 * 120..9 * 126]);
    // Splitting a window at any instant loses and duplicates nothing.
    let mid = t0() + minutes(7) + TimeDelta::milliseconds(2_500);
    let mut joined = Simulator::default().readings(start, mid);
    joined.extend(Simulator::default().readings(mid, end));
    assert_eq!(joined, a);
    // Another seed gives other values.
    let other = Simulator::default().with_seed(7).readings(start, end);
    assert_eq!(other.len(), a.len());
    assert_ne!(other, a);
}

#[test]
fn simulated_samples_are_aligned_to_the_interval() {
    let sim = Simulator::default();
    let start = t0() + TimeDelta::seconds(3);
    let rows = sim.readings(start, start + TimeDelta::seconds(60));
    // 00:00:10 … 00:01:00: six instants of nine tags each.
    assert_eq!(rows.len(), 6 * 9);
    assert_eq!(rows[0].ts, t0() + TimeDelta::seconds(10));
    assert_eq!(rows.last().unwrap().ts, t0() + TimeDelta::seconds(60));
    assert!(rows
        .iter()
        .all(|r| r.ts.timestamp() % 10 == 0 && r.ts.timestamp_subsec_nanos() == 0));
    // Rows are ordered by time, then tag.
    let order: Vec<&str> = rows[..9].iter().map(|r| r.tag_name.as_str()).collect();
    assert_eq!(
        order,
        ["D100", "D101", "D102", "D103", "D104", "D105", "D106", "D107", "D108"]
    );
    assert!(rows.windows(2).all(|w| w[0].ts <= w[1].ts));

    // Sub-second intervals and instants before the epoch work too.
    let fast = Simulator::new(2, Duration::from_millis(250)).unwrap();
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let rows = fast.readings(
        epoch - TimeDelta::milliseconds(600),
        epoch + TimeDelta::milliseconds(300),
    );
    let offsets: Vec<i64> = rows
        .iter()
        .step_by(2)
        .map(|r| (r.ts - epoch).num_milliseconds())
        .collect();
    assert_eq!(offsets, [-500, -250, 0, 250]);
    assert_eq!(rows.len(), 4 * 2);
}

#[test]
fn simulated_counts_match_tags_times_window_over_interval() {
    for (tags, interval_s, window_s) in [(9, 10, 3_600), (4, 60, 86_400), (1, 1, 90), (0, 10, 600)]
    {
        let sim = Simulator::new(tags, Duration::from_secs(interval_s)).unwrap();
        let rows = sim.readings(t0(), t0() + TimeDelta::seconds(window_s as i64));
        assert_eq!(
            rows.len(),
            tags * (window_s / interval_s) as usize,
            "{tags} tags every {interval_s} s over {window_s} s"
        );
    }
    let sim = Simulator::default();
    assert!(sim.readings(t0(), t0()).is_empty());
    assert!(sim.readings(t0() + minutes(1), t0()).is_empty());
}

#[test]
fn simulated_values_vary_plausibly_and_about_one_percent_are_bad() {
    let rows = Simulator::default().readings(t0(), t0() + minutes(60));
    assert!(
        rows.iter().all(|r| (200.0..260.0).contains(&r.value)),
        "out of range"
    );
    assert!(rows.iter().all(|r| r.qc == 0 || r.qc == 1));
    let bad = rows.iter().filter(|r| r.qc == 0).count();
    assert!(
        bad > 0 && bad < rows.len() / 20,
        "{bad} bad samples of {}",
        rows.len()
    );
    // Each tag's values change over time, and tags differ from each other.
    let of = |tag: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.tag_name == tag)
            .map(|r| r.value)
            .collect()
    };
    let (d100, d101) = (of("D100"), of("D101"));
    assert_eq!(d100.len(), 360);
    assert!(d100.windows(2).any(|w| w[0] != w[1]));
    assert_ne!(d100, d101);
    // Values carry at most four decimals.
    assert!(rows
        .iter()
        .all(|r| ((r.value * 1e4).round() / 1e4) == r.value));
}

#[test]
fn a_zero_or_huge_interval_is_rejected() {
    assert_eq!(
        Simulator::new(9, Duration::ZERO).unwrap_err(),
        SimulatorError::ZeroInterval
    );
    let huge = Duration::from_secs(u64::MAX / 2);
    assert_eq!(
        Simulator::new(9, huge).unwrap_err(),
        SimulatorError::IntervalTooLong(huge)
    );
    assert!(SimulatorError::ZeroInterval
        .to_string()
        .contains("must be positive"));
}
