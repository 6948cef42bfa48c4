//! Kind-specific rules applied on create, update and delete: defaults, validation and
//! ClusterIP/NodePort allocation for Services, namespace lifecycle, pod and workload defaults,
//! and the `scale` subresource.

use std::net::Ipv4Addr;

use berth_api::resources::{self, Resource};
use berth_api::{BadValue, FieldError, FieldErrors, meta as vmeta, names, service as vsvc};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as TypedMeta;
use serde_json::{Value, json};

use crate::Server;
use crate::alloc::AllocError;
use crate::error::{ApiError, Result};
use crate::meta::{ObjectMeta, collection_key};

/// Addresses and ports taken for an object being written: released again if the write fails
/// (`rollback`), and the object's old ones released once it succeeds (`commit`).
#[derive(Debug, Default)]
#[must_use]
pub struct Grant {
    ips: Vec<Ipv4Addr>,
    ports: Vec<u16>,
}

impl Grant {
    pub fn rollback(self, srv: &Server) {
        let mut a = srv.alloc.lock().unwrap_or_else(|p| p.into_inner());
        self.ips.iter().for_each(|ip| a.ips.release(*ip));
        self.ports.iter().for_each(|p| a.ports.release(*p));
    }

    /// This grant and `other` as one.
    fn with(mut self, other: Grant) -> Grant {
        self.ips.extend(other.ips);
        self.ports.extend(other.ports);
        self
    }

    /// The write of `new` over `old` succeeded: whatever `old` held that `new` no longer
    /// holds is free again.
    pub fn commit(self, srv: &Server, old: &Value, new: &Value) {
        let (old_ips, old_ports) = held(old);
        let (new_ips, new_ports) = held(new);
        let mut a = srv.alloc.lock().unwrap_or_else(|p| p.into_inner());
        old_ips
            .iter()
            .filter(|ip| !new_ips.contains(ip))
            .for_each(|ip| a.ips.release(*ip));
        old_ports
            .iter()
            .filter(|p| !new_ports.contains(p))
            .for_each(|p| a.ports.release(*p));
    }
}

/// What a stored Service holds: its cluster IP and node ports (healthCheckNodePort included).
fn held(obj: &Value) -> (Vec<Ipv4Addr>, Vec<u16>) {
    let ips = obj
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(obj.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter_map(|s| s.parse().ok())
        .collect::<std::collections::BTreeSet<Ipv4Addr>>()
        .into_iter()
        .collect();
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort")?.as_u64())
        .chain(
            obj.pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_u64),
        )
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .collect::<std::collections::BTreeSet<u16>>()
        .into_iter()
        .collect();
    (ips, ports)
}

fn invalid(r: &'static Resource, obj: &Value, errors: FieldErrors) -> ApiError {
    ApiError::Invalid {
        resource: r,
        kind: r.kind,
        name: obj.name().unwrap_or("").to_owned(),
        errors,
    }
}

fn name_rule(r: &Resource) -> fn(&str) -> Vec<String> {
    match r.kind {
        "Namespace" => names::is_dns1123_label,
        "Service" => names::is_dns1035_label,
        _ => names::is_dns1123_subdomain,
    }
}

fn typed_meta(obj: &Value) -> TypedMeta {
    obj.get("metadata")
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default()
}

fn typed<T: serde::de::DeserializeOwned>(r: &'static Resource, obj: &Value) -> Result<T> {
    serde_json::from_value(obj.clone())
        .map_err(|e| ApiError::BadRequest(format!("error decoding {}: {e}", r.kind)))
}

fn untyped<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Metadata problems of a new (or updated) object. Service validation covers its own
/// metadata, as kube-apiserver's does, so it is left out here to avoid reporting twice.
fn meta_errors(r: &Resource, obj: &Value, old: Option<&Value>) -> FieldErrors {
    if r.group.is_empty() && r.kind == "Service" {
        return FieldErrors::new();
    }
    match old {
        None => vmeta::validate_object_meta(&typed_meta(obj), r.namespaced, name_rule(r)),
        Some(old) => vmeta::validate_object_meta_update(&typed_meta(obj), &typed_meta(old)),
    }
}

