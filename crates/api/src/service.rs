//! Service admission as kube-apiserver performs it: v1 defaulting, the registry's create and
//! update preparation (clusterIP/nodePort carry-over, type-change clearing), and validation
//! with upstream field paths and messages.
//!
//! Expected call order, mirroring upstream's storage hooks:
//! - create: [`default_service`], then [`validate_cluster_ips_related_fields`] (reject with only
//!   those errors), then allocate clusterIPs/nodePorts/healthCheckNodePort, then [`validate_service`];
//! - update: [`prepare_service_update`], then [`validate_cluster_ips_related_fields`], then
//!   allocate/release, then [`validate_service_update`].
//!
//! Deferred to the allocator (it knows the service CIDRs and the node-port range): picking
//! and reserving addresses and ports, `"<family> is not configured on this cluster"`,
//! `"this cluster is not configured for dual-stack services"`, nodePort range checks
//! (`provided port is not in the valid range. The range of valid ports is 30000-32767`) and
//! `provided port is already allocated`. Defaults here assume a single-stack IPv4 cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::{FieldError, FieldErrorKind, FieldErrors, go_quote};
use crate::meta::{self, go_string_slice, raw_value_error};
use crate::names;

/// Session-affinity timeout applied when `ClientIP` affinity has none.
pub const DEFAULT_CLIENT_IP_AFFINITY_SECONDS: i32 = 10800;
/// Largest accepted session-affinity timeout.
pub const MAX_CLIENT_IP_AFFINITY_SECONDS: i32 = 86400;

const CLUSTER_IP_NONE: &str = "None";
const TYPE_CLUSTER_IP: &str = "ClusterIP";
const TYPE_NODE_PORT: &str = "NodePort";
const TYPE_LOAD_BALANCER: &str = "LoadBalancer";
const TYPE_EXTERNAL_NAME: &str = "ExternalName";
const IPV4: &str = "IPv4";
const IPV6: &str = "IPv6";
const SINGLE_STACK: &str = "SingleStack";
const REQUIRE_DUAL_STACK: &str = "RequireDualStack";
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
const TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";
const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";

// Upstream lists supported values sorted, so these are too.
const SUPPORTED_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SUPPORTED_AFFINITIES: &[&str] = &["ClientIP", "None"];
const SUPPORTED_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SUPPORTED_TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const SUPPORTED_IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const SUPPORTED_IP_FAMILY_POLICIES: &[&str] =
    &["PreferDualStack", "RequireDualStack", "SingleStack"];
const SUPPORTED_TRAFFIC_DISTRIBUTIONS: &[&str] = &["PreferClose"];

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

fn list<T>(v: &Option<Vec<T>>) -> &[T] {
    v.as_deref().unwrap_or_default()
}

fn spec_of(svc: &Service) -> ServiceSpec {
    svc.spec.clone().unwrap_or_default()
}

fn is_headless(spec: &ServiceSpec) -> bool {
    matches!(list(&spec.cluster_ips), [only] if only == CLUSTER_IP_NONE)
}

fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    s(&spec.type_) != TYPE_EXTERNAL_NAME
}

fn needs_node_port(spec: &ServiceSpec) -> bool {
    matches!(s(&spec.type_), TYPE_NODE_PORT | TYPE_LOAD_BALANCER)
}

fn externally_accessible(spec: &ServiceSpec) -> bool {
    let t = s(&spec.type_);
    t == TYPE_LOAD_BALANCER
        || t == TYPE_NODE_PORT
        || (t == TYPE_CLUSTER_IP && !list(&spec.external_ips).is_empty())
}

fn needs_health_check(spec: &ServiceSpec) -> bool {
    s(&spec.type_) == TYPE_LOAD_BALANCER && s(&spec.external_traffic_policy) == "Local"
}

/// Parses like Go's `net.ParseIP`, folding IPv4-mapped IPv6 to IPv4 as Go's `To4` does.
fn parse_ip(v: &str) -> Option<IpAddr> {
    v.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn family_of(ip: &str) -> Option<&'static str> {
    parse_ip(ip).map(|ip| if ip.is_ipv4() { IPV4 } else { IPV6 })
}

