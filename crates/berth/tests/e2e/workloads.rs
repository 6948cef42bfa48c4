//! Deployments and ReplicaSets end to end, with the test playing kubelet: it marks pods
//! Running and Ready, so no node agent is needed.

use berth_testkit::{Cluster, eventually};

/// Marks every pod of the namespace that is not yet Ready as Running and Ready.
fn kubelet(c: &Cluster) {
    let names = c.ok(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[0].status}{\"\\n\"}{end}",
    ]);
    for (i, line) in names.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(name), ready) = (parts.next(), parts.next()) else {
            continue;
        };
        if ready == Some("True") {
            continue;
        }
        let ip = format!("10.244.0.{}", 10 + i);
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"2020-01-01T00:00:00Z"}}]}}}}"#
        );
        let _ = c.kubectl(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }
}

fn pods(c: &Cluster) -> usize {
    c.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
        .lines()
        .count()
}

#[test]
fn deployments_scale_roll_out_and_clean_up() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1",
        "--replicas=2",
        "--port=80",
    ]);
    eventually("2 pods", || (pods(&c) == 2).then_some(()));
    let rs = c.ok(&[
        "get",
        "rs",
        "-o",
        "jsonpath={.items[0].metadata.labels.pod-template-hash}",
    ]);
    assert!(!rs.is_empty(), "the ReplicaSet carries pod-template-hash");
    eventually("READY 2/2", || {
        kubelet(&c);
        let out = c.ok(&["get", "deploy", "web"]);
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(4).eq(["web", "2/2", "2", "2"]))
            .then_some(())
    });
    let out = c.kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"));

    let desc = c.ok(&["describe", "deployment", "web"]);
    assert!(
        desc.contains("ScalingReplicaSet") && desc.contains("Scaled up replica set web-"),
        "{desc}"
    );
    let desc = c.ok(&["describe", "rs"]);
    assert!(
        desc.contains("SuccessfulCreate") && desc.contains("Created pod: web-"),
        "{desc}"
    );
    c.ok(&["scale", "deployment", "web", "--replicas=3"]);
    eventually("3 pods", || (pods(&c) == 3).then_some(()));
    c.ok(&["scale", "deployment", "web", "--replicas=1"]);
    eventually("1 pod", || (pods(&c) == 1).then_some(()));

    // A template change rolls out a new ReplicaSet; the test keeps playing kubelet.
    c.ok(&["set", "image", "deployment/web", "nginx=nginx:2"]);
    eventually("the rollout to finish", || {
        kubelet(&c);
        let images = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]);
        let d = c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.updatedReplicas}/{.status.availableReplicas}/{.status.replicas}",
        ]);
        (images == "nginx:2" && d == "1/1/1").then_some(())
    });
    let out = c.kubectl(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&["get", "rs", "-o", "name"]).lines().count(),
        2,
        "the old ReplicaSet stays, scaled to 0"
    );

    c.ok(&["delete", "deployment", "web"]);
    eventually("ReplicaSets and pods to be collected", || {
        (c.ok(&["get", "rs,pods", "-o", "name"]).trim().is_empty()).then_some(())
    });
}

/// ReplicationControllers (v1), as the Kubernetes e2e framework and older manifests use them:
/// the selector and labels defaulted from the template, pods created, scaled, counted Ready
/// in `kubectl get rc`, and removed with their controller.
#[test]
fn replication_controllers_keep_their_pods() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    c.apply("apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: c\n        image: berth/whoami\n");
    assert_eq!(
        c.ok(&[
            "get",
            "rc",
            "web",
            "-o",
            "jsonpath={.spec.selector.app} {.metadata.labels.app}"
        ]),
        "web web"
    );
    eventually("2 pods", || (pods(&c) == 2).then_some(()));
    let owner = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.ownerReferences[0].kind}",
    ]);
    assert_eq!(owner, "ReplicationController");
    c.ok(&["scale", "rc", "web", "--replicas=3"]);
    eventually("3 pods ready in kubectl get rc", || {
        kubelet(&c);
        let out = c.ok(&["get", "rc", "web"]);
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(4).eq(["web", "3", "3", "3"]))
            .then_some(())
    });
    let wide = c.ok(&["get", "rc", "web", "-o", "wide"]);
    assert!(
        wide.contains("berth/whoami") && wide.contains("app=web"),
        "{wide}"
    );
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: bad\nspec:\n  selector:\n    app: other\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: c\n        image: x\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    c.ok(&["delete", "rc", "web"]);
    eventually("the pods to go with their controller", || {
        (pods(&c) == 0).then_some(())
    });
}

/// DaemonSets on the node: one Pod per Node, bound at creation and run by the agent, the
/// `kubectl get ds` columns, `kubectl rollout status` through a template change, and the
/// Pods gone with their DaemonSet.
#[test]
fn daemonsets_run_a_pod_on_the_node_and_roll() {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c.apply("apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels:\n      app: agent\n  template:\n    metadata:\n      labels:\n        app: agent\n    spec:\n      containers:\n      - name: c\n        image: berth/whoami\n");
    let row = || {
        let out = c.ok(&["get", "ds", "agent"]);
        out.lines()
            .nth(1)
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    eventually("the daemon to be ready on node-1", || {
        (row()[..7] == ["agent", "1", "1", "1", "1", "1", "<none>"]).then_some(())
    });
    let node_of = || {
        c.ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName} {.items[*].metadata.name}",
        ])
    };
    let first = node_of();
    assert!(first.starts_with("node-1 agent-"), "{first}");
    assert!(
        c.ok(&["rollout", "status", "ds/agent", "--timeout=30s"])
            .contains("daemon set \"agent\" successfully rolled out")
    );
    c.ok(&["set", "env", "ds/agent", "ROUND=2"]);
    let out = c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("the pod replaced", || {
        let now = node_of();
        (now.starts_with("node-1 agent-") && now != first && now.split(' ').count() == 2)
            .then_some(())
    });
    // Both templates are ControllerRevisions; `rollout undo` brings the first one back.
    let history = c.ok(&["rollout", "history", "ds/agent"]);
    assert!(
        history.contains("REVISION") && history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    c.ok(&["rollout", "undo", "ds/agent"]);
    eventually("the first template back", || {
        let env = c.ok(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env}",
        ]);
        env.is_empty().then_some(())
    });
    c.ok(&["delete", "ds", "agent"]);
    eventually("the daemon's pod to go", || {
        node_of().trim().is_empty().then_some(())
    });
}
