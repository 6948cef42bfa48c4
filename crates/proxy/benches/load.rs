//! Load figures for the rule shape, in a network namespace of its own (deleted at the end):
//! the initial sync of N Services x 5 endpoints from an empty table (N from
//! `BERTH_BENCH_SERVICES`, default 10,000), reading it back, then 200 single-endpoint
//! changes with their sync latency. Run with `cargo bench -p berth-proxy --bench load` (or
//! `cargo test --bench load` for a quick debug build); it prints, it asserts only consistency.

use std::process::Command;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use berth_proxy::{
    Apply, Netlink, Ruleset, ServiceView, SliceView, Tracker, desired_from, diff, view,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sched::{CloneFlags, setns};
use serde_json::json;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("s{i}")},
        "spec": {"clusterIP": format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("service")
}

fn slice(i: usize, generation: usize) -> EndpointSlice {
    let eps: Vec<_> = (0..5)
        .map(|e| {
            let n = i * 5 + e + generation * 7;
            json!({"addresses": [format!("10.{}.{}.{}", 128 + (n / 65536) % 64, (n / 256) % 256, n % 256)]})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("s{i}-1"),
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .expect("slice")
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let ns = Netns(format!("berth-pxt-bench-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip netns add");
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let f = std::fs::File::open(path).expect("netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        bench(n);
    })
    .join()
    .expect("bench thread");
}

fn bench(n: usize) {
    // What the proxy keeps of the objects (it drops each object once projected).
    let services: Vec<ServiceView> = view::services(&(0..n).map(service).collect::<Vec<_>>());
    let mut slices: Vec<SliceView> =
        view::slices(&(0..n).map(|i| slice(i, 0)).collect::<Vec<_>>(), "");
    let mut nl = Netlink::open(1 << 14).expect("netlink");

    let t = Instant::now();
    let want = desired_from(&services, &slices, &Ruleset::default());
    let ops = diff(&Ruleset::default(), &want);
    let compute = t.elapsed();
    let t = Instant::now();
    nl.apply(&ops).expect("initial apply");
    let kernel = t.elapsed();
    println!(
        "initial sync of {n} Services x 5 endpoints: {:?} total ({compute:?} desired+diff, {kernel:?} netlink batch of {} ops); RSS {} KiB, peak {} KiB",
        compute + kernel,
        ops.len(),
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:"),
    );

    let t = Instant::now();
    let back = nl.read().expect("read");
    println!("reading the table back: {:?}", t.elapsed());
    assert_eq!(back, want, "the kernel holds what was applied");

    let mut current = want;
    let t = Instant::now();
    let mut tracker = Tracker::new(&services, &slices, &current);
    println!("building the incremental tracker: {:?}", t.elapsed());
    let (mut full, mut incremental, mut apply) = (Vec::new(), Vec::new(), Vec::new());
    for c in 0..200 {
        let i = (c * 7919) % n;
        slices[i] = SliceView::new(&slice(i, c + 1), "").expect("a view");
        // What a full recompute would take (not applied).
        let t = Instant::now();
        let want = desired_from(&services, &slices, &current);
        let _ = diff(&current, &want);
        full.push(t.elapsed());
        // What the proxy does: recompute the one Service, apply its ops.
        let t = Instant::now();
        let key = ("bench".to_owned(), format!("s{i}"));
        let ops = tracker.update(
            &BTreeSet::from([key]),
            |k| services.get(k.1[1..].parse::<usize>().ok()?),
            &slices[i..=i],
        );
        let t_apply = Instant::now();
        nl.apply(&ops).expect("change");
        apply.push(t_apply.elapsed());
        incremental.push(t.elapsed());
        current.apply_all(&ops).expect("model");
    }
    assert_eq!(
        nl.read().expect("read"),
        current,
        "the kernel holds what was applied"
    );
    println!(
        "one EndpointSlice change, 200 times: sync p50 {:?} p99 {:?} (netlink batch p50 {:?} p99 {:?}); a full recompute instead would take p50 {:?} p99 {:?}",
        percentile(&mut incremental, 0.5),
        percentile(&mut incremental, 0.99),
        percentile(&mut apply, 0.5),
        percentile(&mut apply, 0.99),
        percentile(&mut full, 0.5),
        percentile(&mut full, 0.99),
    );
    // One line for scripts/bench-proxy.sh.
    println!(
        "BENCH services={n} initial_ms={:.3} change_p50_ms={:.3} change_p99_ms={:.3}",
        (compute + kernel).as_secs_f64() * 1e3,
        percentile(&mut incremental, 0.5).as_secs_f64() * 1e3,
        percentile(&mut incremental, 0.99).as_secs_f64() * 1e3,
    );
    let t = Instant::now();
    assert!(nl.delete_table().expect("cleanup"));
    println!("cleanup (delete table): {:?}", t.elapsed());
}
