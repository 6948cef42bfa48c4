//! The controllers inside `berth server`, driven by kubectl, with pod status set by the test
//! itself (no node agent): Endpoints, EndpointSlices, mirroring, LoadBalancer IPs.

use berth_testkit::{Backend, Cluster, eventually};

fn cluster(backend: Backend) -> Cluster {
    Cluster::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_berth")),
        backend,
        &["--lb-pool=10.100.10.10-10.100.10.11"],
    )
}

/// A pod as a scheduler and kubelet would leave it: running with an IP and a Ready condition.
fn pod(c: &Cluster, name: &str, app: &str, ip: &str, ready: bool, ports: &str) {
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {app}\nspec:\n  containers:\n  - name: c\n    image: berth/whoami\n    ports:\n{ports}"
    ));
    set_ready(c, name, ip, ready);
}

fn set_ready(c: &Cluster, name: &str, ip: &str, ready: bool) {
    let status = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{}"}}]}}}}"#,
        if ready { "True" } else { "False" }
    );
    c.ok(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

fn wait_for(c: &Cluster, args: &[&str], want: &str) {
    eventually(
        &format!("kubectl {} to print {want:?}", args.join(" ")),
        || {
            let out = c.kubectl(args);
            (String::from_utf8_lossy(&out.stdout) == want).then_some(())
        },
    );
}

const HTTP: &str = "    - containerPort: 8080\n      name: http\n";

fn endpoints_follow_pods(backend: Backend) {
    let c = cluster(backend);
    pod(&c, "blue-1", "blue", "10.244.0.11", true, HTTP);
    pod(&c, "blue-2", "blue", "10.244.0.12", false, HTTP);
    pod(&c, "green-1", "green", "10.244.0.21", true, HTTP);
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: blue\n  ports:\n  - name: web\n    port: 80\n    targetPort: http\n");
    let ready = [
        "get",
        "ep",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}/{.subsets[*].notReadyAddresses[*].ip}",
    ];
    wait_for(&c, &ready, "10.244.0.11/10.244.0.12");
    let ports = c.ok(&[
        "get",
        "ep",
        "web",
        "-o",
        "jsonpath={.subsets[0].ports[0].port} {.subsets[0].ports[0].name}",
    ]);
    assert_eq!(
        ports, "8080 web",
        "the named targetPort resolves to the container port"
    );
    // Readiness flips move addresses between the lists.
    set_ready(&c, "blue-2", "10.244.0.12", true);
    wait_for(&c, &ready, "10.244.0.11 10.244.0.12/");
    set_ready(&c, "blue-1", "10.244.0.11", false);
    wait_for(&c, &ready, "10.244.0.12/10.244.0.11");
    // The slices say the same, with conditions.
    let slice = [
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
    ];
    wait_for(&c, &slice, "10.244.0.11=false 10.244.0.12=true ");
    let desc = c.ok(&["describe", "service", "web"]);
    assert!(
        desc.lines()
            .any(|l| l.split_whitespace().eq(["Endpoints:", "10.244.0.12:8080"])),
        "{desc}"
    );
    // Blue/green: switching the selector moves the Service at once.
    c.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"selector":{"app":"green"}}}"#,
    ]);
    wait_for(&c, &ready, "10.244.0.21/");
    wait_for(&c, &slice, "10.244.0.21=true ");
    // Deleting a pod removes it; deleting the Service removes its Endpoints and slices.
    c.ok(&["delete", "pod", "green-1"]);
    wait_for(&c, &["get", "ep", "web", "-o", "jsonpath={.subsets}"], "");
    c.ok(&["delete", "svc", "web"]);
    wait_for(
        &c,
        &[
            "get",
            "ep,endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "name",
        ],
        "",
    );
    eventually("the Endpoints of the deleted Service to go", || {
        (!c.kubectl(&["get", "ep", "web"]).status.success()).then_some(())
    });
}

#[test]
fn endpoints_follow_pods_embedded() {
    endpoints_follow_pods(Backend::Embedded);
}

#[test]
fn endpoints_follow_pods_etcd() {
    endpoints_follow_pods(Backend::Etcd);
}

#[test]
fn selectorless_service_keeps_manual_endpoints_and_is_mirrored() {
    let c = cluster(Backend::Embedded);
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: external-db\nspec:\n  ports:\n  - port: 5432\n");
    c.apply("apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: external-db\nsubsets:\n- addresses:\n  - ip: 192.0.2.10\n  ports:\n  - port: 5432\n");
    let slice = [
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=external-db",
        "-o",
        "jsonpath={.items[0].endpoints[0].addresses[0]} {.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}",
    ];
    wait_for(
        &c,
        &slice,
        "192.0.2.10 endpointslicemirroring-controller.k8s.io",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        c.ok(&[
            "get",
            "ep",
            "external-db",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}"
        ]),
        "192.0.2.10"
    );
    // kubectl prints kube-apiserver 1.33's deprecation warning for v1 Endpoints.
    let out = c.kubectl(&["get", "ep", "external-db"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Warning: v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"
        ),
        "{out:?}"
    );
    // Tutorial 003's order: the same Service re-applied with a selector. The mirrored slice
    // goes, and the Endpoints follow the (absent) pods.
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: external-db\nspec:\n  selector:\n    app: db\n  ports:\n  - port: 5432\n");
    wait_for(
        &c,
        &[
            "get",
            "endpointslices",
            "-l",
            "endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io",
            "-o",
            "name",
        ],
        "",
    );
    let described = c.ok(&["describe", "svc", "external-db"]);
    assert!(!described.contains("192.0.2.10"), "{described}");
}

