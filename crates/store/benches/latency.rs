//! Placeholder; replaced by the latency benchmark.
fn main() {}