fn is_ipv6(ip: &str) -> bool {
    family_of(ip) == Some(IPV6)
}

/// Go's `%#v` of a `[]core.IPFamily`.
fn go_family_slice(items: &[String]) -> String {
    if items.is_empty() {
        return "[]core.IPFamily(nil)".to_owned();
    }
    let quoted: Vec<String> = items.iter().map(|f| go_quote(f)).collect();
    format!("[]core.IPFamily{{{}}}", quoted.join(", "))
}

/// Go's `%#v` of the internal `core.ServicePort` key used for duplicate (protocol, port).
fn go_port_key(protocol: &str, port: i32) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, \
         TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        go_quote(protocol)
    )
}

/// An optional string upstream passes as a pointer: nil prints as `"null"`.
fn ptr_value(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "null".to_owned())
}

fn inclusive_range(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_valid_port_num(p: i64) -> bool {
    (1..=65535).contains(&p)
}

fn is_valid_cidr(v: &str) -> bool {
    let Some((ip, bits)) = v.split_once('/') else {
        return false;
    };
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting and registry preparation
// ---------------------------------------------------------------------------------------------

/// The v1 scheme defaults (`SetDefaults_Service`), applied to every decoded Service body on
/// create and on update.
pub fn set_defaults_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    if s(&spec.session_affinity).is_empty() {
        spec.session_affinity = Some("None".to_owned());
    }
    match s(&spec.session_affinity) {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_CLIENT_IP_AFFINITY_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    if s(&spec.type_).is_empty() {
        spec.type_ = Some(TYPE_CLUSTER_IP.to_owned());
    }
    for p in spec.ports.iter_mut().flatten() {
        if s(&p.protocol).is_empty() {
            p.protocol = Some("TCP".to_owned());
        }
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(v)) => v.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if externally_accessible(spec) && s(&spec.external_traffic_policy).is_empty() {
        spec.external_traffic_policy = Some("Cluster".to_owned());
    }
    if spec.internal_traffic_policy.is_none()
        && matches!(
            s(&spec.type_),
            TYPE_NODE_PORT | TYPE_LOAD_BALANCER | TYPE_CLUSTER_IP
        )
    {
        spec.internal_traffic_policy = Some("Cluster".to_owned());
    }
    if s(&spec.type_) == TYPE_LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
}

/// Everything a created Service gets before allocation and validation: the v1 defaults, a
/// cleared status, `clusterIPs` initialised from a lone `clusterIP`, and `ipFamilyPolicy` /
/// `ipFamilies` (headless services included; a headless selector-less Service becomes
/// `RequireDualStack` with both families, as upstream does even on single-stack clusters).
/// Allocation of addresses and ports is left to the caller.
pub fn default_service(svc: &mut Service) {
    set_defaults_service(svc);
    svc.status = None;
    let spec = svc.spec.get_or_insert_with(Default::default);
    if !s(&spec.cluster_ip).is_empty() && list(&spec.cluster_ips).is_empty() {
        spec.cluster_ips = Some(vec![s(&spec.cluster_ip).to_owned()]);
    }
    init_ip_family_fields(spec, None);
}

/// Upstream's `initIPFamilyFields`, minus the checks that need cluster configuration.
fn init_ip_family_fields(spec: &mut ServiceSpec, old: Option<&ServiceSpec>) {
    if !needs_cluster_ip(spec) {
        return;
    }
    let headless_selectorless = s(&spec.cluster_ip) == CLUSTER_IP_NONE
        && spec.selector.as_ref().is_none_or(BTreeMap::is_empty);
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = match old.and_then(|o| o.ip_family_policy.clone()) {
            Some(p) => Some(p),
            None if headless_selectorless => Some(REQUIRE_DUAL_STACK.to_owned()),
            None => Some(SINGLE_STACK.to_owned()),
        };
    }
    let single = s(&spec.ip_family_policy) == SINGLE_STACK;
    // Choosing SingleStack while leaving both lists untouched is how users downgrade.
    if let Some(old) = old
        && single
    {
        if list(&spec.cluster_ips) == list(&old.cluster_ips)
            && s(&spec.cluster_ip) == s(&old.cluster_ip)
            && let Some(ips) = spec.cluster_ips.as_mut()
        {
            ips.truncate(1);
        }
        if list(&spec.ip_families) == list(&old.ip_families)
            && let Some(f) = spec.ip_families.as_mut()
        {
            f.truncate(1);
        }
    }
    // Infer missing families from the addresses given; bad addresses are validation's job.
    let ips: Vec<String> = list(&spec.cluster_ips).to_vec();
    for (i, ip) in ips.iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        let Some(fam) = family_of(ip) else { break };
        let fams = spec.ip_families.get_or_insert_with(Vec::new);
        if i >= fams.len() {
            fams.push(fam.to_owned());
        }
    }
    let fams = spec.ip_families.get_or_insert_with(Vec::new);
    if fams.is_empty() {
        fams.push(IPV4.to_owned());
    }
    if headless_selectorless && !single && fams.len() < 2 {
        let other = if fams.first().map(String::as_str) == Some(IPV4) {
            IPV6
        } else {
            IPV4
        };
        fams.push(other.to_owned());
    }
}

