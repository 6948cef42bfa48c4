//! API server benchmark, embedded store and etcd side by side in one run: cold start to ready,
//! idle RSS, create and get latency over 1,000 Services (through the `kube` client, as a
//! controller would see it), and the time for one change to reach 100 watchers.
//!
//! Run: `cargo bench -p berth --bench apiserver` (`BENCH_SERVICES`, `BENCH_WATCHERS` to scale).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::measure::{env_usize, percentile, rss_kib};
use berth_testkit::{Backend, Cluster, Etcd, free_port};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Spawns `berth server` and returns the time until it prints its ready line.
fn time_to_ready(bin: &Path, data: &Path, store: Option<&str>) -> Duration {
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args([
        "server",
        "--no-node",
        &format!("--bind=127.0.0.1:{}", free_port()),
        &format!("--data-dir={}", data.display()),
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(s) = store {
        cmd.arg(format!("--store={s}"));
    }
    let mut child = cmd.spawn().expect("berth server");
    let out = child.stdout.take().expect("stdout");
    let mut ready = None;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if line.contains("ready at") {
            ready = Some(started.elapsed());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    ready.expect("server became ready")
}

fn service(name: &str) -> Service {
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}),
    )
    .expect("service")
}

struct Figures {
    start_fresh: Duration,
    start_again: Duration,
    rss_idle_kib: u64,
    create: (Duration, Duration),
    get: (Duration, Duration),
    fanout: (Duration, Duration),
    rss_loaded_kib: u64,
}

fn run(bin: &Path, backend: Backend) -> Figures {
    let n = env_usize("BENCH_SERVICES", 1000);
    let watchers = env_usize("BENCH_WATCHERS", 100);
    let etcd = (backend == Backend::Etcd).then(Etcd::start);
    let store = etcd.as_ref().map(|e| format!("etcd://{}", e.endpoint));
    let mut fresh = Vec::new();
    let mut again = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        fresh.push(time_to_ready(bin, dir.path(), store.as_deref()));
        again.push(time_to_ready(bin, dir.path(), store.as_deref()));
    }
    drop(etcd);

    let c = Cluster::start(bin, backend);
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle_kib = rss_kib(c.pid().expect("running"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (create, get, fanout) = rt.block_on(async {
        let svcs: Api<Service> = Api::namespaced(c.kube_client().await, "default");
        let mut creates = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            svcs.create(&PostParams::default(), &service(&format!("bench-{i}")))
                .await
                .expect("create");
            creates.push(t.elapsed());
        }
        let mut gets = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            svcs.get(&format!("bench-{i}")).await.expect("get");
            gets.push(t.elapsed());
        }
        let mut fanouts = Vec::new();
        for round in 0..20 {
            let name = format!("fanout-{round}");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut tasks = Vec::new();
            let rv = svcs
                .list_metadata(&Default::default())
                .await
                .expect("list")
                .metadata
                .resource_version
                .unwrap_or_default();
            let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..watchers {
                let svcs = svcs.clone();
                let (tx, ready_tx, name, rv) =
                    (tx.clone(), ready_tx.clone(), name.clone(), rv.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = svcs
                        .watch(&WatchParams::default().timeout(60), &rv)
                        .await
                        .expect("watch")
                        .boxed();
                    let _ = ready_tx.send(());
                    while let Some(ev) = s.next().await {
                        if let Ok(WatchEvent::Added(o)) = ev
                            && o.metadata.name.as_deref() == Some(name.as_str())
                        {
                            let _ = tx.send(Instant::now());
                            return;
                        }
                    }
                }));
            }
            for _ in 0..watchers {
                ready_rx.recv().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t = Instant::now();
            svcs.create(&PostParams::default(), &service(&name))
                .await
                .expect("create");
            let mut last = t;
            for _ in 0..watchers {
                if let Some(at) = rx.recv().await {
                    last = last.max(at);
                }
            }
            fanouts.push(last - t);
            for task in tasks {
                task.abort();
            }
        }
        (
            (percentile(creates.clone(), 0.5), percentile(creates, 0.99)),
            (percentile(gets.clone(), 0.5), percentile(gets, 0.99)),
            (percentile(fanouts.clone(), 0.5), percentile(fanouts, 0.99)),
        )
    });
    let rss_loaded_kib = rss_kib(c.pid().expect("running"));
    Figures {
        start_fresh: percentile(fresh, 0.5),
        start_again: percentile(again, 0.5),
        rss_idle_kib,
        create,
        get,
        fanout,
        rss_loaded_kib,
    }
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    let e = run(bin, Backend::Embedded);
    let d = run(bin, Backend::Etcd);
    let ratio = |a: Duration, b: Duration| {
        if b.is_zero() {
            0.0
        } else {
            a.as_secs_f64() / b.as_secs_f64()
        }
    };
    println!(
        "{:<40} {:>14} {:>14} {:>16}",
        "figure (median of runs / percentile)", "embedded", "etcd", "embedded/etcd"
    );
    let rows = [
        (
            "cold start to ready, fresh data dir",
            e.start_fresh,
            d.start_fresh,
        ),
        (
            "start to ready, existing data",
            e.start_again,
            d.start_again,
        ),
        ("create Service p50", e.create.0, d.create.0),
        ("create Service p99", e.create.1, d.create.1),
        ("get Service p50", e.get.0, d.get.0),
        ("get Service p99", e.get.1, d.get.1),
        ("one change to all watchers p50", e.fanout.0, d.fanout.0),
        ("one change to all watchers p99", e.fanout.1, d.fanout.1),
    ];
    for (what, a, b) in rows {
        println!(
            "{what:<40} {:>14} {:>14} {:>16.2}",
            ms(a),
            ms(b),
            ratio(a, b)
        );
    }
    println!(
        "{:<40} {:>11} MiB {:>11} MiB",
        "RSS idle after start",
        e.rss_idle_kib / 1024,
        d.rss_idle_kib / 1024
    );
    println!(
        "{:<40} {:>11} MiB {:>11} MiB",
        "RSS after the run (objects held)",
        e.rss_loaded_kib / 1024,
        d.rss_loaded_kib / 1024
    );
}
