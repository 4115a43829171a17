//! The EcoAnP InfluxDB source: a small, blocking client for the InfluxDB 1.x
//! HTTP API — `/query` (InfluxQL) and `/write` (line protocol) — which
//! InfluxDB 2.x and 3.x also serve as their "v1 compatibility" API.
//!
//! # Data model
//!
//! One database (e.g. `ecoanp`) holds one **measurement per sensor tag**,
//! named like the tag (`D100`, `D101`, …). Each point has
//!
//! | part  | name     | type    | meaning                                           |
//! |-------|----------|---------|---------------------------------------------------|
//! | field | `value`  | float   | the reading ([`Reading::value`])                  |
//! | field | `qc`     | integer | quality code ([`Reading::qc`]); `1` when missing  |
//! | tag   | `unit`   | string  | the unit, e.g. `V` ([`TagSchema::unit`])          |
//! | tag   | `tag_id` | string  | optional stable id ([`TagSchema::tag_id`])        |
//!
//! for example `D100,tag_id=1,unit=V value=221.4373,qc=1i 1714521600000000000`.
//!
//! [`InfluxClient::tag_schemas`] discovers the tags with one request carrying
//! three statements — `SHOW MEASUREMENTS`, `SHOW FIELD KEYS` and
//! `SHOW TAG VALUES WITH KEY IN ("unit", "tag_id")`: every measurement that
//! has a `value` field is a tag; its data type is the type InfluxDB reports
//! for `value` (`float`, `integer`, …); its unit is its `unit` tag value (the
//! first in sorted order if its series disagree, empty if it has none); its id
//! is its `tag_id` tag value if it has one, else its 1-based position among
//! the tags in natural order (`D99` before `D100`), which is stable as long as
//! the set of measurements does not change.
//!
//! [`InfluxClient::readings`] reads a half-open window `[start, end)` of all
//! measurements with **one** query,
//! `SELECT "value", "qc" FROM /.*/ WHERE time >= '<start>' AND time < '<end>'`
//! (RFC 3339 with nanoseconds; [`InfluxClient::readings_for`] names the
//! measurements instead of `/.*/`). One query rather than one per measurement
//! keeps it to a single round trip whatever the number of tags; the answer is
//! requested with `chunked=true` and `epoch=ns` and parsed as a stream of JSON
//! chunks, so neither a server row limit nor a response size limit truncates
//! a long window, and timestamps keep their nanoseconds. Rows are returned
//! ordered by timestamp, then tag (natural order), like the simulator's.
//!
//! # Blocking, errors, secrets
//!
//! Every method that talks to the server **blocks** the calling thread (it
//! uses `ureq`): call it from a blocking asset or through
//! `tokio::task::spawn_blocking`, never directly on an async runtime thread.
//! The client is cheap to clone and `Send + Sync`.
//!
//! InfluxDB reports errors both as HTTP 4xx/5xx with a JSON `error` body and
//! inside a 200 answer (`results[i].error`); both become an [`InfluxError`]
//! whose message says what failed, where (the URL with the password masked,
//! the database, the query) and what to do about it.
//!
//! Credentials come from the URL's userinfo (`http://user:password@host:8086`)
//! or [`InfluxClient::with_credentials`] and are sent as HTTP Basic
//! authentication (never in a URL). The password never appears in
//! [`Debug`](std::fmt::Debug) output or in an error: it is shown as `***`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{BufReader, Read};
use std::time::Duration;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::source::{natural_cmp, sort_readings, Reading, TagSchema};

/// The URL used when none is given: a local InfluxDB on its default port.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8086";

/// The environment variable [`InfluxClient::from_env`] reads the URL from.
pub const URL_ENV: &str = "INFLUX_URL";

/// The field holding a reading's value.
pub const VALUE_FIELD: &str = "value";

/// The field holding a reading's quality code.
pub const QC_FIELD: &str = "qc";

/// The tag holding a sensor tag's unit.
pub const UNIT_TAG: &str = "unit";

/// The (optional) tag holding a sensor tag's stable id.
pub const TAG_ID_TAG: &str = "tag_id";

/// The quality code of a reading stored without a `qc` field.
pub const DEFAULT_QC: i32 = 1;

/// The default time limit of one HTTP request (connect, send and receive).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How many points one `/write` request carries at most.
const WRITE_BATCH_LINES: usize = 5_000;

/// How much of an error body is read and quoted.
const MAX_ERROR_BODY: u64 = 64 * 1024;
const MAX_QUOTED_ERROR: usize = 500;

