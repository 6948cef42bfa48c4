//! Field sets, their `fieldsV1` encoding, Update and Apply ownership, checked against what
//! kube-apiserver records for the same writes.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn writer<'a>(manager: &'a str, subresource: &'a str) -> Writer<'a> {
    Writer {
        manager,
        subresource,
        api_version: "apps/v1".into(),
        obj_kind: "Deployment",
        has_status: true,
        now: NOW,
    }
}

fn deploy(replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}
            }
        }
    })
}

fn fields(obj: &Value, i: usize) -> Value {
    obj["metadata"]["managedFields"][i]["fieldsV1"].clone()
}

#[test]
fn manager_names_come_from_the_user_agent() {
    let check = |fm: Option<&str>, ua: &str, want: &str| {
        assert_eq!(manager_or_user_agent(fm, ua), want, "{fm:?} {ua:?}");
    };
    check(Some("mine"), "kubectl/v1.33.0", "mine");
    check(
        None,
        "kubectl/v1.33.0 (linux/amd64) kubernetes/abc",
        "kubectl",
    );
    check(
        Some(""),
        "kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/abc/system:serviceaccount:kube-system:deployment-controller",
        "kube-controller-manager",
    );
    check(None, "", "");
    check(None, &"x".repeat(300), &"x".repeat(128));
    check(None, "a\u{7}b/c", "ab");
}

#[test]
fn create_records_what_kube_apiserver_records() {
    let mut obj = deploy(2, json!({"app": "web"}));
    record_update(None, &mut obj, &writer("kubectl-create", ""));
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl-create");
    assert_eq!(entry["operation"], "Update");
    assert_eq!(entry["apiVersion"], "apps/v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["time"], NOW);
    assert!(entry.get("subresource").is_none());
    assert_eq!(
        fields(&obj, 0),
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {}
                    }}}
                }
            }
        })
    );
}