/// Defaults, validates and allocates for a new object.
pub async fn create(srv: &Server, r: &'static Resource, obj: &mut Value) -> Result<Grant> {
    let mut errs = meta_errors(r, obj, None);
    errs.extend(size_errors(r, obj));
    let grant = match (r.group, r.kind) {
        ("", "Service") => {
            let mut svc: Service = typed(r, obj)?;
            vsvc::default_service(&mut svc);
            let hc = allocate_health_check(srv, &mut svc, None).map_err(|e| invalid(r, obj, e))?;
            errs.extend(vsvc::validate_service(&svc));
            if !errs.is_empty() {
                hc.rollback(srv);
                return Err(invalid(r, obj, errs));
            }
            let grant = match allocate(srv, &mut svc, None) {
                Ok(g) => g.with(hc),
                Err(e) => {
                    hc.rollback(srv);
                    return Err(invalid(r, obj, e));
                }
            };
            *obj = untyped(&svc)?;
            obj["status"] = json!({"loadBalancer": {}});
            grant
        }
        ("", "Namespace") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = obj.name().unwrap_or("").to_owned();
            obj.meta_mut()
                .entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|l| l.insert("kubernetes.io/metadata.name".into(), json!(name)));
            Grant::default()
        }
        ("", "Pod") => {
            default_pod_spec(obj.get_mut("spec"));
            default_service_account(obj.get_mut("spec"));
            mount_service_account_token(obj.get_mut("spec"));
            errs.extend(validate_pod_spec(obj.get("spec"), "spec"));
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            Grant::default()
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            default_workload(r.kind, obj);
            errs.extend(validate_workload(obj));
            obj["status"] = json!({});
            Grant::default()
        }
        ("", "ReplicationController") => {
            default_replication_controller(obj);
            errs.extend(validate_replication_controller(obj));
            obj["status"] = json!({"replicas": 0});
            Grant::default()
        }
        _ => Grant::default(),
    };
    if !errs.is_empty() {
        grant.rollback(srv);
        return Err(invalid(r, obj, errs));
    }
    Ok(grant)
}

/// Most bytes of data a ConfigMap or Secret holds (kube-apiserver's `MaxConfigMapSize` and
/// `MaxSecretSize`).
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// ConfigMaps and Secrets over 1 MiB of data, counted as kube-apiserver counts them: the
/// values' bytes (binary values decoded), reported on the whole object for a ConfigMap and on
/// `data` for a Secret.
fn size_errors(r: &Resource, obj: &Value) -> Vec<FieldError> {
    let values = |field: &str| {
        obj.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
    };
    // base64 text is 4 characters per 3 bytes.
    let decoded = |v: &str| v.trim_end_matches('=').len() * 3 / 4;
    let (total, path) = match (r.group, r.kind) {
        ("", "ConfigMap") => (
            values("data").iter().map(|v| v.len()).sum::<usize>()
                + values("binaryData")
                    .iter()
                    .map(|v| decoded(v))
                    .sum::<usize>(),
            "",
        ),
        ("", "Secret") => (
            values("data").iter().map(|v| decoded(v)).sum::<usize>()
                + values("stringData").iter().map(|v| v.len()).sum::<usize>(),
            "data",
        ),
        _ => return Vec::new(),
    };
    if total > MAX_DATA_BYTES {
        vec![FieldError::too_long(path, MAX_DATA_BYTES)]
    } else {
        Vec::new()
    }
}

/// Defaults, validates and re-allocates for an update of `old` to `new`.
pub async fn update(
    srv: &Server,
    r: &'static Resource,
    new: &mut Value,
    old: &Value,
) -> Result<Grant> {
    let mut errs = meta_errors(r, new, Some(old));
    errs.extend(size_errors(r, new));
    let grant = match (r.group, r.kind) {
        ("", "Service") => {
            let mut svc: Service = typed(r, new)?;
            let old_svc: Service = typed(r, old)?;
            vsvc::prepare_service_update(&mut svc, &old_svc);
            let hc = allocate_health_check(srv, &mut svc, Some(&old_svc))
                .map_err(|e| invalid(r, new, e))?;
            errs.extend(vsvc::validate_service_update(&svc, &old_svc));
            if !errs.is_empty() {
                hc.rollback(srv);
                return Err(invalid(r, new, errs));
            }
            let grant = match allocate(srv, &mut svc, Some(&old_svc)) {
                Ok(g) => g.with(hc),
                Err(e) => {
                    hc.rollback(srv);
                    return Err(invalid(r, new, e));
                }
            };
            *new = untyped(&svc)?;
            grant
        }
        ("", "Pod") => {
            default_pod_spec(new.get_mut("spec"));
            Grant::default()
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            default_workload(r.kind, new);
            errs.extend(validate_workload(new));
            Grant::default()
        }
        ("", "ReplicationController") => {
            default_replication_controller(new);
            errs.extend(validate_replication_controller(new));
            Grant::default()
        }
        _ => Grant::default(),
    };
    if !errs.is_empty() {
        grant.rollback(srv);
        return Err(invalid(r, new, errs));
    }
    Ok(grant)
}

