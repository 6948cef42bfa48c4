//! StatefulSets on the default single node: stable names created in order, the headless
//! Service's per-Pod DNS names, scaling down from the top, a partitioned rolling update and
//! `kubectl rollout status`, ControllerRevisions with `kubectl rollout history` and `undo`,
//! garbage collection of the Pods and revisions.

use std::path::Path;

use berth_testkit::{Cluster, eventually};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  clusterIP: None
  selector:
    app: nginx
  ports:
  - name: web
    port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: web
        image: traefik/whoami
        ports:
        - containerPort: 80
          name: web
        readinessProbe:
          httpGet:
            path: /
            port: 80
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#;

fn pods(c: &Cluster) -> Vec<String> {
    c.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn created_at(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.metadata.creationTimestamp}",
    ])
}

/// The REVISION column of `kubectl rollout history statefulset/web`.
fn revisions_listed(c: &Cluster) -> Vec<String> {
    c.ok(&["rollout", "history", "statefulset/web"])
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn a_statefulset_runs_named_pods_in_order_with_dns_names() {
    let c = Cluster::start_single_node(Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.apply(MANIFEST);
    let status = c.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{status}"
    );
    assert_eq!(pods(&c), ["web-0", "web-1", "web-2"]);
    // OrderedReady: each Pod was made after its predecessor (timestamps have 1 s steps, so
    // the check is "not before").
    let times: Vec<String> = ["web-0", "web-1", "web-2"]
        .iter()
        .map(|p| created_at(&c, p))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=web",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
    let get = c.ok(&["get", "statefulset", "web"]);
    assert!(
        get.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(2).eq(["web", "3/3"])),
        "{get}"
    );
    // volumeClaimTemplates stand as emptyDir volumes; each Pod has its hostname.
    let volume = c.ok(&[
        "get",
        "pod",
        "web-1",
        "-o",
        "jsonpath={.spec.volumes[?(@.name==\"www\")].emptyDir}",
    ]);
    assert_eq!(volume, "{}");

    // web-0.nginx.default.svc.cluster.local is web-0's address.
    let h = c.host().expect("single node");
    for pod in ["web-0", "web-2"] {
        let ip = c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
        let name = format!("{pod}.nginx.default.svc.cluster.local");
        eventually(&format!("{name} to resolve"), || {
            let out = h.exec(&["dig", "+short", "+time=2", "@10.96.0.10", &name]);
            (String::from_utf8_lossy(&out.stdout).trim() == ip).then_some(())
        });
    }

    // Scaling down removes the highest ordinals.
    c.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    eventually("web-1 and web-2 to go", || {
        (pods(&c) == ["web-0"]).then_some(())
    });

    // A partitioned rolling update replaces only the Pods at or above the partition.
    c.ok(&["scale", "statefulset", "web", "--replicas=3"]);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    let before = c.ok(&["get", "pod", "web-0", "-o", "jsonpath={.metadata.uid}"]);
    c.ok(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}},"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#,
    ]);
    let status = c.ok(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{status}"
    );
    // `None` while the pod is being replaced (deleted, not yet recreated).
    let rev = |pod: &str| {
        let out = c.kubectl(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.metadata.annotations.rev}",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    eventually("web-2 to run the new template", || {
        (rev("web-2").as_deref() == Some("2")).then_some(())
    });
    assert_eq!(
        rev("web-1").as_deref(),
        Some(""),
        "web-1 is below the partition"
    );
    let after = c.ok(&["get", "pod", "web-0", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(before, after, "web-0 is below the partition");

    // Each template is a ControllerRevision: a Pod below the partition deleted mid-rollout
    // comes back at the revision it had, and `kubectl rollout` lists and restores them.
    let revisions = c.ok(&["get", "controllerrevisions"]);
    assert!(
        revisions
            .lines()
            .next()
            .is_some_and(|l| l
                .split_whitespace()
                .eq(["NAME", "CONTROLLER", "REVISION", "AGE"])),
        "{revisions}"
    );
    assert_eq!(
        revisions.matches("statefulset.apps/web").count(),
        2,
        "{revisions}"
    );
    let old_uid = c.ok(&["get", "pod", "web-1", "-o", "jsonpath={.metadata.uid}"]);
    c.ok(&["delete", "pod", "web-1"]);
    eventually("web-1 to come back", || {
        let uid = c.ok(&[
            "get",
            "pods",
            "-l",
            "statefulset.kubernetes.io/pod-name=web-1",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ]);
        (!uid.is_empty() && uid != old_uid).then_some(())
    });
    assert_eq!(
        rev("web-1").as_deref(),
        Some(""),
        "web-1 is rebuilt at the current revision"
    );
    assert_eq!(revisions_listed(&c), ["1", "2"]);
    let second = c.ok(&["rollout", "history", "statefulset/web", "--revision=2"]);
    assert!(
        second.contains("Annotations:\trev: 2"),
        "revision 2's template: {second}"
    );
    let undo = c.ok(&["rollout", "undo", "statefulset/web"]);
    assert!(undo.contains("rolled back"), "{undo}");
    eventually("web-2 to go back to the first template", || {
        (rev("web-2").as_deref() == Some("")).then_some(())
    });
    assert_eq!(
        revisions_listed(&c),
        ["2", "3"],
        "revision 1 came back as 3"
    );

    // Deleting the set collects its Pods and its history.
    c.ok(&["delete", "statefulset", "web"]);
    eventually("the Pods and revisions to be collected", || {
        (pods(&c).is_empty()
            && c.ok(&["get", "controllerrevisions", "-o", "name"])
                .is_empty())
        .then_some(())
    });
}
