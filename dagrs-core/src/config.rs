//! Run config: per-asset config values, merged over defaults and checked before a run starts.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Problem};
use crate::retry::Retry;
use crate::text::{bounded, ECHO_LIMIT};

/// Config for the assets of a run, keyed by asset key.
///
/// Each asset's value is deserialized into the type of its `Config<..>` parameter; fields
/// left out take the type's serde defaults. Values given here are merged over the
/// defaults of the [`Definitions`](crate::Definitions), object field by object field.
///
/// ```
/// use dagrs_core::RunConfig;
/// use serde_json::json;
///
/// let config = RunConfig::new().asset("influx_data", json!({ "time_window_hours": 2 }));
/// assert_eq!(config.get("influx_data"), Some(&json!({ "time_window_hours": 2 })));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Config values by asset key.
    #[serde(default)]
    pub assets: BTreeMap<String, Value>,
    /// Retry policies by asset key, replacing the assets' own for this run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, Retry>,
}

/// The text formats of run config documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// TOML.
    Toml,
}

/// The largest run config: read from a file, or stored with a run (as JSON).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The deepest nesting of lists and maps a run config document may have.
pub const MAX_CONFIG_DEPTH: usize = 64;

/// The line where `text` nests brackets (`[`, `{`) or indentation deeper than
/// [`MAX_CONFIG_DEPTH`], if it does: checked before parsing, because parsers take time
/// growing with the square of the depth before they give up. Brackets inside quotes count
/// too, which only errs on the safe side.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (number, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent > 4 * MAX_CONFIG_DEPTH {
            return Some(number + 1);
        }
        for c in line.chars() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_CONFIG_DEPTH {
                return Some(number + 1);
            }
        }
    }
    None
}

impl RunConfig {
    /// Empty config: every asset runs on its defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the config of asset `key`.
    ///
    /// # Panics
    ///
    /// When `config` cannot be represented as JSON (a map with non-string keys, for example).
    pub fn asset(mut self, key: impl Into<String>, config: impl Serialize) -> Self {
        let key = key.into();
        let value = serde_json::to_value(config).unwrap_or_else(|e| {
            panic!("config for asset `{key}` is not representable as JSON: {e}")
        });
        self.assets.insert(key, value);
        self
    }

    /// Replaces the retry policy of asset `key` for this run.
    pub fn retry(mut self, key: impl Into<String>, retry: Retry) -> Self {
        self.retries.insert(key.into(), retry);
        self
    }

