//! Slim Pods against whole ones: every pure function a controller runs over cached Pods gives
//! the same answer for both, for Pods with everything the generator can set (and more than
//! the transform keeps).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::testing::merge;
use crate::{daemonset, desired_endpoints, desired_slices, replicaset, statefulset};

const NOW: &str = "2024-01-01T00:10:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("test time")
}

/// Everything a Pod may carry that the transform drops, plus what it keeps.
#[derive(Debug, Clone)]
struct Shape {
    ordinal: usize,
    owner: &'static str,
    node: Option<&'static str>,
    hostname: Option<&'static str>,
    subdomain: Option<&'static str>,
    phase: Option<&'static str>,
    ip: Option<u8>,
    ready: Option<(bool, u8)>,
    restarts: Vec<i32>,
    cost: Option<i32>,
    created: u8,
    deleting: bool,
    sidecar: Option<Option<&'static str>>,
    protocol: &'static str,
    revision: &'static str,
    last_applied: bool,
    /// The main container's ports have names (else only numbers).
    named_ports: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        (
            0usize..4,
            prop::sample::select(vec!["ReplicaSet", "StatefulSet", "DaemonSet", "none"]),
            prop::option::of(prop::sample::select(vec!["node-1", "node-2"])),
            prop::option::of(Just("h")),
            prop::option::of(prop::sample::select(vec!["web", "other"])),
            prop::option::of(prop::sample::select(vec![
                "Pending",
                "Running",
                "Succeeded",
                "Failed",
                "Unknown",
            ])),
            prop::option::of(1u8..200),
            prop::option::of((any::<bool>(), 0u8..10)),
        ),
        (
            prop::collection::vec(0i32..5, 0..3),
            prop::option::of(-3i32..3),
            0u8..10,
            any::<bool>(),
            prop::option::of(prop::option::of(Just("Always"))),
            prop::sample::select(vec!["TCP", "UDP"]),
            prop::sample::select(vec!["rev-a", "rev-b"]),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (ordinal, owner, node, hostname, subdomain, phase, ip, ready),
                (
                    restarts,
                    cost,
                    created,
                    deleting,
                    sidecar,
                    protocol,
                    revision,
                    last_applied,
                    named_ports,
                ),
            )| Shape {
                ordinal,
                owner,
                node,
                hostname,
                subdomain,
                phase,
                ip,
                ready,
                restarts,
                cost,
                created,
                deleting,
                sidecar,
                protocol,
                revision,
                last_applied,
                named_ports,
            },
        )
}

/// A Pod of `s` named `web-N` (an ordinal for the StatefulSet), carrying probes, env,
/// volumes, resources, container states and managedFields besides what controllers read.
fn pod(s: &Shape) -> Pod {
    let name = format!("web-{}", s.ordinal);
    let mut annotations = json!({"team": "a"});
    if let Some(c) = s.cost {
        annotations["controller.kubernetes.io/pod-deletion-cost"] = json!(c.to_string());
    }
    if s.last_applied {
        annotations[LAST_APPLIED] = json!("{\"big\": \"manifest\"}");
    }
    let mut meta = json!({
        "name": name, "namespace": "ns", "uid": format!("uid-{}", s.ordinal),
        "resourceVersion": "7", "generation": 1,
        "labels": {"app": "web", "controller-revision-hash": s.revision},
        "annotations": annotations,
        "creationTimestamp": format!("2024-01-01T00:0{}:00Z", s.created),
        "finalizers": ["example.com/keep"],
        "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                           "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}],
    });
    if s.owner != "none" {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": s.owner,
            "name": "web", "uid": "owner-uid", "controller": true}]);
    }
    if s.deleting {
        meta["deletionTimestamp"] = json!("2024-01-01T00:09:00Z");
    }
    let container = json!({
        "name": "c", "image": "nginx", "command": ["nginx"], "args": ["-g", "daemon off;"],
        "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1"}},
        "ports": if s.named_ports {
            json!([{"name": "http", "containerPort": 8080, "protocol": s.protocol},
                   {"containerPort": 9000}])
        } else {
            json!([{"containerPort": 8080, "protocol": s.protocol}, {"containerPort": 9000}])
        },
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "securityContext": {"runAsUser": 1000},
    });
    let mut spec = json!({
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}},
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "serviceAccountName": "default", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
    });
    if let Some(n) = s.node {
        spec["nodeName"] = json!(n);
    }
    if let Some(h) = s.hostname {
        spec["hostname"] = json!(h);
    }
    if let Some(d) = s.subdomain {
        spec["subdomain"] = json!(d);
    }
    if let Some(policy) = s.sidecar {
        let mut init = json!({"name": "side", "image": "envoy",
            "ports": [{"name": "metrics", "containerPort": 9090, "protocol": s.protocol}]});
        if let Some(p) = policy {
            init["restartPolicy"] = json!(p);
        }
        spec["initContainers"] = json!([init]);
    }
    let mut status = json!({"hostIP": "10.0.0.1", "qosClass": "BestEffort",
                            "startTime": "2024-01-01T00:00:00Z"});
    if let Some(p) = s.phase {
        status["phase"] = json!(p);
    }
    if let Some(ip) = s.ip {
        status["podIP"] = json!(format!("10.244.0.{ip}"));
        status["podIPs"] = json!([{"ip": format!("10.244.0.{ip}")}]);
    }
    if let Some((ready, minute)) = s.ready {
        status["conditions"] = json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": if ready { "True" } else { "False" },
             "lastTransitionTime": format!("2024-01-01T00:0{minute}:00Z")}]);
    }
    let statuses: Vec<Value> = s
        .restarts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"name": format!("c{i}"), "image": "nginx", "imageID": "sha256:x",
                   "containerID": "berth://1", "ready": *r % 2 == 0, "restartCount": r,
                   "started": true, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
                   "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
        })
        .collect();
    if !statuses.is_empty() {
        status["containerStatuses"] = json!(statuses);
    }
    serde_json::from_value(json!({"metadata": meta, "spec": spec, "status": status}))
        .expect("test Pod")
}