/// What the registry does to an updated Service before validating it: v1 defaults, status
/// kept from `old`, allocated values the client omitted carried over (clusterIP/clusterIPs,
/// nodePorts matched by port name, healthCheckNodePort), clusterIP and clusterIPs kept in
/// sync, IP-family defaults, and fields made meaningless by a type change cleared when the
/// client left them as they were (nodePorts when leaving NodePort/LoadBalancer, clusterIPs
/// and families when becoming ExternalName, and so on). Releasing what was cleared and
/// allocating for new needs is the allocator's job.
pub fn prepare_service_update(new: &mut Service, old: &Service) {
    set_defaults_service(new);
    new.status = old.status.clone();
    let old_spec = spec_of(old);
    let spec = new.spec.get_or_insert_with(Default::default);
    patch_allocated_values(spec, &old_spec);
    normalize_cluster_ips(spec, &old_spec);
    init_ip_family_fields(spec, Some(&old_spec));
    drop_type_dependent_fields(spec, &old_spec);
    if s(&spec.type_) != TYPE_LOAD_BALANCER
        && let Some(status) = new.status.as_mut()
    {
        status.load_balancer = None;
    }
}

/// Lets clients resubmit a manifest without the values the server allocated for them.
fn patch_allocated_values(new: &mut ServiceSpec, old: &ServiceSpec) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if s(&new.cluster_ip).is_empty() {
            new.cluster_ip = old.cluster_ip.clone();
        }
        if list(&new.cluster_ips).is_empty() && !list(&old.cluster_ips).is_empty() {
            new.cluster_ips = old.cluster_ips.clone();
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let used_by = |ports: &[ServicePort]| -> BTreeSet<i32> {
            ports
                .iter()
                .filter_map(|p| p.node_port)
                .filter(|&n| n != 0)
                .collect()
        };
        let old_used = used_by(list(&old.ports));
        let new_used = used_by(list(&new.ports));
        // A value the client already gave to another port must not be copied in again.
        let taken: BTreeSet<i32> = old_used.intersection(&new_used).copied().collect();
        let mut by_name: BTreeMap<&str, i32> = BTreeMap::new();
        for p in list(&old.ports) {
            by_name.insert(s(&p.name), p.node_port.unwrap_or(0));
        }
        for p in new.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0 {
                let old_val = by_name.get(s(&p.name)).copied().unwrap_or(0);
                if !taken.contains(&old_val) && old_val != 0 {
                    p.node_port = Some(old_val);
                }
            }
        }
    }
    if needs_health_check(old)
        && needs_health_check(new)
        && new.health_check_node_port.unwrap_or(0) == 0
    {
        new.health_check_node_port = old.health_check_node_port;
    }
}

fn same_cluster_ips(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    s(&a.cluster_ip) == s(&b.cluster_ip) && list(&a.cluster_ips) == list(&b.cluster_ips)
}

