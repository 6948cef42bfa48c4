//! `kubectl explain`: kubectl reads the OpenAPI v3 index and a group-version document, finds
//! the kind's schema by its GVK and follows `$ref`s down the field path; the output should
//! read as it does against kube-apiserver.

use super::on_both_stores;
use berth_testkit::Cluster;

on_both_stores!(explain_fields, |c: &Cluster| {
    let ports = c.ok(&["explain", "service.spec.ports"]);
    for want in [
        "KIND:       Service\n",
        "VERSION:    v1\n",
        "FIELD: ports <[]ServicePort>\n",
        "DESCRIPTION:\n    The list of ports that are exposed by this service.",
        "FIELDS:\n",
        "  port\t<integer> -required-\n    The port that will be exposed by this service.\n",
        "  targetPort\t<IntOrString>\n",
        "  protocol\t<string>\n",
    ] {
        assert!(ports.contains(want), "missing {want:?} in:\n{ports}");
    }

    let replicas = c.ok(&["explain", "deployment.spec.replicas"]);
    for want in [
        "GROUP:      apps\n",
        "KIND:       Deployment\n",
        "FIELD: replicas <integer>\n",
        "    Number of desired pods.",
    ] {
        assert!(replicas.contains(want), "missing {want:?} in:\n{replicas}");
    }

    // The top level: no `-required-` on metadata, as kube-apiserver's definitions have it.
    let svc = c.ok(&["explain", "svc"]);
    assert!(svc.contains("  metadata\t<ObjectMeta>\n"), "{svc}");
    assert!(svc.contains("  spec\t<ServiceSpec>\n"), "{svc}");

    let tree = c.ok(&[
        "explain",
        "deployment.spec.template.spec.containers",
        "--recursive",
    ]);
    assert!(tree.contains("FIELD: containers <[]Container>\n"), "{tree}");
    assert!(
        tree.contains("\n  ports\t<[]ContainerPort>\n    containerPort\t<integer> -required-\n"),
        "{tree}"
    );

    let err = c.fails(&["explain", "service.spec.nope"]);
    assert!(err.contains(r#"field "nope" does not exist"#), "{err}");
});