fn service(extra: Value) -> Service {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                           {"name": "metrics", "port": 90, "targetPort": "metrics", "protocol": "UDP"},
                           {"name": "plain", "port": 91, "targetPort": 9000}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("test Service")
}

fn services() -> Vec<Service> {
    vec![
        service(json!({})),
        service(json!({"spec": {"publishNotReadyAddresses": true}})),
        service(json!({"spec": {"clusterIP": "None", "ports": null}})),
    ]
}

fn owner_spec(replicas: i32) -> Value {
    json!({"replicas": replicas, "minReadySeconds": 60, "serviceName": "web",
           "selector": {"matchLabels": {"app": "web"}},
           "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}})
}

fn owner<K: serde::de::DeserializeOwned>(spec: Value) -> K {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "owner-uid", "generation": 2},
        "spec": spec}))
    .expect("test owner")
}

/// What every controller computes from `pods`, as text to compare.
fn outcomes(pods: &[Pod], replicas: i32) -> Vec<String> {
    let mut out = Vec::new();
    for svc in services() {
        out.push(format!("{:?}", desired_endpoints(&svc, pods)));
        out.push(format!("{:?}", desired_slices(&svc, pods, &[], 2)));
    }
    let rs: ReplicaSet = owner(owner_spec(replicas));
    let owned = replicaset::owned_pods(&rs, pods);
    out.push(format!(
        "{:?}",
        replicaset::plan(&rs, &owned.claimed(), now())
    ));
    let sts: StatefulSet = owner(owner_spec(replicas));
    let by_ordinal: BTreeMap<usize, &Pod> = statefulset::owned_pods(&sts, pods);
    out.push(format!("{:?}", statefulset::plan(&sts, &by_ordinal, None)));
    let ds: DaemonSet = owner(owner_spec(replicas));
    let nodes: Vec<Node> = ["node-1", "node-2"]
        .iter()
        .map(|n| serde_json::from_value(json!({"metadata": {"name": n}})).expect("node"))
        .collect();
    let nodes: Vec<&Node> = nodes.iter().collect();
    let active = daemonset::owned_pods(&ds, pods);
    out.push(format!(
        "{:?}",
        daemonset::plan(&ds, &nodes, &active, now())
    ));
    out
}

proptest! {
    #[test]
    fn controllers_decide_the_same_on_slim_pods(
        shapes in prop::collection::vec(shape(), 1..6),
        replicas in 0i32..4,
    ) {
        let whole: Vec<Pod> = shapes.iter().map(pod).collect();
        let slim: Vec<Pod> = whole.iter().cloned().map(Slim::slim).collect();
        prop_assert_eq!(outcomes(&whole, replicas), outcomes(&slim, replicas));
    }

    /// The Pod cache keeps Pods as JSON: a slim Pod comes back exactly as it went in.
    #[test]
    fn slim_pods_come_back_from_the_cache_as_they_went_in(shapes in prop::collection::vec(shape(), 1..6)) {
        for p in shapes.iter().map(pod).map(Slim::slim) {
            prop_assert_eq!(super::packed::round_trip(&p), Some((p.clone(), p)));
        }
    }
}

