//! Durability: objects and allocations survive a restart of the server.

use berth_testkit::Backend;

fn survives(backend: Backend) {
    let mut c = super::cluster(backend);
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: keep\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n");
    let before = c.ok(&[
        "get",
        "svc",
        "keep",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort} {.metadata.uid}",
    ]);
    c.restart();
    let after = c.ok(&[
        "get",
        "svc",
        "keep",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort} {.metadata.uid}",
    ]);
    assert_eq!(before, after);
    // The restarted server knows the address and port are taken.
    let parts: Vec<&str> = before.split(' ').collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  type: NodePort\n  clusterIP: {}\n  ports:\n  - port: 80\n    nodePort: {}\n",
        parts[0], parts[1]
    );
    let out = c.kubectl_stdin(&["create", "-f", "-"], &manifest);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provided IP is already allocated")
            && err.contains("provided port is already allocated"),
        "{err}"
    );
    assert_eq!(c.ok(&["get", "ns", "-o", "name"]).lines().count(), 4);
}

#[test]
fn embedded_survives_restart() {
    survives(Backend::Embedded);
}

#[test]
fn etcd_survives_restart() {
    survives(Backend::Etcd);
}

/// After a restart on another port, the `kubernetes` Endpoints point at the new address.
#[test]
fn kubernetes_endpoints_follow_the_server() {
    let c = super::cluster(Backend::Embedded);
    let port = c.url.rsplit(':').next().unwrap_or("").to_owned();
    let got = c.ok(&[
        "get",
        "ep",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].ports[0].port}",
    ]);
    assert_eq!(got, port);
    let svc = c.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(svc, port);
}