/// Older clients manage only `clusterIP`; keep `clusterIPs` consistent with what they meant.
fn normalize_cluster_ips(new: &mut ServiceSpec, old: &ServiceSpec) {
    if !list(&old.cluster_ips).is_empty()
        && list(&new.cluster_ips).is_empty()
        && s(&old.cluster_ip) == s(&new.cluster_ip)
    {
        new.cluster_ips = old.cluster_ips.clone();
    }
    if s(&old.cluster_ip) != s(&new.cluster_ip) {
        if !s(&old.cluster_ip).is_empty() && s(&new.cluster_ip).is_empty() {
            if list(&old.cluster_ips) == list(&new.cluster_ips) {
                new.cluster_ips = None;
            }
        } else if list(&old.cluster_ips) == list(&new.cluster_ips) {
            new.cluster_ips = Some(vec![s(&new.cluster_ip).to_owned()]);
        }
    }
}

/// Clears fields the new type does not use, but only those the client did not touch, so
/// an explicit conflicting value still fails validation.
fn drop_type_dependent_fields(new: &mut ServiceSpec, old: &ServiceSpec) {
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        if same_cluster_ips(old, new) {
            new.cluster_ip = None;
            new.cluster_ips = None;
        }
        if list(&old.ip_families) == list(&new.ip_families) {
            new.ip_families = None;
        }
        if s(&old.ip_family_policy) == s(&new.ip_family_policy) {
            new.ip_family_policy = None;
        }
    }
    if needs_node_port(old) && !needs_node_port(new) {
        let node_ports = |ports: &[ServicePort]| -> BTreeSet<i32> {
            ports
                .iter()
                .filter_map(|p| p.node_port)
                .filter(|&n| n != 0)
                .collect()
        };
        if node_ports(list(&old.ports)).is_superset(&node_ports(list(&new.ports))) {
            for p in new.ports.iter_mut().flatten() {
                p.node_port = None;
            }
        }
    }
    if needs_health_check(old)
        && !needs_health_check(new)
        && old.health_check_node_port == new.health_check_node_port
    {
        new.health_check_node_port = None;
    }
    if s(&old.type_) == TYPE_LOAD_BALANCER
        && s(&new.type_) != TYPE_LOAD_BALANCER
        && let (Some(o), Some(n)) = (
            old.allocate_load_balancer_node_ports,
            new.allocate_load_balancer_node_ports,
        )
        && o == n
    {
        new.allocate_load_balancer_node_ports = None;
    }
    if s(&old.type_) == TYPE_LOAD_BALANCER
        && s(&new.type_) != TYPE_LOAD_BALANCER
        && old.load_balancer_class == new.load_balancer_class
    {
        new.load_balancer_class = None;
    }
    if externally_accessible(old)
        && !externally_accessible(new)
        && s(&old.external_traffic_policy) == s(&new.external_traffic_policy)
    {
        new.external_traffic_policy = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Validates a Service as `ValidateService` does; run it on the defaulted, allocated object.
pub fn validate_service(svc: &Service) -> FieldErrors {
    let spec = spec_of(svc);
    let mut errs = meta::validate_object_meta(&svc.metadata, true, names::is_dns1035_label);
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();

    if let (Some(mode), Some(hints)) = (
        annotations.get(TOPOLOGY_MODE_ANNOTATION),
        annotations.get(TOPOLOGY_HINTS_ANNOTATION),
    ) && mode != hints
    {
        errs.push(FieldError::invalid(
            format!("metadata.annotations[{TOPOLOGY_MODE_ANNOTATION}]"),
            mode.as_str(),
            format!("must match annotations[{TOPOLOGY_HINTS_ANNOTATION}] when both are specified"),
        ));
    }

    let ty = s(&spec.type_);
    let ports = list(&spec.ports);
    let headless = is_headless(&spec);
    if ports.is_empty() && !headless && ty != TYPE_EXTERNAL_NAME {
        errs.push(FieldError::required("spec.ports", ""));
    }

    match ty {
        TYPE_LOAD_BALANCER | TYPE_NODE_PORT if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                CLUSTER_IP_NONE,
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        TYPE_EXTERNAL_NAME => {
            if !list(&spec.cluster_ips).is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !list(&spec.ip_families).is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            // A trailing dot marks the CNAME as fully qualified.
            let cname = s(&spec.external_name)
                .strip_suffix('.')
                .unwrap_or(s(&spec.external_name));
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                for msg in names::is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid("spec.externalName", cname, msg));
                }
            }
        }
        _ => {}
    }

    let mut port_names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            p,
            ports.len() > 1,
            &mut port_names,
            &format!("spec.ports[{i}]"),
        ));
    }

    if let Some(selector) = &spec.selector {
        errs.extend(names::validate_labels(selector, "spec.selector"));
    }

    let affinity = s(&spec.session_affinity);
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if !SUPPORTED_AFFINITIES.contains(&affinity) {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            affinity,
            SUPPORTED_AFFINITIES,
        ));
    }
    match affinity {
        "ClientIP" => errs.extend(validate_client_ip_affinity(
            spec.session_affinity_config.as_ref(),
        )),
        "None" if spec.session_affinity_config.is_some() => errs.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        )),
        _ => {}
    }

    errs.extend(validate_cluster_ips_related_spec(&spec));

    for (i, ip) in list(&spec.external_ips).iter().enumerate() {
        let path = format!("spec.externalIPs[{i}]");
        let bad = names::is_valid_ip(ip);
        if bad.is_empty() {
            errs.extend(validate_non_special_ip(ip, &path));
        } else {
            errs.extend(
                bad.into_iter()
                    .map(|m| FieldError::invalid(path.as_str(), ip.as_str(), m)),
            );
        }
    }

    if ty.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !SUPPORTED_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SUPPORTED_TYPES));
    }

    if ty == TYPE_CLUSTER_IP {
        for (i, p) in ports.iter().enumerate() {
            if p.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    let mut node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let np = p.node_port.unwrap_or(0);
        if np != 0 && !node_ports.insert((s(&p.protocol), np)) {
            errs.push(FieldError::duplicate(
                format!("spec.ports[{i}].nodePort"),
                np,
            ));
        }
    }
    let mut port_keys = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if !port_keys.insert((s(&p.protocol), p.port)) {
            errs.push(raw_value_error(
                FieldErrorKind::Duplicate,
                format!("spec.ports[{i}]"),
                &go_port_key(s(&p.protocol), p.port),
                "",
            ));
        }
    }

    let ranges = list(&spec.load_balancer_source_ranges);
    if !ranges.is_empty() {
        // Upstream spells this path with a capital L.
        let path = "spec.LoadBalancerSourceRanges";
        if ty != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(
                path,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if !is_valid_cidr(r) {
                errs.push(FieldError::invalid(
                    format!("{path}[{i}]"),
                    r,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    } else if let Some(val) = annotations.get(SOURCE_RANGES_ANNOTATION) {
        let path = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
        if ty != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(
                path.as_str(),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        let val = val.trim();
        if !val.is_empty() {
            for r in val.split(',').map(str::trim) {
                if !is_valid_cidr(r) {
                    errs.push(FieldError::invalid(
                        path.as_str(),
                        r,
                        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                    ));
                }
            }
        }
    }

    if spec.allocate_load_balancer_node_ports.is_some() && ty != TYPE_LOAD_BALANCER {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if ty == TYPE_LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        // Upstream omits the `spec.` prefix here.
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }

    errs.extend(validate_load_balancer_class(None, &spec));
    errs.extend(validate_external_traffic_policy(&spec));

    match spec.internal_traffic_policy.as_deref() {
        None if matches!(ty, TYPE_NODE_PORT | TYPE_LOAD_BALANCER | TYPE_CLUSTER_IP) => {
            errs.push(FieldError::required("spec.internalTrafficPolicy", ""));
        }
        Some(p) if !SUPPORTED_TRAFFIC_POLICIES.contains(&p) => {
            errs.push(FieldError::not_supported(
                "spec.internalTrafficPolicy",
                p,
                SUPPORTED_TRAFFIC_POLICIES,
            ));
        }
        _ => {}
    }

    if let Some(d) = spec.traffic_distribution.as_deref()
        && !SUPPORTED_TRAFFIC_DISTRIBUTIONS.contains(&d)
    {
        errs.push(FieldError::not_supported(
            "spec.trafficDistribution",
            d,
            SUPPORTED_TRAFFIC_DISTRIBUTIONS,
        ));
    }
    errs
}

fn validate_service_port(
    p: &ServicePort,
    require_name: bool,
    seen: &mut BTreeSet<String>,
    path: &str,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let name = s(&p.name);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !name.is_empty() {
        // Service port names are DNS labels; IANA_SVC_NAME applies to named target ports.
        for msg in names::is_dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, msg));
        }
        if !seen.insert(name.to_owned()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    if !is_valid_port_num(p.port.into()) {
        errs.push(FieldError::invalid(
            format!("{path}.port"),
            p.port,
            inclusive_range(1, 65535),
        ));
    }
    let protocol = s(&p.protocol);
    if protocol.is_empty() {
        errs.push(FieldError::required(format!("{path}.protocol"), ""));
    } else if !SUPPORTED_PROTOCOLS.contains(&protocol) {
        errs.push(FieldError::not_supported(
            format!("{path}.protocol"),
            protocol,
            SUPPORTED_PROTOCOLS,
        ));
    }
    match &p.target_port {
        Some(IntOrString::String(v)) => {
            for msg in names::is_valid_port_name(v) {
                errs.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    v.as_str(),
                    msg,
                ));
            }
        }
        other => {
            let v = match other {
                Some(IntOrString::Int(v)) => *v,
                _ => 0,
            };
            if !is_valid_port_num(v.into()) {
                errs.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    v,
                    inclusive_range(1, 65535),
                ));
            }
        }
    }
    if let Some(app) = &p.app_protocol {
        for msg in names::is_qualified_name(app) {
            errs.push(FieldError::invalid(
                format!("{path}.appProtocol"),
                app.as_str(),
                msg,
            ));
        }
    }
    errs
}

