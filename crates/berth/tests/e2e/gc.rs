//! Garbage collection by ownerReferences: background, foreground and orphaning deletes.

use berth_testkit::{Cluster, eventually};

fn replicaset(c: &Cluster, name: &str) -> String {
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: c\n        image: berth/whoami\n"
    ));
    c.ok(&["get", "rs", name, "-o", "jsonpath={.metadata.uid}"])
}

fn owned_pod(c: &Cluster, name: &str, owner: &str, uid: &str) {
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: {owner}\n    uid: {uid}\n    controller: true\n    blockOwnerDeletion: true\nspec:\n  containers:\n  - name: c\n    image: berth/whoami\n"
    ));
}

fn gone(c: &Cluster, what: &[&str]) {
    eventually(&format!("{} to be gone", what.join(" ")), || {
        (!c.kubectl(what).status.success()).then_some(())
    });
}

#[test]
fn dependents_follow_their_owners() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    let uid = replicaset(&c, "bg");
    owned_pod(&c, "bg-pod", "bg", &uid);
    c.ok(&["delete", "rs", "bg"]);
    gone(&c, &["get", "pod", "bg-pod"]);

    let uid = replicaset(&c, "fg");
    owned_pod(&c, "fg-pod", "fg", &uid);
    c.ok(&["delete", "rs", "fg", "--cascade=foreground", "--wait=false"]);
    gone(&c, &["get", "pod", "fg-pod"]);
    gone(&c, &["get", "rs", "fg"]);

    let uid = replicaset(&c, "or");
    owned_pod(&c, "or-pod", "or", &uid);
    c.ok(&["delete", "rs", "or", "--cascade=orphan"]);
    gone(&c, &["get", "rs", "or"]);
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "or-pod",
            "-o",
            "jsonpath={.metadata.ownerReferences}"
        ]),
        ""
    );
}
