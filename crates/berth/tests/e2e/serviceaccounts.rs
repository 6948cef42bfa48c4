//! ServiceAccount tokens: `kubectl create token` (TokenRequest), bearer authentication that
//! ends with the ServiceAccount, and the token, CA and namespace every pod finds under
//! /var/run/secrets/kubernetes.io/serviceaccount, which in-cluster clients (kubectl here)
//! use to reach the API from a pod.

use berth_testkit::{Backend, Cluster, eventually};

#[test]
fn tokens_authenticate_as_their_service_account_while_it_exists() {
    let c = Cluster::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_berth")),
        Backend::Embedded,
    );
    let token = c.ok(&["create", "token", "default"]).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // A kubeconfig with no user: the token is the only credential.
    let empty = c.dir().join("empty.kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").expect("kubeconfig");
    let ca = c.dir().join("data/pki/ca.crt");
    let (empty, ca) = (empty.display().to_string(), ca.display().to_string());
    let with = |token: &str, args: &[&str]| {
        let mut all = vec![
            "--kubeconfig",
            &empty,
            "--server",
            &c.url,
            "--certificate-authority",
            &ca,
            "--token",
            token,
        ];
        all.extend_from_slice(args);
        c.kubectl(&all)
    };
    let out = with(&token, &["get", "serviceaccounts", "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("serviceaccount/default"),
        "{out:?}"
    );
    for bad in ["x.y.z", &format!("{token}x")] {
        let out = with(bad, &["get", "pods"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("You must be logged in to the server (Unauthorized)"),
            "{err}"
        );
    }
    let err = c.fails(&["create", "token", "default", "--duration=1m"]);
    assert!(
        err.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = c.fails(&["create", "token", "nobody"]);
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );
    // The ServiceAccount deleted (and made again, with a new uid): its tokens stop working.
    let uid = c.ok(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
    c.ok(&["delete", "serviceaccount", "default"]);
    eventually("the default ServiceAccount to come back", || {
        let out = c.kubectl(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
        let now = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !now.is_empty() && now != uid).then_some(())
    });
    let out = with(&token, &["get", "pods"]);
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn pods_reach_the_api_with_their_service_account_token() {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: me\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'ls {dir}; cat {dir}/namespace; echo; kubectl get pods -o name; exec sleep 3600']\n"
    ));
    let mounts = c.ok(&[
        "get",
        "pod",
        "me",
        "-o",
        "jsonpath={.spec.containers[0].volumeMounts[0].mountPath} {.spec.volumes[0].name}",
    ]);
    assert!(
        mounts.starts_with(&format!("{dir} kube-api-access-")),
        "{mounts}"
    );
    let logs = eventually("kubectl in the pod to list pods", || {
        let out = c.ok(&["logs", "me"]);
        out.contains("pod/me").then_some(out)
    });
    assert_eq!(logs, "ca.crt\nnamespace\ntoken\ndefault\npod/me\n");
    // Opting out leaves the pod without the volume.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: none\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n");
    assert_eq!(
        c.ok(&["get", "pod", "none", "-o", "jsonpath={.spec.volumes}"]),
        ""
    );
}