/// Everything that can go wrong talking to InfluxDB. Every message names the
/// server by its URL with the password masked (`user:***@`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InfluxError {
    /// The URL could not be used.
    #[error(
        "invalid InfluxDB URL `{url}`: {reason}; expected \
         http://[user[:password]@]host[:port][/path], e.g. {DEFAULT_URL} (set {URL_ENV})"
    )]
    InvalidUrl {
        /// The URL as given, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No HTTP answer: connection refused, unknown host, timeout, …
    #[error(
        "cannot reach InfluxDB at {url} ({request}{}): {reason}; is influxd running? \
         start it (e.g. `bash .ci/influxd.sh`) or set {URL_ENV} to the URL of a running \
         InfluxDB 1.x (or the v1 API of 2.x/3.x)",
        db_note(.database)
    )]
    Unreachable {
        /// The server's URL, password masked.
        url: String,
        /// The request that failed, e.g. `POST /query`.
        request: String,
        /// The database concerned, if any.
        database: Option<String>,
        /// Why the request failed.
        reason: String,
    },
    /// The server answered with an HTTP error status.
    #[error(
        "InfluxDB at {url} answered HTTP {status} to {request}{}{}: {message}; {}",
        db_note(.database),
        query_note(.query),
        http_hint(*.status, .message)
    )]
    Http {
        /// The server's URL, password masked.
        url: String,
        /// The request, e.g. `POST /write`.
        request: String,
        /// The database concerned, if any.
        database: Option<String>,
        /// The InfluxQL query sent, if any.
        query: Option<String>,
        /// The HTTP status code.
        status: u16,
        /// The server's error message (its JSON `error`, or the body's start).
        message: String,
    },
    /// The server answered 200 but reported that a statement failed
    /// (`results[i].error`, or a top-level `error`).
    #[error(
        "InfluxDB at {url} rejected the query `{query}`{}: {message}; {}",
        db_note(.database),
        query_hint(.message)
    )]
    Query {
        /// The server's URL, password masked.
        url: String,
        /// The database concerned, if any.
        database: Option<String>,
        /// The InfluxQL query sent.
        query: String,
        /// The server's error message.
        message: String,
    },
    /// The server's answer could not be understood.
    #[error(
        "InfluxDB at {url} sent an unexpected answer to {request}{}{}: {reason}; is {url} \
         the HTTP API of InfluxDB 1.x (or the v1-compatible API of 2.x/3.x)?",
        db_note(.database),
        query_note(.query)
    )]
    InvalidResponse {
        /// The server's URL, password masked.
        url: String,
        /// The request, e.g. `POST /query`.
        request: String,
        /// The database concerned, if any.
        database: Option<String>,
        /// The InfluxQL query sent, if any.
        query: Option<String>,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The time window's start lies after its end.
    #[error(
        "invalid time window: start {start} is after end {end}; a window is the \
         half-open range [start, end) with start <= end"
    )]
    InvalidWindow {
        /// The window's start.
        start: DateTime<Utc>,
        /// The window's end.
        end: DateTime<Utc>,
    },
    /// A reading cannot be written as line protocol.
    #[error("cannot write {what} to InfluxDB: {reason}")]
    InvalidPoint {
        /// The reading (or name) concerned.
        what: String,
        /// Why it cannot be written, and what to do.
        reason: String,
    },
}

fn db_note(database: &Option<String>) -> String {
    match database {
        Some(db) => format!(" on database `{db}`"),
        None => String::new(),
    }
}

fn query_note(query: &Option<String>) -> String {
    match query {
        Some(q) => format!(" for the query `{q}`"),
        None => String::new(),
    }
}

fn http_hint(status: u16, message: &str) -> &'static str {
    match status {
        401 | 403 => {
            "check the username and password (the userinfo of the URL in INFLUX_URL, \
             or InfluxClient::with_credentials)"
        }
        404 if message.contains("database not found") => {
            "create the database first (`CREATE DATABASE`, InfluxClient::create_database) \
             or use the name of an existing one"
        }
        404 => "is the URL the HTTP API of InfluxDB 1.x (or the v1-compatible API of 2.x/3.x)?",
        400 => "the request was rejected as malformed: check the InfluxQL query or line protocol",
        413 => "the request is too large: write fewer points per request",
        500..=599 => "the server failed: see influxd's log",
        _ => "see the server's message",
    }
}

fn query_hint(message: &str) -> &'static str {
    if message.contains("database not found") {
        "create the database first (`CREATE DATABASE`, InfluxClient::create_database) or \
         use the name of an existing one"
    } else if message.contains("authoriz") || message.contains("authenticat") {
        "check the user's credentials and privileges on this database"
    } else {
        "check the InfluxQL statement"
    }
}

/// A blocking client of one InfluxDB database over the 1.x HTTP API.
///
/// Cheap to clone; the clones share a connection pool.
#[derive(Clone)]
pub struct InfluxClient {
    /// `http://host[:port][/path]`, without userinfo or trailing slash.
    base_url: String,
    database: String,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    agent: ureq::Agent,
}

// The client and its errors can cross threads (`spawn_blocking`, `anyhow`).
const _: () = {
    const fn thread_safe<T: Send + Sync + 'static>() {}
    thread_safe::<InfluxClient>();
    thread_safe::<InfluxError>();
};