#[test]
fn slim_pods_drop_what_no_controller_reads() {
    let s = Shape {
        ordinal: 0,
        owner: "ReplicaSet",
        node: Some("node-1"),
        hostname: Some("h"),
        subdomain: Some("web"),
        phase: Some("Running"),
        ip: Some(5),
        ready: Some((true, 1)),
        restarts: vec![2],
        cost: Some(1),
        created: 0,
        deleting: false,
        sidecar: Some(Some("Always")),
        protocol: "TCP",
        revision: "rev-a",
        last_applied: true,
        named_ports: true,
    };
    let whole = pod(&s);
    let slim = whole.clone().slim();
    let spec = slim.spec.as_ref().expect("spec");
    let c = &spec.containers[0];
    assert!(c.image.is_none() && c.env.is_none() && c.readiness_probe.is_none());
    assert!(c.volume_mounts.is_none() && c.security_context.is_none());
    // Only the named port: the other is a number no target port name resolves to.
    let ports = c.ports.as_deref().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some("http"), 8080)
    );
    let sidecar = &spec.init_containers.as_ref().expect("the sidecar")[0];
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert!(spec.volumes.is_none() && spec.tolerations.is_none());
    assert_eq!(spec.hostname.as_deref(), Some("h"));
    let status = slim.status.as_ref().expect("status");
    assert!(status.host_ip.is_none() && status.start_time.is_none());
    let cs = &status.container_statuses.as_ref().expect("statuses")[0];
    assert!(cs.state.is_none() && cs.last_state.is_none() && cs.image.is_empty());
    assert_eq!(cs.restart_count, 2);
    assert_eq!(status.container_statuses.as_ref().map(Vec::len), Some(1));
    assert!(slim.metadata.managed_fields.is_none());
    let annotations = slim.metadata.annotations.as_ref().expect("annotations");
    assert!(!annotations.contains_key(LAST_APPLIED));
    assert_eq!(annotations.len(), 2, "the others stay: {annotations:?}");
    assert_eq!(
        slim.metadata.owner_references,
        whole.metadata.owner_references
    );
    assert_eq!(slim.metadata.finalizers, whole.metadata.finalizers);
    // Slimming twice changes nothing more.
    assert_eq!(slim.clone().slim(), slim);
}

/// Containers without named ports, init containers that are not sidecars and container
/// statuses without restarts are not kept at all; of several statuses, the highest restart
/// count is.
#[test]
fn slim_pods_keep_no_container_a_target_port_cannot_name() {
    let mut s = Shape {
        ordinal: 1,
        owner: "ReplicaSet",
        node: None,
        hostname: None,
        subdomain: None,
        phase: Some("Running"),
        ip: Some(6),
        ready: Some((true, 1)),
        restarts: vec![0, 0],
        cost: None,
        created: 0,
        deleting: false,
        sidecar: Some(None),
        protocol: "TCP",
        revision: "rev-a",
        last_applied: false,
        named_ports: false,
    };
    let slim = pod(&s).slim();
    let spec = slim.spec.as_ref().expect("spec");
    assert!(spec.containers.is_empty(), "{:?}", spec.containers);
    assert!(spec.init_containers.is_none());
    let status = slim.status.as_ref().expect("status");
    assert!(status.container_statuses.is_none());
    s.restarts = vec![1, 4, 2];
    let slim = pod(&s).slim();
    let statuses = slim
        .status
        .as_ref()
        .and_then(|st| st.container_statuses.as_ref())
        .expect("statuses");
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].restart_count, 4);
}

/// A Service keeps everything a controller reads; its apply history goes.
#[test]
fn slim_services_drop_their_apply_history() {
    let whole = service(json!({"metadata": {
        "labels": {"app": "web"},
        "annotations": {LAST_APPLIED: "{\"big\": \"manifest\"}", "team": "a"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1"}]}}));
    let slim = whole.clone().slim();
    assert!(slim.metadata.managed_fields.is_none());
    let annotations = slim.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
    assert_eq!(slim.spec, whole.spec);
    assert_eq!(slim.metadata.labels, whole.metadata.labels);
}
