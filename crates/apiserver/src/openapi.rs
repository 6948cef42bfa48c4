//! OpenAPI v3 documents. kubectl reads `/openapi/v3` to learn whether the server validates fields
//! itself (`fieldValidation` on each operation) before `create`/`apply`, `kubectl explain` walks
//! the schemas under `components.schemas`, and client-side `apply` takes list merge keys from
//! them. This serves that index and one document per group-version, with the schemas
//! k8s-openapi generates (named as Kubernetes names its definitions) for every served kind and
//! everything they reference. Each document is built once, on first use, and served as bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use berth_api::resources::{RESOURCES, Resource};
use bytes::Bytes;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

/// Where the documents' `$ref`s point (OpenAPI 3 puts shared schemas under `components`).
const SCHEMAS: &str = "#/components/schemas/";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every group-version document, built on first use; the index needs all their hashes anyway.
fn documents() -> &'static BTreeMap<String, Bytes> {
    static DOCS: OnceLock<BTreeMap<String, Bytes>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut out = BTreeMap::new();
        for r in RESOURCES {
            let p = gv_path(r.group, r.version);
            if let std::collections::btree_map::Entry::Vacant(e) = out.entry(p) {
                let doc = build_document(e.key());
                e.insert(Bytes::from(doc.to_string()));
            }
        }
        out
    })
}

/// `/openapi/v3`: the index of group-version documents.
pub fn v3_index() -> Bytes {
    static INDEX: OnceLock<Bytes> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let paths: Map<String, Value> = documents()
                .iter()
                .map(|(p, doc)| {
                    // kubectl caches documents by URL, so the hash must change with the content.
                    let url = format!("/openapi/v3/{p}?hash={:016X}", fnv1a(doc));
                    (p.clone(), json!({ "serverRelativeURL": url }))
                })
                .collect();
            Bytes::from(json!({ "paths": paths }).to_string())
        })
        .clone()
}

/// `/openapi/v2` in both forms, each with its ETag.
pub struct V2 {
    /// The Swagger 2.0 document as JSON.
    pub json: Bytes,
    pub json_etag: String,
    /// The same document as gnostic's `openapi.v2.Document` protobuf message.
    pub proto: Bytes,
    pub proto_etag: String,
}

/// `/openapi/v2`: one Swagger 2.0 document for every served group-version, made from the v3
/// documents (definitions are the v3 schemas in Swagger's form; operations name their body and
/// response by `$ref`), for clients that still read v2. Built and encoded once, on first use.
pub fn v2() -> &'static V2 {
    static DOC: OnceLock<V2> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = v2_value();
        let json = Bytes::from(doc.to_string());
        let proto = Bytes::from(crate::openapi_pb::encode_document(&doc));
        V2 {
            json_etag: etag(&json),
            proto_etag: etag(&proto),
            json,
            proto,
        }
    })
}

/// A strong ETag for a document (kube-openapi's are a hash of the bytes too).
fn etag(bytes: &[u8]) -> String {
    format!("\"{:016X}\"", fnv1a(bytes))
}

fn v2_value() -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for doc in documents().values() {
        let Ok(doc) = serde_json::from_slice::<Value>(doc) else {
            continue;
        };
        if let Some(Value::Object(schemas)) = doc.pointer("/components/schemas") {
            definitions.extend(schemas.clone());
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let ops: Map<String, Value> = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(method, op)| (method.clone(), swagger_op(op)))
                .collect();
            paths.insert(path.clone(), Value::Object(ops));
        }
    }
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "definitions": definitions,
    });
    to_swagger_schemas(&mut doc, 0);
    doc
}

/// Rewrites OpenAPI 3 schema idioms in Swagger 2.0's form, as kube-apiserver's v2 document
/// has them: `$ref`s point at `#/definitions/`; a property that refers to a definition and
/// describes itself is `{$ref, description}` (v3's `{allOf: [{$ref}], description}`, which
/// kubectl's v2 reader would take for a value of any type); an int-or-string is a string of
/// format `int-or-string`.
fn to_swagger_schemas(v: &mut Value, depth: usize) {
    // The documents are not recursive beyond a few dozen levels; the bound guards the stack.
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(o) => {
            let single_ref = match o.get("allOf") {
                Some(Value::Array(all)) if all.len() == 1 => all[0].get("$ref").cloned(),
                _ => None,
            };
            if let Some(r) = single_ref {
                o.remove("allOf");
                o.remove("type");
                o.insert("$ref".into(), r);
            }
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix(SCHEMAS)
            {
                *r = format!("#/definitions/{name}");
            }
            if o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && !o.contains_key("type")
            {
                o.insert("type".into(), "string".into());
                o.insert("format".into(), "int-or-string".into());
            }
            for child in o.values_mut() {
                to_swagger_schemas(child, depth + 1);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| to_swagger_schemas(c, depth + 1)),
        _ => {}
    }
}

