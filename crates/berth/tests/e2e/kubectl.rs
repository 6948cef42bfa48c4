//! The everyday kubectl commands of the tutorials: get, apply, create, patch, label, edit,
//! describe, delete, expose, run, scale, namespaces and contexts.

use super::on_both_stores;
use berth_testkit::Cluster;

const WEBAPP: &str = "apiVersion: v1
kind: Service
metadata:
  name: webapp
  labels:
    app: webapp
spec:
  type: NodePort
  selector:
    app: webapp
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
";

on_both_stores!(cluster_starts_with_defaults, |c: &Cluster| {
    let ns = c.ok(&["get", "ns", "-o", "name"]);
    for n in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-public",
    ] {
        assert!(ns.contains(n), "{ns}");
    }
    let svc = c.ok(&["get", "svc", "kubernetes"]);
    assert!(
        svc.contains("ClusterIP   10.96.0.1    <none>        443/TCP"),
        "{svc}"
    );
    let ep = c.ok(&[
        "get",
        "ep",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip}",
    ]);
    assert_eq!(ep, "127.0.0.1");
    let res = c.ok(&["api-resources"]);
    for want in [
        ["services", "svc", "v1", "true", "Service"],
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
    ] {
        assert!(res.lines().any(|l| l.split_whitespace().eq(want)), "{res}");
    }
    assert!(c.ok(&["version"]).contains("Server Version: v1.33"));
});

on_both_stores!(apply_creates_then_updates, |c: &Cluster| {
    let f = c.file("webapp.yaml", WEBAPP);
    let f = f.to_str().expect("utf-8 path");
    assert_eq!(c.ok(&["apply", "-f", f]), "service/webapp created\n");
    assert_eq!(c.ok(&["apply", "-f", f]), "service/webapp unchanged\n");
    c.file("webapp.yaml", &WEBAPP.replace("8080", "9090"));
    assert_eq!(c.ok(&["apply", "-f", f]), "service/webapp configured\n");
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "webapp",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "9090"
    );
    let wide = c.ok(&["get", "svc", "-o", "wide"]);
    assert!(wide.contains("NodePort    10.96."), "{wide}");
    assert!(
        wide.contains("80:30080/TCP") && wide.contains("app=webapp"),
        "{wide}"
    );
    let desc = c.ok(&["describe", "service", "webapp"]);
    for line in [
        "Selector:                 app=webapp",
        "Type:                     NodePort",
        "NodePort:                 http  30080/TCP",
    ] {
        assert!(desc.contains(line), "{desc}");
    }
    // No pod matches: the controllers leave an empty placeholder, as upstream's do.
    assert!(
        desc.lines()
            .any(|l| l.split_whitespace().eq(["Endpoints:"])),
        "{desc}"
    );
    assert_eq!(c.ok(&["delete", "-f", f]), "service \"webapp\" deleted\n");
    assert!(
        c.fails(&["get", "svc", "webapp"])
            .contains("Error from server (NotFound): services \"webapp\" not found")
    );
});

