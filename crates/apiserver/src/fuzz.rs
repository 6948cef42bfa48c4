//! Handler tests over a throwaway store: no request body, patch, path or query string makes
//! the server panic (property tests), and concurrent patches all apply.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::Server;

use crate::patch::{self, PatchType};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z$/]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "[a-z$/]{0,6}|\\$patch|\\$retainKeys|ports|containers|finalizers",
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::rest::parse_body(&bytes, "application/json");
        let _ = crate::rest::parse_body(&bytes, "application/yaml");
        for kind in [PatchType::Json, PatchType::Merge, PatchType::Strategic, PatchType::Apply] {
            let mut doc = json!({"spec": {"ports": [{"port": 80}]}});
            let _ = patch::apply(kind, &mut doc, &bytes, "Service");
        }
    }

    #[test]
    fn patches_of_any_shape_never_panic(doc in json_value(), p in json_value()) {
        let text = p.to_string();
        for kind in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
            let mut d = doc.clone();
            let _ = patch::apply(kind, &mut d, text.as_bytes(), "Service");
        }
    }

    #[test]
    fn decoding_any_object_never_panics(obj in json_value()) {
        let mut o = obj;
        if let Value::Object(m) = &mut o {
            m.insert("apiVersion".into(), json!("v1"));
            m.insert("kind".into(), json!("Service"));
        }
        let _ = berth_api::object::decode("", "Service", o);
    }

    #[test]
    fn paths_and_queries_never_panic(path in "(/[a-z0-9.{}-]{0,12}){0,8}", query in "[a-zA-Z=&%0-9]{0,40}") {
        let _ = crate::request::parse(&path);
        let _ = crate::request::Params::parse(Some(&query));
    }
}

/// A server over a throwaway embedded store, with one ConfigMap `default/cm`, for driving the
/// verbs directly.
pub(crate) fn server_with_a_configmap(
    dir: &std::path::Path,
) -> (tokio::runtime::Runtime, Arc<Server>) {
    // Two workers, so that concurrent requests really race.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let opts = berth_store::embedded::EmbeddedOptions {
        durable: false,
        ..Default::default()
    };
    let store = berth_store::embedded::Embedded::open(&dir.join("store"), opts).expect("store");
    let pki = crate::pki::ensure(&dir.join("pki"), &["localhost".into()]).expect("pki");
    let config = crate::Config::new("127.0.0.1:0".parse().expect("addr"), dir.to_owned());
    let mut registry = prometheus_client::registry::Registry::default();
    let srv = Arc::new(Server {
        store: Arc::new(store),
        alloc: std::sync::Mutex::new(crate::Allocations {
            ips: crate::alloc::ClusterIps::new(config.service_cluster_ip_range),
            ports: crate::alloc::NodePorts::new(config.service_node_port_range.clone()),
        }),
        address: std::sync::Mutex::new("https://127.0.0.1:0".into()),
        config,
        metrics: crate::Metrics::register(&mut registry),
        registry: Arc::new(registry),
        kubelet_tls: Arc::new(crate::pki::kubelet_client_config(&pki).expect("tls")),
        insecure_tls: Arc::new(crate::pki::proxy_client_config().expect("tls")),
        tokens: crate::token::Tokens::from_pem(&pki.sa_key).expect("tokens"),
    });
    let ns = rt.block_on(send(
        &srv,
        Method::POST,
        "/api/v1/namespaces",
        "application/json",
        br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}"#,
    ));
    assert_eq!(ns, StatusCode::CREATED);
    let created = rt.block_on(send(
        &srv,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"a":"1"}}"#,
    ));
    assert_eq!(created, StatusCode::CREATED);
    (rt, srv)
}

/// The status code the server answers `method path` with; panics only if the handler does.
/// The ConfigMap `default/cm` as stored now.
fn stored_configmap(rt: &tokio::runtime::Runtime, srv: &Server) -> Value {
    rt.block_on(crate::rest::get(
        srv,
        berth_api::resources::by_kind("", "ConfigMap").expect("configmaps"),
        Some("default"),
        "cm",
    ))
    .expect("get")
}

pub(crate) async fn send(
    srv: &Arc<Server>,
    method: Method,
    path: &str,
    ct: &str,
    body: &[u8],
) -> StatusCode {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let t = crate::request::parse(path)
        .expect("path")
        .expect("a resource path");
    let params = crate::request::Params::parse(query).expect("params");
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        ct.parse().expect("content type"),
    );
    let body = bytes::Bytes::copy_from_slice(body);
    match crate::rest::handle(srv.clone(), method, t, params, headers, body).await {
        Ok(resp) => resp.status(),
        Err(e) => e.code(),
    }
}

const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