#[test]
fn load_balancer_ips_go_back_to_the_pool_on_delete() {
    // Two addresses, four Services one after another: each delete must free its address.
    let c = cluster(Backend::Embedded);
    for i in 0..4 {
        let name = format!("lb-{i}");
        c.ok(&["create", "service", "loadbalancer", &name, "--tcp=80:80"]);
        eventually(&format!("{name} to get an address"), || {
            let ip = c.ok(&[
                "get",
                "svc",
                &name,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ]);
            ip.starts_with("10.100.10.").then_some(())
        });
        c.ok(&["delete", "svc", &name]);
    }
}

#[test]
fn load_balancer_ips_come_from_the_pool() {
    let c = cluster(Backend::Embedded);
    let ip = |name: &str| {
        vec![
            "get".to_owned(),
            "svc".to_owned(),
            name.to_owned(),
            "-o".to_owned(),
            "jsonpath={.status.loadBalancer.ingress[0].ip}".to_owned(),
        ]
    };
    let run = |args: Vec<String>| args;
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: wanted\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 10.100.10.11\n  ports:\n  - port: 80\n");
    let wanted = run(ip("wanted"));
    wait_for(
        &c,
        &wanted.iter().map(String::as_str).collect::<Vec<_>>(),
        "10.100.10.11",
    );
    c.ok(&["create", "service", "loadbalancer", "first", "--tcp=80:80"]);
    let first = run(ip("first"));
    wait_for(
        &c,
        &first.iter().map(String::as_str).collect::<Vec<_>>(),
        "10.100.10.10",
    );
    c.ok(&["create", "service", "loadbalancer", "third", "--tcp=80:80"]);
    eventually("an AllocationFailed event", || {
        let d = c.ok(&["describe", "service", "third"]);
        d.contains("AllocationFailed").then_some(())
    });
    let out = c.ok(&["get", "svc", "third"]);
    assert!(out.contains("<pending>"), "{out}");
    // Freed on delete, and the pending Service gets it.
    c.ok(&["delete", "svc", "first"]);
    let third = run(ip("third"));
    wait_for(
        &c,
        &third.iter().map(String::as_str).collect::<Vec<_>>(),
        "10.100.10.10",
    );
    // Other loadBalancerClasses are left alone.
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  type: LoadBalancer\n  loadBalancerClass: example.com/other\n  ports:\n  - port: 80\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "other",
            "-o",
            "jsonpath={.status.loadBalancer.ingress}"
        ]),
        ""
    );
    // Changing the type away from LoadBalancer releases the address.
    c.ok(&[
        "patch",
        "svc",
        "wanted",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "wanted",
            "-o",
            "jsonpath={.status.loadBalancer.ingress}"
        ]),
        ""
    );
}

#[test]
fn every_namespace_has_a_default_service_account_and_the_root_ca() {
    let c = cluster(Backend::Embedded);
    c.ok(&["create", "namespace", "team"]);
    let sa = ["get", "sa", "-n", "team", "-o", "name"];
    wait_for(&c, &sa, "serviceaccount/default\n");
    let ca = [
        "get",
        "cm",
        "kube-root-ca.crt",
        "-n",
        "team",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ];
    let pem = eventually("kube-root-ca.crt in team", || {
        let out = c.kubectl(&ca);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("BEGIN CERTIFICATE").then_some(text)
    });
    let on_disk = std::fs::read_to_string(c.dir().join("data/pki/ca.crt")).expect("ca.crt");
    assert_eq!(pem.trim(), on_disk.trim());
    // Both come back when deleted, as kube-controller-manager makes them again.
    c.ok(&["delete", "sa", "default", "-n", "team"]);
    wait_for(&c, &sa, "serviceaccount/default\n");
    c.ok(&["delete", "cm", "kube-root-ca.crt", "-n", "team"]);
    eventually("kube-root-ca.crt to come back", || {
        c.kubectl(&ca).status.success().then_some(())
    });
    wait_for(
        &c,
        &["get", "sa", "default", "-n", "default", "-o", "name"],
        "serviceaccount/default\n",
    );
    // Pods run as the default ServiceAccount unless they name one.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: berth/whoami\n");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.spec.serviceAccountName} {.spec.serviceAccount}"
        ]),
        "default default"
    );
}
