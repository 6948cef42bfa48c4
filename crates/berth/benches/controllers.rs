//! Controller benchmark: 1,000 Services x 10 pods; flip one pod's readiness and time until
//! both its Endpoints and its EndpointSlice show the change (p50/p99 over 500 flips), with the
//! server's CPU time and RSS (API server and controllers share the process). Pod status is
//! written by the benchmark itself, as a kubelet would.
//!
//! Run: `cargo bench -p berth --bench controllers` (`BENCH_SERVICES`, `BENCH_PODS`, `BENCH_FLIPS`).

use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::measure::{env_usize, percentile, rss_kib};
use berth_testkit::{Backend, Cluster};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn ip(s: usize, p: usize) -> String {
    format!("10.244.{}.{}", s / 25, (s % 25) * 10 + p + 1)
}

async fn ready_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

fn main() {
    let services = env_usize("BENCH_SERVICES", 1000);
    let per = env_usize("BENCH_PODS", 10);
    let flips = env_usize("BENCH_FLIPS", 500);
    let c = Cluster::start(Path::new(env!("CARGO_BIN_EXE_berth")), Backend::Embedded);
    let pid = c.pid().expect("running");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = c.kube_client().await;
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let setup = Instant::now();
        for s in 0..services {
            let svc = json!({"metadata": {"name": format!("s{s}")}, "spec": {"selector": {"app": format!("s{s}")}, "ports": [{"port": 80, "targetPort": 8080}]}});
            svcs.create(&PostParams::default(), &serde_json::from_value(svc).expect("svc")).await.expect("create svc");
            for p in 0..per {
                let pod = json!({"metadata": {"name": format!("s{s}-p{p}"), "labels": {"app": format!("s{s}")}},
                    "spec": {"containers": [{"name": "c", "image": "berth/whoami", "ports": [{"containerPort": 8080}]}]}});
                pods.create(&PostParams::default(), &serde_json::from_value(pod).expect("pod")).await.expect("create pod");
                ready_status(&pods, &format!("s{s}-p{p}"), &ip(s, p), true).await;
            }
        }
        println!("setup: {services} Services, {} pods in {:.1} s", services * per, setup.elapsed().as_secs_f64());
        // Let the controllers catch up before measuring.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let rss_before = rss_kib(pid) / 1024;
        let cpu_before = berth_testkit::measure::cpu_time(pid);
        let mut both = Vec::new();
        let mut ep_lat = Vec::new();
        let mut slice_lat = Vec::new();
        for i in 0..flips {
            let (s, p) = ((i * 7919) % services, (i * 31) % per);
            let name = format!("s{s}");
            let pod_ip = ip(s, p);
            let ready = (i / services) % 2 == 1; // first pass: not ready; second: ready again
            // Watch from now: the store's history does not reach back to the setup writes.
            let ep_rv = eps.list_metadata(&ListParams::default().limit(1)).await.expect("list").metadata.resource_version.unwrap_or_default();
            let mut ep_watch = eps.watch(&WatchParams::default().fields(&format!("metadata.name={name}")).timeout(30), &ep_rv).await.expect("watch").boxed();
            let mut sl_watch = slices.watch(&WatchParams::default().labels(&format!("kubernetes.io/service-name={name}")).timeout(30), &ep_rv).await.expect("watch").boxed();
            let t = Instant::now();
            ready_status(&pods, &format!("s{s}-p{p}"), &pod_ip, ready).await;
            let ep_done = async {
                while let Some(Ok(WatchEvent::Modified(ep))) = ep_watch.next().await {
                    let listed = ep.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten()).any(|a| a.ip == pod_ip);
                    if listed == ready {
                        return t.elapsed();
                    }
                }
                Duration::MAX
            };
            let slice_done = async {
                while let Some(Ok(ev)) = sl_watch.next().await {
                    if let WatchEvent::Modified(sl) | WatchEvent::Added(sl) = ev {
                        let r = sl.endpoints.iter().find(|e| e.addresses.contains(&pod_ip)).and_then(|e| e.conditions.as_ref()?.ready);
                        if r == Some(ready) {
                            return t.elapsed();
                        }
                    }
                }
                Duration::MAX
            };
            let (a, b) = tokio::join!(ep_done, slice_done);
            ep_lat.push(a);
            slice_lat.push(b);
            both.push(a.max(b));
        }
        let cpu = berth_testkit::measure::cpu_time(pid) - cpu_before;
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!("{:<44} {:>10} {:>10}", "readiness flip visible in", "p50", "p99");
        println!("{:<44} {:>10} {:>10}", "  Endpoints", ms(percentile(ep_lat.clone(), 0.5)), ms(percentile(ep_lat, 0.99)));
        println!("{:<44} {:>10} {:>10}", "  EndpointSlice", ms(percentile(slice_lat.clone(), 0.5)), ms(percentile(slice_lat, 0.99)));
        println!("{:<44} {:>10} {:>10}", "  both", ms(percentile(both.clone(), 0.5)), ms(percentile(both, 0.99)));
        println!("server CPU during {flips} flips: {:.2} s ({:.2} ms per flip, API server + controllers)", cpu.as_secs_f64(), cpu.as_secs_f64() * 1000.0 / flips as f64);
        println!("server RSS: {rss_before} MiB before flips, {} MiB after ({} objects)", rss_kib(pid) / 1024, services * (per + 3));
    });
}
