//! Tests of the Go-order writer and its generated table.

use proptest::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

use super::*;

fn check(v: Value, expected: &str) {
    let got = String::from_utf8(to_vec(&v)).expect("utf-8");
    assert_eq!(got, expected);
    assert_eq!(
        serde_json::from_str::<Value>(&got).expect("JSON"),
        reread(&v)
    );
}

#[test]
fn a_service_comes_out_as_kube_apiserver_writes_it() {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"labels": {"b": "1", "a": "2"}, "creationTimestamp": "2026-01-01T00:00:00Z",
            "uid": "u", "resourceVersion": "7", "namespace": "default", "name": "web"},
        "spec": {"type": "ClusterIP", "clusterIPs": ["10.96.0.9"], "clusterIP": "10.96.0.9",
            "selector": {"app": "web"}, "sessionAffinity": "None",
            "ports": [{"targetPort": 8080, "protocol": "TCP", "port": 80, "name": "http"}],
            "zz": 1, "aa": null},
        "status": {"loadBalancer": {}},
    });
    check(
        svc,
        concat!(
            r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"default","#,
            r#""uid":"u","resourceVersion":"7","creationTimestamp":"2026-01-01T00:00:00Z","#,
            r#""labels":{"a":"2","b":"1"}},"spec":{"ports":[{"name":"http","protocol":"TCP","#,
            r#""port":80,"targetPort":8080}],"selector":{"app":"web"},"clusterIP":"10.96.0.9","#,
            r#""clusterIPs":["10.96.0.9"],"type":"ClusterIP","sessionAffinity":"None","aa":null,"#,
            r#""zz":1},"status":{"loadBalancer":{}}}"#
        ),
    );
}

#[test]
fn lists_tables_and_nested_templates_are_ordered_too() {
    let container = json!({"imagePullPolicy": "Always", "resources": {}, "args": ["-x"],
        "command": ["sh"], "image": "busybox", "name": "c"});
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [container]}});
    check(
        json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "3"},
            "items": [{"spec": {"template": pod, "replicas": 1}}]}),
        concat!(
            r#"{"kind":"DeploymentList","apiVersion":"apps/v1","metadata":{"resourceVersion":"3"},"#,
            r#""items":[{"spec":{"replicas":1,"template":{"metadata":{"name":"p"},"spec":{"#,
            r#""containers":[{"name":"c","image":"busybox","command":["sh"],"args":["-x"],"#,
            r#""resources":{},"imagePullPolicy":"Always"}]}}}}]}"#
        ),
    );
    // A Table row's object is ordered by its own kind.
    check(
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "rows": [{"object": {"metadata": {"name": "a"}, "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata"}, "cells": ["a"]}],
            "columnDefinitions": [{"type": "string", "name": "Name"}]}),
        concat!(
            r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":"#,
            r#"[{"name":"Name","type":"string"}],"rows":[{"cells":["a"],"object":{"#,
            r#""kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"a"}}}]}"#
        ),
    );
}

#[test]
fn unknown_kinds_keep_type_and_object_meta_first_and_the_rest_sorted() {
    check(
        json!({"b": 1, "metadata": {"uid": "u", "name": "n"}, "kind": "Widget", "a": [{"z": 1, "y": 2}]}),
        r#"{"kind":"Widget","metadata":{"name":"n","uid":"u"},"a":[{"y":2,"z":1}],"b":1}"#,
    );
    // Events of the two groups have different fields.
    check(
        json!({"kind": "Event", "apiVersion": "events.k8s.io/v1", "note": "n", "regarding": {}, "reason": "r"}),
        r#"{"kind":"Event","apiVersion":"events.k8s.io/v1","reason":"r","regarding":{},"note":"n"}"#,
    );
    check(
        json!({"kind": "Event", "apiVersion": "v1", "reason": "r", "involvedObject": {}, "message": "m"}),
        r#"{"kind":"Event","apiVersion":"v1","involvedObject":{},"reason":"r","message":"m"}"#,
    );
}

#[test]
fn values_without_a_kind_or_of_the_wrong_shape_are_written_as_serde_json_writes_them() {
    for v in [
        json!(null),
        json!([1, "a", {"b": 1, "a": 2}]),
        json!({"z": 1.5, "a": "\u{1}\"\\/é"}),
        json!({"kind": "Service", "apiVersion": "v1", "metadata": "x", "spec": [1, {"b": 2, "a": 1}]}),
        json!({"kind": 3, "b": 1, "a": 2}),
    ] {
        if v.get("kind").and_then(Value::as_str).is_none() {
            assert_eq!(to_vec(&v), v.to_string().into_bytes(), "{v}");
        }
        check(v.clone(), &String::from_utf8(to_vec(&v)).expect("utf-8"));
    }
}