on_both_stores!(output_formats, |c: &Cluster| {
    c.apply(WEBAPP);
    let yaml = c.ok(&["get", "svc", "webapp", "-o", "yaml"]);
    for s in [
        "kind: Service",
        "clusterIP: 10.96.",
        "resourceVersion:",
        "uid:",
        "sessionAffinity: None",
        "ipFamilyPolicy: SingleStack",
    ] {
        assert!(yaml.contains(s), "{yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "svc", "webapp", "-o", "json"])).expect("json");
    assert_eq!(json["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(json["spec"]["externalTrafficPolicy"], "Cluster");
    let labels = c.ok(&["get", "svc", "--show-labels"]);
    assert!(labels.contains("app=webapp"), "{labels}");
    let all = c.ok(&["get", "all"]);
    assert!(
        all.contains("service/webapp") && all.contains("service/kubernetes"),
        "{all}"
    );
    let names = c.ok(&["get", "svc", "-l", "app=webapp", "-o", "name"]);
    assert_eq!(names, "service/webapp\n");
    assert_eq!(
        c.ok(&["get", "svc", "-l", "app notin (webapp)", "-o", "name"]),
        "service/kubernetes\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "--field-selector",
            "metadata.name=kubernetes",
            "-o",
            "name"
        ]),
        "service/kubernetes\n"
    );
    assert!(
        c.fails(&["get", "svc", "--field-selector", "spec.bogus=1"])
            .contains("field label not supported: spec.bogus")
    );
    let pods = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(pods.is_empty(), "{pods}");
});

on_both_stores!(create_subcommands, |c: &Cluster| {
    // These send protobuf bodies.
    assert_eq!(
        c.ok(&[
            "create",
            "service",
            "clusterip",
            "nginx-service",
            "--tcp=80:80"
        ]),
        "service/nginx-service created\n"
    );
    let out = c.ok(&["get", "svc", "nginx-service"]);
    assert!(
        out.contains("ClusterIP   10.96.") && out.contains("80/TCP"),
        "{out}"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "nginx-service",
            "-o",
            "jsonpath={.spec.selector.app}"
        ]),
        "nginx-service"
    );
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--node-port=30333",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort} {.spec.ports[0].targetPort}"
        ]),
        "30333 8080"
    );
    c.ok(&["create", "service", "loadbalancer", "lb", "--tcp=80:8080"]);
    let out = c.ok(&["get", "svc", "lb"]);
    assert!(
        out.contains("LoadBalancer") && out.contains("<pending>") && out.contains("80:3"),
        "{out}"
    );
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name",
        "example.com",
    ]);
    let out = c.ok(&["get", "svc", "ext"]);
    assert!(
        out.contains("ExternalName   <none>       example.com   <none>"),
        "{out}"
    );
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: headless\nspec:\n  clusterIP: None\n  selector:\n    app: x\n  ports:\n  - port: 80\n");
    assert_eq!(
        c.ok(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"]),
        "None"
    );
    assert_eq!(
        c.ok(&["create", "namespace", "bluegreen"]),
        "namespace/bluegreen created\n"
    );
    assert_eq!(
        c.ok(&[
            "create",
            "deployment",
            "web01",
            "--image=nginx",
            "--port=80",
            "--replicas=2",
            "-n",
            "bluegreen"
        ]),
        "deployment.apps/web01 created\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web01",
            "-n",
            "bluegreen",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ]),
        "2 nginx"
    );
    c.ok(&["create", "configmap", "cfg", "--from-literal=a=b"]);
    assert_eq!(c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"]), "b");
    c.ok(&["create", "secret", "generic", "s", "--from-literal=k=v"]);
    assert_eq!(
        c.ok(&["get", "secret", "s", "-o", "jsonpath={.data.k}"]),
        "dg=="
    );
    let err = c.fails(&["create", "service", "clusterip", "Bad_Name", "--tcp=80:80"]);
    assert!(err.contains("failed to create ClusterIP service: Service \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""), "{err}");
});

on_both_stores!(patch_label_edit, |c: &Cluster| {
    c.apply(WEBAPP);
    assert_eq!(
        c.ok(&[
            "patch",
            "svc",
            "webapp",
            "-p",
            r#"{"spec":{"type":"LoadBalancer"}}"#
        ]),
        "service/webapp patched\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "webapp",
            "-o",
            "jsonpath={.spec.type} {.spec.ports[0].nodePort}"
        ]),
        "LoadBalancer 30080"
    );
    c.ok(&[
        "patch",
        "svc",
        "webapp",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"web"}}}"#,
    ]);
    c.ok(&[
        "patch",
        "svc",
        "webapp",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/type","value":"ClusterIP"}]"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "webapp",
            "-o",
            "jsonpath={.spec.type}:{.spec.ports[0].nodePort}"
        ]),
        "ClusterIP:"
    );
    assert_eq!(
        c.ok(&["label", "svc", "webapp", "color=blue"]),
        "service/webapp labeled\n"
    );
    assert!(
        c.fails(&["label", "svc", "webapp", "color=green"])
            .contains("'color' already has a value (blue), and --overwrite is false")
    );
    c.ok(&["label", "svc", "webapp", "color=green", "--overwrite"]);
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "webapp",
            "-o",
            "jsonpath={.metadata.labels.color}"
        ]),
        "green"
    );
    // edit runs $EDITOR on the object; sed stands in for a person.
    let out = std::process::Command::new("kubectl")
        .args(["edit", "svc", "webapp"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .env("EDITOR", "sed -i s/color:\\ green/color:\\ red/")
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "webapp",
            "-o",
            "jsonpath={.metadata.labels.color}"
        ]),
        "red"
    );
    // The selector switch of a blue/green deployment.
    c.ok(&[
        "patch",
        "service",
        "webapp",
        "-p",
        r#"{"spec":{"selector":{"app":"green"}}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "webapp",
            "-o",
            "jsonpath={.spec.selector.app}"
        ]),
        "green"
    );
});