/// As kube-apiserver, before validation (which requires it): a Local LoadBalancer gets a
/// healthCheckNodePort from the NodePort range unless it names one `old` did not hold.
fn allocate_health_check(
    srv: &Server,
    svc: &mut Service,
    old: Option<&Service>,
) -> std::result::Result<Grant, FieldErrors> {
    let mut a = srv.alloc.lock().unwrap_or_else(|p| p.into_inner());
    let mut grant = Grant::default();
    let mut errs = FieldErrors::new();
    let old_val = old
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    let (_, old_ports) = held(&old_val);
    let spec = svc.spec.get_or_insert_with(Default::default);
    let ty = spec.type_.clone().unwrap_or_default();
    if ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local") {
        let wanted = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        match wanted {
            Some(p) if old_ports.contains(&p) => {}
            Some(p) => match a.ports.allocate(p) {
                Ok(()) => grant.ports.push(p),
                Err(e) => errs.push(FieldError::invalid(
                    "spec.healthCheckNodePort",
                    i64::from(p),
                    e.to_string(),
                )),
            },
            None => match a.ports.allocate_next() {
                Ok(p) => {
                    grant.ports.push(p);
                    spec.health_check_node_port = Some(i32::from(p));
                }
                Err(e) => errs.push(FieldError::invalid(
                    "spec.healthCheckNodePort",
                    0i64,
                    format!("failed to allocate a healthCheckNodePort: {e}"),
                )),
            },
        }
    }
    if errs.is_empty() {
        Ok(grant)
    } else {
        drop(a);
        grant.rollback(srv);
        Err(errs)
    }
}

/// Takes the cluster IP and node ports `svc` needs that `old` did not already hold.
fn allocate(
    srv: &Server,
    svc: &mut Service,
    old: Option<&Service>,
) -> std::result::Result<Grant, FieldErrors> {
    let mut a = srv.alloc.lock().unwrap_or_else(|p| p.into_inner());
    let mut grant = Grant::default();
    let mut errs = FieldErrors::new();
    let old_val = old
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    let (old_ips, old_ports) = held(&old_val);
    let spec = svc.spec.get_or_insert_with(Default::default);
    let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    if ty != "ExternalName" {
        let wanted = spec.cluster_ip.clone().unwrap_or_default();
        if wanted == "None" {
            spec.cluster_ips = Some(vec!["None".into()]);
        } else if wanted.is_empty() {
            match a.ips.allocate_next() {
                Ok(ip) => {
                    grant.ips.push(ip);
                    spec.cluster_ip = Some(ip.to_string());
                    spec.cluster_ips = Some(vec![ip.to_string()]);
                }
                Err(e) => errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    BadValue::Raw("[]string(nil)".into()),
                    format!("failed to allocate IP: {e}"),
                )),
            }
        } else if let Ok(ip) = wanted.parse::<Ipv4Addr>() {
            if !old_ips.contains(&ip) {
                match a.ips.allocate(ip) {
                    Ok(()) => grant.ips.push(ip),
                    Err(e) => errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        BadValue::Raw(format!("[]string{{\"{wanted}\"}}")),
                        format!("failed to allocate IP {wanted}: {e}"),
                    )),
                }
            }
            spec.cluster_ips = Some(vec![wanted]);
        }
    }
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false));
    if wants_node_ports {
        let mut mine: Vec<u16> = Vec::new();
        for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
            match port.node_port.and_then(|p| u16::try_from(p).ok()) {
                Some(p) if old_ports.contains(&p) || mine.contains(&p) => {}
                Some(p) => match a.ports.allocate(p) {
                    Ok(()) => {
                        grant.ports.push(p);
                        mine.push(p);
                    }
                    Err(e @ (AllocError::PortTaken | AllocError::PortOutOfRange { .. })) => errs
                        .push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            i64::from(p),
                            e.to_string(),
                        )),
                    Err(e) => errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        i64::from(p),
                        e.to_string(),
                    )),
                },
                None => match a.ports.allocate_next() {
                    Ok(p) => {
                        grant.ports.push(p);
                        mine.push(p);
                        port.node_port = Some(i32::from(p));
                    }
                    Err(e) => errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        0i64,
                        format!("failed to allocate a nodePort: {e}"),
                    )),
                },
            }
        }
    }
    if !errs.is_empty() {
        drop(a);
        grant.rollback(srv);
        return Err(errs);
    }
    Ok(grant)
}

