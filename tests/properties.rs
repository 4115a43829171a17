//! Properties over any input: selections, config documents and durations never panic, and
//! every error they give stays short (a few hundred bytes, whatever the input's size).

use dagrs_core::prelude::*;
use dagrs_core::{AssetSpec, ConfigFormat};
use proptest::prelude::*;
use serde::Deserialize;

/// The longest error any of these inputs may produce.
const ERROR_LIMIT: usize = 4096;

fn definitions() -> Definitions {
    let specs = (0..200).map(|i| {
        let spec = AssetSpec::new(format!("asset_{i}"), |_| async { Ok(()) })
            .group(format!("group_{}", i % 7))
            .tag("tier", if i % 2 == 0 { "gold" } else { "silver" });
        if i > 0 {
            spec.dep(format!("asset_{}", i / 2))
        } else {
            spec
        }
    });
    Definitions::builder().specs(specs).build().unwrap()
}

#[derive(Debug, Deserialize)]
#[serde(default)]
#[allow(dead_code)]
struct Windowed {
    hours: u32,
    buckets: Vec<String>,
    retry: Option<Retry>,
}

impl Default for Windowed {
    fn default() -> Self {
        Windowed {
            hours: 1,
            buckets: vec!["1 minute".into()],
            retry: None,
        }
    }
}

#[asset]
async fn windowed(config: Config<Windowed>) -> Result<u32> {
    Ok(config.hours)
}

/// Selection-like text: names, operators, separators and noise.
fn selection() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "asset_[0-9]{1,4}",
        "[a-z_]{0,12}",
        Just("*".to_owned()),
        Just("+".to_owned()),
        "[0-9]{1,25}",
        "group:[a-z_0-9]{0,10}",
        "tag:[a-z]{0,5}(=[a-z]{0,6})?",
        "[ ,\t]{1,3}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// JSON values of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        "[0-9]{1,4}(ms|s|m|h|d|w| parsecs)?".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    "hours|buckets|retry|max_retries|delay|backoff|jitter|max_delay",
                    "[a-z]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn selections_resolve_or_fail_briefly(text in selection()) {
        let defs = definitions();
        if let Err(e) = defs.select(&text) {
            prop_assert!(e.to_string().len() <= ERROR_LIMIT, "{} bytes", e.to_string().len());
        }
    }

    #[test]
    fn config_documents_parse_or_fail_briefly(text in any::<String>(), format in 0..3u8) {
        let format = [ConfigFormat::Json, ConfigFormat::Yaml, ConfigFormat::Toml][format as usize];
        if let Err(e) = RunConfig::parse(&text, format, "a test document") {
            prop_assert!(e.to_string().len() <= ERROR_LIMIT);
        }
    }

    #[test]
    fn config_values_decode_or_fail_briefly(value in json_value()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let invoked = runtime.block_on(build_asset_context().config(value).invoke::<windowed>());
        if let Err(e) = invoked {
            prop_assert!(e.to_string().len() <= ERROR_LIMIT, "{e}");
        }
    }

    #[test]
    fn retry_policies_and_durations_read_or_fail_briefly(value in json_value()) {
        if let Err(e) = serde_json::from_value::<Retry>(value.clone()) {
            prop_assert!(e.to_string().len() <= ERROR_LIMIT);
        }
        let document = serde_json::json!({ "retries": { "windowed": value } });
        if let Err(e) = RunConfig::from_json(&document.to_string()) {
            prop_assert!(e.to_string().len() <= ERROR_LIMIT);
        }
    }
}

#[test]
fn a_huge_config_value_gives_a_short_error() {
    let value = serde_json::json!({ "hours": "h".repeat(10 << 20) });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = runtime
        .block_on(build_asset_context().config(value).invoke::<windowed>())
        .unwrap_err()
        .to_string();
    assert!(err.len() <= 1024, "{} bytes", err.len());
    assert!(
        err.contains("invalid config for asset `windowed` at `hours`"),
        "{err}"
    );
}
