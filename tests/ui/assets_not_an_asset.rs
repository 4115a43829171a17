use dagrs_core::prelude::*;

struct Handle;

fn main() {
    let _ = assets![Handle];
}
