//! OpenAPI documents. kubectl reads `/openapi/v3` to learn whether the server validates fields
//! itself (`fieldValidation` on each operation) before `create`/`apply`; this serves that index
//! and per-group-version documents listing every operation.

use berth_api::resources::{RESOURCES, Resource};
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents.
pub fn v3_index() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        let p = gv_path(r.group, r.version);
        paths
            .entry(p.clone())
            .or_insert_with(|| json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=berth")}));
    }
    json!({"paths": paths})
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn op(r: &Resource, verb: &str, action: &str) -> Value {
    let mut params = vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})];
    if matches!(action, "post" | "put" | "patch") {
        params
            .push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}));
        params.push(json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}));
    }
    json!({
        "operationId": format!("{verb}{}", r.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    })
}

/// The document for one group-version (`api/v1`, `apis/apps/v1`), or `None`.
pub fn v3_document(path: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| gv_path(r.group, r.version) == path)
    {
        let base = format!("/{path}");
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            coll.clone(),
            json!({"post": op(r, "create", "post"), "get": op(r, "list", "list")}),
        );
        paths.insert(
            format!("{coll}/{{name}}"),
            json!({
                "get": op(r, "read", "get"), "put": op(r, "replace", "put"),
                "patch": op(r, "patch", "patch"), "delete": op(r, "delete", "delete"),
            }),
        );
        let id = format!(
            "io.berth.{}.{}.{}",
            if r.group.is_empty() { "core" } else { r.group },
            r.version,
            r.kind
        );
        schemas.insert(
            id,
            json!({"type": "object", "x-kubernetes-group-version-kind": [gvk(r)]}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