#[test]
fn patches_that_replace_the_whole_object_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, srv) = server_with_a_configmap(dir.path());
    let path = "/api/v1/namespaces/default/configmaps/cm";
    for (ct, body) in [
        ("application/merge-patch+json", r#""str""#),
        ("application/merge-patch+json", "[1]"),
        ("application/merge-patch+json", "null"),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"","value":"str"}]"#,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"","value":[1]}]"#,
        ),
    ] {
        let code = rt.block_on(send(&srv, Method::PATCH, path, ct, body.as_bytes()));
        assert_eq!(code, StatusCode::BAD_REQUEST, "{ct} {body}");
    }
    // The ConfigMap is still there, untouched.
    let code = rt.block_on(send(&srv, Method::GET, path, "", b""));
    assert_eq!(code, StatusCode::OK);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_patch_gets_a_status_never_a_panic(p in json_value()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rt, srv) = server_with_a_configmap(dir.path());
        let path = "/api/v1/namespaces/default/configmaps/cm?fieldManager=fuzz";
        let text = p.to_string();
        let wrapped = json!([{"op": "replace", "path": "", "value": p}]).to_string();
        for ct in PATCH_TYPES {
            for body in [&text, &wrapped] {
                let code = rt.block_on(send(&srv, Method::PATCH, path, ct, body.as_bytes()));
                prop_assert!(code.is_success() || code.is_client_error(), "{} {}: {}", ct, body, code);
            }
        }
    }
}

#[test]
fn concurrent_patches_without_a_resource_version_all_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, srv) = server_with_a_configmap(dir.path());
    let path = "/api/v1/namespaces/default/configmaps/cm";
    let (writers, each) = (16, 40);
    let codes = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let srv = srv.clone();
            tasks.spawn(async move {
                let mut codes = Vec::new();
                for i in 0..each {
                    let body = format!(r#"{{"data":{{"k{w}-{i}":"v"}}}}"#);
                    let ct = "application/merge-patch+json";
                    codes.push(send(&srv, Method::PATCH, path, ct, body.as_bytes()).await);
                }
                codes
            });
        }
        tasks.join_all().await.concat()
    });
    assert_eq!(codes.len(), writers * each);
    assert!(codes.iter().all(|c| *c == StatusCode::OK), "{codes:?}");
    let stored = stored_configmap(&rt, &srv);
    let keys = stored["data"].as_object().map_or(0, serde_json::Map::len);
    assert_eq!(keys, writers * each + 1, "every patch's key is there");
}

#[test]
fn apply_names_its_manager_and_conflicts_with_other_owners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, srv) = server_with_a_configmap(dir.path());
    let path = "/api/v1/namespaces/default/configmaps/cm";
    let apply = "application/apply-patch+yaml";
    let merge = "application/merge-patch+json";
    let cfg = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: \"2\"\n";
    let send = |p: &str, ct: &str, body: &str| {
        rt.block_on(send(&srv, Method::PATCH, p, ct, body.as_bytes()))
    };
    // No manager: 422, as kube-apiserver's PatchOptions validation answers; force is for apply only.
    assert_eq!(send(path, apply, cfg), StatusCode::UNPROCESSABLE_ENTITY);
    let forced = format!("{path}?force=true");
    assert_eq!(send(&forced, merge, "{}"), StatusCode::UNPROCESSABLE_ENTITY);
    // `data.a` belongs to the creator: changing it conflicts, unless forced.
    let by_ssa = format!("{path}?fieldManager=ssa");
    assert_eq!(send(&by_ssa, apply, cfg), StatusCode::CONFLICT);
    let err = rt
        .block_on(crate::rest::handle(
            srv.clone(),
            Method::PATCH,
            crate::request::parse(path)
                .expect("path")
                .expect("resource"),
            crate::request::Params::parse(Some("fieldManager=ssa")).expect("params"),
            [(axum::http::header::CONTENT_TYPE, apply.parse().expect("ct"))]
                .into_iter()
                .collect(),
            bytes::Bytes::from(cfg),
        ))
        .expect_err("conflict");
    let status = err.status().to_value();
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"\" using v1: .data.a"
    );
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"\" using v1", "field": ".data.a"}])
    );
    let by_ssa_forced = format!("{path}?fieldManager=ssa&force=true");
    assert_eq!(send(&by_ssa_forced, apply, cfg), StatusCode::OK);
    let stored = stored_configmap(&rt, &srv);
    assert_eq!(stored["data"]["a"], "2");
    // The applier owns `data.a` now; the creator (no User-Agent: manager "") keeps `data`.
    let fields: Vec<(String, Value)> = stored["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or("?").to_owned(),
                e["fieldsV1"].clone(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("ssa".to_owned(), json!({"f:data": {"f:a": {}}})),
            (String::new(), json!({"f:data": {}})),
        ]
    );
}