/// A v3 operation as Swagger 2.0 writes it: query parameters typed inline, the body as a
/// `body` parameter, the response schema under `schema`.
fn swagger_op(op: &Value) -> Value {
    let mut out = op.clone();
    let schema_of = |v: Option<&Value>| {
        v.and_then(|c| c.pointer("/application~1json/schema"))
            .cloned()
    };
    let body = schema_of(op.pointer("/requestBody/content"));
    let response = schema_of(op.pointer("/responses/200/content"));
    if let Some(o) = out.as_object_mut() {
        o.remove("requestBody");
        let mut params: Vec<Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| json!({"name": p["name"], "in": p["in"], "type": "string", "uniqueItems": true}))
            .collect();
        if let Some(schema) = body {
            params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
        }
        o.insert("parameters".into(), Value::Array(params));
        let mut ok = json!({"description": "OK"});
        if let Some(schema) = response {
            ok["schema"] = schema;
        }
        o.insert("responses".into(), json!({"200": ok}));
        o.insert("consumes".into(), json!(["application/json"]));
        o.insert("produces".into(), json!(["application/json"]));
    }
    out
}

/// The document for one group-version (`api/v1`, `apis/apps/v1`), or `None`.
pub fn v3_document(path: &str) -> Option<Bytes> {
    documents().get(path).cloned()
}

/// A stable 64-bit content hash (FNV-1a); std's hasher may change between Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn op(r: &Resource, schema: &str, verb: &str, action: &str) -> Value {
    let mut params = vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})];
    let object = json!({"application/json": {"schema": {"$ref": format!("{SCHEMAS}{schema}")}}});
    let mut op = json!({
        "operationId": format!("{verb}{}", r.kind),
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    if matches!(action, "post" | "put" | "patch") {
        params
            .push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}));
        params.push(json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}));
    }
    if matches!(action, "post" | "put") {
        op["requestBody"] = json!({"content": object.clone()});
    }
    if matches!(action, "get" | "post" | "put" | "patch") {
        op["responses"]["200"]["content"] = object;
    }
    op["parameters"] = Value::Array(params);
    op
}

/// Adds the schema of `r`'s kind (and of everything it references) to `g`, returning the
/// definition name, or `None` for a kind without a k8s-openapi type.
fn register(r: &Resource, g: &mut SchemaGenerator) -> Option<String> {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, discovery::v1 as discovery, networking::v1 as net,
    };
    fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
        g.subschema_for::<T>();
        T::schema_name().into_owned()
    }
    Some(match (r.group, r.kind) {
        ("", "Namespace") => add::<core::Namespace>(g),
        ("", "Pod") => add::<core::Pod>(g),
        ("", "Service") => add::<core::Service>(g),
        ("", "Endpoints") => add::<core::Endpoints>(g),
        ("", "Event") => add::<core::Event>(g),
        ("", "ConfigMap") => add::<core::ConfigMap>(g),
        ("", "Secret") => add::<core::Secret>(g),
        ("", "ServiceAccount") => add::<core::ServiceAccount>(g),
        ("", "Node") => add::<core::Node>(g),
        ("", "ReplicationController") => add::<core::ReplicationController>(g),
        ("apps", "Deployment") => add::<apps::Deployment>(g),
        ("apps", "ReplicaSet") => add::<apps::ReplicaSet>(g),
        ("apps", "StatefulSet") => add::<apps::StatefulSet>(g),
        ("apps", "DaemonSet") => add::<apps::DaemonSet>(g),
        ("apps", "ControllerRevision") => add::<apps::ControllerRevision>(g),
        ("discovery.k8s.io", "EndpointSlice") => add::<discovery::EndpointSlice>(g),
        ("networking.k8s.io", "Ingress") => add::<net::Ingress>(g),
        ("networking.k8s.io", "IngressClass") => add::<net::IngressClass>(g),
        ("networking.k8s.io", "NetworkPolicy") => add::<net::NetworkPolicy>(g),
        ("events.k8s.io", "Event") => add::<k8s_openapi::api::events::v1::Event>(g),
        _ => return None,
    })
}