    /// Parses config from JSON text of the form `{"assets": {"<asset>": {...}}}`.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        Self::parse(text, ConfigFormat::Json, "JSON text")
    }

    /// Parses config from YAML text of the form `assets: { <asset>: { ... } }`.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        Self::parse(text, ConfigFormat::Yaml, "YAML text")
    }

    /// Reads config from a YAML (`.yaml`, `.yml`), JSON (`.json`) or TOML (`.toml`) file of
    /// the form `assets: { <asset>: { ... } }` (and optionally `retries: { <asset>: ... }`),
    /// at most [`MAX_CONFIG_BYTES`] long and [`MAX_CONFIG_DEPTH`] deep.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        use std::io::Read;
        let path = path.as_ref();
        let origin = format!(
            "the file {}",
            bounded(&path.display().to_string(), ECHO_LIMIT)
        );
        let fail = |reason: String| Error::RunConfig {
            origin: origin.clone(),
            reason,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let format = match extension.as_str() {
            "json" => ConfigFormat::Json,
            "toml" => ConfigFormat::Toml,
            "yaml" | "yml" => ConfigFormat::Yaml,
            _ => {
                return Err(fail(
                    "unknown format; name the file *.yaml, *.yml, *.json or *.toml".into(),
                ))
            }
        };
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(format!("cannot read it: {e}")))?;
        Self::parse(&text, format, &origin)
    }

    /// Parses a config document of `format`; `origin` names it in errors. Refuses documents
    /// larger than [`MAX_CONFIG_BYTES`] or deeper than [`MAX_CONFIG_DEPTH`] before parsing.
    pub fn parse(text: &str, format: ConfigFormat, origin: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::RunConfig {
            origin: bounded(origin, ECHO_LIMIT).into_owned(),
            reason,
        };
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(fail(format!(
                "it is larger than {} MiB; a run config is a small document (pass large data \
                 through a resource or a file instead)",
                MAX_CONFIG_BYTES >> 20
            )));
        }
        if let Some(line) = too_deep(text) {
            return Err(fail(format!(
                "it nests deeper than {MAX_CONFIG_DEPTH} levels (at line {line}); a run config \
                 is a shallow document"
            )));
        }
        let parsed = match format {
            ConfigFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            ConfigFormat::Toml => toml::from_str(text).map_err(|e| e.to_string()),
            ConfigFormat::Yaml => serde_yaml_ng::from_str(text).map_err(|e| e.to_string()),
        };
        parsed.map_err(|e| fail(bounded(&e, 4 * ECHO_LIMIT).into_owned()))
    }

    /// Checks that the config is small enough to be stored with every run it starts.
    pub(crate) fn check_size(&self) -> Result<(), Error> {
        let size = serde_json::to_vec(self).map_or(usize::MAX, |json| json.len());
        if size as u64 > MAX_CONFIG_BYTES {
            return Err(Error::RunConfig {
                origin: "the run's config".into(),
                reason: format!(
                    "it is {size} bytes as JSON, more than the {} MiB stored with a run; pass \
                     large data through a resource or a file instead",
                    MAX_CONFIG_BYTES >> 20
                ),
            });
        }
        Ok(())
    }

    /// The config value of asset `key`, if one is set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.assets.get(key)
    }

    /// These values merged over `defaults`: objects merge field by field, anything else in
    /// `self` replaces the default.
    pub fn merged_over(&self, defaults: &RunConfig) -> RunConfig {
        let mut assets = defaults.assets.clone();
        for (key, value) in &self.assets {
            match assets.get_mut(key) {
                Some(base) => merge(base, value),
                None => {
                    assets.insert(key.clone(), value.clone());
                }
            }
        }
        let mut retries = defaults.retries.clone();
        retries.extend(self.retries.clone());
        RunConfig { assets, retries }
    }
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(k) {
                    Some(b) => merge(b, v),
                    None => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// A decoded config value, shared by every attempt of a step.
pub(crate) type ConfigValue = Arc<dyn Any + Send + Sync>;

/// Deserializes `value` (or `{}` when it is absent) into `C`, naming the failing field and
/// rejecting fields `C` does not have. Echoed paths and reasons are bounded.
pub(crate) fn decode<C: DeserializeOwned>(
    asset: &str,
    value: Option<&Value>,
) -> Result<C, Problem> {
    let empty = Value::Object(Default::default());
    let value = value.unwrap_or(&empty);
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
    let decoded = serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string()));
    let problem = |path: &str, reason: String| Problem::InvalidConfig {
        asset: asset.to_owned(),
        path: bounded(path, ECHO_LIMIT).into_owned(),
        reason: bounded(&reason, 4 * ECHO_LIMIT).into_owned(),
    };
    match decoded {
        Err(e) => Err(problem(
            track.path().to_string().trim_start_matches('.'),
            e.to_string(),
        )),
        Ok(_) if !unknown.is_empty() => Err(problem(
            &unknown[0],
            format!(
                "unknown field{} {}; check the spelling against the asset's config type",
                if unknown.len() > 1 { "s" } else { "" },
                crate::text::bounded_list(unknown.iter().map(|f| format!("`{f}`")), ", ")
            ),
        )),
        Ok(config) => Ok(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        batch_size: u32,
        buckets: Vec<String>,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                batch_size: 100,
                buckets: vec!["1 minute".into()],
            }
        }
    }

    #[test]
    fn missing_fields_take_defaults() {
        let c: Sample = decode("a", Some(&json!({"batch_size": 5}))).unwrap();
        assert_eq!(c.batch_size, 5);
        assert_eq!(c.buckets, ["1 minute"]);
        assert_eq!(decode::<Sample>("a", None).unwrap(), Sample::default());
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = decode::<Sample>("a", Some(&json!({"buckets": ["x", 3]}))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("asset `a`") && text.contains("`buckets[1]`"),
            "{text}"
        );
        assert!(text.contains("expected a string"), "{text}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = decode::<Sample>("a", Some(&json!({"batch_sise": 5}))).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `batch_sise`"),
            "{err}"
        );
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        assert_eq!(too_deep("assets: { a: { b: [1, 2] } }"), None);
        let deep = format!(
            "assets:\n  a: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(too_deep(&deep), Some(2));
        let indented: String = (0..300).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(too_deep(&indented).is_some());
    }

    #[test]
    fn run_values_merge_over_defaults() {
        let defaults = RunConfig::new().asset("a", json!({"x": 1, "y": {"z": 2, "w": 3}}));
        let run = RunConfig::new()
            .asset("a", json!({"y": {"z": 9}}))
            .asset("b", json!({"k": true}));
        let merged = run.merged_over(&defaults);
        assert_eq!(
            merged.get("a"),
            Some(&json!({"x": 1, "y": {"z": 9, "w": 3}}))
        );
        assert_eq!(merged.get("b"), Some(&json!({"k": true})));
    }
}
