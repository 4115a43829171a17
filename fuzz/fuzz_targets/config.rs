//! Any text as a run config document, in each format: parses, or fails with a short error,
//! in bounded time (deep nesting is refused before parsing).
#![no_main]

use dagrs_core::{ConfigFormat, RunConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = [ConfigFormat::Json, ConfigFormat::Yaml, ConfigFormat::Toml][format as usize % 3];
    match RunConfig::parse(text, format, "fuzz input") {
        Ok(config) => {
            // What parses must also be storable with a run.
            let _ = serde_json::to_string(&config).expect("a parsed config is JSON");
        }
        Err(e) => assert!(e.to_string().len() <= 4096, "a long error: {e}"),
    }
});
