//! The EcoAnP sources: the InfluxDB source against a real influxd, and the simulator.
//!
//! The InfluxDB tests need an InfluxDB 1.x (or the v1 API of 2.x/3.x) at `INFLUX_URL`
//! (default `http://127.0.0.1:8086`) with authentication off: `bash .ci/influxd.sh` starts
//! one. They fail — never pass silently — when it cannot be reached. Each test works in a
//! database of its own, dropped at the end.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ecoanp::{Influx, Reading, Simulator, TagSchema};
use influxdb::{Timestamp, WriteQuery};

fn influx_url() -> String {
    std::env::var("INFLUX_URL").unwrap_or_else(|_| "http://127.0.0.1:8086".to_owned())
}

/// `2024-05-01T00:00:00Z`, the start of the simulated data in these tests.
fn t0() -> DateTime<Utc> {
    "2024-05-01T00:00:00Z".parse().unwrap()
}

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

fn unique_name(label: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("dagrs_test_{label}_{}_{n}", std::process::id())
}

/// A database of its own for one test, dropped when the test ends, pass or fail.
struct TestDb(Influx);

impl TestDb {
    /// A client of a new, unique database that does not exist yet; panics with a clear
    /// message unless an InfluxDB answers at `INFLUX_URL`.
    async fn reserve(label: &str) -> Self {
        let db = Influx::new(&influx_url(), &unique_name(label)).unwrap();
        if let Err(e) = db.databases().await {
            panic!("these tests need a running InfluxDB (`bash .ci/influxd.sh` starts one): {e}");
        }
        TestDb(db)
    }

    /// Like [`TestDb::reserve`], with the database created.
    async fn create(label: &str) -> Self {
        let db = Self::reserve(label).await;
        db.0.create_database().await.unwrap();
        db
    }

    /// Writes the default simulator's two hours from `t0`.
    async fn seed_two_hours(&self) -> (Simulator, Vec<Reading>) {
        let sim = Simulator::default();
        let rows = sim.readings(t0(), t0() + minutes(120));
        assert_eq!(rows.len(), 9 * 720);
        let written = self.0.write(sim.tags(), &rows).await.unwrap();
        assert_eq!(written, rows.len());
        (sim, rows)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is not async: drop the database from a thread with a runtime of its own, and a
        // client of its own (a clone would wait on connections of the test's blocked runtime).
        let db = Influx::new(&influx_url(), self.0.database()).unwrap();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(db.drop_database())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the InfluxDB test database {}",
                self.0.database()
            );
        }
    }
}

#[tokio::test]
async fn written_simulator_points_come_back_as_its_tag_schemas_and_readings() {
    let db = TestDb::create("round_trip").await;
    let (sim, rows) = db.seed_two_hours().await;
    // All of it, across the 5,000-point write batches, timestamps to the nanosecond.
    assert_eq!(
        db.0.readings(t0(), t0() + minutes(120)).await.unwrap(),
        rows
    );
    let schemas = db.0.tag_schemas().await.unwrap();
    assert_eq!(schemas, sim.tags());
    let names: Vec<&str> = schemas.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["D100", "D101", "D102", "D103", "D104", "D105", "D106", "D107", "D108"]
    );
}