on_both_stores!(namespaces_and_contexts, |c: &Cluster| {
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bluegreen\n");
    c.ok(&[
        "config",
        "set-context",
        "--current",
        "--namespace",
        "bluegreen",
    ]);
    c.apply(WEBAPP);
    assert_eq!(c.ok(&["get", "svc", "-o", "name"]), "service/webapp\n");
    assert!(c.ok(&["get", "svc", "-A"]).contains("bluegreen   webapp"));
    c.ok(&[
        "config",
        "set-context",
        "--current",
        "--namespace",
        "default",
    ]);
    assert_eq!(
        c.ok(&["delete", "namespace", "bluegreen"]),
        "namespace \"bluegreen\" deleted\n"
    );
    assert!(!c.ok(&["get", "svc", "-A"]).contains("webapp"));
    assert!(
        c.fails(&["delete", "namespace", "default"])
            .contains("this namespace may not be deleted")
    );
});

on_both_stores!(deployments_run_expose_scale, |c: &Cluster| {
    c.ok(&[
        "create",
        "deployment",
        "web01",
        "--image=nginx",
        "--port=80",
        "--replicas=2",
    ]);
    let d = c.ok(&["get", "deploy"]);
    assert!(
        d.starts_with("NAME    READY   UP-TO-DATE   AVAILABLE   AGE"),
        "{d}"
    );
    assert_eq!(
        c.ok(&["scale", "deployment", "web01", "--replicas=3"]),
        "deployment.apps/web01 scaled\n"
    );
    assert_eq!(
        c.ok(&["get", "deploy", "web01", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    assert_eq!(
        c.ok(&[
            "expose",
            "deployment",
            "web01",
            "--type",
            "LoadBalancer",
            "--port",
            "80",
            "--name",
            "lb-web01"
        ]),
        "service/lb-web01 exposed\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "lb-web01",
            "-o",
            "jsonpath={.spec.selector.app}"
        ]),
        "web01"
    );
    assert_eq!(
        c.ok(&[
            "run",
            "nginx",
            "--image=nginx",
            "--restart=Never",
            "--port=80",
            "--expose"
        ]),
        "service/nginx created\npod/nginx created\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "nginx",
            "-o",
            "jsonpath={.spec.ports[0].port}"
        ]),
        "80"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "nginx",
            "-o",
            "jsonpath={.spec.restartPolicy} {.status.phase}"
        ]),
        "Never Pending"
    );
    assert_eq!(
        c.ok(&[
            "expose",
            "pod",
            "nginx",
            "--port=8080",
            "--target-port=80",
            "--name=nginx2"
        ]),
        "service/nginx2 exposed\n"
    );
    let desc = c.ok(&["describe", "deployment", "web01"]);
    assert!(desc.contains("Replicas:               3 desired"), "{desc}");
    let desc = c.ok(&["describe", "pod", "nginx"]);
    assert!(
        desc.lines()
            .any(|l| l.split_whitespace().eq(["Name:", "nginx"])),
        "{desc}"
    );
    c.ok(&["delete", "pod", "nginx"]);
    assert!(c.fails(&["get", "pod", "nginx"]).contains("NotFound"));
    assert_eq!(
        c.ok(&["delete", "deploy", "web01"]),
        "deployment.apps \"web01\" deleted\n"
    );
});
