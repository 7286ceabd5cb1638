//! The `bee` binary (being written).
fn main() {}
