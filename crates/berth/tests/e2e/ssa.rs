//! managedFields and server-side apply through the real kubectl: who owns which field after
//! create, scale and apply, fields dropped from an applied manifest, conflicts and
//! `--force-conflicts`, and a field two managers share.

use berth_testkit::{Backend, Cluster};
use serde_json::Value;

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    tier: front
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: traefik/whoami
";

/// The object's managedFields entries as `kubectl get --show-managed-fields` prints them.
fn entries(c: &Cluster, what: &[&str]) -> Vec<Value> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let obj: Value = serde_json::from_str(&c.ok(&args)).expect("json");
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(all: &'a [Value], manager: &str, subresource: &str) -> Option<&'a Value> {
    all.iter()
        .find(|e| e["manager"] == manager && e["subresource"].as_str().unwrap_or("") == subresource)
}

fn apply_ssa(c: &Cluster, manifest: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(extra);
    c.kubectl_stdin(&args, manifest)
}

fn replicas(c: &Cluster) -> String {
    c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
}

#[test]
fn every_write_records_its_manager() {
    let c = crate::cluster(Backend::Embedded);
    c.ok(&["create", "deployment", "web", "--image=traefik/whoami"]);
    let all = entries(&c, &["deploy", "web"]);
    let created = entry(&all, "kubectl-create", "").expect("kubectl-create entry");
    assert_eq!(created["operation"], "Update");
    assert_eq!(created["apiVersion"], "apps/v1");
    assert_eq!(created["fieldsType"], "FieldsV1");
    let f = &created["fieldsV1"];
    assert!(f["f:spec"]["f:replicas"].is_object(), "{f}");
    assert!(
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"whoami\"}"]["f:image"]
            .is_object(),
        "{f}"
    );
    assert!(f["f:metadata"]["f:labels"]["."].is_object(), "{f}");
    // Plain `kubectl get -o yaml` hides them, as against any cluster.
    let plain = c.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");
    // Scaling moves spec.replicas to kubectl's scale entry.
    c.ok(&["scale", "deploy", "web", "--replicas=3"]);
    let all = entries(&c, &["deploy", "web"]);
    let scaled = entry(&all, "kubectl", "scale").expect("scale entry");
    assert_eq!(
        scaled["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
    let created = entry(&all, "kubectl-create", "").expect("kubectl-create entry");
    assert!(created["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    // A label set with kubectl label is that command's.
    c.ok(&["label", "deploy", "web", "team=blue"]);
    let all = entries(&c, &["deploy", "web"]);
    let labelled = entry(&all, "kubectl-label", "").expect("kubectl-label entry");
    assert!(labelled["fieldsV1"]["f:metadata"]["f:labels"]["f:team"].is_object());
    // The controllers' status writes are recorded against the status subresource, under
    // the name their User-Agent gives, as kube-controller-manager's are.
    berth_testkit::eventually("a status entry", || {
        let all = entries(&c, &["deploy", "web"]);
        entry(&all, "kube-controller-manager", "status")
            .map(|e| assert!(e["fieldsV1"]["f:status"].is_object(), "{e}"))
    });
}

#[test]
fn server_side_apply_prunes_conflicts_and_shares() {
    let c = crate::cluster(Backend::Embedded);
    let out = apply_ssa(&c, DEPLOY, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deployment.apps/web serverside-applied\n"
    );
    let all = entries(&c, &["deploy", "web"]);
    let applied = entry(&all, "kubectl", "").expect("kubectl entry");
    assert_eq!(applied["operation"], "Apply");
    assert!(applied["fieldsV1"]["f:metadata"]["f:labels"]["f:tier"].is_object());
    // Dropped from the manifest, owned by nobody else: the label goes.
    let fewer = DEPLOY.replace("    tier: front\n", "");
    let out = apply_ssa(&c, &fewer, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]);
    assert_eq!(labels, r#"{"app":"web"}"#);
    // Strict field validation, as kubectl asks for it.
    let bad = fewer.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n");
    let out = apply_ssa(&c, &bad, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field \"spec.replicaz\""), "{err}");
    // Someone scales: applying another replica count conflicts with them.
    c.ok(&["scale", "deploy", "web", "--replicas=5"]);
    let three = fewer.replace("replicas: 2", "replicas: 3");
    let out = apply_ssa(&c, &three, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas\n"
        ),
        "{err}"
    );
    assert_eq!(replicas(&c), "5");
    // Forced, the applier takes the field over.
    let out = apply_ssa(&c, &three, &["--force-conflicts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replicas(&c), "3");
    let all = entries(&c, &["deploy", "web"]);
    assert!(entry(&all, "kubectl", "scale").is_none(), "{all:?}");
    // A second manager applying the same value shares it: no conflict.
    let out = apply_ssa(&c, &three, &["--field-manager=second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Dropped by the first, the field stays: the second still owns it.
    let no_replicas = three.replace("  replicas: 3\n", "");
    let out = apply_ssa(&c, &no_replicas, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replicas(&c), "3");
    // Dropped by both, it is gone (and defaulted again).
    let out = apply_ssa(&c, &no_replicas, &["--field-manager=second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replicas(&c), "1");
}

/// Server-side apply of a Scale (client-go's `ApplyScale`; kubectl has no way to send one):
/// the replica count moves, the applier's entry in the Deployment's managedFields names the
/// scale subresource, another manager's different count is a 409 naming the owner, and
/// forcing takes the field over.
#[test]
fn scale_subresource_is_applied_server_side() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    let c = crate::cluster(Backend::Embedded);
    // Created by an apply that leaves the replica count to the default: nobody owns it.
    let out = apply_ssa(
        &c,
        &DEPLOY.replace("  replicas: 2\n", ""),
        &["--field-manager=owner"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scale = |n: i64| {
        serde_json::json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": "web"}, "spec": {"replicas": n}})
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let api: Api<Deployment> = Api::namespaced(c.kube_client().await, "default");
        let s = api
            .patch_scale("web", &PatchParams::apply("a"), &Patch::Apply(scale(3)))
            .await
            .expect("a applies 3");
        assert_eq!(s.spec.and_then(|s| s.replicas), Some(3));
        // The Scale shows its owner as kube-apiserver does: the Scale's apiVersion.
        let owners: Vec<(Option<String>, Option<String>, Option<String>)> = s
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.manager, e.api_version, e.subresource))
            .collect();
        assert_eq!(
            owners,
            vec![(
                Some("a".to_owned()),
                Some("autoscaling/v1".to_owned()),
                Some("scale".to_owned())
            )]
        );
        let err = api
            .patch_scale("web", &PatchParams::apply("b"), &Patch::Apply(scale(5)))
            .await
            .expect_err("b conflicts with a");
        match err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 409, "{s:?}");
                assert_eq!(
                    s.message,
                    "Apply failed with 1 conflict: conflict with \"a\" with subresource \"scale\": .spec.replicas"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(replicas(&c), "3");
        let all = entries(&c, &["deploy", "web"]);
        let a = entry(&all, "a", "scale").expect("a's scale entry");
        assert_eq!(a["operation"], "Apply");
        assert_eq!(a["apiVersion"], "apps/v1");
        assert_eq!(a["fieldsV1"], serde_json::json!({"f:spec": {"f:replicas": {}}}));
        api.patch_scale("web", &PatchParams::apply("b").force(), &Patch::Apply(scale(5)))
            .await
            .expect("b forces 5");
    });
    assert_eq!(replicas(&c), "5");
    let yaml = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        yaml.contains("    manager: b\n    operation: Apply\n    subresource: scale\n"),
        "{yaml}"
    );
    let all = entries(&c, &["deploy", "web"]);
    assert!(entry(&all, "a", "scale").is_none(), "{all:?}");
    // The applier of the object itself never owned the count, and still owns the rest.
    let owner = entry(&all, "owner", "").expect("owner's entry");
    assert!(
        owner["fieldsV1"]["f:spec"]["f:replicas"].is_null(),
        "{owner}"
    );
    assert!(
        owner["fieldsV1"]["f:spec"]["f:template"].is_object(),
        "{owner}"
    );
}

/// Server-side apply to `/status` (`kubectl apply --server-side --subresource=status`) writes
/// the status only, recorded against the status subresource.
#[test]
fn status_subresource_is_applied_server_side() {
    let c = crate::cluster(Backend::Embedded);
    c.ok(&["create", "namespace", "sub"]);
    let manifest = "apiVersion: v1
kind: Namespace
metadata:
  name: sub
  labels:
    ignored: by-status
status:
  conditions:
  - type: Custom
    status: \"True\"
    reason: Applied
";
    let out = apply_ssa(
        &c,
        manifest,
        &["--subresource=status", "--field-manager=st"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = c.ok(&[
        "get",
        "ns",
        "sub",
        "-o",
        "jsonpath={.status.conditions[0].reason} {.metadata.labels.ignored}",
    ]);
    assert_eq!(got, "Applied ", "status applied, labels not");
    let all = entries(&c, &["ns", "sub"]);
    let st = entry(&all, "st", "status").expect("st's status entry");
    assert_eq!(st["operation"], "Apply");
    assert!(
        st["fieldsV1"]["f:status"]["f:conditions"].is_object(),
        "{st}"
    );
    assert!(st["fieldsV1"]["f:metadata"].is_null(), "{st}");
}

/// The other kinds with a scale subresource take a Scale apply the same way.
#[test]
fn scale_apply_on_replicasets_statefulsets_and_replicationcontrollers() {
    use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
    use k8s_openapi::api::core::v1::ReplicationController;
    use kube::api::{Api, Patch, PatchParams};
    let c = crate::cluster(Backend::Embedded);
    let template = "  template:\n    metadata:\n      labels:\n        app: x\n    spec:\n      containers:\n      - name: x\n        image: traefik/whoami\n";
    let manifests = [
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: x\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: x\n{template}"
        ),
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  replicas: 0\n  serviceName: x\n  selector:\n    matchLabels:\n      app: x\n{template}"
        ),
        format!(
            "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: x\nspec:\n  replicas: 0\n  selector:\n    app: x\n{template}"
        ),
    ];
    for m in &manifests {
        c.apply(m);
    }
    let scale = serde_json::json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                                   "metadata": {"name": "x"}, "spec": {"replicas": 2}});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = c.kube_client().await;
        let params = PatchParams::apply("a").force();
        let patch = Patch::Apply(&scale);
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), "default");
        let sts = Api::<StatefulSet>::namespaced(client.clone(), "default");
        let rc = Api::<ReplicationController>::namespaced(client, "default");
        for got in [
            rs.patch_scale("x", &params, &patch).await,
            sts.patch_scale("x", &params, &patch).await,
            rc.patch_scale("x", &params, &patch).await,
        ] {
            let got = got.expect("scale applied");
            assert_eq!(got.spec.and_then(|s| s.replicas), Some(2));
        }
    });
    for (what, version) in [("rs", "apps/v1"), ("sts", "apps/v1"), ("rc", "v1")] {
        let all = entries(&c, &[what, "x"]);
        let a = entry(&all, "a", "scale").unwrap_or_else(|| panic!("{what}: {all:?}"));
        assert_eq!(a["apiVersion"], version, "{what}");
        assert_eq!(
            c.ok(&["get", what, "x", "-o", "jsonpath={.spec.replicas}"]),
            "2",
            "{what}"
        );
    }
}
