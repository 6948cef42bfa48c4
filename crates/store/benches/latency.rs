//! Create/get latency of the embedded and etcd backends side by side (p50/p99 over 1,000 keys,
//! 1 KiB values), sequential and with concurrent writers. Run: `cargo bench -p berth-store`.
//! Data goes to a temp dir under `BERTH_BENCH_DIR` (default: the system temp dir), on real disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_store::{Embedded, EmbeddedOptions, Etcd, Store};
use bytes::Bytes;

const KEYS: usize = 1_000;
const CONCURRENCY: usize = 16;

/// Sorted latencies → (p50, p99, max).
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
        samples.get(i).copied().unwrap_or_default()
    };
    (
        at(0.50),
        at(0.99),
        samples.last().copied().unwrap_or_default(),
    )
}

fn report(backend: &str, what: &str, samples: Vec<Duration>, wall: Duration) {
    let n = samples.len();
    let (p50, p99, max) = percentiles(samples);
    println!(
        "{backend:<9} {what:<22} n={n:<5} p50={:>8.3}ms p99={:>8.3}ms max={:>8.3}ms  {:>7.0} ops/s",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        n as f64 / wall.as_secs_f64()
    );
}

async fn bench(backend: &str, store: Arc<dyn Store>) -> Result<(), berth_store::Error> {
    let value = Bytes::from(vec![b'x'; 1024]);

    let mut samples = Vec::with_capacity(KEYS);
    let wall = Instant::now();
    for i in 0..KEYS {
        let t = Instant::now();
        store
            .create(&format!("/bench/seq/{i:05}"), value.clone())
            .await?;
        samples.push(t.elapsed());
    }
    report(backend, "create (sequential)", samples, wall.elapsed());

    let mut samples = Vec::with_capacity(KEYS);
    let wall = Instant::now();
    for i in 0..KEYS {
        let t = Instant::now();
        store.get(&format!("/bench/seq/{i:05}")).await?;
        samples.push(t.elapsed());
    }
    report(backend, "get (sequential)", samples, wall.elapsed());

    // CONCURRENCY writers, KEYS creates in all: what an API server under load sees.
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for i in (w..KEYS).step_by(CONCURRENCY) {
                let t = Instant::now();
                store
                    .create(&format!("/bench/conc/{i:05}"), value.clone())
                    .await?;
                samples.push(t.elapsed());
            }
            Ok::<_, berth_store::Error>(samples)
        }));
    }
    let mut samples = Vec::with_capacity(KEYS);
    for task in tasks {
        match task.await {
            Ok(result) => samples.extend(result?),
            Err(e) => eprintln!("writer task failed: {e}"),
        }
    }
    report(
        backend,
        &format!("create ({CONCURRENCY} writers)"),
        samples,
        wall.elapsed(),
    );
    Ok(())
}

/// Connects to a throwaway etcd from berth-testkit (killed by PID when dropped).
async fn start_etcd() -> Result<(berth_testkit::Etcd, Etcd), String> {
    let process = berth_testkit::Etcd::start();
    let endpoint = format!("http://{}", process.endpoint);
    let etcd = Etcd::connect(&[endpoint], "/berth")
        .await
        .map_err(|e| e.to_string())?;
    Ok((process, etcd))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let base = std::env::var_os("BERTH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = match tempfile::tempdir_in(&base) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create a temp dir in {}: {e}", base.display());
            std::process::exit(1);
        }
    };
    println!(
        "data in {} ({KEYS} keys, 1 KiB values)",
        dir.path().display()
    );

    match Embedded::open(&dir.path().join("embedded"), EmbeddedOptions::default()) {
        Ok(store) => {
            if let Err(e) = bench("embedded", Arc::new(store)).await {
                eprintln!("embedded failed: {e}");
            }
        }
        Err(e) => eprintln!("embedded: cannot open: {e}"),
    }

    // Without fsync, for comparison only: shows how much of the latency is the disk flush.
    let nosync = EmbeddedOptions {
        durable: false,
        ..Default::default()
    };
    match Embedded::open(&dir.path().join("embedded-nosync"), nosync) {
        Ok(store) => {
            if let Err(e) = bench("no-fsync", Arc::new(store)).await {
                eprintln!("embedded (no fsync) failed: {e}");
            }
        }
        Err(e) => eprintln!("embedded (no fsync): cannot open: {e}"),
    }

    match start_etcd().await {
        Ok((_process, etcd)) => {
            if let Err(e) = bench("etcd", Arc::new(etcd)).await {
                eprintln!("etcd failed: {e}");
            }
        }
        Err(e) => eprintln!("etcd: skipped: {e}"),
    }
}
