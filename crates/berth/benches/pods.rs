//! Pod start benchmark: a release `berth server --node` in a throwaway node netns; 100 pods of
//! `berth/whoami` created back to back through the `kube` client, each timed from its create
//! request to the watch event that shows it Ready=True (p50/p99/max, total wall time), the
//! server's RSS growth per pod (API server, controllers and agent share the process) and the
//! workloads' own RSS. Then pods one at a time (create -> Ready -> accepting TCP), beside a
//! reference that does the same by hand (`ip netns add`, veth into a bridge, address,
//! `berth workload whoami` under `ip netns exec`, wait for TCP) in another throwaway node.
//!
//! Run: `cargo bench -p berth --bench pods` (`BENCH_PODS` for the burst, default 100;
//! `BENCH_SEQ_PODS`, `BENCH_REF_PODS` for the one-at-a-time runs, default 20 each).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::measure::{env_usize, percentile, rss_kib};
use berth_testkit::{Cluster, Node};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;

const LABEL: &str = "bench=pods";
const PORT: u16 = 80;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {"containers": [{"name": "whoami", "image": "berth/whoami", "ports": [{"containerPort": PORT}]}]},
    }))
    .expect("pod")
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls a TCP connect to `addr` (from the calling thread's netns) until it is accepted.
fn wait_for_tcp(addr: SocketAddr, deadline: Instant) {
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} never accepted");
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Berth {
    burst: Vec<Duration>,
    burst_wall: Duration,
    teardown_wall: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// CPU the berth server used during the burst (API server, controllers and agent).
    burst_cpu: Duration,
    workload_rss_kib: u64,
    /// The same with shared pages (the one `berth` binary) divided among the processes.
    workload_pss_kib: u64,
    seq_ready: Vec<Duration>,
    seq_serving: Vec<Duration>,
}

/// The Ready watch: every pod of the benchmark that turns Ready, with the instant it was seen.
fn spawn_ready_watch(pods: Api<Pod>) -> mpsc::UnboundedReceiver<(String, Instant, Pod)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut events = watcher(pods, watcher::Config::default().labels(LABEL))
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = events.next().await {
            let Ok(p) = ev else { continue };
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if is_ready(&p) && seen.insert(uid) {
                let at = Instant::now();
                let name = p.metadata.name.clone().unwrap_or_default();
                if tx.send((name, at, p)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn delete_all(pods: &Api<Pod>, c: &Cluster) -> Duration {
    let t = Instant::now();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(LABEL),
    )
    .await
    .expect("delete pods");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = pods
            .list_metadata(&ListParams::default().labels(LABEL))
            .await
            .expect("list pods")
            .items
            .len();
        if left == 0 && c.pod_netns().is_empty() {
            return t.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{left} pods / {:?} netns left",
            c.pod_netns()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bench_berth(c: &Cluster, n: usize, seq: usize) -> Berth {
    let pid = c.pid().expect("server running");
    let client = c.kube_client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes
        .get_opt(berth_testkit::NODE_NAME)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the node never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ready = spawn_ready_watch(pods.clone());
    // Let the watch's initial list finish before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Burst: n creates back to back; each pod's latency runs from its own create request.
    let rss_before_kib = rss_kib(pid);
    let cpu_before = berth_testkit::measure::cpu_time(pid);
    let start = Instant::now();
    let mut sent = HashMap::new();
    for i in 0..n {
        let name = format!("burst-{i}");
        sent.insert(name.clone(), Instant::now());
        pods.create(&PostParams::default(), &pod(&name))
            .await
            .expect("create pod");
    }
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64);
    let mut burst = Vec::with_capacity(n);
    let mut workload_pids = Vec::new();
    while burst.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, at, p) = tokio::time::timeout(left, ready.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} pods became Ready", burst.len()))
            .expect("ready watch");
        let Some(t) = sent.get(&name) else { continue };
        burst.push(at - *t);
        // The agent records each running container's PID (berth_agent::layout::pid_path).
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let agent_dir = c.dir().join("data/agent/pods").join(uid);
        workload_pids.extend(
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .filter_map(|cs| {
                    std::fs::read_to_string(agent_dir.join(format!("{}.pid", cs.name)))
                        .ok()?
                        .trim()
                        .parse::<u32>()
                        .ok()
                }),
        );
    }
    let burst_wall = start.elapsed();
    let burst_cpu = berth_testkit::measure::cpu_time(pid).saturating_sub(cpu_before);
    // What the pods hold once they run, not the transient peak of starting them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = rss_kib(pid);
    let workload_rss_kib = workload_pids.iter().map(|p| rss_kib(*p)).sum();
    let workload_pss_kib = workload_pids
        .iter()
        .map(|p| berth_testkit::measure::pss_kib(*p))
        .sum();
    let teardown_wall = delete_all(&pods, c).await;

    // One at a time: create -> Ready -> the workload accepts TCP on its pod IP.
    let mut seq_ready = Vec::with_capacity(seq);
    let mut seq_serving = Vec::with_capacity(seq);
    for i in 0..seq {
        let name = format!("one-{i}");
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod(&name))
            .await
            .expect("create pod");
        let (got, at, p) = tokio::time::timeout(Duration::from_secs(30), ready.recv())
            .await
            .unwrap_or_else(|_| panic!("{name} never became Ready"))
            .expect("ready watch");
        assert_eq!(got, name);
        seq_ready.push(at - t);
        let ip: Ipv4Addr = p
            .status
            .and_then(|s| s.pod_ip)
            .and_then(|ip| ip.parse().ok())
            .expect("a Ready pod has an IP");
        let addr = SocketAddr::from((ip, PORT));
        tokio::task::spawn_blocking(move || {
            wait_for_tcp(addr, Instant::now() + Duration::from_secs(30))
        })
        .await
        .expect("tcp wait");
        seq_serving.push(t.elapsed());
    }
    delete_all(&pods, c).await;
    Berth {
        burst,
        burst_wall,
        teardown_wall,
        rss_before_kib,
        rss_after_kib,
        burst_cpu,
        workload_rss_kib,
        workload_pss_kib,
        seq_ready,
        seq_serving,
    }
}

/// What the reference made, removed on drop (even on panic): workloads killed by PID, pod
/// namespaces deleted (which deletes their veth and the peer on the bridge).
#[derive(Default)]
struct Made {
    children: Vec<Child>,
    netns: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same work by hand, one pod at a time, in `node` (called on a thread inside it): per
/// pod, a named netns, a veth into bridge `br0`, an address and default route, the whoami
/// workload under `ip netns exec`, and a TCP connect from the node until it is accepted.
fn bench_reference(bin: &Path, node: &Node, n: usize) -> Vec<Duration> {
    let nn = node.name();
    ip(&["-n", nn, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", nn, "addr", "add", "10.245.0.1/24", "dev", "br0"]);
    ip(&["-n", nn, "link", "set", "br0", "up"]);
    let mut made = Made::default();
    let mut times = Vec::with_capacity(n);
    for i in 0..n.min(250) {
        let ns = format!("berth-bench-ref-{}-{i}", std::process::id());
        let addr = Ipv4Addr::new(10, 245, 0, i as u8 + 2);
        let peer = format!("vref{i}");
        let t = Instant::now();
        ip(&["netns", "add", &ns]);
        made.netns.push(ns.clone());
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", nn,
        ]);
        ip(&["-n", nn, "link", "set", &peer, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", "10.245.0.1"]);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(bin)
            .args(["workload", "whoami", "--port", &PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning whoami");
        made.children.push(child);
        wait_for_tcp(
            SocketAddr::from((addr, PORT)),
            Instant::now() + Duration::from_secs(30),
        );
        times.push(t.elapsed());
    }
    times
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    let n = env_usize("BENCH_PODS", 100).max(1);
    let seq = env_usize("BENCH_SEQ_PODS", 20).max(1);
    let refn = env_usize("BENCH_REF_PODS", 20).max(1);

    let reference = {
        let node = Node::new();
        node.on_thread(|| bench_reference(bin, &node, refn))
    };

    let c = Cluster::start_on_node(bin, &[]);
    let node = c.node().expect("a node cluster");
    let b = node.on_thread(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(bench_berth(&c, n, seq))
    });
    drop(c);

    let p = |v: &Vec<Duration>, q: f64| percentile(v.clone(), q);
    let max = |v: &Vec<Duration>| v.iter().max().copied().unwrap_or_default();
    println!(
        "berth pod start, {n} pods created back to back (create request -> watch sees Ready=True):"
    );
    println!(
        "  p50 {}  p99 {}  max {}  wall time {} ({:.1} pods/s)",
        ms(p(&b.burst, 0.5)),
        ms(p(&b.burst, 0.99)),
        ms(max(&b.burst)),
        ms(b.burst_wall),
        n as f64 / b.burst_wall.as_secs_f64()
    );
    println!(
        "  berth server CPU during the burst: {} ({:.1} ms per pod; the machine has {} cores)",
        ms(b.burst_cpu),
        b.burst_cpu.as_secs_f64() * 1000.0 / n as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  deleting all {n} until their netns are gone: {}",
        ms(b.teardown_wall)
    );
    let grown = b.rss_after_kib.saturating_sub(b.rss_before_kib);
    println!(
        "  berth server RSS {} KiB before, {} KiB with {n} pods Ready: {:.0} KiB per pod (API server + controllers + agent)",
        b.rss_before_kib,
        b.rss_after_kib,
        grown as f64 / n as f64
    );
    println!(
        "  workload processes: {} KiB RSS in all, {:.0} KiB per pod; PSS {:.0} KiB per pod (for information)",
        b.workload_rss_kib,
        b.workload_rss_kib as f64 / n as f64,
        b.workload_pss_kib as f64 / n as f64
    );
    println!("one pod at a time ({seq} berth pods, {refn} by hand):");
    println!("{:<44} {:>10} {:>10} {:>10}", "", "p50", "p99", "max");
    let rows = [
        ("berth: create -> Ready", &b.seq_ready),
        ("berth: create -> accepts TCP", &b.seq_serving),
        ("by hand: netns+veth+ip+spawn -> accepts TCP", &reference),
    ];
    for (what, v) in rows {
        println!(
            "{what:<44} {:>10} {:>10} {:>10}",
            ms(p(v, 0.5)),
            ms(p(v, 0.99)),
            ms(max(v))
        );
    }
    let r = p(&reference, 0.5).as_secs_f64();
    if r > 0.0 {
        println!(
            "berth / by hand (p50): Ready {:.2}x, accepts TCP {:.2}x",
            p(&b.seq_ready, 0.5).as_secs_f64() / r,
            p(&b.seq_serving, 0.5).as_secs_f64() / r
        );
    }
}
