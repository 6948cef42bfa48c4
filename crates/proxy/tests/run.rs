//! `run` end to end against a fake API server (a tower service answering the list and watch
//! requests kube-runtime's watchers make), inside a node netns with three pods: the first
//! sync programs the ClusterIP, and a watched EndpointSlice change reaches the kernel.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::Stream;
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Body = StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>>;

/// The objects of one kind and the open watches on them.
#[derive(Default)]
struct Kind {
    items: Vec<Value>,
    watches: Vec<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<(u64, Kind, Kind)>>,
}

impl FakeApi {
    fn kind_of(path: &str) -> Option<usize> {
        match path {
            "/api/v1/services" => Some(0),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(1),
            _ => None,
        }
    }

    /// Adds or replaces an object (by name) and tells the watchers.
    fn put(&self, kind: usize, mut obj: Value) {
        let mut st = self.state.lock().expect("fake api");
        st.0 += 1;
        obj["metadata"]["resourceVersion"] = json!(st.0.to_string());
        let k = if kind == 0 { &mut st.1 } else { &mut st.2 };
        let name = obj["metadata"]["name"].clone();
        let existed = k.items.iter().any(|o| o["metadata"]["name"] == name);
        k.items.retain(|o| o["metadata"]["name"] != name);
        k.items.push(obj.clone());
        let ty = if existed { "MODIFIED" } else { "ADDED" };
        let line = Bytes::from(format!("{}\n", json!({"type": ty, "object": obj})));
        k.watches.retain(|w| w.send(line.clone()).is_ok());
    }

    fn answer(&self, req: &http::Request<kube::client::Body>) -> http::Response<Body> {
        let not_found = || {
            let body: Body = StreamBody::new(Box::pin(futures_util::stream::once(async {
                Ok(Frame::data(Bytes::from_static(b"{}")))
            })));
            let mut r = http::Response::new(body);
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            r
        };
        let Some(kind) = Self::kind_of(req.uri().path()) else {
            return not_found();
        };
        let watch = req.uri().query().unwrap_or("").contains("watch=true");
        let mut st = self.state.lock().expect("fake api");
        let rv = st.0.to_string();
        let k = if kind == 0 { &mut st.1 } else { &mut st.2 };
        let stream: Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>> = if watch
        {
            let (tx, rx) = mpsc::unbounded_channel();
            k.watches.push(tx);
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                let b = rx.recv().await?;
                Some((Ok(Frame::data(b)), rx))
            }))
        } else {
            let (api, list) = if kind == 0 {
                ("v1", "ServiceList")
            } else {
                ("discovery.k8s.io/v1", "EndpointSliceList")
            };
            let body = json!({"apiVersion": api, "kind": list,
                                  "metadata": {"resourceVersion": rv}, "items": k.items});
            let bytes = Bytes::from(body.to_string());
            Box::pin(futures_util::stream::once(
                async move { Ok(Frame::data(bytes)) },
            ))
        };
        http::Response::new(StreamBody::new(stream))
    }
}

fn object(kind: usize, mut v: Value) -> Value {
    if kind == 0 {
        v["apiVersion"] = json!("v1");
        v["kind"] = json!("Service");
    } else {
        v["apiVersion"] = json!("discovery.k8s.io/v1");
        v["kind"] = json!("EndpointSlice");
    }
    v
}

fn web_slice(ips: &[&str]) -> Value {
    object(
        1,
        serde_json::to_value(slice("web", 8080, "TCP", ips)).expect("slice"),
    )
}

#[test]
fn run_programs_watched_services_and_follows_changes() {
    let mut ns = Namespaces { names: Vec::new() };
    let (node, pods, _outside) = setup(&mut ns);
    let api = FakeApi::default();
    api.put(
        0,
        object(
            0,
            serde_json::to_value(service("web", "10.96.0.50", 80, "TCP", None)).expect("svc"),
        ),
    );
    api.put(1, web_slice(&PODS));

    let shutdown = CancellationToken::new();
    let proxy = start(
        &api,
        &node,
        shutdown.clone(),
        berth_proxy::Metrics::default(),
    );

    let all: BTreeSet<String> = PODS.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let reach = |n| answers_ok(&pods[0], "10.96.0.50:80", n);
    while reach(1).is_empty() {
        assert!(Instant::now() < deadline, "the ClusterIP never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answers(&pods[0], "10.96.0.50:80", 100, 3), all);

    // A watched change: the slice loses a pod, and within a bounded time it gets no traffic.
    let t = Instant::now();
    api.put(1, web_slice(&PODS[..2]));
    let two: BTreeSet<String> = PODS[..2].iter().map(|s| s.to_string()).collect();
    while reach(30) != two {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the change never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "EndpointSlice change to traffic following it: {:?}",
        t.elapsed()
    );

    shutdown.cancel();
    proxy.join().expect("proxy thread").expect("run");

    // A restart reads the kernel and finds nothing to change: no batch is sent, and
    // connections made meanwhile all succeed.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = berth_proxy::Metrics::register(&mut registry);
    let shutdown = CancellationToken::new();
    let proxy = start(&api, &node, shutdown.clone(), metrics);
    let during = in_ns(&pods[0], || {
        (0..40)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(25));
                tcp_ask("10.96.0.50:80").is_ok()
            })
            .filter(|ok| !ok)
            .count()
    });
    assert_eq!(during, 0, "connections failed across the restart");
    // The restarted proxy is live: a change after it still arrives, as its only batch, and
    // the time from the change the controller noted on the slice is its programming latency.
    let t = Instant::now();
    let mut changed = web_slice(&PODS[..1]);
    changed["metadata"]["annotations"] = json!({
        berth_proxy::metrics::TRIGGER_TIME_ANNOTATION:
            k8s_openapi::jiff::Timestamp::now().to_string(),
    });
    api.put(1, changed);
    let one: BTreeSet<String> = PODS[..1].iter().map(|s| s.to_string()).collect();
    while reach(10) != one {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the change never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The sync records its metrics just after the kernel has the rules traffic already
    // follows: wait for them before stopping the proxy mid-sync.
    let metrics = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics");
        text
    };
    let recorded = |text: String| {
        text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1")
            && text.contains("kubeproxy_network_programming_duration_seconds_count 1")
    };
    while !recorded(metrics()) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    shutdown.cancel();
    proxy.join().expect("proxy thread").expect("run");
    let text = metrics();
    assert!(
        text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_network_programming_duration_seconds_count 1"),
        "{text}"
    );
    // The table stays after a stop (traffic keeps flowing); cleanup removes it.
    assert!(in_ns(&node, || berth_proxy::cleanup().expect("cleanup")));
}

/// Runs the proxy on a runtime whose threads all start in the node's namespace.
fn start(
    api: &FakeApi,
    node: &str,
    shutdown: CancellationToken,
    metrics: berth_proxy::Metrics,
) -> std::thread::JoinHandle<berth_proxy::Result<()>> {
    let (api, node) = (api.clone(), node.to_owned());
    std::thread::spawn(move || {
        enter(&node);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let svc = tower::service_fn(move |req| {
                let resp = api.answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let client = kube::Client::new(svc, "default");
            let config = berth_proxy::Config {
                metrics,
                ..berth_proxy::Config::default()
            };
            berth_proxy::run(config, client, shutdown).await
        })
    })
}

/// Who answers `n` connections, ignoring failed ones.
fn answers_ok(ns: &str, addr: &'static str, n: usize) -> BTreeSet<String> {
    in_ns(ns, move || {
        (0..n).filter_map(|_| tcp_ask(addr).ok()).collect()
    })
}