/// The kinds served under `path` with their definition names, and every definition they need.
fn generate(path: &str) -> (Vec<(&'static Resource, String)>, Map<String, Value>) {
    // The OpenAPI 3.0 settings point refs at `#/components/schemas/` and turn a `$ref` with
    // siblings (a field's own description) into `allOf: [{$ref}]`, as kube-apiserver writes it.
    let mut g = SchemaSettings::openapi3().into_generator();
    let served = RESOURCES
        .iter()
        .filter(|r| gv_path(r.group, r.version) == path)
        .filter_map(|r| register(r, &mut g).map(|name| (r, name)))
        .collect();
    (served, g.take_definitions(true))
}

fn build_document(path: &str) -> Value {
    let (served, mut schemas) = generate(path);
    let mut paths = Map::new();
    let mut merge_keys = MergeKeys::default();
    for (r, name) in &served {
        merge_keys.collect(&schemas, r.kind, name, &mut Vec::new());
        if let Some(s) = schemas.get_mut(name.as_str()) {
            // How explain finds the schema of a resource: by the GVK its operations name.
            s["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
            // k8s-openapi lists `metadata` as required because its Rust field is not an
            // `Option`; Kubernetes' definitions do so only where the Go field lacks
            // `omitempty`, which among the served kinds is core Event alone.
            if (r.group, r.kind) != ("", "Event") {
                unrequire(s, "metadata");
            }
        }
        let base = format!("/{path}");
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            coll.clone(),
            json!({"post": op(r, name, "create", "post"), "get": op(r, name, "list", "list")}),
        );
        paths.insert(
            format!("{coll}/{{name}}"),
            json!({
                "get": op(r, name, "read", "get"), "put": op(r, name, "replace", "put"),
                "patch": op(r, name, "patch", "patch"), "delete": op(r, name, "delete", "delete"),
            }),
        );
    }
    debug_assert_eq!(merge_keys.conflicts(), Vec::new(), "{path}");
    merge_keys.annotate(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn unrequire(schema: &mut Value, field: &str) {
    if let Some(Value::Array(req)) = schema.get_mut("required") {
        req.retain(|f| f != field);
        if req.is_empty()
            && let Some(m) = schema.as_object_mut()
        {
            m.remove("required");
        }
    }
}

/// The definition a property schema refers to: `{$ref}` or kube's `{allOf: [{$ref}]}`.
fn ref_target(schema: &Value) -> Option<&str> {
    let r = schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))?;
    r.as_str()?.strip_prefix(SCHEMAS)
}

/// The lists berth's strategic merge patch merges by key, as `x-kubernetes-patch-strategy` /
/// `x-kubernetes-patch-merge-key` on the property that holds them. k8s-openapi's schemas do not
/// carry these, and kubectl's client-side apply computes its patch from them, so they are
/// derived from the server's own table (`patch::merge_key`): client and server then agree on
/// which lists merge, which they would not if this were a second, hand-kept list.
#[derive(Default)]
struct MergeKeys {
    /// (definition, property) -> merge key; "" for a set of scalars (`finalizers`).
    marks: BTreeMap<(String, String), &'static str>,
    /// Lists some path reaches that the server replaces whole.
    plain: BTreeSet<(String, String)>,
    /// Properties one path marks with a different key than another.
    clashes: Vec<(String, String)>,
}

impl MergeKeys {
    /// Walks `def`'s properties along `path` (field names from the object root), as
    /// `patch::merge_key` sees them, marking each list that merges by key.
    fn collect(
        &mut self,
        defs: &Map<String, Value>,
        kind: &str,
        def: &str,
        path: &mut Vec<String>,
    ) {
        // The served kinds are not recursive; the bound only guards against a future one.
        if path.len() > 32 {
            return;
        }
        let Some(props) = defs
            .get(def)
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
        else {
            return;
        };
        for (field, prop) in props {
            path.push(field.clone());
            let mut next = prop;
            if prop.get("type").and_then(Value::as_str) == Some("array") {
                let at = (def.to_owned(), field.clone());
                match crate::patch::merge_key(kind, path) {
                    Some(key) => match self.marks.insert(at.clone(), key) {
                        Some(old) if old != key => self.clashes.push(at),
                        _ => {}
                    },
                    None => {
                        self.plain.insert(at);
                    }
                }
                next = prop.get("items").unwrap_or(&Value::Null);
            }
            if let Some(target) = ref_target(next) {
                self.collect(defs, kind, target, path);
            }
            path.pop();
        }
    }

    /// Definitions shared by paths the server merges differently: one schema cannot say both,
    /// so a served kind that makes this non-empty needs `patch::merge_key` looked at.
    fn conflicts(&self) -> Vec<(String, String)> {
        let mut out = self.clashes.clone();
        out.extend(
            self.marks
                .keys()
                .filter(|k| self.plain.contains(*k))
                .cloned(),
        );
        out
    }

    fn annotate(&self, defs: &mut Map<String, Value>) {
        for ((def, field), key) in &self.marks {
            let Some(Value::Object(prop)) = defs
                .get_mut(def)
                .and_then(|d| d.get_mut("properties"))
                .and_then(|p| p.get_mut(field))
            else {
                continue;
            };
            prop.insert("x-kubernetes-patch-strategy".into(), "merge".into());
            if !key.is_empty() {
                prop.insert("x-kubernetes-patch-merge-key".into(), (*key).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str) -> Value {
        let bytes = v3_document(path).unwrap_or_else(|| panic!("no document {path}"));
        serde_json::from_slice(&bytes).expect("document is JSON")
    }

    fn schema<'a>(d: &'a Value, name: &str) -> &'a Value {
        d.pointer(&format!("/components/schemas/{name}"))
            .unwrap_or_else(|| panic!("no schema {name}"))
    }

    #[test]
    fn v2_is_swagger_with_every_definition_resolvable() {
        let doc: Value = serde_json::from_slice(&v2().json).expect("json");
        assert_eq!(doc["swagger"], "2.0");
        let defs = doc["definitions"].as_object().expect("definitions");
        assert!(defs.contains_key("io.k8s.api.core.v1.Service"));
        let text = doc.to_string();
        assert!(!text.contains("#/components/"), "v3 references left");
        let create = &doc["paths"]["/api/v1/namespaces/{namespace}/services"]["post"];
        let body = create["parameters"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["in"] == "body"))
            .expect("body parameter");
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Service"
        );
        for r in text.split("\"$ref\":\"#/definitions/").skip(1) {
            let name = r.split('"').next().unwrap_or("");
            assert!(defs.contains_key(name), "{name} unresolved");
        }
    }

    /// What kubectl's v2 reader (kube-openapi's `proto.NewOpenAPIData`) refuses: a `$ref`
    /// with a type or properties beside it, or to a missing definition; several types; an
    /// unknown primitive; an array without exactly one item schema.
    fn kubectl_parses(s: &Value, defs: &Map<String, Value>, at: &str) {
        if let Some(r) = s.get("$ref") {
            let name = r.as_str().and_then(|r| r.strip_prefix("#/definitions/"));
            assert!(name.is_some_and(|n| defs.contains_key(n)), "{at}: ref {r}");
            assert!(s.get("type").is_none(), "{at}: ref with a type");
            assert!(
                s.get("properties")
                    .is_none_or(|p| p.as_object().is_some_and(Map::is_empty)),
                "{at}: ref with properties"
            );
            return;
        }
        match s.get("type") {
            None => {}
            Some(Value::String(t)) => match t.as_str() {
                "array" => {
                    let items = s.get("items").filter(|i| i.is_object());
                    kubectl_parses(items.expect("array items"), defs, &format!("{at}[]"));
                }
                "object" | "string" | "integer" | "number" | "boolean" => {}
                other => panic!("{at}: type {other}"),
            },
            Some(t) => panic!("{at}: type {t}"),
        }
        assert!(s.get("allOf").is_none(), "{at}: allOf");
        for (name, p) in s
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            kubectl_parses(p, defs, &format!("{at}.{name}"));
        }
        if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
            kubectl_parses(a, defs, &format!("{at}{{}}"));
        }
    }

    #[test]
    fn v2_definitions_are_what_kubectl_reads() {
        let doc: Value = serde_json::from_slice(&v2().json).expect("json");
        let defs = doc["definitions"].as_object().expect("definitions");
        for (name, s) in defs {
            kubectl_parses(s, defs, name);
        }
        let port = &defs["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"];
        assert_eq!(
            port["$ref"], "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            "{port}"
        );
        assert!(port["description"].is_string(), "{port}");
        let ios = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(
            (&ios["type"], &ios["format"]),
            (&json!("string"), &json!("int-or-string"))
        );
    }

    #[test]
    fn v2_protobuf_holds_the_json_document() {
        use crate::openapi_pb::wire;
        let v2 = v2();
        let json: Value = serde_json::from_slice(&v2.json).expect("json");
        let doc = wire::fields(&v2.proto).expect("well-formed Document");
        assert_eq!(wire::string(&doc, 1).as_deref(), Some("2.0"));
        let info = wire::fields(wire::bytes(&doc, 2)[0]).expect("Info");
        assert_eq!(wire::string(&info, 1).as_deref(), Some("Kubernetes"));
        // Definitions (9): every one, in the JSON's order, each a NamedSchema.
        let defs = wire::fields(wire::bytes(&doc, 9)[0]).expect("Definitions");
        let named = wire::named(&defs, 1);
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = json["definitions"]
            .as_object()
            .expect("definitions")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, want);
        let (_, deploy) = named
            .iter()
            .find(|(n, _)| n == "io.k8s.api.apps.v1.Deployment")
            .expect("Deployment");
        let deploy = wire::fields(deploy).expect("Schema");
        // vendor_extension (31): the GVK as YAML text in Any.yaml (2).
        let ext = wire::named(&deploy, 31);
        let (_, gvk) = ext
            .iter()
            .find(|(n, _)| n == "x-kubernetes-group-version-kind")
            .expect("gvk extension");
        let yaml = wire::string(&wire::fields(gvk).expect("Any"), 2).expect("yaml");
        let gvk: Value = serde_json::from_str(&yaml).expect("yaml is JSON text");
        assert_eq!(
            gvk,
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        // properties (25) -> spec -> _ref (1).
        let props = wire::fields(wire::bytes(&deploy, 25)[0]).expect("Properties");
        let spec = wire::named(&props, 1)
            .into_iter()
            .find(|(n, _)| n == "spec")
            .map(|(_, s)| wire::fields(s).expect("spec"))
            .expect("spec property");
        assert_eq!(
            wire::string(&spec, 1).as_deref(),
            Some("#/definitions/io.k8s.api.apps.v1.DeploymentSpec")
        );
        // Paths (8): NamedPathItem (2) -> patch (8) carries fieldValidation, which kubectl
        // looks for before it validates on the client.
        let paths = wire::fields(wire::bytes(&doc, 8)[0]).expect("Paths");
        let (_, item) = wire::named(&paths, 2)
            .into_iter()
            .find(|(n, _)| n == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .expect("deployment path");
        let patch =
            wire::fields(wire::bytes(&wire::fields(item).expect("item"), 8)[0]).expect("patch");
        assert_eq!(wire::string(&patch, 5).as_deref(), Some("patchDeployment"));
        let text = String::from_utf8_lossy(&v2.proto);
        assert!(text.contains("fieldValidation"));
        assert_ne!(v2.json_etag, v2.proto_etag);
    }

    /// protoc (installed by scripts/deps.sh for etcd-client) reads the bytes as a well-formed
    /// message: a check by a decoder not written here.
    #[test]
    fn protoc_decodes_the_v2_protobuf() {
        use std::io::Write;
        let mut child = match std::process::Command::new("protoc")
            .arg("--decode_raw")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("protoc (scripts/deps.sh installs protobuf-compiler): {e}"),
        };
        let mut stdin = child.stdin.take().expect("stdin");
        let bytes = v2().proto.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().expect("protoc runs");
        writer.join().expect("writer").expect("write to protoc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("1: \"2.0\"\n"),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("\"io.k8s.api.core.v1.Service\""));
    }

    #[test]
    fn index_lists_every_group_version() {
        let index: Value = serde_json::from_slice(&v3_index()).expect("index is JSON");
        for r in RESOURCES {
            let p = gv_path(r.group, r.version);
            let url = index["paths"][&p]["serverRelativeURL"]
                .as_str()
                .unwrap_or_else(|| panic!("{p} missing from the index"));
            assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
        }
        assert!(v3_document("apis/nope/v1").is_none());
    }

    #[test]
    fn every_kind_has_a_schema_with_its_gvk() {
        for r in RESOURCES {
            let d = doc(&gv_path(r.group, r.version));
            let found: Vec<&Value> = d["components"]["schemas"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, s)| s)
                .filter(|s| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|l| l.contains(&gvk(r)))
                })
                .collect();
            assert_eq!(found.len(), 1, "{}: {found:?}", r.kind);
            assert!(found[0]["properties"]["metadata"].is_object(), "{}", r.kind);
            let required = found[0]["required"].as_array().cloned().unwrap_or_default();
            assert_eq!(
                required.contains(&json!("metadata")),
                (r.group, r.kind) == ("", "Event"),
                "{}",
                r.kind
            );
        }
        let d = doc("api/v1");
        let svc = schema(&d, "io.k8s.api.core.v1.Service");
        assert_eq!(
            ref_target(&svc["properties"]["spec"]),
            Some("io.k8s.api.core.v1.ServiceSpec")
        );
    }

    #[test]
    fn every_ref_resolves_within_its_document() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("$ref", Value::String(s)) => out.push(s),
                            _ => refs(v, out),
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        for path in documents().keys() {
            let d = doc(path);
            let mut found = Vec::new();
            refs(&d, &mut found);
            assert!(found.len() > 10, "{path}: only {} refs", found.len());
            for r in found {
                let name = r
                    .strip_prefix(SCHEMAS)
                    .unwrap_or_else(|| panic!("{path}: foreign ref {r}"));
                assert!(
                    d["components"]["schemas"].get(name).is_some(),
                    "{path}: {r} does not resolve"
                );
            }
        }
    }

    #[test]
    fn explain_needs_types_and_descriptions() {
        let d = doc("api/v1");
        let spec = schema(&d, "io.k8s.api.core.v1.ServiceSpec");
        let ports = &spec["properties"]["ports"];
        assert_eq!(ports["type"], "array");
        assert!(ports["description"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(
            ref_target(&ports["items"]),
            Some("io.k8s.api.core.v1.ServicePort")
        );
        let port = schema(&d, "io.k8s.api.core.v1.ServicePort");
        assert_eq!(port["properties"]["port"]["type"], "integer");
        assert_eq!(port["required"], json!(["port"]));
        let d = doc("apis/apps/v1");
        let spec = schema(&d, "io.k8s.api.apps.v1.DeploymentSpec");
        assert_eq!(spec["properties"]["replicas"]["type"], "integer");
    }

    #[test]
    fn merge_keys_follow_the_servers_strategic_merge() {
        let d = doc("api/v1");
        let prop = |def: &str, field: &str| {
            let p = &schema(&d, def)["properties"][field];
            (
                p["x-kubernetes-patch-strategy"].as_str().map(str::to_owned),
                p["x-kubernetes-patch-merge-key"]
                    .as_str()
                    .map(str::to_owned),
            )
        };
        let merge = |k: &str| (Some("merge".to_owned()), Some(k.to_owned()));
        assert_eq!(
            prop("io.k8s.api.core.v1.ServiceSpec", "ports"),
            merge("port")
        );
        assert_eq!(
            prop("io.k8s.api.core.v1.PodSpec", "containers"),
            merge("name")
        );
        assert_eq!(
            prop("io.k8s.api.core.v1.Container", "ports"),
            merge("containerPort")
        );
        assert_eq!(prop("io.k8s.api.core.v1.Container", "env"), merge("name"));
        assert_eq!(
            prop(
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "finalizers"
            ),
            (Some("merge".to_owned()), None)
        );
        // Lists the server replaces whole stay unmarked.
        assert_eq!(
            prop("io.k8s.api.core.v1.EndpointSubset", "ports"),
            (None, None)
        );
        assert_eq!(
            prop("io.k8s.api.core.v1.NamespaceSpec", "finalizers"),
            (None, None)
        );
        let d = doc("apis/apps/v1");
        let containers = &schema(&d, "io.k8s.api.core.v1.PodSpec")["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    }

    #[test]
    fn merge_keys_do_not_conflict() {
        for path in documents().keys() {
            let (served, defs) = generate(path);
            let mut keys = MergeKeys::default();
            for (r, name) in &served {
                keys.collect(&defs, r.kind, name, &mut Vec::new());
            }
            assert_eq!(keys.conflicts(), Vec::new(), "{path}");
            assert!(!keys.marks.is_empty(), "{path}");
        }
    }
}