fn validate_client_ip_affinity(config: Option<&SessionAffinityConfig>) -> FieldErrors {
    let path = "spec.sessionAffinityConfig";
    let detail = "when session affinity type is ClientIP";
    let Some(config) = config else {
        return vec![FieldError::required(path, detail)];
    };
    let Some(client_ip) = &config.client_ip else {
        return vec![FieldError::required(format!("{path}.clientIP"), detail)];
    };
    let Some(timeout) = client_ip.timeout_seconds else {
        return vec![FieldError::required(
            format!("{path}.clientIP.timeoutSeconds"),
            detail,
        )];
    };
    if timeout <= 0 || timeout > MAX_CLIENT_IP_AFFINITY_SECONDS {
        return vec![FieldError::invalid(
            format!("{path}.clientIP.timeoutSeconds"),
            timeout,
            format!("must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"),
        )];
    }
    Vec::new()
}

fn validate_non_special_ip(ip: &str, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let Some(addr) = parse_ip(ip) else {
        return vec![FieldError::invalid(path, ip, "must be a valid IP address")];
    };
    let (unspecified, loopback, link_local, link_local_multicast) = match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            (
                a.is_unspecified(),
                a.is_loopback(),
                a.is_link_local(),
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(a) => {
            let seg = a.segments();
            (
                a.is_unspecified(),
                a.is_loopback(),
                seg[0] & 0xffc0 == 0xfe80,
                seg[0] & 0xff0f == 0xff02,
            )
        }
    };
    if unspecified {
        errs.push(FieldError::invalid(
            path,
            ip,
            format!("may not be unspecified ({ip})"),
        ));
    }
    if loopback {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// The `clusterIP` / `clusterIPs` / `ipFamilies` / `ipFamilyPolicy` checks. Upstream runs
/// these before allocating and, if any fail, rejects the request with these errors alone;
/// [`validate_service`] includes them as well.
pub fn validate_cluster_ips_related_fields(svc: &Service) -> FieldErrors {
    validate_cluster_ips_related_spec(&spec_of(svc))
}

fn validate_cluster_ips_related_spec(spec: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if s(&spec.type_) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    let ips = list(&spec.cluster_ips);
    let raw_ips = go_string_slice(ips);
    let families = list(&spec.ip_families);
    let invalid_ips = |detail: &str| {
        raw_value_error(FieldErrorKind::Invalid, "spec.clusterIPs", &raw_ips, detail)
    };

    let cluster_ip = s(&spec.cluster_ip);
    if !cluster_ip.is_empty() {
        match ips.first() {
            None => errs.push(FieldError::required("spec.clusterIPs", "")),
            Some(first) if first != cluster_ip => {
                errs.push(invalid_ips("first value must match `clusterIP`"))
            }
            Some(_) => {}
        }
    } else if !ips.is_empty() {
        errs.push(invalid_ips(
            "must be empty when `clusterIP` is not specified",
        ));
    }

    let mut seen = BTreeSet::new();
    for (i, fam) in families.iter().enumerate() {
        let path = format!("spec.ipFamilies[{i}]");
        if !SUPPORTED_IP_FAMILIES.contains(&fam.as_str()) {
            errs.push(FieldError::not_supported(
                path.as_str(),
                fam.as_str(),
                SUPPORTED_IP_FAMILIES,
            ));
        }
        if !seen.insert(fam.as_str()) {
            errs.push(FieldError::duplicate(path, fam.as_str()));
        }
    }

    if let Some(policy) = spec.ip_family_policy.as_deref()
        && !SUPPORTED_IP_FAMILY_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            policy,
            SUPPORTED_IP_FAMILY_POLICIES,
        ));
    }

    let mut has_invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == CLUSTER_IP_NONE {
            if ips.len() > 1 {
                has_invalid = true;
                errs.push(invalid_ips("'None' must be the first and only value"));
            }
            continue;
        }
        for msg in names::is_valid_ip(ip) {
            has_invalid = true;
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                ip.as_str(),
                msg,
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(invalid_ips("may only hold up to 2 values"));
    }
    // Further checks would only restate problems with addresses already reported.
    if has_invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v4 = ips.iter().any(|ip| family_of(ip) == Some(IPV4));
        let v6 = ips.iter().any(|ip| is_ipv6(ip));
        if !(v4 && v6) {
            errs.push(invalid_ips(
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        for (i, ip) in ips.iter().enumerate().take(families.len()) {
            let fam = families[i].as_str();
            if fam == IPV4 && is_ipv6(ip) {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if fam == IPV6 && !is_ipv6(ip) {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

fn validate_load_balancer_class(old: Option<&ServiceSpec>, spec: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let is_lb = s(&spec.type_) == TYPE_LOAD_BALANCER;
    if let Some(old) = old
        && s(&old.type_) == TYPE_LOAD_BALANCER
        && is_lb
        && old.load_balancer_class != spec.load_balancer_class
    {
        errs.push(FieldError::invalid(
            "spec.loadBalancerClass",
            ptr_value(&spec.load_balancer_class),
            "may not change once set",
        ));
    }
    match &spec.load_balancer_class {
        Some(class) if is_lb => {
            for msg in names::is_qualified_name(class) {
                errs.push(FieldError::invalid(
                    "spec.loadBalancerClass",
                    class.as_str(),
                    msg,
                ));
            }
        }
        Some(_) => errs.push(FieldError::forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        )),
        None => {}
    }
    errs
}

fn validate_external_traffic_policy(spec: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let etp = s(&spec.external_traffic_policy);
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if !SUPPORTED_TRAFFIC_POLICIES.contains(&etp) {
        errs.push(FieldError::not_supported(
            "spec.externalTrafficPolicy",
            etp,
            SUPPORTED_TRAFFIC_POLICIES,
        ));
    }
    let hc = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        errs.push(FieldError::required("spec.healthCheckNodePort", ""));
    } else if !is_valid_port_num(hc.into()) {
        errs.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            hc,
            inclusive_range(1, 65535),
        ));
    }
    errs
}

/// Validates an update as `ValidateServiceUpdate` does: metadata immutability, clusterIPs
/// and ipFamilies may grow or shrink but their first entries may not change,
/// loadBalancerClass and healthCheckNodePort stay fixed, then everything [`validate_service`]
/// checks. Run it after [`prepare_service_update`].
pub fn validate_service_update(new: &Service, old: &Service) -> FieldErrors {
    let (n, o) = (spec_of(new), spec_of(old));
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(validate_upgrade_downgrade_cluster_ips(&o, &n));
    errs.extend(validate_upgrade_downgrade_ip_families(&o, &n));
    errs.extend(validate_load_balancer_class(Some(&o), &n));
    if needs_health_check(&o)
        && needs_health_check(&n)
        && o.health_check_node_port != n.health_check_node_port
    {
        errs.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            meta::FIELD_IMMUTABLE,
        ));
    }
    errs.extend(validate_service(new));
    errs
}