/// Frees what a deleted object held.
pub fn deleted(srv: &Server, r: &Resource, obj: &Value) {
    if r.group.is_empty() && r.kind == "Service" {
        let (ips, ports) = held(obj);
        let mut a = srv.alloc.lock().unwrap_or_else(|p| p.into_inner());
        ips.iter().for_each(|ip| a.ips.release(*ip));
        ports.iter().for_each(|p| a.ports.release(*p));
    }
}

/// Objects can only be created in a namespace that exists and is not being deleted.
pub async fn check_namespace_open(srv: &Server, ns: &str) -> Result<()> {
    let r = resources::by_kind("", "Namespace")
        .ok_or_else(|| ApiError::Internal("namespaces not registered".into()))?;
    let obj = crate::rest::get(srv, r, None, ns).await?;
    if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
        return Err(ApiError::Forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(())
}

/// The grace period a deletion of `obj` gets, as the pod registry decides it: the one asked
/// for, else the pod's `terminationGracePeriodSeconds`; none (0) for a pod no node runs (not
/// bound, or already finished), since nobody would finish the deletion. Other kinds have none.
pub fn grace_period(r: &Resource, obj: &Value, asked: Option<i64>) -> i64 {
    if !(r.group.is_empty() && r.kind == "Pod") {
        return 0;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    let period = asked
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    // kube-apiserver turns a negative period into the shortest graceful one.
    if period < 0 { 1 } else { period }
}

/// Refuses deletions kube-apiserver refuses.
pub async fn check_delete(_srv: &Server, r: &Resource, obj: &Value) -> Result<()> {
    if r.group.is_empty() && r.kind == "Namespace" {
        let name = obj.name().unwrap_or("");
        if matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
    }
    Ok(())
}

/// Work that must happen before an object is removed: a namespace takes its contents with it.
/// (kube-apiserver hands this to the namespace controller; berth does it inline for now.)
pub async fn before_delete(srv: &Server, r: &Resource, obj: &Value) -> Result<()> {
    if !(r.group.is_empty() && r.kind == "Namespace") {
        return Ok(());
    }
    let ns = obj.name().unwrap_or("");
    for res in resources::RESOURCES.iter().filter(|x| x.namespaced) {
        let listed = srv
            .store
            .list(
                &collection_key(res, Some(ns)),
                berth_store::ListOptions {
                    limit: 0,
                    start_after: None,
                    revision: None,
                },
            )
            .await?;
        for kv in listed.items {
            if srv.store.delete(&kv.key, None).await.is_ok()
                && let Ok(o) = crate::rest::decode_kv(&kv)
            {
                deleted(srv, res, &o);
            }
        }
    }
    Ok(())
}

/// The ServiceAccount admission plugin's default (`default`), and the deprecated
/// `serviceAccount` field mirrored from it as the v1 API shows it.
fn default_service_account(spec: Option<&mut Value>) {
    let Some(Value::Object(s)) = spec else { return };
    let name = match s.get("serviceAccountName").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => match s.get("serviceAccount").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => "default".to_owned(),
        },
    };
    s.insert("serviceAccountName".into(), json!(name));
    s.insert("serviceAccount".into(), json!(name));
}