#[tokio::test]
async fn schemas_without_tag_ids_are_numbered_in_natural_order_and_typed_by_their_value() {
    let db = TestDb::create("schema_fallbacks").await;
    let at = |seconds: u128| Timestamp::Nanoseconds((1_714_521_600 + seconds) * 1_000_000_000);
    let points = vec![
        WriteQuery::new(at(0), "S10")
            .add_tag("unit", "A")
            .add_field("value", 1.5)
            .add_field("qc", 1),
        WriteQuery::new(at(0), "S9")
            .add_tag("unit", "mA")
            .add_field("value", 2),
        WriteQuery::new(at(10), "S9")
            .add_tag("unit", "uA")
            .add_field("value", 3),
        WriteQuery::new(at(0), "S11").add_field("value", 4.5),
        WriteQuery::new(at(0), "notes").add_field("text", "not a sensor"),
    ];
    let client = influxdb::Client::new(influx_url(), db.0.database());
    client.query(points).await.unwrap();

    let schema = |name: &str, tag_id: &str, data_type: &str, unit: &str| TagSchema {
        name: name.to_owned(),
        tag_id: tag_id.to_owned(),
        data_type: data_type.to_owned(),
        unit: unit.to_owned(),
    };
    assert_eq!(
        db.0.tag_schemas().await.unwrap(),
        [
            // Two units in S9's series: the least is reported.
            schema("S9", "1", "integer", "mA"),
            schema("S10", "2", "float", "A"),
            schema("S11", "3", "float", ""),
        ]
    );
    // Integer values read as f64; a missing qc reads as 1; `notes` has no value.
    let rows = db.0.readings(t0(), t0() + minutes(1)).await.unwrap();
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

#[tokio::test]
async fn readings_cover_exactly_the_half_open_window() {
    let db = TestDb::create("window").await;
    let (sim, all) = db.seed_two_hours().await;

    let (start, end) = (t0() + minutes(10), t0() + minutes(40));
    let rows = db.0.readings(start, end).await.unwrap();
    let expected: Vec<Reading> = (all.iter())
        .filter(|r| r.ts >= start && r.ts < end)
        .cloned()
        .collect();
    assert_eq!(expected.len(), 9 * 180);
    assert_eq!(rows, expected);
    assert_eq!(rows.first().unwrap().ts, start, "the start is in");
    assert_eq!(
        rows.last().unwrap().ts,
        end - TimeDelta::seconds(10),
        "the end is out"
    );
    assert!(rows.iter().any(|r| r.qc == 0) && rows.iter().any(|r| r.qc == 1));

    // Off the sampling grid, and a nanosecond around a sample.
    let off = t0() + minutes(10) + TimeDelta::seconds(3);
    let rows = db.0.readings(off, off + minutes(10)).await.unwrap();
    assert_eq!(rows, sim.readings(off, off + minutes(10)));
    assert_eq!(rows.len(), 9 * 60);
    let sample = t0() + minutes(30);
    let nano = TimeDelta::nanoseconds(1);
    assert_eq!(
        db.0.readings(sample - minutes(1) + nano, sample)
            .await
            .unwrap()
            .len(),
        9 * 5
    );
    assert_eq!(db.0.readings(sample, sample + nano).await.unwrap().len(), 9);

    // Before the data (its end, t0, is excluded), after it, and empty.
    for (start, end) in [
        (t0() - minutes(60), t0()),
        (t0() + minutes(120), t0() + minutes(180)),
        (t0() + minutes(30), t0() + minutes(30)),
    ] {
        let rows = db.0.readings(start, end).await.unwrap();
        assert!(rows.is_empty(), "[{start}, {end}) gave {} rows", rows.len());
    }
}

#[tokio::test]
async fn a_missing_database_is_seeded_once_from_the_simulator() {
    let db = TestDb::reserve("seed").await;
    let end = t0() + minutes(120);
    assert_eq!(db.0.seed_if_missing(end).await.unwrap(), Some(9 * 720));
    assert!(db
        .0
        .databases()
        .await
        .unwrap()
        .iter()
        .any(|d| d == db.0.database()));
    assert_eq!(
        db.0.seed_if_missing(end).await.unwrap(),
        None,
        "it exists now"
    );

    let sim = Simulator::default();
    assert_eq!(db.0.tag_schemas().await.unwrap(), sim.tags());
    let last_hour = db.0.readings(end - minutes(60), end).await.unwrap();
    assert_eq!(last_hour, sim.readings(end - minutes(60), end));
}

#[tokio::test]
async fn a_missing_database_is_a_clear_error() {
    let db = TestDb::reserve("missing").await;
    let name = db.0.database();
    for (err, what) in [
        (
            db.0.tag_schemas().await.unwrap_err(),
            "read the tag schemas",
        ),
        (
            db.0.readings(t0(), t0() + minutes(1)).await.unwrap_err(),
            "read the readings",
        ),
    ] {
        let message = err.to_string();
        let expected = format!(
            "cannot {what} from InfluxDB at {} (database `{name}`): database not found: {name}",
            influx_url()
        );
        assert_eq!(message, expected);
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // A port nothing listens on: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = Influx::new(
        &format!("http://alice:s3cr3t-pw@127.0.0.1:{port}"),
        "ecoanp",
    )
    .unwrap();
    assert_eq!(db.url(), format!("http://alice:***@127.0.0.1:{port}"));
    for err in [
        db.tag_schemas().await.unwrap_err(),
        db.readings(t0(), t0() + minutes(1)).await.unwrap_err(),
        db.seed_if_missing(t0()).await.unwrap_err(),
    ] {
        let (message, debug) = (err.to_string(), format!("{err:?}"));
        let server = format!("cannot reach InfluxDB at http://alice:***@127.0.0.1:{port}");
        assert!(
            message.starts_with(&format!("{server} (database `ecoanp`)")),
            "{message}"
        );
        assert!(message.contains("is influxd running?"), "{message}");
        assert!(
            !message.contains("s3cr3t-pw") && !debug.contains("s3cr3t-pw"),
            "{debug}"
        );
    }

    let err = Influx::new("https://bob:an0ther-pw@influx.example:8086", "x")
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "cannot use InfluxDB at https://bob:***@influx.example:8086 (database `x`): only \
         http:// is supported (no TLS)"
    );
}

