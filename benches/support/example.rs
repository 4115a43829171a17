//! The EcoAnP example's release binary, for the benches that run it as a process.

use std::path::PathBuf;

/// The example's release binary, beside the running bench's; panics with the command that
/// builds it when it is missing.
pub fn ecoanp() -> PathBuf {
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("ecoanp"))
        .unwrap();
    assert!(
        example.exists(),
        "{} is missing: run `cargo build --release --example ecoanp` first",
        example.display()
    );
    example
}
