//! Garbage collection by ownerReferences: background, foreground and orphaning deletes, on a
//! pod its ReplicaSet adopted.

use berth_testkit::{Cluster, eventually};

/// A pod, then a one-replica ReplicaSet that selects it: the ReplicaSet adopts the pod
/// (it becomes its controller owner) instead of creating one.
fn adopted_pod(c: &Cluster, rs: &str) -> String {
    let pod = format!("{rs}-pod");
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  labels:\n    app: {rs}\nspec:\n  containers:\n  - name: c\n    image: berth/whoami\n"
    ));
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {rs}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {rs}\n  template:\n    metadata:\n      labels:\n        app: {rs}\n    spec:\n      containers:\n      - name: c\n        image: berth/whoami\n"
    ));
    eventually(&format!("{rs} to adopt {pod}"), || {
        let owner = c.ok(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].name}",
        ]);
        (owner == rs).then_some(())
    });
    assert_eq!(
        c.ok(&["get", "pods", "-l", &format!("app={rs}"), "-o", "name"])
            .lines()
            .count(),
        1
    );
    pod
}

fn gone(c: &Cluster, what: &[&str]) {
    eventually(&format!("{} to be gone", what.join(" ")), || {
        (!c.kubectl(what).status.success()).then_some(())
    });
}

#[test]
fn dependents_follow_their_owners() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    let pod = adopted_pod(&c, "bg");
    c.ok(&["delete", "rs", "bg"]);
    gone(&c, &["get", "pod", &pod]);

    let pod = adopted_pod(&c, "fg");
    c.ok(&["delete", "rs", "fg", "--cascade=foreground", "--wait=false"]);
    gone(&c, &["get", "pod", &pod]);
    gone(&c, &["get", "rs", "fg"]);

    let pod = adopted_pod(&c, "or");
    c.ok(&["delete", "rs", "or", "--cascade=orphan"]);
    gone(&c, &["get", "rs", "or"]);
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.ownerReferences}"
        ]),
        ""
    );
}