fn validate_upgrade_downgrade_cluster_ips(old: &ServiceSpec, new: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if s(&new.type_) == TYPE_EXTERNAL_NAME || s(&old.type_) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    if is_headless(old) && is_headless(new) {
        return errs;
    }
    let (old_ips, new_ips) = (list(&old.cluster_ips), list(&new.cluster_ips));
    let raw = go_string_slice(new_ips);
    let changed = |i: usize| {
        raw_value_error(
            FieldErrorKind::Invalid,
            format!("spec.clusterIPs[{i}]"),
            &raw,
            "may not change once set",
        )
    };
    if old_ips.len() == new_ips.len() {
        for (i, ip) in old_ips.iter().enumerate() {
            if new_ips.get(i) != Some(ip) {
                errs.push(changed(i));
            }
        }
    } else if old_ips.len() > new_ips.len() {
        if new_ips.is_empty() {
            errs.push(raw_value_error(
                FieldErrorKind::Invalid,
                "spec.clusterIPs[0]",
                &raw,
                "primary clusterIP can not be unset",
            ));
        }
        if let (Some(o), Some(n)) = (old_ips.first(), new_ips.first())
            && o != n
        {
            errs.push(changed(0));
        }
        if new_ips.len() == 1 && s(&new.ip_family_policy) != SINGLE_STACK {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                ptr_value(&new.ip_family_policy),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if let (Some(o), Some(n)) = (old_ips.first(), new_ips.first())
        && o != n
    {
        errs.push(changed(0));
    }
    errs
}

fn validate_upgrade_downgrade_ip_families(old: &ServiceSpec, new: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if s(&new.type_) == TYPE_EXTERNAL_NAME || s(&old.type_) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    // Headless services may switch families freely, and so may services becoming or leaving headless.
    if is_headless(old) || is_headless(new) {
        return errs;
    }
    let (old_f, new_f) = (list(&old.ip_families), list(&new.ip_families));
    let raw_families = go_family_slice(new_f);
    // Upstream reports some of these with the clusterIPs list as the value.
    let raw_ips = go_string_slice(list(&new.cluster_ips));
    let at0 = |raw: &str, detail: &str| {
        raw_value_error(FieldErrorKind::Invalid, "spec.ipFamilies[0]", raw, detail)
    };
    if old_f.len() == new_f.len() {
        for (i, f) in old_f.iter().enumerate() {
            if new_f.get(i) != Some(f) {
                errs.push(at0(&raw_families, "may not change once set"));
            }
        }
    } else if old_f.len() > new_f.len() {
        if list(&new.cluster_ips).is_empty() {
            errs.push(at0(&raw_families, "primary ipFamily can not be unset"));
        }
        if let (Some(o), Some(n)) = (old_f.first(), new_f.first())
            && o != n
        {
            errs.push(at0(&raw_ips, "may not change once set"));
        }
        if new_f.len() == 1 && s(&new.ip_family_policy) != SINGLE_STACK {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                ptr_value(&new.ip_family_policy),
                "must be set to 'SingleStack' when releasing the secondary ipFamily",
            ));
        }
    } else if let (Some(o), Some(n)) = (old_f.first(), new_f.first())
        && o != n
    {
        errs.push(at0(&raw_ips, "may not change once set"));
    }
    errs
}

#[cfg(test)]
mod tests;