/// Where pods find their ServiceAccount's token, CA and namespace.
const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's `kube-api-access-XXXXX` volume: a projected token
/// (the kubelet asks for 3607 s), the cluster CA from `kube-root-ca.crt` and the namespace,
/// mounted read-only in every container that mounts nothing there, unless the pod sets
/// `automountServiceAccountToken: false` (the ServiceAccount's own field is not read here).
fn mount_service_account_token(spec: Option<&mut Value>) {
    let Some(Value::Object(s)) = spec else { return };
    if s.get("automountServiceAccountToken") == Some(&json!(false)) {
        return;
    }
    // The alphabet of Go's utilrand.String, which names the volume upstream.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let mut used = false;
    for list in ["initContainers", "containers"] {
        for c in s
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Value::Object(c) = c else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_PATH))
            {
                continue;
            }
            mounts.push(json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_PATH}));
            used = true;
        }
    }
    if !used {
        return;
    }
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    if let Some(volumes) = s
        .entry("volumes")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        volumes.push(volume);
    }
}

fn default_pod_spec(spec: Option<&mut Value>) {
    let Some(Value::Object(s)) = spec else { return };
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ] {
        s.entry(k).or_insert(v);
    }
    for list in ["containers", "initContainers"] {
        for c in s
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Value::Object(c) = c else { continue };
            let image = c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let latest = !image.contains(':') || image.ends_with(":latest");
            c.entry("imagePullPolicy").or_insert(json!(if latest {
                "Always"
            } else {
                "IfNotPresent"
            }));
            c.entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert(json!("File"));
            c.entry("resources").or_insert(json!({}));
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let Some(Value::Object(p)) = c.get_mut(probe) else {
                    continue;
                };
                for (k, v) in [
                    ("timeoutSeconds", 1),
                    ("periodSeconds", 10),
                    ("successThreshold", 1),
                    ("failureThreshold", 3),
                ] {
                    p.entry(k).or_insert(json!(v));
                }
                if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                    h.entry("path").or_insert(json!("/"));
                    h.entry("scheme").or_insert(json!("HTTP"));
                }
            }
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Value::Object(p) = p {
                    p.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required(format!("{path}.containers"), "")),
        Some(cs) if cs.is_empty() => {
            errs.push(FieldError::required(format!("{path}.containers"), ""))
        }
        Some(cs) => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => errs.push(FieldError::required(format!("{p}.name"), "")),
                    Some(n) => {
                        for msg in names::is_dns1123_label(n) {
                            errs.push(FieldError::invalid(format!("{p}.name"), n, msg));
                        }
                        if seen.contains(&n) {
                            errs.push(FieldError::duplicate(format!("{p}.name"), n));
                        }
                        seen.push(n);
                    }
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(FieldError::required(format!("{p}.image"), ""));
                }
            }
        }
    }
    errs
}

fn default_workload(kind: &str, obj: &mut Value) {
    let Some(Value::Object(spec)) = obj.get_mut("spec") else {
        return;
    };
    if kind != "DaemonSet" {
        spec.entry("replicas").or_insert(json!(1));
    }
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    if kind == "DaemonSet" {
        let strategy = spec.entry("updateStrategy").or_insert(json!({}));
        if let Value::Object(st) = strategy {
            st.entry("type").or_insert(json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert(json!({}));
                if let Value::Object(ru) = ru {
                    ru.entry("maxUnavailable").or_insert(json!(1));
                    ru.entry("maxSurge").or_insert(json!(0));
                }
            }
        }
    }
    if kind == "Deployment" {
        spec.entry("progressDeadlineSeconds").or_insert(json!(600));
        let strategy = spec.entry("strategy").or_insert(json!({}));
        if let Value::Object(st) = strategy {
            st.entry("type").or_insert(json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert(json!({}));
                if let Value::Object(ru) = ru {
                    ru.entry("maxSurge").or_insert(json!("25%"));
                    ru.entry("maxUnavailable").or_insert(json!("25%"));
                }
            }
        }
    }
    if kind == "StatefulSet" {
        spec.entry("podManagementPolicy")
            .or_insert(json!("OrderedReady"));
        let strategy = spec.entry("updateStrategy").or_insert(json!({}));
        if let Value::Object(st) = strategy {
            st.entry("type").or_insert(json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert(json!({}));
                if let Value::Object(ru) = ru {
                    ru.entry("partition").or_insert(json!(0));
                }
            }
        }
        spec.entry("persistentVolumeClaimRetentionPolicy")
            .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
    }
    if let Some(template) = spec.get_mut("template") {
        default_pod_spec(template.get_mut("spec"));
    }
}

