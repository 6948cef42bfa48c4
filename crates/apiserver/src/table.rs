//! Server-side `meta.k8s.io/v1 Table` responses: how `kubectl get` receives its columns.

use berth_api::printers;
use berth_api::resources::Resource;
use serde_json::{Value, json};

/// Whether the `Accept` header asks for a Table (kubectl sends `application/json;as=Table;...`).
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"as=Table") && p.contains(&"g=meta.k8s.io")
    })
}

/// Whether the `Accept` header asks for metadata only (`as=PartialObjectMetadata` or
/// `...List`, what client-go's metadata informers and kube-rs metadata watchers send), and
/// no Table comes first.
pub fn wants_metadata(accept: &str) -> bool {
    !wanted(accept)
        && accept.split(',').any(|part| {
            let p: Vec<&str> = part.split(';').map(str::trim).collect();
            p.iter().any(|x| {
                matches!(
                    *x,
                    "as=PartialObjectMetadata" | "as=PartialObjectMetadataList"
                )
            }) && p.contains(&"g=meta.k8s.io")
        })
}

/// `obj` as a `meta.k8s.io/v1 PartialObjectMetadata`: its metadata only.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list or one object, metadata only (`PartialObjectMetadataList` for a list).
pub fn partial_reply(body: &Value) -> Value {
    match body.get("items").and_then(Value::as_array) {
        Some(items) => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        None => partial(body),
    }
}

/// What a row carries besides its cells (`?includeObject=`; kube-apiserver's default is
/// `PartialObjectMetadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

fn row(r: &Resource, obj: &Value, include: Include, now: jiff::Timestamp) -> Value {
    let mut row = json!({ "cells": printers::cells(r.group, r.kind, obj, now) });
    match include {
        Include::None => {}
        Include::Object => row["object"] = obj.clone(),
        Include::Metadata => row["object"] = partial(obj),
    }
    row
}

/// A Table of `objs`; `headers: false` leaves out the column definitions (watch events after
/// the first, as kube-apiserver does).
pub fn render(
    r: &Resource,
    objs: &[Value],
    list_meta: Value,
    include: Include,
    headers: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let columns: Vec<Value> = if headers {
        printers::columns(r.group, r.kind)
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": objs.iter().map(|o| row(r, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted(
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
        ));
    }
}