#[tokio::test]
async fn credentials_in_the_url_travel_as_basic_auth_never_in_the_request() {
    // A one-request server that answers `SHOW DATABASES` and hands back what it received.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            stream.read_exact(&mut byte).unwrap();
            request.push(byte[0]);
        }
        let series = r#"{"name":"databases","columns":["name"],"values":[["ecoanp"]]}"#;
        let body = format!(r#"{{"results":[{{"statement_id":0,"series":[{series}]}}]}}"#);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close";
        let response = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(response.as_bytes()).unwrap();
        String::from_utf8(request).unwrap()
    });
    let db = Influx::new(
        &format!("http://alice:s3cr3t-pw@127.0.0.1:{port}"),
        "ecoanp",
    )
    .unwrap();
    assert_eq!(db.databases().await.unwrap(), ["ecoanp"]);
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /query?"), "{request}");
    // base64("alice:s3cr3t-pw")
    assert!(
        request.contains("authorization: Basic YWxpY2U6czNjcjN0LXB3"),
        "{request}"
    );
    assert!(!request.contains("s3cr3t-pw"), "{request}");
}

#[test]
fn the_default_simulator_has_nine_voltage_tags() {
    let sim = Simulator::default();
    for (i, tag) in sim.tags().iter().enumerate() {
        assert_eq!(tag.name, format!("D{}", 100 + i));
        assert_eq!(tag.tag_id, (i + 1).to_string());
        assert_eq!((tag.unit.as_str(), tag.data_type.as_str()), ("V", "float"));
    }
    assert_eq!(sim.tags().len(), 9);
    assert_eq!(sim.readings(t0(), t0() + minutes(60)).len(), 9 * 360);
    assert!(Simulator::new(9, Duration::ZERO).is_err());
}

#[test]
fn the_simulator_is_deterministic_and_aligned_to_its_interval() {
    let (start, end) = (t0(), t0() + minutes(60));
    let a = Simulator::default().readings(start, end);
    assert_eq!(a, Simulator::default().readings(start, end));
    // Splitting a window at any instant loses and duplicates nothing.
    let mid = t0() + minutes(7) + TimeDelta::milliseconds(2_500);
    let mut joined = Simulator::default().readings(start, mid);
    joined.extend(Simulator::default().readings(mid, end));
    assert_eq!(joined, a);
    // Instants are multiples of the interval, ordered by time, then tag.
    assert!((a.iter()).all(|r| r.ts.timestamp() % 10 == 0 && r.ts.timestamp_subsec_nanos() == 0));
    assert!(a.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert_eq!(a[0].tag_name, "D100");
    assert_eq!(a[8].tag_name, "D108");
    // Sub-second intervals and instants before the epoch work too.
    let fast = Simulator::new(2, Duration::from_millis(250)).unwrap();
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let rows = fast.readings(
        epoch - TimeDelta::milliseconds(600),
        epoch + TimeDelta::milliseconds(300),
    );
    let offsets: Vec<i64> = (rows.iter().step_by(2))
        .map(|r| (r.ts - epoch).num_milliseconds())
        .collect();
    assert_eq!(offsets, [-500, -250, 0, 250]);
}

#[test]
fn simulated_values_vary_plausibly_and_about_one_percent_are_bad() {
    let rows = Simulator::default().readings(t0(), t0() + minutes(60));
    assert!(rows.iter().all(|r| (200.0..260.0).contains(&r.value)));
    let bad = rows.iter().filter(|r| r.qc == 0).count();
    assert!(
        bad > 0 && bad < rows.len() / 20,
        "{bad} bad of {}",
        rows.len()
    );
    let of = |tag: &str| -> Vec<f64> {
        (rows.iter())
            .filter(|r| r.tag_name == tag)
            .map(|r| r.value)
            .collect()
    };
    assert!(of("D100").windows(2).any(|w| w[0] != w[1]));
    assert_ne!(of("D100"), of("D101"));
    assert!(rows
        .iter()
        .all(|r| ((r.value * 1e4).round() / 1e4) == r.value));
}