/// kube-apiserver's ReplicationController defaults: one replica, the selector (and the
/// object's own labels) taken from the template's labels when empty.
fn default_replication_controller(obj: &mut Value) {
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let Some(labels) = &template_labels {
        let meta = obj.meta_mut();
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            meta.insert("labels".into(), labels.clone());
        }
    }
    let Some(Value::Object(spec)) = obj.get_mut("spec") else {
        return;
    };
    spec.entry("replicas").or_insert(json!(1));
    if let Some(labels) = template_labels
        && spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
    {
        spec.insert("selector".into(), labels);
    }
    if let Some(template) = spec.get_mut("template") {
        default_pod_spec(template.get_mut("spec"));
    }
}

/// A ReplicationController needs a non-empty selector matching its template's labels.
fn validate_replication_controller(obj: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let spec = obj.get("spec");
    let map = |v: Option<&Value>| -> std::collections::BTreeMap<String, String> {
        v.and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default()
    };
    let selector = map(spec.and_then(|s| s.get("selector")));
    let labels = map(spec.and_then(|s| s.pointer("/template/metadata/labels")));
    if selector.is_empty() {
        errs.push(FieldError::required("spec.selector", ""));
    } else if spec.and_then(|s| s.get("template")).is_none() {
        errs.push(FieldError::required("spec.template", ""));
    } else if !berth_api::selector::Selector::from_map(&selector).matches(&labels) {
        errs.push(selector_mismatch(&labels));
    }
    if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// kube-apiserver's error for a template whose labels its selector does not match, the
/// labels printed as Go prints the map.
fn selector_mismatch(labels: &std::collections::BTreeMap<String, String>) -> FieldError {
    let rendered = labels
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    FieldError::invalid(
        "spec.template.metadata.labels",
        BadValue::Raw(format!("map[string]string{{{rendered}}}")),
        "`selector` does not match template `labels`",
    )
}

fn validate_workload(obj: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let spec = obj.get("spec");
    let selector = spec.and_then(|s| s.get("selector"));
    let template_labels: std::collections::BTreeMap<String, String> = spec
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    match selector.and_then(|s| {
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
            s.clone(),
        )
        .ok()
    }) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let sel_errs = berth_api::selector::validate_label_selector(&sel, "spec.selector");
            if sel_errs.is_empty() {
                let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
                if empty {
                    errs.push(FieldError::invalid("spec.selector", BadValue::Raw("v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}".into()), "empty selector is invalid for deployment"));
                } else if let Ok(s) = berth_api::selector::Selector::from_label_selector(&sel)
                    && !s.matches(&template_labels)
                {
                    errs.push(selector_mismatch(&template_labels));
                }
            }
            errs.extend(sel_errs);
        }
    }
    if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_pod_spec(
        spec.and_then(|s| s.pointer("/template/spec")),
        "spec.template.spec",
    ));
    errs
}

/// The `autoscaling/v1 Scale` view of a Deployment, ReplicaSet or ReplicationController
/// (whose selector is a plain map).
pub fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let plain = obj.get("kind").and_then(Value::as_str) == Some("ReplicationController");
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| {
            if plain {
                json!({ "matchLabels": s })
            } else {
                s.clone()
            }
        })
        .and_then(|s| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
                s.clone(),
            )
            .ok()
        })
        .and_then(|s| berth_api::selector::Selector::from_label_selector(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    });
    crate::managed::write_scale_view(obj, &mut scale);
    scale
}

/// The object `cur` with the replica count of the `Scale` body applied.
pub fn apply_scale(cur: &Value, scale: &Value) -> Result<Value> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        let name = cur.name().unwrap_or("").to_owned();
        let r = resources::by_kind("autoscaling", "Scale");
        return Err(match r {
            Some(r) => ApiError::Invalid {
                resource: r,
                kind: "Scale",
                name,
                errors: vec![FieldError::invalid(
                    "spec.replicas",
                    replicas,
                    "must be greater than or equal to 0",
                )],
            },
            None => ApiError::BadRequest(format!(
                "Scale \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            )),
        });
    }
    let mut new = cur.clone();
    new["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        new.set_meta("resourceVersion", json!(rv));
    }
    Ok(new)
}
