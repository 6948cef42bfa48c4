//! Client libraries other than kubectl: the Rust `kube` crate (the client berth's own
//! components use) and the Python `kubernetes` client can list and watch, whole objects or
//! metadata only (PartialObjectMetadata).

use berth_testkit::Backend;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;

/// A runtime for a test's async client code.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn kube_crate(backend: Backend) {
    let c = super::cluster(backend);
    runtime().block_on(async {
        let svcs: Api<Service> = Api::namespaced(c.kube_client().await, "default");
        let list = svcs.list(&ListParams::default()).await.expect("list");
        assert!(
            list.items
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some("kubernetes"))
        );
        let mut events = watcher(svcs.clone(), watcher::Config::default()).boxed();
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "from-kube"}, "spec": {"ports": [{"port": 80}]}
        }))
        .expect("service");
        let created = svcs
            .create(&PostParams::default(), &svc)
            .await
            .expect("create");
        assert!(
            created
                .spec
                .and_then(|s| s.cluster_ip)
                .is_some_and(|ip| ip.starts_with("10.9"))
        );
        let seen = tokio::time::timeout(berth_testkit::patience(), async {
            while let Some(ev) = events.next().await {
                match ev.expect("watch event") {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s)
                        if s.metadata.name.as_deref() == Some("from-kube") =>
                    {
                        return true;
                    }
                    _ => {}
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "the watcher saw the new Service");
    });
}

#[test]
fn kube_crate_lists_creates_and_watches_embedded() {
    kube_crate(Backend::Embedded);
}

#[test]
fn kube_crate_lists_creates_and_watches_etcd() {
    kube_crate(Backend::Etcd);
}

const PYTHON: &str = r#"
import sys, threading, time
from kubernetes import client, config, watch
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
names = [s.metadata.name for s in v1.list_namespaced_service("default").items]
assert "kubernetes" in names, names
w = watch.Watch()
def create():
    time.sleep(0.5)
    body = client.V1Service(metadata=client.V1ObjectMeta(name="from-python"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]))
    v1.create_namespaced_service("default", body)
threading.Thread(target=create).start()
for ev in w.stream(v1.list_namespaced_service, "default", timeout_seconds=20):
    if ev["type"] == "ADDED" and ev["object"].metadata.name == "from-python":
        print("watched", ev["object"].spec.cluster_ip)
        w.stop()
"#;

fn python_client(backend: Backend) {
    let c = super::cluster(backend);
    let script = c.file("client.py", PYTHON);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&c.kubeconfig)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("watched 10.9"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_client_lists_creates_and_watches_embedded() {
    python_client(Backend::Embedded);
}

#[test]
fn python_client_lists_creates_and_watches_etcd() {
    python_client(Backend::Etcd);
}

/// Allocation under concurrent creates: every Service gets its own ClusterIP and NodePort.
#[test]
fn concurrent_creates_never_share_an_address_or_port() {
    let c = super::cluster(Backend::Embedded);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let svcs: Api<Service> = Api::namespaced(c.kube_client().await, "default");
        let mut tasks = Vec::new();
        for i in 0..60 {
            let svcs = svcs.clone();
            tasks.push(tokio::spawn(async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("c{i}")}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}
                }))
                .expect("service");
                let s = svcs.create(&PostParams::default(), &svc).await.expect("create");
                let spec = s.spec.expect("spec");
                (spec.cluster_ip.expect("ip"), spec.ports.expect("ports")[0].node_port.expect("node port"))
            }));
        }
        let mut ips = std::collections::BTreeSet::new();
        let mut ports = std::collections::BTreeSet::new();
        for t in tasks {
            let (ip, port) = t.await.expect("task");
            assert!(ips.insert(ip.clone()), "{ip} handed out twice");
            assert!(ports.insert(port), "{port} handed out twice");
        }
    });
}

#[test]
fn metadata_only_get_list_watch_and_patch() {
    let c = super::cluster(Backend::Embedded);
    runtime().block_on(async {
        let client = c.kube_client().await;
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        // kube-rs asks for PartialObjectMetadata(List): only metadata comes back.
        let list = svcs
            .list_metadata(&ListParams::default())
            .await
            .expect("list_metadata");
        assert_eq!(list.types.kind, "PartialObjectMetadataList");
        let one = list
            .items
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some("kubernetes"))
            .expect("kubernetes");
        assert_eq!(
            one.types.as_ref().map(|t| t.kind.as_str()),
            Some("PartialObjectMetadata")
        );
        let got = svcs.get_metadata("kubernetes").await.expect("get_metadata");
        assert_eq!(got.metadata.name.as_deref(), Some("kubernetes"));
        let patched = svcs
            .patch_metadata(
                "kubernetes",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    serde_json::json!({"metadata": {"labels": {"seen": "yes"}}}),
                ),
            )
            .await
            .expect("patch_metadata");
        assert_eq!(
            patched
                .metadata
                .labels
                .and_then(|l| l.get("seen").cloned())
                .as_deref(),
            Some("yes")
        );
        // The raw answer holds no spec.
        let req = http::Request::get("/api/v1/namespaces/default/services/kubernetes")
            .header(
                "Accept",
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
            .body(Vec::new())
            .expect("request");
        let raw: serde_json::Value = client.request(req).await.expect("raw get");
        assert!(raw.get("spec").is_none(), "{raw}");
        assert_eq!(raw["kind"], "PartialObjectMetadata");
        // A metadata watcher sees changes as metadata.
        let mut events = watcher(
            Api::<kube::core::PartialObjectMeta<Service>>::namespaced(client.clone(), "default"),
            watcher::Config::default(),
        )
        .boxed();
        let seen = tokio::time::timeout(berth_testkit::patience(), async {
            while let Some(ev) = events.next().await {
                if let Ok(watcher::Event::InitApply(m) | watcher::Event::Apply(m)) = ev
                    && m.metadata.name.as_deref() == Some("kubernetes")
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true));
    });
}

#[test]
fn yaml_bodies_and_server_side_apply_in_yaml() {
    let c = super::cluster(Backend::Embedded);
    runtime().block_on(async {
        let client = c.kube_client().await;
        let send = |method: &str, path: &str, ct: &str, body: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .header("Content-Type", ct)
                .body(body.as_bytes().to_vec())
                .expect("request")
        };
        let created: serde_json::Value = client
            .request(send(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: \"1\"\n",
            ))
            .await
            .expect("create from YAML");
        assert_eq!(created["data"]["a"], "1");
        let applied: serde_json::Value = client
            .request(send(
                "PATCH",
                "/api/v1/namespaces/default/configmaps/applied?fieldManager=test",
                "application/apply-patch+yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  b: \"2\"\n",
            ))
            .await
            .expect("server-side apply in YAML");
        assert_eq!(applied["data"]["b"], "2");
        let bad = client
            .request::<serde_json::Value>(send(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/yaml",
                "- just\n- a list\n",
            ))
            .await;
        assert!(matches!(bad, Err(kube::Error::Api(ref s)) if s.code == 400), "{bad:?}");
    });
}
