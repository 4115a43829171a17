//! Any text as a selection over a 200-asset graph: resolves, or fails with a short error.
#![no_main]

use std::sync::OnceLock;

use dagrs_core::{AssetSpec, Definitions};
use libfuzzer_sys::fuzz_target;

fn definitions() -> &'static Definitions {
    static DEFS: OnceLock<Definitions> = OnceLock::new();
    DEFS.get_or_init(|| {
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
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = definitions().select(text) {
        assert!(e.to_string().len() <= 4096, "a long error: {e}");
    }
});