#[test]
fn the_table_is_whole() {
    let n = TYPES.len();
    assert!(usize::from(OBJECT) < n);
    for (v, k, i) in KINDS {
        let f = TYPES[usize::from(*i)];
        assert_eq!(
            &f[..2],
            &[Field("kind", Ty::Leaf), Field("apiVersion", Ty::Leaf)],
            "{v} {k}"
        );
        assert_eq!(f[2].0, "metadata", "{v} {k}");
    }
    for t in TYPES {
        for Field(_, ty) in *t {
            if let Ty::Struct(i) | Ty::MapOf(i) = ty {
                assert!(usize::from(*i) < n);
            }
        }
    }
    for r in crate::resources::RESOURCES {
        assert!(kind_type(&r.api_version(), r.kind).is_some(), "{}", r.kind);
        assert!(
            kind_type(&r.api_version(), &r.list_kind()).is_some(),
            "{}",
            r.kind
        );
    }
    let Some(Ty::Struct(pod)) = kind_type("v1", "PartialObjectMetadata")
        .or(kind_type("meta.k8s.io/v1", "PartialObjectMetadata"))
    else {
        panic!("no PartialObjectMetadata");
    };
    let Ty::Struct(meta) = fields(pod)[2].1 else {
        panic!("metadata is not a struct");
    };
    let names: Vec<&str> = fields(meta).iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "name",
            "generateName",
            "namespace",
            "selfLink",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields"
        ]
    );
}

/// A parsed JSON value that keeps its members' order.
#[derive(Debug)]
enum Tree {
    Leaf,
    Array(Vec<Tree>),
    Object(Vec<(String, Tree)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = a.next_element()? {
                    out.push(t);
                }
                Ok(Tree::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = a.next_entry()? {
                    out.push(kv);
                }
                Ok(Tree::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks that `t`, written as `ty`, has its known members in table order, then the rest sorted.
fn assert_ordered(t: &Tree, v: &Value, ty: Ty) {
    let ty = if ty == Ty::Dynamic { own_type(v) } else { ty };
    match (t, v, ty) {
        (Tree::Array(ts), Value::Array(vs), _) => {
            for (t, v) in ts.iter().zip(vs) {
                assert_ordered(t, v, ty);
            }
        }
        (Tree::Object(members), Value::Object(m), _) => {
            let known = match ty {
                Ty::Struct(i) => fields(i),
                _ => &[],
            };
            let rank = |k: &str| known.iter().position(|f| f.0 == k);
            let keys: Vec<(Option<usize>, &str)> = members
                .iter()
                .map(|(k, _)| (rank(k).or(Some(usize::MAX)), k.as_str()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
            for (k, t) in members {
                let inner = match (ty, rank(k)) {
                    (Ty::Struct(_), Some(r)) => known[r].1,
                    (Ty::MapOf(i), _) => Ty::Struct(i),
                    _ => Ty::Leaf,
                };
                assert_ordered(t, &m[k], inner);
            }
        }
        _ => {}
    }
}

fn values() -> impl Strategy<Value = Value> {
    // Key names the table knows (at any depth), so known paths are exercised, and others.
    let names: Vec<&'static str> = TYPES.iter().flat_map(|t| t.iter().map(|f| f.0)).collect();
    let key = prop_oneof![
        prop::sample::select(names),
        Just("kind"),
        Just("zz"),
        Just("é\"")
    ]
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn objects() -> impl Strategy<Value = Value> {
    (prop::sample::select(KINDS), values()).prop_map(|((api_version, kind, _), v)| {
        let mut m = match v {
            Value::Object(m) => m,
            other => [("spec".to_owned(), other)].into_iter().collect(),
        };
        m.insert("kind".into(), json!(kind));
        m.insert("apiVersion".into(), json!(api_version));
        Value::Object(m)
    })
}

/// `v` as serde_json reads it back (without `float_roundtrip` a float may read back a
/// unit in the last place off, whoever wrote it).
fn reread(v: &Value) -> Value {
    serde_json::from_str(&v.to_string()).expect("JSON")
}

proptest! {
    #[test]
    fn any_value_round_trips(v in values()) {
        let out = to_vec(&v);
        prop_assert_eq!(serde_json::from_slice::<Value>(&out).expect("JSON"), reread(&v));
    }

    #[test]
    fn known_kinds_come_out_in_table_order(v in objects()) {
        let out = to_vec(&v);
        prop_assert_eq!(out.len(), v.to_string().len());
        prop_assert_eq!(&serde_json::from_slice::<Value>(&out).expect("JSON"), &reread(&v));
        let tree: Tree = serde_json::from_slice(&out).expect("JSON");
        assert_ordered(&tree, &v, own_type(&v));
    }
}
