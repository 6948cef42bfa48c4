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
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        }
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
