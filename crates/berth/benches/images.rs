//! Image pods against process pods (issue 17): a `berth server --node` in a throwaway node
//! netns; one pod at a time, each timed from its create request to the watch event that
//! shows it Ready=True and to its HTTP server accepting TCP on the pod IP. Both run the same
//! program, busybox `httpd`: from an imported busybox image under runc, and as the host's
//! busybox (a process pod). Then the import time and disk use of a big image (one layer of
//! incompressible data).
//!
//! Run: `cargo bench -p berth --bench images` (`BENCH_IMAGE_PODS`, default 50;
//! `BENCH_BIG_MB`, default 100).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::measure::{env_usize, percentile};
use berth_testkit::{Cluster, images};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const LABEL: &str = "bench=images";

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "images"}},
        "spec": {"containers": [{
            "name": "web", "image": image, "imagePullPolicy": "Never",
            "command": ["busybox", "httpd", "-f", "-p", "80", "-h", "/"],
        }]},
    }))
    .expect("pod")
}

fn ready_ip(p: &Pod) -> Option<String> {
    let s = p.status.as_ref()?;
    let ready = s
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| s.pod_ip.clone()).flatten()
}

/// Creates `n` pods of `image` one at a time: (create -> Ready, create -> accepts TCP).
async fn one_at_a_time(pods: &Api<Pod>, image: &str, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut events = watcher(pods.clone(), watcher::Config::default().labels(LABEL))
        .default_backoff()
        .applied_objects()
        .boxed();
    let (mut ready, mut serving) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for i in 0..n {
        let name = format!("{}-{i}", image.replace([':', '/', '.'], "-"));
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod(&name, image))
            .await
            .expect("create pod");
        let deadline = t + Duration::from_secs(60);
        let ip = loop {
            let ev = tokio::time::timeout(deadline - Instant::now(), events.next())
                .await
                .expect("the pod to become Ready")
                .expect("watch");
            let Ok(p) = ev else { continue };
            if p.metadata.name.as_deref() == Some(&name)
                && let Some(ip) = ready_ip(&p)
                && seen.insert(name.clone())
            {
                break ip;
            }
        };
        ready.push(t.elapsed());
        let addr: SocketAddr = format!("{ip}:80").parse().expect("pod IP");
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "{addr} never accepted");
            std::thread::sleep(Duration::from_millis(1));
        }
        serving.push(t.elapsed());
    }
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels(LABEL),
    )
    .await
    .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods
        .list_metadata(&ListParams::default().labels(LABEL))
        .await
        .expect("list")
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "pods left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ready, serving)
}

fn import(bin: &Path, c: &Cluster, tar: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["image", "import"])
        .arg(tar)
        .arg(format!("--data-dir={}", c.data_dir().display()))
        .output()
        .expect("berth image import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn du_kib(p: &Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(p).output().expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n = env_usize("BENCH_IMAGE_PODS", 50);
    let big_mb = env_usize("BENCH_BIG_MB", 100);
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    let c = Cluster::start_on_node(bin, &[]);
    c.wait_node_ready();
    let tar = c.dir().join("bb.tar");
    let image = images::busybox(&["sh"]);
    std::fs::write(
        &tar,
        image.docker_save(&["bench-busybox:1"]).expect("archive"),
    )
    .expect("write");
    let small = import(bin, &c, &tar);
    let node = c.node().expect("a node cluster");
    let (img, proc) = node.on_thread(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let pods: Api<Pod> = Api::namespaced(c.kube_client().await, "default");
                // One of each first, so neither pays a first-time cost (unpacking the image).
                one_at_a_time(&pods, "bench-busybox:1", 1).await;
                one_at_a_time(&pods, "busybox", 1).await;
                let img = one_at_a_time(&pods, "bench-busybox:1", n).await;
                let proc = one_at_a_time(&pods, "busybox", n).await;
                (img, proc)
            })
    });
    println!("pod start, one at a time, {n} pods each, busybox httpd in both:");
    println!("{:<52} {:>10} {:>10}", "", "p50", "p99");
    let rows = [
        ("image pod (runc): create -> Ready", &img.0),
        ("image pod (runc): create -> accepts TCP", &img.1),
        ("process pod (host busybox): create -> Ready", &proc.0),
        ("process pod (host busybox): create -> accepts TCP", &proc.1),
    ];
    for (what, v) in rows {
        println!(
            "{what:<52} {:>10} {:>10}",
            ms(percentile(v.clone(), 0.5)),
            ms(percentile(v.clone(), 0.99))
        );
    }
    // A big image: busybox plus one layer of incompressible bytes.
    let mut big = image.clone();
    let mut data = vec![0u8; big_mb * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    big.layers.push(
        berth_image::archive::LayerBuilder::default()
            .file("big", &data, 0o644)
            .build(),
    );
    drop(data);
    let big_tar = c.dir().join("big.tar");
    std::fs::write(
        &big_tar,
        big.docker_save(&["bench-big:1"]).expect("archive"),
    )
    .expect("write");
    let before = du_kib(&c.data_dir().join("images"));
    let took = import(bin, &c, &big_tar);
    let after = du_kib(&c.data_dir().join("images"));
    println!(
        "import: busybox image ({} KiB archive) {}",
        std::fs::metadata(&tar).map_or(0, |m| m.len() / 1024),
        ms(small)
    );
    println!(
        "import: {big_mb} MB image ({} KiB archive) {}, store grew {} KiB",
        std::fs::metadata(&big_tar).map_or(0, |m| m.len() / 1024),
        ms(took),
        after.saturating_sub(before)
    );
}