impl fmt::Debug for InfluxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxClient")
            .field("url", &self.url())
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl InfluxClient {
    /// A client of `database` on the server at `url`
    /// (`http://[user[:password]@]host[:port][/path]`; percent-escapes in
    /// the userinfo are decoded). Nothing is sent yet. Fails when the URL
    /// cannot be used — `https` is not supported (this client is built
    /// without TLS; use a local InfluxDB or a TLS-terminating proxy).
    pub fn new(url: &str, database: impl Into<String>) -> Result<Self, InfluxError> {
        let parsed = parse_url(url)?;
        Ok(Self {
            base_url: parsed.base,
            database: database.into(),
            username: parsed.username,
            password: parsed.password,
            timeout: DEFAULT_TIMEOUT,
            agent: make_agent(DEFAULT_TIMEOUT),
        })
    }

    /// A client of `database` on the server named by the `INFLUX_URL`
    /// environment variable, or [`DEFAULT_URL`] when it is unset or empty.
    pub fn from_env(database: impl Into<String>) -> Result<Self, InfluxError> {
        let url = std::env::var(URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        Self::new(&url, database)
    }

    /// The same client authenticating as `username` with `password`
    /// (replacing any credentials from the URL).
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// The same client with another time limit per HTTP request
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.agent = make_agent(timeout);
        self
    }

    /// The server's URL as shown in messages: with the password masked
    /// (`http://user:***@host:8086`).
    pub fn url(&self) -> String {
        match (&self.username, &self.password) {
            (Some(user), password) => {
                let rest = self
                    .base_url
                    .strip_prefix("http://")
                    .unwrap_or(&self.base_url);
                let secret = if password.is_some() { ":***" } else { "" };
                format!("http://{user}{secret}@{rest}")
            }
            (None, _) => self.base_url.clone(),
        }
    }

    /// The database this client reads and writes.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Checks that the server answers `GET /ping`; returns its version
    /// (the `X-Influxdb-Version` header, empty if absent). Blocks.
    pub fn ping(&self) -> Result<String, InfluxError> {
        let request = "GET /ping";
        let response = self
            .authorized(self.agent.get(format!("{}/ping", self.base_url)))
            .call()
            .map_err(|e| self.unreachable(request, None, &e))?;
        let status = response.status().as_u16();
        let version = response
            .headers()
            .get("X-Influxdb-Version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !(200..300).contains(&status) {
            let message = error_message(response.into_body());
            return Err(InfluxError::Http {
                url: self.url(),
                request: request.to_owned(),
                database: None,
                query: None,
                status,
                message,
            });
        }
        Ok(version)
    }

    /// Creates the database `name` (`CREATE DATABASE`; succeeds if it
    /// already exists). Blocks.
    pub fn create_database(&self, name: &str) -> Result<(), InfluxError> {
        self.query(&format!("CREATE DATABASE {}", quote_ident(name)), None)
            .map(drop)
    }

    /// Drops the database `name` and all its data (`DROP DATABASE`;
    /// succeeds if it does not exist). Blocks.
    pub fn drop_database(&self, name: &str) -> Result<(), InfluxError> {
        self.query(&format!("DROP DATABASE {}", quote_ident(name)), None)
            .map(drop)
    }

    /// The names of the server's databases (`SHOW DATABASES`). Blocks.
    pub fn databases(&self) -> Result<Vec<String>, InfluxError> {
        let query = "SHOW DATABASES";
        let results = self.query(query, None)?;
        let mut names = Vec::new();
        for series in results.first().into_iter().flatten() {
            let col = self.column(series, "name", query)?;
            for row in &series.values {
                names.push(self.string_at(row, col, query)?);
            }
        }
        Ok(names)
    }

    /// The schemas of the database's sensor tags, in natural order of their
    /// names (see the module documentation for how they are derived). An
    /// existing but empty database has none. Blocks.
    pub fn tag_schemas(&self) -> Result<Vec<TagSchema>, InfluxError> {
        let query = format!(
            "SHOW MEASUREMENTS; SHOW FIELD KEYS; SHOW TAG VALUES WITH KEY IN ({}, {})",
            quote_ident(UNIT_TAG),
            quote_ident(TAG_ID_TAG)
        );
        let db = Some(self.database.as_str());
        let results = self.query(&query, db)?;
        let statement = |i: usize| results.get(i).map(Vec::as_slice).unwrap_or_default();

        let mut measurements = Vec::new();
        for series in statement(0) {
            let col = self.column(series, "name", &query)?;
            for row in &series.values {
                measurements.push(self.string_at(row, col, &query)?);
            }
        }

        let mut value_types: HashMap<String, String> = HashMap::new();
        for series in statement(1) {
            let key_col = self.column(series, "fieldKey", &query)?;
            let type_col = self.column(series, "fieldType", &query)?;
            for row in &series.values {
                if self.string_at(row, key_col, &query)? == VALUE_FIELD {
                    let field_type = self.string_at(row, type_col, &query)?;
                    value_types.insert(series.name.clone(), field_type);
                }
            }
        }

        // measurement -> tag key -> its values, sorted.
        let mut tag_values: HashMap<String, BTreeMap<String, BTreeSet<String>>> = HashMap::new();
        for series in statement(2) {
            let key_col = self.column(series, "key", &query)?;
            let value_col = self.column(series, "value", &query)?;
            for row in &series.values {
                let key = self.string_at(row, key_col, &query)?;
                let value = self.string_at(row, value_col, &query)?;
                tag_values
                    .entry(series.name.clone())
                    .or_default()
                    .entry(key)
                    .or_default()
                    .insert(value);
            }
        }

        let mut names: Vec<String> = measurements
            .into_iter()
            .filter(|m| value_types.contains_key(m))
            .collect();
        names.sort_by(|a, b| natural_cmp(a, b));
        names.dedup();
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(index, measurement)| {
                let tags = tag_values.get(&measurement);
                let first = |key: &str| {
                    tags.and_then(|t| t.get(key))
                        .and_then(|values| values.iter().next())
                        .cloned()
                };
                TagSchema {
                    name: measurement.clone(),
                    tag_id: first(TAG_ID_TAG).unwrap_or_else(|| (index + 1).to_string()),
                    data_type: value_types.get(&measurement).cloned().unwrap_or_default(),
                    unit: first(UNIT_TAG).unwrap_or_default(),
                    measurement,
                }
            })
            .collect())
    }

    /// Every reading of every measurement in the half-open window
    /// `[start, end)`, ordered by timestamp, then tag name (natural order).
    /// `start == end` gives no rows (without asking the server); `start >
    /// end` is an [`InfluxError::InvalidWindow`]. Blocks.
    pub fn readings(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Reading>, InfluxError> {
        if check_window(start, end)? {
            return Ok(Vec::new());
        }
        self.select_readings("/.*/", &HashMap::new(), start, end)
    }

    /// The readings of the given tags (read from their
    /// [`measurement`](TagSchema::measurement)s, reported under their
    /// [`name`](TagSchema::name)s) in the half-open window `[start, end)`,
    /// ordered like [`readings`](Self::readings). No tags, or `start == end`,
    /// give no rows. Blocks.
    pub fn readings_for(
        &self,
        tags: &[TagSchema],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Reading>, InfluxError> {
        if check_window(start, end)? || tags.is_empty() {
            return Ok(Vec::new());
        }
        let names: HashMap<String, String> = tags
            .iter()
            .map(|t| (t.measurement.clone(), t.name.clone()))
            .collect();
        let mut measurements: Vec<&String> = names.keys().collect();
        measurements.sort_by(|a, b| natural_cmp(a, b));
        let from = measurements
            .iter()
            .map(|m| quote_ident(m))
            .collect::<Vec<_>>()
            .join(", ");
        self.select_readings(&from, &names, start, end)
    }

    /// Writes line-protocol text (one point per line, nanosecond
    /// timestamps) into the database with one `POST /write`. Blocks.
    pub fn write_lines(&self, lines: &str) -> Result<(), InfluxError> {
        let request = "POST /write";
        let db = Some(self.database.as_str());
        let response = self
            .authorized(self.agent.post(format!("{}/write", self.base_url)))
            .query("db", &self.database)
            .query("precision", "ns")
            .content_type("text/plain; charset=utf-8")
            .send(lines)
            .map_err(|e| self.unreachable(request, db, &e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(InfluxError::Http {
            url: self.url(),
            request: request.to_owned(),
            database: db.map(str::to_owned),
            query: None,
            status,
            message: error_message(response.into_body()),
        })
    }

    /// Writes readings as points of the EcoAnP data model (see the module
    /// documentation), each into the measurement of its tag's schema, in
    /// batches of 5,000 points; returns how many points were written.
    /// Fails before writing anything if a reading has no schema in `tags`
    /// or cannot be represented ([`line_protocol`]). Blocks.
    pub fn write_readings(
        &self,
        tags: &[TagSchema],
        readings: &[Reading],
    ) -> Result<usize, InfluxError> {
        let body = line_protocol(tags, readings)?;
        let mut batch_start = 0;
        let mut lines_in_batch = 0;
        for (pos, byte) in body.bytes().enumerate() {
            if byte == b'\n' {
                lines_in_batch += 1;
                if lines_in_batch == WRITE_BATCH_LINES {
                    self.write_lines(&body[batch_start..=pos])?;
                    batch_start = pos + 1;
                    lines_in_batch = 0;
                }
            }
        }
        if batch_start < body.len() {
            self.write_lines(&body[batch_start..])?;
        }
        Ok(readings.len())
    }

    fn select_readings(
        &self,
        from: &str,
        names: &HashMap<String, String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Reading>, InfluxError> {
        let query = format!(
            "SELECT {}, {} FROM {from} WHERE time >= {} AND time < {}",
            quote_ident(VALUE_FIELD),
            quote_ident(QC_FIELD),
            quote_string(&start.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            quote_string(&end.to_rfc3339_opts(SecondsFormat::Nanos, true)),
        );
        let results = self.query(&query, Some(&self.database))?;
        let mut readings = Vec::new();
        for series in results.first().into_iter().flatten() {
            let time_col = self.column(series, "time", &query)?;
            let value_col = self.column(series, VALUE_FIELD, &query)?;
            let qc_col = series.columns.iter().position(|c| c == QC_FIELD);
            let tag_name = names
                .get(&series.name)
                .cloned()
                .unwrap_or_else(|| series.name.clone());
            for row in &series.values {
                let value = match row.get(value_col) {
                    None | Some(Value::Null) => continue,
                    Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                        self.invalid_query_answer(&query, format!("value {n} is not a number"))
                    })?,
                    Some(other) => {
                        return Err(self.invalid_query_answer(
                            &query,
                            format!(
                                "measurement `{}` has a non-numeric `{VALUE_FIELD}` ({other}); \
                                 read only numeric tags with readings_for",
                                series.name
                            ),
                        ))
                    }
                };
                let ts = match row.get(time_col) {
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .map(DateTime::from_timestamp_nanos)
                        .ok_or_else(|| {
                            self.invalid_query_answer(&query, format!("bad timestamp {n}"))
                        })?,
                    other => {
                        return Err(self.invalid_query_answer(
                            &query,
                            format!("expected a nanosecond timestamp, got {other:?}"),
                        ))
                    }
                };
                let qc = match qc_col.and_then(|c| row.get(c)) {
                    None | Some(Value::Null) => DEFAULT_QC,
                    Some(v) => qc_from_json(v).ok_or_else(|| {
                        self.invalid_query_answer(
                            &query,
                            format!(
                                "measurement `{}` has a `{QC_FIELD}` of {v}, not a 32-bit integer",
                                series.name
                            ),
                        )
                    })?,
                };
                readings.push(Reading {
                    ts,
                    tag_name: tag_name.clone(),
                    value,
                    qc,
                });
            }
        }
        sort_readings(&mut readings);
        Ok(readings)
    }

    /// Sends `query` with `POST /query` (form-encoded, `chunked=true`,
    /// `epoch=ns`) and returns each statement's series, in statement order.
    fn query(&self, query: &str, db: Option<&str>) -> Result<Vec<Vec<Series>>, InfluxError> {
        let request = "POST /query";
        let mut form = vec![("q", query), ("epoch", "ns"), ("chunked", "true")];
        if let Some(db) = db {
            form.push(("db", db));
        }
        let response = self
            .authorized(self.agent.post(format!("{}/query", self.base_url)))
            .send_form(form)
            .map_err(|e| self.unreachable(request, db, &e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(InfluxError::Http {
                url: self.url(),
                request: request.to_owned(),
                database: db.map(str::to_owned),
                query: Some(query.to_owned()),
                status,
                message: error_message(response.into_body()),
            });
        }
        parse_query_stream(BufReader::new(response.into_body().into_reader())).map_err(|failure| {
            match failure {
                StreamFailure::Statement(message) => InfluxError::Query {
                    url: self.url(),
                    database: db.map(str::to_owned),
                    query: query.to_owned(),
                    message,
                },
                StreamFailure::Malformed(reason) => InfluxError::InvalidResponse {
                    url: self.url(),
                    request: request.to_owned(),
                    database: db.map(str::to_owned),
                    query: Some(query.to_owned()),
                    reason,
                },
            }
        })
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.username {
            Some(user) => {
                let password = self.password.as_deref().unwrap_or_default();
                let token = BASE64_STANDARD.encode(format!("{user}:{password}"));
                request.header("Authorization", format!("Basic {token}"))
            }
            None => request,
        }
    }

    fn unreachable(&self, request: &str, db: Option<&str>, error: &ureq::Error) -> InfluxError {
        // The URL given to ureq never holds credentials, so its message
        // cannot leak the password.
        InfluxError::Unreachable {
            url: self.url(),
            request: request.to_owned(),
            database: db.map(str::to_owned),
            reason: error.to_string(),
        }
    }

    fn invalid_query_answer(&self, query: &str, reason: String) -> InfluxError {
        InfluxError::InvalidResponse {
            url: self.url(),
            request: "POST /query".to_owned(),
            database: Some(self.database.clone()),
            query: Some(query.to_owned()),
            reason,
        }
    }

    fn column(&self, series: &Series, name: &str, query: &str) -> Result<usize, InfluxError> {
        series
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| {
                self.invalid_query_answer(
                    query,
                    format!(
                        "series `{}` has no column `{name}` (columns: {:?})",
                        series.name, series.columns
                    ),
                )
            })
    }

    fn string_at(&self, row: &[Value], col: usize, query: &str) -> Result<String, InfluxError> {
        match row.get(col) {
            Some(Value::String(s)) => Ok(s.clone()),
            other => Err(self.invalid_query_answer(
                query,
                format!("expected a string in column {col}, got {other:?}"),
            )),
        }
    }
}

/// Quotes an InfluxQL identifier (database, measurement, field or tag
/// name): wraps it in double quotes, backslash-escaping `\`, `"` and line
/// breaks, so any name can be used safely in a query.
pub fn quote_ident(name: &str) -> String {
    quote(name, '"')
}

/// Quotes an InfluxQL string literal (e.g. a time): wraps it in single
/// quotes, backslash-escaping `\`, `'` and line breaks.
pub fn quote_string(text: &str) -> String {
    quote(text, '\'')
}

fn quote(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Renders readings as InfluxDB line protocol in the EcoAnP data model
/// (see the module documentation), one line per reading, nanosecond
/// timestamps; `tags` supplies each reading's measurement, `unit` and
/// `tag_id` (empty ones are left out). Fails, naming the reading, when a
/// reading's tag has no schema in `tags`, its value is not finite, its
/// timestamp lies outside 1677–2262 (InfluxDB's range), or a name contains
/// a line break or starts a comment (`#`).
pub fn line_protocol(tags: &[TagSchema], readings: &[Reading]) -> Result<String, InfluxError> {
    let mut prefixes: HashMap<&str, String> = HashMap::with_capacity(tags.len());
    for tag in tags {
        prefixes.insert(tag.name.as_str(), point_prefix(tag)?);
    }
    let mut out = String::with_capacity(readings.len() * 64);
    for reading in readings {
        let what = || format!("the reading of `{}` at {}", reading.tag_name, reading.ts);
        let prefix =
            prefixes
                .get(reading.tag_name.as_str())
                .ok_or_else(|| InfluxError::InvalidPoint {
                    what: what(),
                    reason:
                        "its tag has no schema; pass the tag's TagSchema along with the readings"
                            .to_owned(),
                })?;
        if !reading.value.is_finite() {
            return Err(InfluxError::InvalidPoint {
                what: what(),
                reason: format!(
                    "its value {} is not a finite number, which InfluxDB cannot store",
                    reading.value
                ),
            });
        }
        let nanos = reading
            .ts
            .timestamp_nanos_opt()
            .ok_or_else(|| InfluxError::InvalidPoint {
                what: what(),
                reason: "its timestamp is outside InfluxDB's range (1677-09-21 to 2262-04-11)"
                    .to_owned(),
            })?;
        out.push_str(prefix);
        out.push_str(&format!(
            " {VALUE_FIELD}={},{QC_FIELD}={}i {nanos}\n",
            reading.value, reading.qc
        ));
    }
    Ok(out)
}

/// `measurement[,tag_id=…][,unit=…]` for a tag (tag keys in sorted order).
fn point_prefix(tag: &TagSchema) -> Result<String, InfluxError> {
    let invalid = |reason: &str| InfluxError::InvalidPoint {
        what: format!("tag `{}`", tag.name),
        reason: reason.to_owned(),
    };
    for text in [&tag.measurement, &tag.tag_id, &tag.unit] {
        if text.contains(['\n', '\r']) {
            return Err(invalid(
                "its measurement, unit or tag_id contains a line break",
            ));
        }
        if text.ends_with('\\') {
            return Err(invalid(
                "its measurement, unit or tag_id ends with a backslash, which line protocol cannot carry",
            ));
        }
    }
    if tag.measurement.is_empty() {
        return Err(invalid("its measurement name is empty"));
    }
    if tag.measurement.starts_with('#') {
        return Err(invalid(
            "its measurement name starts with `#`, which line protocol reads as a comment",
        ));
    }
    let mut prefix = escape_line(&tag.measurement, &[',', ' ']);
    for (key, value) in [(TAG_ID_TAG, &tag.tag_id), (UNIT_TAG, &tag.unit)] {
        if !value.is_empty() {
            prefix.push(',');
            prefix.push_str(key);
            prefix.push('=');
            prefix.push_str(&escape_line(value, &[',', '=', ' ']));
        }
    }
    Ok(prefix)
}

fn escape_line(text: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `Ok(true)` for an empty window, `Ok(false)` for a non-empty one.
fn check_window(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<bool, InfluxError> {
    if start > end {
        return Err(InfluxError::InvalidWindow { start, end });
    }
    Ok(start == end)
}

fn qc_from_json(value: &Value) -> Option<i32> {
    let n = value.as_number()?;
    if let Some(i) = n.as_i64() {
        return i32::try_from(i).ok();
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f >= f64::from(i32::MIN) && f <= f64::from(i32::MAX)).then_some(f as i32)
}

fn make_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
        .build()
        .into()
}

/// The server's error message from an error response: its JSON `error`,
/// else the start of the body, else a note that the body was empty.
fn error_message(body: ureq::Body) -> String {
    let mut bytes = Vec::new();
    if let Err(e) = body
        .into_reader()
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut bytes)
    {
        return format!("(the error body could not be read: {e})");
    }
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) {
        if let Some(Value::String(message)) = map.get("error") {
            return message.clone();
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED_ERROR).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

/// One series of a `/query` answer.
#[derive(Debug, Default, Deserialize)]
struct Series {
    #[serde(default)]
    name: String,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct StatementResult {
    #[serde(default)]
    statement_id: usize,
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct QueryChunk {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, PartialEq)]
enum StreamFailure {
    /// The server reported an error for a statement or the whole query.
    Statement(String),
    /// The answer was not the JSON InfluxDB sends.
    Malformed(String),
}

/// Parses a `/query` answer — one JSON document, or with `chunked=true`
/// several concatenated ones — into each statement's series, in statement
/// order; series split over chunks stay separate (their rows are all kept).
fn parse_query_stream<R: Read>(reader: R) -> Result<Vec<Vec<Series>>, StreamFailure> {
    let mut statements: BTreeMap<usize, Vec<Series>> = BTreeMap::new();
    let mut chunks = 0;
    for chunk in serde_json::Deserializer::from_reader(reader).into_iter::<QueryChunk>() {
        let chunk = chunk.map_err(|e| StreamFailure::Malformed(format!("bad JSON: {e}")))?;
        chunks += 1;
        if let Some(error) = chunk.error {
            return Err(StreamFailure::Statement(error));
        }
        for result in chunk.results {
            if let Some(error) = result.error {
                return Err(StreamFailure::Statement(error));
            }
            statements
                .entry(result.statement_id)
                .or_default()
                .extend(result.series);
        }
    }
    if chunks == 0 {
        return Err(StreamFailure::Malformed("empty body".to_owned()));
    }
    let count = statements.keys().next_back().map_or(0, |last| last + 1);
    let mut ordered: Vec<Vec<Series>> = (0..count).map(|_| Vec::new()).collect();
    for (id, series) in statements {
        ordered[id] = series;
    }
    Ok(ordered)
}

struct ParsedUrl {
    base: String,
    username: Option<String>,
    password: Option<String>,
}

/// Splits `http://[user[:password]@]host[:port][/path]` into the base URL
/// without credentials and the decoded credentials.
fn parse_url(raw: &str) -> Result<ParsedUrl, InfluxError> {
    let invalid = |reason: &str| InfluxError::InvalidUrl {
        url: mask_url(raw),
        reason: reason.to_owned(),
    };
    let trimmed = raw.trim();
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| invalid("it has no scheme (http://)"))?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err(invalid(
            "https is not supported: this client is built without TLS; use http:// to a \
             local InfluxDB or put a TLS-terminating proxy in front",
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid("the scheme must be http"));
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if path.contains(['?', '#']) || authority.contains(['?', '#']) {
        return Err(invalid("it must not have a query string or fragment"));
    }
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(invalid("it has no host"));
    }
    let (username, password) = match userinfo {
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (info, None),
            };
            let user = percent_decode(user).map_err(|r| invalid(&format!("its username {r}")))?;
            let password = password
                .map(percent_decode)
                .transpose()
                .map_err(|r| invalid(&format!("its password {r}")))?;
            (Some(user), password)
        }
        None => (None, None),
    };
    let base = format!("http://{host}{}", path.trim_end_matches('/'));
    if let Err(e) = base.parse::<ureq::http::Uri>() {
        return Err(invalid(&format!("it is not a valid URL ({e})")));
    }
    Ok(ParsedUrl {
        base,
        username,
        password,
    })
}

fn percent_decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad percent-escape (use %XX)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded")
}

/// The URL with the password of its userinfo (if any) replaced by `***`;
/// works on malformed URLs too, for error messages.
fn mask_url(raw: &str) -> String {
    let raw = raw.trim();
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let masked_authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{masked_authority}{path}"),
        None => format!("{masked_authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_strings_are_quoted_and_escaped() {
        assert_eq!(quote_ident("D100"), r#""D100""#);
        assert_eq!(quote_ident(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote_ident("x\ny"), r#""x\ny""#);
        assert_eq!(quote_ident("it's"), r#""it's""#);
        assert_eq!(quote_string("it's"), r"'it\'s'");
        assert_eq!(quote_string(r"a\b"), r"'a\\b'");
        assert_eq!(quote_string(r#"say "hi""#), r#"'say "hi"'"#);
    }

    #[test]
    fn urls_are_split_into_base_and_decoded_credentials() {
        let p = parse_url("http://127.0.0.1:8086").unwrap();
        assert_eq!(p.base, "http://127.0.0.1:8086");
        assert_eq!((p.username, p.password), (None, None));

        let p = parse_url(" http://al%40ice:p%3Ass@host:8086/influx/ ").unwrap();
        assert_eq!(p.base, "http://host:8086/influx");
        assert_eq!(p.username.as_deref(), Some("al@ice"));
        assert_eq!(p.password.as_deref(), Some("p:ss"));

        let p = parse_url("http://bob@host").unwrap();
        assert_eq!((p.username.as_deref(), p.password), (Some("bob"), None));
    }

    #[test]
    fn bad_urls_are_rejected_with_the_password_masked() {
        for (url, needle) in [
            ("127.0.0.1:8086", "no scheme"),
            ("https://u:hunter2@host:8086", "https is not supported"),
            ("ftp://u:hunter2@host", "scheme must be http"),
            ("http://u:hunter2@", "no host"),
            ("http://u:hunter2@host/?db=x", "query string"),
            ("http://u:hun%zzter2@host", "bad percent-escape"),
            ("http://u:hunter2@ho st:8086", "not a valid URL"),
        ] {
            let err = parse_url(url)
                .err()
                .unwrap_or_else(|| panic!("{url} was accepted"));
            let message = err.to_string();
            assert!(message.contains(needle), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{url}: {message}");
            assert!(!format!("{err:?}").contains("hunter2"), "{url}: {err:?}");
        }
        assert_eq!(mask_url("http://u:pw@h:1/p"), "http://u:***@h:1/p");
        assert_eq!(mask_url("u:pw@h"), "u:***@h");
        assert_eq!(mask_url("http://h:1"), "http://h:1");
    }

    fn tag(name: &str, unit: &str, tag_id: &str) -> TagSchema {
        TagSchema {
            name: name.to_owned(),
            tag_id: tag_id.to_owned(),
            data_type: "float".to_owned(),
            unit: unit.to_owned(),
            measurement: name.to_owned(),
        }
    }

    fn reading(name: &str, nanos: i64, value: f64, qc: i32) -> Reading {
        Reading {
            ts: DateTime::from_timestamp_nanos(nanos),
            tag_name: name.to_owned(),
            value,
            qc,
        }
    }

    #[test]
    fn line_protocol_escapes_names_and_formats_fields() {
        let tags = [tag("D100", "V", "1"), tag("a b,c=d", "k W", "")];
        let lines = line_protocol(
            &tags,
            &[
                reading("D100", 1_714_521_600_000_000_001, 221.5, 1),
                reading("a b,c=d", -5, -3.0, 0),
            ],
        )
        .unwrap();
        assert_eq!(
            lines,
            "D100,tag_id=1,unit=V value=221.5,qc=1i 1714521600000000001\n\
             a\\ b\\,c=d,unit=k\\ W value=-3,qc=0i -5\n"
        );
    }

    #[test]
    fn unwritable_readings_are_rejected_by_name() {
        let tags = [tag("D100", "V", "1")];
        let err = line_protocol(&tags, &[reading("D999", 0, 1.0, 1)]).unwrap_err();
        assert!(err.to_string().contains("`D999`"), "{err}");
        assert!(err.to_string().contains("no schema"), "{err}");
        let err = line_protocol(&tags, &[reading("D100", 0, f64::NAN, 1)]).unwrap_err();
        assert!(err.to_string().contains("not a finite number"), "{err}");
        let late = Reading {
            ts: "2300-01-01T00:00:00Z".parse().unwrap(),
            ..reading("D100", 0, 1.0, 1)
        };
        let err = line_protocol(&tags, &[late]).unwrap_err();
        assert!(
            err.to_string().contains("outside InfluxDB's range"),
            "{err}"
        );
        for bad in ["#D1", "D\n1", "D1\\", ""] {
            let err = line_protocol(&[tag(bad, "V", "1")], &[]).unwrap_err();
            assert!(
                matches!(err, InfluxError::InvalidPoint { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn chunked_answers_are_merged_per_statement() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"D100","columns":["time","value"],"values":[[1,2.5]],"partial":true}],"partial":true}]}
{"results":[{"statement_id":0,"series":[{"name":"D100","columns":["time","value"],"values":[[2,3.5]]}]}]}
{"results":[{"statement_id":1}]}
{"results":[{"statement_id":2,"series":[{"name":"m","columns":["key","value"],"values":[["unit","V"]]}]}]}
"#;
        let statements = parse_query_stream(&body[..]).unwrap();
        assert_eq!(statements.len(), 3);
        let rows: Vec<_> = statements[0]
            .iter()
            .flat_map(|s| s.values.clone())
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(statements[1].is_empty());
        assert_eq!(statements[2][0].name, "m");
    }

    #[test]
    fn errors_inside_a_200_answer_are_reported() {
        let body = br#"{"results":[{"statement_id":0,"error":"database not found: nope"}]}"#;
        assert_eq!(
            parse_query_stream(&body[..]).unwrap_err(),
            StreamFailure::Statement("database not found: nope".to_owned())
        );
        let body = br#"{"error":"error parsing query: found EOF"}"#;
        assert_eq!(
            parse_query_stream(&body[..]).unwrap_err(),
            StreamFailure::Statement("error parsing query: found EOF".to_owned())
        );
        assert!(matches!(
            parse_query_stream(&b"<html>"[..]).unwrap_err(),
            StreamFailure::Malformed(_)
        ));
        assert!(matches!(
            parse_query_stream(&b""[..]).unwrap_err(),
            StreamFailure::Malformed(_)
        ));
    }

    #[test]
    fn quality_codes_accept_integers_and_integral_floats() {
        assert_eq!(qc_from_json(&serde_json::json!(1)), Some(1));
        assert_eq!(qc_from_json(&serde_json::json!(0.0)), Some(0));
        assert_eq!(qc_from_json(&serde_json::json!(1.5)), None);
        assert_eq!(qc_from_json(&serde_json::json!(1_i64 << 40)), None);
        assert_eq!(qc_from_json(&serde_json::json!("1")), None);
    }

    #[test]
    fn debug_masks_the_password() {
        let client = InfluxClient::new("http://alice:s3cr3t@127.0.0.1:8086", "ecoanp").unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("alice:***@127.0.0.1:8086"), "{debug}");
        let client = client.with_credentials("bob", "0th3r");
        assert!(!format!("{client:?}").contains("0th3r"));
        assert_eq!(client.url(), "http://bob:***@127.0.0.1:8086");
    }
}