#[test]
fn updates_move_ownership_and_merge_per_manager() {
    let mut obj = deploy(2, json!({"app": "web"}));
    record_update(None, &mut obj, &writer("kubectl-create", ""));
    // Another manager changes replicas: it now owns them, the creator no longer does.
    let mut scaled = obj.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(
        Some(&obj),
        &mut scaled,
        &Writer {
            now: "2026-01-02T00:00:00Z",
            ..writer("kubectl", "scale")
        },
    );
    let mf = &scaled["metadata"]["managedFields"];
    assert_eq!(mf.as_array().map(Vec::len), Some(2));
    assert_eq!(mf[1]["manager"], "kubectl");
    assert_eq!(mf[1]["subresource"], "scale");
    assert_eq!(mf[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    assert!(mf[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    // A write that changes nothing adds no entry.
    let mut same = scaled.clone();
    record_update(Some(&scaled), &mut same, &writer("other", ""));
    assert_eq!(same, scaled);
    // A removed label leaves every entry.
    let mut unlabelled = scaled.clone();
    unlabelled["metadata"]["labels"] = json!({});
    record_update(Some(&scaled), &mut unlabelled, &writer("kubectl-edit", ""));
    let create = &unlabelled["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(create["f:metadata"]["f:labels"].get("f:app").is_none());
    // Status writes record the subresource and only status fields.
    let mut status = unlabelled.clone();
    status["status"] = json!({"replicas": 5});
    record_update(
        Some(&unlabelled),
        &mut status,
        &writer("kube-controller-manager", "status"),
    );
    let mf = status["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let e = mf
        .iter()
        .find(|e| e["subresource"] == "status")
        .expect("status entry");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:status": {".": {}, "f:replicas": {}}})
    );
}

#[test]
fn reset_with_one_empty_entry() {
    let mut obj = deploy(2, json!({"app": "web"}));
    record_update(None, &mut obj, &writer("a", ""));
    let mut next = obj.clone();
    next["metadata"]["managedFields"] = json!([{}]);
    record_update(Some(&obj), &mut next, &writer("b", ""));
    assert!(next["metadata"].get("managedFields").is_none());
}

#[test]
fn fields_v1_round_trips_and_rejects_garbage() {
    let v =
        json!({"f:a": {".": {}, "f:b": {}}, "k:{\"name\":\"x\"}": {}, "v:\"fin\"": {}, "i:3": {}});
    let set = FieldSet::from_fields_v1(&v).expect("reads");
    assert_eq!(set.to_fields_v1(), v);
    for bad in [
        json!("x"),
        json!({"q:a": {}}),
        json!({"k:[1]": {}}),
        json!({"i:x": {}}),
        json!({"f:a": 1}),
    ] {
        assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
    }
}

#[test]
fn apply_prunes_what_this_manager_dropped() {
    let live = json!({});
    let first = apply(
        &live,
        &deploy(2, json!({"app": "web", "tier": "front"})),
        &writer("kubectl", ""),
        false,
    )
    .expect("applies");
    assert_eq!(
        fields(&first, 0)["f:metadata"],
        json!({"f:labels": {"f:app": {}, "f:tier": {}}})
    );
    assert_eq!(first["metadata"]["managedFields"][0]["operation"], "Apply");
    let second = apply(
        &first,
        &deploy(2, json!({"app": "web"})),
        &writer("kubectl", ""),
        false,
    )
    .expect("applies");
    assert_eq!(second["metadata"]["labels"], json!({"app": "web"}));
    // Re-applying the same configuration changes nothing, not even the time.
    let third = apply(
        &second,
        &deploy(2, json!({"app": "web"})),
        &Writer {
            now: "2030-01-01T00:00:00Z",
            ..writer("kubectl", "")
        },
        false,
    )
    .expect("applies");
    assert_eq!(third, second);
}

#[test]
fn apply_conflicts_with_other_owners_unless_forced() {
    let mut live = deploy(2, json!({"app": "web"}));
    record_update(None, &mut live, &writer("kubectl-client-side-apply", ""));
    let err = apply(
        &live,
        &deploy(3, json!({"app": "web"})),
        &writer("kubectl", ""),
        false,
    )
    .expect_err("conflicts");
    assert_eq!(
        err,
        vec![Conflict {
            owner: "\"kubectl-client-side-apply\" using apps/v1".into(),
            path: ".spec.replicas".into()
        }]
    );
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    // The same values are no conflict: the field is shared.
    let shared = apply(
        &live,
        &deploy(2, json!({"app": "web"})),
        &writer("kubectl", ""),
        false,
    )
    .expect("shares");
    let mf = shared["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(mf.len(), 2);
    assert!(
        mf.iter()
            .all(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
    );
    // Dropping a shared field keeps it: the other manager still owns it.
    let mut dropped = deploy(2, json!({"app": "web"}));
    dropped["spec"]
        .as_object_mut()
        .map(|s| s.remove("replicas"));
    let kept = apply(&shared, &dropped, &writer("kubectl", ""), false).expect("applies");
    assert_eq!(kept["spec"]["replicas"], 2);
    // Forced: the applier takes the field over.
    let forced = apply(
        &live,
        &deploy(3, json!({"app": "web"})),
        &writer("kubectl", ""),
        true,
    )
    .expect("forced");
    assert_eq!(forced["spec"]["replicas"], 3);
    let mf = forced["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let csa = mf
        .iter()
        .find(|e| e["manager"] == "kubectl-client-side-apply")
        .expect("still an owner");
    assert!(csa["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    // Several conflicts are listed by owner.
    let many = vec![
        Conflict {
            owner: "\"b\"".into(),
            path: ".x".into(),
        },
        Conflict {
            owner: "\"a\"".into(),
            path: ".y".into(),
        },
    ];
    assert_eq!(
        conflict_message(&many),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .y\nconflicts with \"b\":\n- .x"
    );
}

#[test]
fn keyed_items_are_pruned_but_fields_others_own_stay() {
    let mut cfg = deploy(1, json!({"app": "web"}));
    cfg["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]);
    let first = apply(&json!({}), &cfg, &writer("kubectl", ""), false).expect("applies");
    // Another manager sets a field of the sidecar.
    let mut edited = first.clone();
    edited["spec"]["template"]["spec"]["containers"][1]["args"] = json!(["sleep"]);
    record_update(Some(&first), &mut edited, &writer("kubectl-edit", ""));
    let second = apply(
        &edited,
        &deploy(1, json!({"app": "web"})),
        &writer("kubectl", ""),
        false,
    )
    .expect("applies");
    let containers = &second["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["name"], "web");
    assert_eq!(containers[1], json!({"args": ["sleep"], "name": "side"}));
    assert_eq!(
        path_string(
            &FieldSet::from_fields_v1(&json!({"f:spec": {"k:{\"name\":\"x\"}": {"f:image": {}}}}))
                .expect("reads")
                .paths()[0]
        ),
        ".spec[name=\"x\"].image"
    );
}

#[test]
fn ports_are_keyed_by_number_and_protocol() {
    let w = Writer {
        api_version: "v1".into(),
        obj_kind: "Service",
        has_status: true,
        ..writer("kubectl", "")
    };
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
        "spec": {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}});
    let applied = apply(&json!({}), &svc, &w, false).expect("applies");
    let ports = &fields(&applied, 0)["f:spec"]["f:ports"];
    assert!(
        ports["k:{\"port\":53,\"protocol\":\"UDP\"}"]["."].is_object(),
        "{ports}"
    );
    assert!(
        ports["k:{\"port\":53,\"protocol\":\"TCP\"}"]["f:port"].is_object(),
        "{ports}"
    );
    // Dropping the UDP port removes that item only.
    let mut tcp_only = svc.clone();
    tcp_only["spec"]["ports"] = json!([{"port": 53}]);
    let pruned = apply(&applied, &tcp_only, &w, false).expect("applies");
    assert_eq!(pruned["spec"]["ports"], json!([{"port": 53}]));
}

#[test]
fn update_entries_are_capped_into_ancient_changes() {
    let mut obj =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {}});
    for i in 0..13 {
        let mut next = obj.clone();
        next["data"][format!("k{i}")] = json!("v");
        let now = format!("2026-01-01T00:00:{i:02}Z");
        let manager = format!("m{i:02}");
        let w = Writer {
            api_version: "v1".into(),
            obj_kind: "ConfigMap",
            has_status: false,
            now: &now,
            ..writer(&manager, "")
        };
        record_update(Some(&obj), &mut next, &w);
        obj = next;
    }
    let mf = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(mf.len(), 10);
    let ancient = mf
        .iter()
        .find(|e| e["manager"] == "ancient-changes")
        .expect("bucket");
    let keys = ancient["fieldsV1"]["f:data"]
        .as_object()
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(keys, 4, "{ancient}");
    assert_eq!(ancient["time"], "2026-01-01T00:00:03Z");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z.:]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "[a-z]{0,3}|\\.|f:[a-z]{1,3}|k:\\{\"name\":\"a\"\\}|v:1|i:2|name|containers|finalizers|metadata|spec|labels",
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_fields_v1_reads_without_panic_and_round_trips(v in json_value()) {
        if let Ok(set) = FieldSet::from_fields_v1(&v) {
            let again = FieldSet::from_fields_v1(&set.to_fields_v1()).expect("own encoding reads");
            prop_assert_eq!(again, set.clone());
            for p in set.paths() {
                let _ = path_string(&p);
            }
        }
    }

    #[test]
    fn any_objects_compare_apply_and_record_without_panic(a in json_value(), b in json_value(), mf in json_value()) {
        let mut old = a.clone();
        if let Value::Object(m) = &mut old {
            m.insert("metadata".into(), json!({"managedFields": mf}));
        }
        let mut new = b.clone();
        record_update(Some(&old), &mut new, &writer("m", ""));
        let _ = apply(&old, &b, &writer("n", ""), false);
        let _ = apply(&new, &a, &writer("m", ""), true);
        // A comparison with itself is empty.
        let same = compare(&a, &a, "Pod");
        prop_assert!(same.changed.is_empty() && same.removed.is_empty());
    }
}

/// A Scale apply as kube-apiserver's scale handler records it: the Scale's owner of
/// `.spec.replicas` is the parent's, conflicts name the parent's managers, and the winner's
/// entry in the parent (of the parent's apiVersion, subresource scale) owns `.spec.replicas`.
#[test]
fn scale_apply_maps_replicas_ownership_to_the_parent() {
    let mut parent = deploy(2, json!({"app": "web"}));
    record_update(None, &mut parent, &writer("kubectl-create", ""));
    let scale = |replicas: i64| {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": replicas}})
    };
    let live = |p: &Value| crate::admission::scale_of(p);
    let apply_as = |p: &Value, who: &str, n: i64, force: bool| {
        apply_scale(p, &live(p), &scale(n), &writer(who, "scale"), force).map(|(s, m)| {
            let mut next = crate::admission::apply_scale(p, &s).expect("valid scale");
            m.write(&mut next);
            next
        })
    };

    // kubectl-create owns .spec.replicas (from the create): a change conflicts with it.
    let err = apply_as(&parent, "a", 3, false).expect_err("conflict");
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
    );
    // Applying the value it already has is no conflict: both own it.
    let same = apply_as(&parent, "a", 2, false).expect("same value");
    let m = Managed::read(&same);
    assert_eq!(m.0.len(), 2, "{m:?}");
    assert!(
        m.0.iter()
            .all(|e| !e.set.intersection(&replicas_path()).is_empty())
    );

    // Forced, a takes it over: kubectl-create keeps the rest of the object.
    let taken = apply_as(&parent, "a", 3, true).expect("forced");
    assert_eq!(taken["spec"]["replicas"], 3);
    let mf = &taken["metadata"]["managedFields"];
    let a = mf
        .as_array()
        .and_then(|m| m.iter().find(|e| e["manager"] == "a"))
        .expect("a's entry");
    assert_eq!(
        (&a["operation"], &a["apiVersion"], &a["subresource"]),
        (&json!("Apply"), &json!("apps/v1"), &json!("scale"))
    );
    assert_eq!(a["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let create = mf
        .as_array()
        .and_then(|m| m.iter().find(|e| e["manager"] == "kubectl-create"))
        .expect("create's entry");
    assert!(
        create["fieldsV1"]["f:spec"]["f:replicas"].is_null(),
        "{create}"
    );
    assert!(
        create["fieldsV1"]["f:spec"]["f:template"].is_object(),
        "{create}"
    );

    // b now conflicts with a, named with its subresource; a re-applying is no conflict.
    let err = apply_as(&taken, "b", 5, false).expect_err("conflict");
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"a\" with subresource \"scale\": .spec.replicas"
    );
    let again = apply_as(&taken, "a", 4, false).expect("a again");
    assert_eq!(again["spec"]["replicas"], 4);
    let b = apply_as(&again, "b", 5, true).expect("b forced");
    let owners: Vec<&Value> = b["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !e["fieldsV1"]["f:spec"]["f:replicas"].is_null())
        .map(|e| &e["manager"])
        .collect();
    assert_eq!(owners, vec![&json!("b")]);
}
