//! Bad input: each invalid manifest gets the status code and the message kube-apiserver gives,
//! as kubectl prints it, and nothing is stored.

use super::on_both_stores;
use berth_testkit::Cluster;

fn svc(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn check(c: &Cluster, manifest: &str, expected: &str) {
    let out = c.kubectl_stdin(&["create", "-f", "-"], manifest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{manifest}");
    assert!(
        stderr.contains(expected),
        "for\n{manifest}\nexpected: {expected}\ngot: {stderr}"
    );
}

on_both_stores!(
    invalid_services_are_rejected_with_kube_messages,
    |c: &Cluster| {
        let p80 = "  ports:\n  - port: 80\n";
        check(
            c,
            &svc("Bad_Name", p80),
            "The Service \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
        );
        check(
            c,
            &svc(&"a".repeat(64), p80),
            "metadata.name: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be no more than 63 characters",
        );
        check(
            c,
            &svc(
                "dup",
                "  ports:\n  - name: http\n    port: 80\n  - name: http\n    port: 81\n",
            ),
            "The Service \"dup\" is invalid: spec.ports[1].name: Duplicate value: \"http\"",
        );
        check(
            c,
            &svc("noname", "  ports:\n  - port: 80\n  - port: 81\n"),
            "spec.ports[0].name: Required value",
        );
        check(
            c,
            &svc("range", "  ports:\n  - port: 70000\n"),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        );
        check(
            c,
            &svc("proto", "  ports:\n  - port: 80\n    protocol: FOO\n"),
            "spec.ports[0].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        );
        check(
            c,
            &svc("cip", "  clusterIP: 10.0.0.1\n  ports:\n  - port: 80\n"),
            "The Service \"cip\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
        );
        check(
            c,
            &svc("taken", "  clusterIP: 10.96.0.1\n  ports:\n  - port: 80\n"),
            "spec.clusterIPs: Invalid value: []string{\"10.96.0.1\"}: failed to allocate IP 10.96.0.1: provided IP is already allocated",
        );
        check(
            c,
            &svc(
                "np",
                "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 40000\n",
            ),
            "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767",
        );
        c.kubectl_stdin(
            &["create", "-f", "-"],
            &svc(
                "np1",
                "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 30100\n",
            ),
        );
        check(
            c,
            &svc(
                "np2",
                "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 30100\n",
            ),
            "The Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30100: provided port is already allocated",
        );
        check(
            c,
            &svc("cipnp", "  ports:\n  - port: 80\n    nodePort: 30101\n"),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        );
        check(
            c,
            &svc("extname", "  type: ExternalName\n"),
            "spec.externalName: Required value",
        );
        check(
            c,
            &svc(
                "sel",
                "  selector:\n    \"a b\": x\n  ports:\n  - port: 80\n",
            ),
            "spec.selector: Invalid value: \"a b\"",
        );
        check(
            c,
            &svc("unknown", "  portz:\n  - port: 80\n"),
            "unknown field \"spec.portz\"",
        );
        check(
            c,
            &svc("dupe", p80).replace("dupe", "np1"),
            "Error from server (AlreadyExists): error when creating \"STDIN\": services \"np1\" already exists",
        );
        // A server-side dry run answers as the create would.
        let out = c.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &svc("dupe", p80).replace("dupe", "np1"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("services \"np1\" already exists"),
            "{err}"
        );
        check(
            c,
            "apiVersion: v1\nkind: Service\nmetadata: [\n",
            "error converting YAML to JSON",
        );
        check(
            c,
            "apiVersion: v1\nkind: Bogus\nmetadata:\n  name: x\n",
            "no matches for kind \"Bogus\" in version \"v1\"",
        );
        // Nothing invalid was stored; the one valid NodePort Service was.
        assert_eq!(
            c.ok(&["get", "svc", "-o", "name"]),
            "service/kubernetes\nservice/np1\n"
        );
    }
);

on_both_stores!(raw_api_errors, |c: &Cluster| {
    let body = "x".repeat(4 * 1024 * 1024);
    let f = c.file("big.json", &format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{body}\"}}}}"));
    let out = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        f.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Request entity too large"), "{err}");
    let f = c.file("bad.json", "{not json");
    let out = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        f.to_str().expect("utf-8"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the object provided is unrecognized or malformed")
    );
    // A uid in an update is a precondition.
    c.ok(&["create", "configmap", "pre"]);
    let err = c.fails(&[
        "patch",
        "configmap",
        "pre",
        "--type=merge",
        "-p",
        r#"{"metadata":{"uid":"not-this-one"}}"#,
    ]);
    assert!(
        err.contains("Precondition failed: UID in precondition: not-this-one"),
        "{err}"
    );
    let out = c.kubectl(&["get", "--raw", "/api/v1/namespaces/default/bogus"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the server could not find the requested resource")
    );
});

on_both_stores!(no_access_without_a_client_certificate, |c: &Cluster| {
    let text = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    let anonymous: String = text
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    let anonymous = anonymous.replace("  user:\n", "  user:\n    token: not-a-valid-token\n");
    let path = c.file("anonymous.kubeconfig", &anonymous);
    let out = std::process::Command::new("kubectl")
        .args(["--kubeconfig", path.to_str().expect("utf-8"), "get", "svc"])
        .env("KUBECACHEDIR", c.dir().join("anon-cache"))
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: You must be logged in to the server"),
        "{err}"
    );
});

on_both_stores!(
    missing_namespace_is_not_found_and_leaks_nothing,
    |c: &Cluster| {
        let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: lost\n  namespace: nowhere\nspec:\n  clusterIP: 10.96.0.99\n  ports:\n  - port: 80\n";
        let out = c.kubectl_stdin(&["create", "-f", "-"], manifest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
        // The address it asked for is still free.
        c.apply(&manifest.replace("  namespace: nowhere\n", ""));
        assert_eq!(
            c.ok(&["get", "svc", "lost", "-o", "jsonpath={.spec.clusterIP}"]),
            "10.96.0.99"
        );
    }
);
