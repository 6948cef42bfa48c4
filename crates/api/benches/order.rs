//! The cost of writing objects in Go's field order (`berth_api::order`) against serde_json's
//! sorted output, per object, for 10,000 Services and 10,000 Pods as berth stores them
//! (managedFields included). Run with `cargo bench -p berth-api --bench order`; it prints
//! both timings and their ratio, and asserts only that both outputs read back the same.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn managed(manager: &str) -> Value {
    json!([{"manager": manager, "operation": "Update", "apiVersion": "v1",
        "time": "2026-12-07T01:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}}}])
}

fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench", "uid": format!("0c8e4bde-0000-4000-8000-{i:012}"),
            "creationTimestamp": "2026-12-07T01:00:00Z", "labels": {"app": format!("a{i}")},
            "managedFields": managed("kubectl-client-side-apply")},
        "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": format!("a{i}")}, "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
            "type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    })
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i}"), "namespace": "bench", "uid": format!("1c8e4bde-0000-4000-8000-{i:012}"),
            "creationTimestamp": "2026-12-07T01:00:00Z", "labels": {"app": "web", "pod-template-hash": "5d4f"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
                "uid": "2c8e4bde-0000-4000-8000-000000000000", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": managed("kube-controller-manager")},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "bench"}], "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "kube-api-access-x", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "periodSeconds": 10,
                    "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"}],
            "volumes": [{"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "nodeName": "node-1",
            "securityContext": {}, "schedulerName": "default-scheduler", "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority", "priority": 0},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": "2026-12-07T01:00:01Z"}],
            "hostIP": "10.201.0.2", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 2),
            "startTime": "2026-12-07T01:00:00Z",
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2026-12-07T01:00:01Z"}}, "image": "nginx:1.27",
                "imageID": "", "containerID": "berth://abc"}], "qosClass": "Burstable"},
    })
}

/// The best of 5 rounds of writing every object, per object.
fn time(objects: &[Value], write: impl Fn(&Value) -> Vec<u8>) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for o in objects {
                black_box(write(black_box(o)));
            }
            start.elapsed() / u32::try_from(objects.len()).unwrap_or(u32::MAX)
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    for (kind, objects) in [
        ("Service", (0..10_000).map(service).collect::<Vec<_>>()),
        ("Pod", (0..10_000).map(pod).collect()),
    ] {
        for o in &objects {
            let a: Value = serde_json::from_slice(&berth_api::order::to_vec(o)).expect("JSON");
            assert_eq!(
                a,
                serde_json::from_str::<Value>(&o.to_string()).expect("JSON")
            );
        }
        // What berth wrote before (`Value::to_string`, through fmt), the same sorted output
        // written straight into a Vec, and Go's order.
        let display = time(&objects, |o| o.to_string().into_bytes());
        let sorted = time(&objects, |o| serde_json::to_vec(o).unwrap_or_default());
        let ordered = time(&objects, berth_api::order::to_vec);
        let bytes = objects.iter().map(|o| o.to_string().len()).sum::<usize>() / objects.len();
        println!(
            "{kind} ({bytes} B): sorted: Value::to_string {display:?}, serde_json::to_vec {sorted:?}; Go order: order::to_vec {ordered:?} per object; ratio to to_string {:.2}, to to_vec {:.2}",
            ordered.as_secs_f64() / display.as_secs_f64(),
            ordered.as_secs_f64() / sorted.as_secs_f64()
        );
    }
}
