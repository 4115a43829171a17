//! The InfluxDB source, through the `influxdb` crate (InfluxDB 1.x, or the v1 API of 2.x/3.x).
//! A database holds one measurement per sensor tag, named like the tag, with the fields
//! `value` (float) and `qc` (integer) and the tags `unit` and `tag_id`:
//! `D100,tag_id=1,unit=V value=221.4373,qc=1i 1714521600000000000`.

use std::collections::{BTreeSet, HashMap};

use chrono::{SecondsFormat, TimeDelta};
use influxdb::integrations::serde_integration::Series;
use influxdb::{Client, ReadQuery, Timestamp, WriteQuery};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{natural_cmp, Reading, Simulator, TagSchema, Time};

/// What could not be done with which InfluxDB server (password masked) and database, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {0} InfluxDB at {1} (database `{2}`): {3}")]
pub struct InfluxError(&'static str, String, String, String);

/// The rows of a query, each with the name of its series (the measurement).
type Rows<T> = Result<Vec<(String, T)>, InfluxError>;

/// A client of one InfluxDB database; cheap to clone.
#[derive(Clone)]
pub struct Influx {
    client: Client,
    /// The URL, password masked.
    url: String,
}

impl Influx {
    /// A client of `database` at `url`, `http://[user[:password]@]host[:port]`: credentials
    /// go as HTTP Basic authentication. Sends nothing yet.
    pub fn new(url: &str, database: &str) -> Result<Self, InfluxError> {
        let client = Client::new(url.trim_end_matches('/'), database);
        let influx = Self {
            client,
            url: dagrs_core::mask_secrets(url),
        };
        if !url.starts_with("http://") {
            return Err(influx.fail("use", "only http:// is supported (no TLS)"));
        }
        Ok(influx)
    }

    /// The server's URL, password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        self.client.database_name()
    }

    /// The names of the server's databases.
    pub async fn databases(&self) -> Result<Vec<String>, InfluxError> {
        #[derive(Deserialize)]
        struct Database {
            name: String,
        }
        let rows = self.select::<Database>("list the databases of", "SHOW DATABASES");
        Ok(rows.await?.into_iter().map(|(_, db)| db.name).collect())
    }

    /// Creates the database; nothing happens when it exists.
    pub async fn create_database(&self) -> Result<(), InfluxError> {
        self.execute("create the database on", "CREATE").await
    }

    /// Drops the database and its data; nothing happens when it does not exist.
    pub async fn drop_database(&self) -> Result<(), InfluxError> {
        self.execute("drop the database on", "DROP").await
    }

    /// Unless the database exists, creates it and writes the default [`Simulator`]'s two
    /// hours before `end` into it; returns how many readings were written.
    pub async fn seed_if_missing(&self, end: Time) -> Result<Option<usize>, InfluxError> {
        let databases = self.databases().await?;
        if databases.iter().any(|name| name == self.database()) {
            return Ok(None);
        }
        self.create_database().await?;
        let sim = Simulator::default();
        let readings = sim.readings(end - TimeDelta::hours(2), end);
        self.write(sim.tags(), &readings).await.map(Some)
    }

    /// The sensor tags, in [`natural_cmp`] order: the measurements with a `value` field, typed
    /// like it; a tag's unit and id are its `unit` and `tag_id` tag values (the least, if its
    /// series disagree), else no unit and its 1-based position.
    pub async fn tag_schemas(&self) -> Result<Vec<TagSchema>, InfluxError> {
        #[derive(Deserialize)]
        struct Field {
            #[serde(rename = "fieldKey")]
            key: String,
            #[serde(rename = "fieldType")]
            kind: String,
        }
        #[derive(Deserialize)]
        struct Tag {
            key: String,
            value: String,
        }
        let what = "read the tag schemas from";
        let fields = self.select::<Field>(what, "SHOW FIELD KEYS").await?;
        let values = fields.into_iter().filter(|(_, field)| field.key == "value");
        let mut typed: Vec<(String, String)> = values.map(|(m, f)| (m, f.kind)).collect();
        typed.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        typed.dedup_by(|a, b| a.0 == b.0);
        let query = r#"SHOW TAG VALUES WITH KEY IN ("unit", "tag_id")"#;
        let tags = self.select::<Tag>(what, query).await?;
        let tags: BTreeSet<_> = tags.into_iter().map(|(m, t)| (m, t.key, t.value)).collect();
        let tag = |name: &str, key: &str| {
            let mut values = tags.iter().filter(|(m, k, _)| m == name && k == key);
            values.next().map(|(_, _, value)| value.clone())
        };
        let schema = |(i, (name, data_type)): (usize, (String, String))| TagSchema {
            tag_id: tag(&name, "tag_id").unwrap_or_else(|| (i + 1).to_string()),
            unit: tag(&name, "unit").unwrap_or_default(),
            data_type,
            name,
        };
        Ok(typed.into_iter().enumerate().map(schema).collect())
    }

    /// Every reading of every measurement in `[start, end)`, in one query, by time, then tag
    /// name in [`natural_cmp`] order; a point without `qc` reads as `qc = 1`.
    pub async fn readings(&self, start: Time, end: Time) -> Result<Vec<Reading>, InfluxError> {
        #[derive(Deserialize)]
        struct Row {
            time: Time,
            value: Option<f64>,
            qc: Option<i32>,
        }
        let at = |t: Time| t.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let (start, end) = (at(start), at(end));
        let select = r#"SELECT "value", "qc" FROM /.*/"#;
        let query = format!("{select} WHERE time >= '{start}' AND time < '{end}'");
        let rows = self.select::<Row>("read the readings from", &query).await?;
        let reading = |(tag_name, row): (String, Row)| {
            let (ts, value, qc) = (row.time, row.value?, row.qc.unwrap_or(1));
            Some(Reading {
                ts,
                tag_name,
                value,
                qc,
            })
        };
        let mut readings: Vec<Reading> = rows.into_iter().filter_map(reading).collect();
        readings.sort_by(|a, b| a.ts.cmp(&b.ts).then(natural_cmp(&a.tag_name, &b.tag_name)));
        Ok(readings)
    }

    /// When the newest point at or before `now`, of any measurement, was taken.
    pub async fn newest_reading(&self, now: Time) -> Result<Option<Time>, InfluxError> {
        #[derive(Deserialize)]
        struct Row {
            time: Time,
        }
        let now = now.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let query = format!(r#"SELECT last("value") FROM /.*/ WHERE time <= '{now}'"#);
        let rows = self
            .select::<Row>("read the newest point from", &query)
            .await?;
        Ok(rows.into_iter().map(|(_, row)| row.time).max())
    }

    /// Writes readings as points, 5,000 a request, with the `unit` and `tag_id` of their tag
    /// in `tags` (when not empty); returns how many were written.
    pub async fn write(&self, tags: &[TagSchema], rows: &[Reading]) -> Result<usize, InfluxError> {
        let what = "write readings to";
        let tags: HashMap<&str, &TagSchema> = tags.iter().map(|t| (t.name.as_str(), t)).collect();
        let point = |r: &Reading| {
            let at = Timestamp::try_from(r.ts);
            let at = at.map_err(|_| self.fail(what, format!("{} is outside 1970-2262", r.ts)))?;
            let mut point = WriteQuery::new(at, &r.tag_name);
            if let Some(tag) = tags.get(r.tag_name.as_str()) {
                for (key, value) in [("unit", &tag.unit), ("tag_id", &tag.tag_id)] {
                    point = point.add_tag(key, Some(value.as_str()).filter(|v| !v.is_empty()));
                }
            }
            Ok(point.add_field("value", r.value).add_field("qc", r.qc))
        };
        for chunk in rows.chunks(5_000) {
            let points = chunk.iter().map(point).collect::<Result<Vec<_>, _>>()?;
            let written = self.client.query(points).await;
            written.map_err(|e| self.error(what, e))?;
        }
        Ok(rows.len())
    }

    /// `CREATE` or `DROP` the database.
    async fn execute(&self, what: &'static str, verb: &str) -> Result<(), InfluxError> {
        let name = self.database().replace('\\', "\\\\").replace('"', "\\\"");
        let query = ReadQuery::new(format!(r#"{verb} DATABASE "{name}""#));
        let done = self.client.query(query).await;
        done.map(drop).map_err(|e| self.error(what, e))
    }

    /// Runs one read query; returns its rows, each with the name of its series.
    async fn select<T>(&self, what: &'static str, query: &str) -> Rows<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let result = self.client.json_query(ReadQuery::new(query)).await;
        let mut result = result.map_err(|e| self.error(what, e))?;
        // A failed statement is reported in its result, e.g. "database not found: x".
        let results = &result.results;
        let error = results.iter().find_map(|r| r.get("error")?.as_str());
        if let Some(error) = error.or(results.is_empty().then_some("no result")) {
            return Err(self.fail(what, error));
        }
        let series = result.deserialize_next::<T>();
        let series = series.map_err(|e| self.error(what, e))?.series;
        let named = |s: Series<T>| s.values.into_iter().map(move |v| (s.name.clone(), v));
        Ok(series.into_iter().flat_map(named).collect())
    }

    fn fail(&self, what: &'static str, reason: impl ToString) -> InfluxError {
        let reason = dagrs_core::mask_secrets(&reason.to_string());
        InfluxError(what, self.url.clone(), self.database().to_owned(), reason)
    }

    fn error(&self, what: &'static str, error: influxdb::Error) -> InfluxError {
        let hint = "is influxd running? (`bash .ci/influxd.sh` starts one)";
        match error {
            influxdb::Error::ConnectionError { .. } => {
                self.fail("reach", format!("{error}; {hint}"))
            }
            error => self.fail(what, error),
        }
    }
}
