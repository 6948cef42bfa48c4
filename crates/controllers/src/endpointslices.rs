//! EndpointSlices as kube-controller-manager writes them: the EndpointSlice controller's
//! reconciler for Services with selectors (`k8s.io/endpointslice`) and the mirroring
//! controller that copies user-written Endpoints of selector-less Services.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::pods::{
    HEADLESS_LABEL, cluster_ip, find_port, hostname_for, is_external_name, is_ipv6, is_ready,
    is_terminating, name, namespace, node_name, parse_ip, pod_ips, pod_reference, protocol,
    publish_not_ready, same_reference, selected_pods, service_ip_set, service_ports,
    service_selector, should_be_in_endpoints,
};

/// Upstream's default for `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Most addresses of one Endpoints subset the mirroring controller copies.
pub const MAX_MIRRORED_ENDPOINTS_PER_SUBSET: usize = 1000;
/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// [`MANAGED_BY_LABEL`] value of slices written by [`desired_slices`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// [`MANAGED_BY_LABEL`] value of slices written by [`mirrored_slices`].
pub const MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Label with which an Endpoints object opts out of mirroring (value `"true"`).
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Endpoints carrying this annotation are leader-election locks, never mirrored.
const LEADER_ELECTION_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotations of Endpoints that mirrored slices do not copy.
const UNMIRRORED_ANNOTATIONS: [&str; 2] = [
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// The writes that bring a Service's EndpointSlices to the desired state.
///
/// Slices in `create` have `generateName` and no name; slices in `update` are named (existing
/// slices, or new content recycled into the name of a slice that would otherwise have been
/// deleted, as upstream does); `delete` holds the slices to delete as they were given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SliceChanges {
    /// Slices to create.
    pub create: Vec<EndpointSlice>,
    /// Slices to replace (by name).
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl SliceChanges {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// What the EndpointSlice controller writes for `svc`, given the Pods it can see and the
/// slices that exist (slices of other Services or managers are ignored, so callers may pass
/// every slice of the namespace).
///
/// Nothing changes for ExternalName and selector-less Services. `max_per_slice` caps the
/// endpoints per slice ([`DEFAULT_MAX_ENDPOINTS_PER_SLICE`] upstream; 0 counts as 1).
pub fn desired_slices<P: Borrow<Pod>>(
    svc: &Service,
    pods: &[P],
    existing: &[EndpointSlice],
    max_per_slice: usize,
) -> SliceChanges {
    let mut changes = SliceChanges::default();
    if is_external_name(svc) {
        return changes;
    }
    let Some(selector) = service_selector(svc) else {
        return changes;
    };
    let max = max_per_slice.max(1);
    let mine: Vec<&EndpointSlice> = existing
        .iter()
        .filter(|s| {
            namespace(&s.metadata) == namespace(&svc.metadata)
                && label(s, SERVICE_NAME_LABEL) == Some(name(&svc.metadata))
                && label(s, MANAGED_BY_LABEL) == Some(CONTROLLER_NAME)
                // Slices on their way out are not worth reconciling.
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let pods: Vec<&Pod> = selected_pods(svc, &selector, pods).collect();

    let types = address_types(svc);
    let mut unsupported = Vec::new();
    for address_type in &types {
        let of_type: Vec<&EndpointSlice> = mine
            .iter()
            .copied()
            .filter(|s| s.address_type == *address_type)
            .collect();
        reconcile_address_type(svc, &pods, &of_type, address_type, max, &mut changes);
    }
    // Slices of a family the Service no longer has go away.
    for slice in mine {
        if !types.contains(&slice.address_type.as_str()) {
            unsupported.push(slice.clone());
        }
    }
    changes.delete.extend(unsupported);
    // Slices mirrored while the Service had no selector go once it has one, as the upstream
    // mirroring controller removes them.
    changes.delete.extend(
        existing
            .iter()
            .filter(|s| {
                namespace(&s.metadata) == namespace(&svc.metadata)
                    && label(s, SERVICE_NAME_LABEL) == Some(name(&svc.metadata))
                    && label(s, MANAGED_BY_LABEL) == Some(MIRRORING_CONTROLLER_NAME)
            })
            .cloned(),
    );
    changes
}

/// The address types (IP families) the Service's slices carry.
fn address_types(svc: &Service) -> Vec<&'static str> {
    let families = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_deref())
        .unwrap_or_default();
    let mut types = Vec::new();
    for (family, address_type) in [("IPv4", "IPv4"), ("IPv6", "IPv6")] {
        if families.iter().any(|f| f == family) {
            types.push(address_type);
        }
    }
    if !types.is_empty() {
        return types;
    }
    // Without ipFamilies (an API server that does not default them), follow the cluster IP,
    // or publish both families for headless Services.
    if service_ip_set(svc) {
        return vec![if is_ipv6(cluster_ip(svc)) {
            "IPv6"
        } else {
            "IPv4"
        }];
    }
    vec!["IPv4", "IPv6"]
}

fn reconcile_address_type(
    svc: &Service,
    pods: &[&Pod],
    existing: &[&EndpointSlice],
    address_type: &str,
    max: usize,
    changes: &mut SliceChanges,
) {
    let mut create = Vec::new();
    let mut update = Vec::new();
    let mut delete = Vec::new();

    let mut existing_by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, svc) {
            let key = ports_key(slice.ports.as_deref().unwrap_or_default());
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            // A slice left by an earlier Service of the same name.
            delete.push((*slice).clone());
        }
    }

    let mut desired: BTreeMap<PortsKey, (Vec<EndpointPort>, EndpointSet)> = BTreeMap::new();
    for pod in pods {
        // Terminating Pods stay in slices, flagged, so consumers can drain them.
        if !should_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(svc, pod);
        let (_, set) = desired
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, EndpointSet::new()));
        let endpoint = pod_to_endpoint(pod, svc, address_type);
        if !endpoint.addresses.is_empty() {
            set.insert(endpoint_key(&endpoint), endpoint);
        }
    }

    for (key, (ports, set)) in desired {
        let slices = existing_by_ports.remove(&key).unwrap_or_default();
        let meta = SliceMeta {
            ports,
            address_type,
        };
        reconcile_port_set(
            svc,
            &slices,
            set,
            &meta,
            max,
            &mut create,
            &mut update,
            &mut delete,
        );
    }
    // Port sets no Pod offers any more.
    delete.extend(existing_by_ports.into_values().flatten().cloned());

    // A Service without endpoints keeps one empty placeholder slice, so consumers can tell
    // "no endpoints" from "not processed yet".
    if existing.len() == delete.len() && create.is_empty() {
        let placeholder = new_slice(
            svc,
            &SliceMeta {
                ports: Vec::new(),
                address_type,
            },
        );
        match delete.as_slice() {
            [only] if is_same_placeholder(only, &placeholder) => delete.clear(),
            _ => create.push(placeholder),
        }
    }

    // Rather than delete one slice and create another, rewrite the one being deleted.
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        if delete[i].address_type == address_type && owned_by(&delete[i], svc) {
            let old = delete.remove(i);
            if let Some(mut slice) = create.pop() {
                recycle_into(&mut slice, &old);
                update.push(slice);
            }
        } else {
            i += 1;
        }
    }
    // New slices for a Service being deleted would race the garbage collector.
    if svc.metadata.deletion_timestamp.is_some() {
        create.clear();
    }

    changes.create.extend(create);
    changes.update.extend(update);
    changes.delete.extend(delete);
}

/// Gives new slice content the identity (name) of an existing slice it replaces. The
/// resourceVersion is carried over so the update is conditional on the slice not having
/// changed meanwhile.
fn recycle_into(slice: &mut EndpointSlice, old: &EndpointSlice) {
    slice.metadata.name = old.metadata.name.clone();
    slice.metadata.generate_name = None;
    slice.metadata.resource_version = old.metadata.resource_version.clone();
}

/// The ports and address type shared by every slice of one group.
struct SliceMeta<'a> {
    ports: Vec<EndpointPort>,
    address_type: &'a str,
}

/// Places desired endpoints into the slices of one port set with as few writes as upstream:
/// existing slices keep the endpoints still wanted (rewritten only when one changed or went
/// away, deleted when none is left); new endpoints first top up slices that are being
/// rewritten anyway (fullest first), then the unchanged slice closest to full that can take
/// them all, and only then go into new slices.
#[expect(
    clippy::too_many_arguments,
    reason = "the three output lists are filled in place"
)]
fn reconcile_port_set(
    svc: &Service,
    existing: &[&EndpointSlice],
    mut desired: EndpointSet,
    meta: &SliceMeta<'_>,
    max: usize,
    create: &mut Vec<EndpointSlice>,
    update: &mut Vec<EndpointSlice>,
    delete: &mut Vec<EndpointSlice>,
) {
    #[derive(PartialEq)]
    enum State {
        Unchanged,
        Update,
        Delete,
    }
    let mut slices: Vec<(EndpointSlice, State)> = Vec::new();
    for slice in existing {
        let mut kept = Vec::new();
        let mut endpoint_changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(endpoint)) {
                endpoint_changed |= !equal_beyond_key(&want, endpoint);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(slice, svc);
        if endpoint_changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                slices.push(((*slice).clone(), State::Delete));
            } else {
                let mut slice = (*slice).clone();
                slice.endpoints = kept;
                slice.metadata.labels = Some(labels);
                slices.push((slice, State::Update));
            }
        } else if labels_changed {
            let mut slice = (*slice).clone();
            slice.metadata.labels = Some(labels);
            slices.push((slice, State::Update));
        } else {
            slices.push(((*slice).clone(), State::Unchanged));
        }
    }

    if !desired.is_empty() {
        let mut order: Vec<usize> = (0..slices.len())
            .filter(|i| slices[*i].1 == State::Update)
            .collect();
        order.sort_by_key(|i| std::cmp::Reverse(slices[*i].0.endpoints.len()));
        for i in order {
            fill(&mut slices[i].0, &mut desired, max);
        }
    }

    while !desired.is_empty() {
        let mut target = None;
        if desired.len() < max {
            // The unchanged slice that ends up closest to full, if any can take them all.
            let mut best_room = max;
            for (i, (slice, state)) in slices.iter().enumerate() {
                if *state != State::Unchanged {
                    continue;
                }
                let Some(room) = max.checked_sub(slice.endpoints.len() + desired.len()) else {
                    continue;
                };
                if room < best_room {
                    best_room = room;
                    target = Some(i);
                }
            }
        }
        match target {
            Some(i) => {
                fill(&mut slices[i].0, &mut desired, max);
                slices[i].1 = State::Update;
            }
            None => {
                let mut slice = new_slice(svc, meta);
                fill(&mut slice, &mut desired, max);
                create.push(slice);
            }
        }
    }

    for (slice, state) in slices {
        match state {
            State::Unchanged => {}
            State::Update => update.push(slice),
            State::Delete => delete.push(slice),
        }
    }
}

/// Moves endpoints from `desired` into `slice` until it holds `max`.
fn fill(slice: &mut EndpointSlice, desired: &mut EndpointSet, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = desired.pop_first() else {
            break;
        };
        slice.endpoints.push(endpoint);
    }
}

/// A new, empty slice for the Service with the given ports and address type.
fn new_slice(svc: &Service, meta: &SliceMeta<'_>) -> EndpointSlice {
    let blank = EndpointSlice::default();
    let (labels, _) = slice_labels(&blank, svc);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", name(&svc.metadata))),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(&svc.metadata, "Service")]),
            ..ObjectMeta::default()
        },
        address_type: meta.address_type.to_owned(),
        endpoints: Vec::new(),
        ports: Some(meta.ports.clone()),
    }
}

/// The owner reference a controller puts on what it creates for `owner` (a core/v1 object).
fn controller_ref(owner: &ObjectMeta, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: kind.to_owned(),
        name: name(owner).to_owned(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the Service (this incarnation of it, by UID) owns the slice.
fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// Whether an existing slice is already the placeholder the reconciler would create.
fn is_same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    namespace(&existing.metadata) == namespace(&placeholder.metadata)
        && existing.metadata.labels.clone().unwrap_or_default()
            == placeholder.metadata.labels.clone().unwrap_or_default()
        && existing.metadata.owner_references == placeholder.metadata.owner_references
        && existing.address_type == placeholder.address_type
        && existing.endpoints.is_empty()
        && existing.ports.as_deref().unwrap_or_default().is_empty()
}

/// The labels a slice of the Service should carry, and whether the Service's own labels
/// differ from the slice's (the reserved labels aside, which alone never force a write).
fn slice_labels(slice: &EndpointSlice, svc: &Service) -> (BTreeMap<String, String>, bool) {
    let reserved = |k: &String| {
        k.as_str() == SERVICE_NAME_LABEL || k.as_str() == MANAGED_BY_LABEL || k == HEADLESS_LABEL
    };
    let unreserved = |labels: &Option<BTreeMap<String, String>>| -> BTreeMap<String, String> {
        labels
            .iter()
            .flatten()
            .filter(|(k, _)| !reserved(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = unreserved(&svc.metadata.labels);
    let changed = unreserved(&slice.metadata.labels) != labels;
    if !service_ip_set(svc) {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.to_owned(),
        name(&svc.metadata).to_owned(),
    );
    labels.insert(MANAGED_BY_LABEL.to_owned(), CONTROLLER_NAME.to_owned());
    (labels, changed)
}

/// The slice ports a Pod offers for the Service; Service ports whose named targetPort the Pod
/// lacks are left out, so such Pods land in a slice group of their own.
fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(svc)
        .iter()
        .filter_map(|svc_port| {
            let number = find_port(pod, svc_port)?;
            Some(EndpointPort {
                name: Some(svc_port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(protocol(svc_port.protocol.as_deref()).to_owned()),
                app_protocol: svc_port.app_protocol.clone(),
            })
        })
        .collect()
}

/// The slice endpoint for a Pod: its addresses of `address_type` and its conditions.
fn pod_to_endpoint(pod: &Pod, svc: &Service, address_type: &str) -> Endpoint {
    let serving = is_ready(pod);
    let terminating = is_terminating(pod);
    // Terminating Pods are never "ready" (for consumers that only read ready), unless the
    // Service publishes everything.
    let ready = publish_not_ready(svc) || (serving && !terminating);
    let addresses = pod_ips(pod)
        .into_iter()
        .filter_map(parse_ip)
        .filter(|ip| ip.is_ipv6() == (address_type == "IPv6"))
        .map(|ip| ip.to_string())
        .collect();
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(pod_reference(pod)),
        node_name: node_name(pod),
        hostname: hostname_for(pod, svc).map(str::to_owned),
        ..Endpoint::default()
    }
}

/// What identifies an endpoint across syncs (upstream's endpoint hash): sorted addresses,
/// hostname and the referenced object's namespace and name. Conditions, node and zone may
/// change in place.
type EndpointKey = (Vec<String>, String, String, String);

/// Desired endpoints by identity; the order makes placement deterministic.
type EndpointSet = BTreeMap<EndpointKey, Endpoint>;

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    (
        addresses,
        endpoint.hostname.clone().unwrap_or_default(),
        target.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        target.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// Whether two endpoints with the same key are equal in everything else the controllers set.
fn equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| e.conditions.clone().unwrap_or_default();
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && same_reference(a.target_ref.as_ref(), b.target_ref.as_ref())
}

/// A port set in canonical order. Unset names and protocols read as the API defaults them
/// ("" and TCP) so that a round trip through the API server cannot split a group.
type PortsKey = Vec<(String, i32, String, Option<String>)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                protocol(p.protocol.as_deref()).to_owned(),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

fn label<'a>(slice: &'a EndpointSlice, key: &str) -> Option<&'a str> {
    slice.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// What the EndpointSliceMirroring controller writes for user-written `endpoints` of the
/// same-named Service `svc`, given the slices that exist (only slices it manages for this
/// name count).
///
/// Every mirrored slice is deleted when mirroring does not apply: the Service has a selector
/// (the EndpointSlice controller serves it), `svc` is not the Endpoints' Service, the
/// Endpoints carry `endpointslice.kubernetes.io/skip-mirror: "true"` or are a leader-election
/// lock. When the Endpoints or the Service are gone, callers delete the mirrored slices
/// themselves. Each subset becomes one slice per address family (at most
/// [`MAX_MIRRORED_ENDPOINTS_PER_SUBSET`] addresses; invalid IPs are skipped).
pub fn mirrored_slices(
    endpoints: &Endpoints,
    svc: &Service,
    existing: &[EndpointSlice],
) -> SliceChanges {
    let ep_name = name(&endpoints.metadata);
    let mine: Vec<&EndpointSlice> = existing
        .iter()
        .filter(|s| {
            namespace(&s.metadata) == namespace(&endpoints.metadata)
                && label(s, SERVICE_NAME_LABEL) == Some(ep_name)
                && label(s, MANAGED_BY_LABEL) == Some(MIRRORING_CONTROLLER_NAME)
        })
        .collect();
    let mut changes = SliceChanges::default();

    let skip = endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    let leader_lock = endpoints
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEADER_ELECTION_ANNOTATION));
    let same_service = name(&svc.metadata) == ep_name
        && namespace(&svc.metadata) == namespace(&endpoints.metadata);
    if skip || leader_lock || !same_service || service_selector(svc).is_some() {
        changes.delete = mine.into_iter().cloned().collect();
        return changes;
    }

    // Desired endpoints per (address type, port set).
    let mut desired: BTreeMap<(&str, PortsKey), (Vec<EndpointPort>, EndpointSet)> = BTreeMap::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(protocol(p.protocol.as_deref()).to_owned()),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let key = ports_key(&ports);
        // Both families get a group, so slices of a family that lost its addresses go away.
        for address_type in ["IPv4", "IPv6"] {
            desired
                .entry((address_type, key.clone()))
                .or_insert_with(|| (ports.clone(), EndpointSet::new()));
        }
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut added = 0;
        for (address, is_ready) in ready.chain(not_ready) {
            if added >= MAX_MIRRORED_ENDPOINTS_PER_SUBSET {
                break;
            }
            let Some((address_type, endpoint)) = address_to_endpoint(address, is_ready) else {
                continue;
            };
            if let Some((_, set)) = desired.get_mut(&(address_type, key.clone())) {
                set.insert(endpoint_key(&endpoint), endpoint);
                added += 1;
            }
        }
    }

    let mut existing_by_key: BTreeMap<(&str, PortsKey), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in mine {
        let key = ports_key(slice.ports.as_deref().unwrap_or_default());
        existing_by_key
            .entry((slice.address_type.as_str(), key))
            .or_default()
            .push(slice);
    }

    for ((address_type, key), (ports, mut set)) in desired {
        let slices = existing_by_key
            .remove(&(address_type, key))
            .unwrap_or_default();
        if set.is_empty() {
            changes.delete.extend(slices.into_iter().cloned());
            continue;
        }
        // One slice per group: keep the first, drop any others.
        let first = slices.first().copied();
        changes
            .delete
            .extend(slices.iter().skip(1).map(|s| (*s).clone()));
        if let Some(first) = first
            && mirror_unchanged(first, &set)
        {
            continue;
        }
        let mut slice = new_mirrored_slice(endpoints, ports, address_type);
        fill(&mut slice, &mut set, MAX_MIRRORED_ENDPOINTS_PER_SUBSET);
        match first {
            Some(first) => {
                recycle_into(&mut slice, first);
                changes.update.push(slice);
            }
            None => changes.create.push(slice),
        }
    }
    changes
        .delete
        .extend(existing_by_key.into_values().flatten().cloned());

    // Reuse slices about to be deleted for slices about to be created, family by family.
    for address_type in ["IPv4", "IPv6"] {
        while let (Some(c), Some(d)) = (
            changes
                .create
                .iter()
                .position(|s| s.address_type == address_type),
            changes
                .delete
                .iter()
                .position(|s| s.address_type == address_type),
        ) {
            let mut slice = changes.create.remove(c);
            let old = changes.delete.remove(d);
            recycle_into(&mut slice, &old);
            changes.update.push(slice);
        }
    }
    if endpoints.metadata.deletion_timestamp.is_some() {
        changes.create.clear();
    }
    changes
}

/// Whether a mirrored slice already holds exactly the desired endpoints.
fn mirror_unchanged(slice: &EndpointSlice, desired: &EndpointSet) -> bool {
    let mut matched = 0;
    for endpoint in &slice.endpoints {
        match desired.get(&endpoint_key(endpoint)) {
            Some(want) if equal_beyond_key(want, endpoint) => matched += 1,
            _ => return false,
        }
    }
    matched == desired.len()
}

/// A new mirrored slice for the Endpoints: its labels and annotations copied, owned by it.
fn new_mirrored_slice(
    endpoints: &Endpoints,
    ports: Vec<EndpointPort>,
    address_type: &str,
) -> EndpointSlice {
    let ep_name = name(&endpoints.metadata);
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), ep_name.to_owned());
    labels.insert(
        MANAGED_BY_LABEL.to_owned(),
        MIRRORING_CONTROLLER_NAME.to_owned(),
    );
    let annotations: BTreeMap<String, String> = endpoints
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !UNMIRRORED_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{ep_name}-")),
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_ref(&endpoints.metadata, "Endpoints")]),
            ..ObjectMeta::default()
        },
        address_type: address_type.to_owned(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// The slice endpoint for an Endpoints address and its family; None for an invalid IP.
fn address_to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    let ip = parse_ip(&address.ip)?;
    let address_type = match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    };
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        ..Endpoint::default()
    };
    Some((address_type, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, pods, svc};
    use serde_json::{Value, json};

    /// Computes the changes for the slices that exist at that point.
    type Run = Box<dyn Fn(&[EndpointSlice]) -> SliceChanges>;

    /// One sync, and the writes it must ask for.
    struct Step {
        case: &'static str,
        run: Run,
        /// Endpoint counts of the created slices, in order.
        create: &'static [usize],
        /// Endpoint counts of the updated slices, in order.
        update: &'static [usize],
        delete: usize,
        /// A Pod every updated slice must hold.
        touches: Option<&'static str>,
    }

    fn slices_for(service: Service, pod_values: Vec<Value>, max: usize) -> Run {
        let pods = pods(pod_values);
        Box::new(move |existing| desired_slices(&service, &pods, existing, max))
    }

    fn mirror_for(endpoints: Value, service: Service) -> Run {
        let endpoints: Endpoints = serde_json::from_value(endpoints).expect("test Endpoints");
        Box::new(move |existing| mirrored_slices(&endpoints, &service, existing))
    }

    /// Running Pods p000.. of app=web, ready unless listed in `unready`.
    fn many(n: usize, unready: &[usize]) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let ip = format!("10.0.{}.{}", i / 200, i % 200 + 1);
                pod(&format!("p{i:03}"), &ip, !unready.contains(&i), json!({}))
            })
            .collect()
    }

    fn holds(slice: &EndpointSlice, pod: &str) -> bool {
        slice.endpoints.iter().any(|e| {
            e.target_ref
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(pod))
        })
    }

    /// Runs the steps against a simulated API server (created slices get names, updates
    /// replace, deletes remove), checks each step's writes, and that a second sync right
    /// after writes nothing. Returns the final slices.
    fn check(steps: Vec<Step>) -> Vec<EndpointSlice> {
        let mut store: Vec<EndpointSlice> = Vec::new();
        let mut created = 0;
        for step in steps {
            let changes = (step.run)(&store);
            let counts =
                |s: &[EndpointSlice]| s.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>();
            let case = step.case;
            assert_eq!(
                counts(&changes.create),
                step.create,
                "{case}: created slices"
            );
            assert_eq!(
                counts(&changes.update),
                step.update,
                "{case}: updated slices"
            );
            assert_eq!(changes.delete.len(), step.delete, "{case}: deleted slices");
            if let Some(pod) = step.touches {
                assert!(
                    changes.update.iter().all(|s| holds(s, pod)),
                    "{case}: updates {pod}"
                );
            }
            for slice in &changes.create {
                assert!(
                    slice.metadata.name.is_none(),
                    "{case}: creates use generateName"
                );
                let mut slice = slice.clone();
                let prefix = slice.metadata.generate_name.clone().unwrap_or_default();
                slice.metadata.name = Some(format!("{prefix}{created}"));
                created += 1;
                store.push(slice);
            }
            for slice in &changes.update {
                let Some(at) = store
                    .iter()
                    .position(|s| s.metadata.name == slice.metadata.name)
                else {
                    panic!("{case}: update of unknown slice {:?}", slice.metadata.name);
                };
                store[at] = slice.clone();
            }
            for slice in &changes.delete {
                store.retain(|s| s.metadata.name != slice.metadata.name);
            }
            let again = (step.run)(&store);
            assert!(again.is_empty(), "{case}: second sync writes {again:?}");
        }
        store
    }

    fn step(
        case: &'static str,
        run: Run,
        create: &'static [usize],
        update: &'static [usize],
        delete: usize,
    ) -> Step {
        Step {
            case,
            run,
            create,
            update,
            delete,
            touches: None,
        }
    }

    #[test]
    fn slices_with_minimal_churn() {
        let s = || svc(json!({}));
        let max = DEFAULT_MAX_ENDPOINTS_PER_SLICE;
        let mut flip = step(
            "flipping one pod's readiness rewrites only its slice",
            slices_for(s(), many(250, &[7]), max),
            &[],
            &[100],
            0,
        );
        flip.touches = Some("p007");
        let mut add = step(
            "one more pod tops up the slice with room",
            slices_for(s(), many(251, &[7]), max),
            &[],
            &[51],
            0,
        );
        add.touches = Some("p250");
        let mut remove = step(
            "removing one pod rewrites only its slice",
            slices_for(
                s(),
                many(251, &[7])
                    .into_iter()
                    .filter(|p| p["metadata"]["name"] != "p120")
                    .collect(),
                max,
            ),
            &[],
            &[99],
            0,
        );
        remove.touches = Some("p121");
        let store = check(vec![
            step(
                "250 pods fill three slices of at most 100",
                slices_for(s(), many(250, &[]), max),
                &[100, 100, 50],
                &[],
                0,
            ),
            flip,
            add,
            remove,
            step(
                "a Service label change rewrites every slice",
                slices_for(
                    svc(json!({"metadata": {"labels": {"team": "b"}}})),
                    many(251, &[7])
                        .into_iter()
                        .filter(|p| p["metadata"]["name"] != "p120")
                        .collect(),
                    max,
                ),
                &[],
                &[99, 100, 51],
                0,
            ),
            step(
                "no pods: slices deleted, one kept as the empty placeholder",
                slices_for(s(), vec![], max),
                &[],
                &[0],
                2,
            ),
            step(
                "pods again: the placeholder is reused",
                slices_for(s(), many(3, &[]), max),
                &[],
                &[3],
                0,
            ),
        ]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn slices_by_port_set_and_service_kind() {
        let named = || {
            svc(json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}}))
        };
        let with_port = |name: &str, ip: &str, number: i32| {
            pod(
                name,
                ip,
                true,
                json!({"spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"name": "web", "containerPort": number}]}]}}),
            )
        };
        let mixed = vec![
            with_port("a", "10.0.0.1", 8080),
            with_port("b", "10.0.0.2", 9090),
            with_port("c", "10.0.0.3", 8080),
        ];
        let store = check(vec![step(
            "pods resolving a named port differently get a slice each",
            slices_for(named(), mixed.clone(), 100),
            &[2, 1],
            &[],
            0,
        )]);
        let ports: Vec<Option<i32>> = store
            .iter()
            .map(|s| {
                s.ports
                    .as_ref()
                    .and_then(|p| p.first())
                    .and_then(|p| p.port)
            })
            .collect();
        assert_eq!(ports, vec![Some(8080), Some(9090)]);

        check(vec![
            step(
                "selector-less Service: nothing",
                slices_for(svc(json!({"spec": {"selector": null}})), many(3, &[]), 100),
                &[],
                &[],
                0,
            ),
            step(
                "ExternalName Service: nothing",
                slices_for(
                    svc(json!({"spec": {"type": "ExternalName"}})),
                    many(3, &[]),
                    100,
                ),
                &[],
                &[],
                0,
            ),
            step(
                "small max splits slices",
                slices_for(svc(json!({})), many(5, &[]), 2),
                &[2, 2, 1],
                &[],
                0,
            ),
        ]);
        check(vec![step(
            "dual-stack Service: a slice per family",
            slices_for(
                svc(json!({"spec": {"ipFamilies": ["IPv4", "IPv6"]}})),
                vec![pod(
                    "a",
                    "10.0.0.1",
                    true,
                    json!({"status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}),
                )],
                100,
            ),
            &[1, 1],
            &[],
            0,
        )]);
    }

    #[test]
    fn slice_contents() {
        let store = check(vec![step(
            "ready, unready, terminating and terminal pods",
            slices_for(
                svc(json!({"spec": {"clusterIP": "None", "ipFamilies": ["IPv4"]}})),
                vec![
                    pod(
                        "a",
                        "10.0.0.1",
                        true,
                        json!({"spec": {"hostname": "a", "subdomain": "web"}}),
                    ),
                    pod("b", "10.0.0.2", false, json!({})),
                    pod(
                        "c",
                        "10.0.0.3",
                        true,
                        json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                    ),
                    pod(
                        "d",
                        "10.0.0.4",
                        true,
                        json!({"status": {"phase": "Succeeded"}}),
                    ),
                ],
                100,
            ),
            &[3],
            &[],
            0,
        )]);
        let conditions = |ready, serving, terminating| json!({"ready": ready, "serving": serving, "terminating": terminating});
        let target = |name: &str| json!({"kind": "Pod", "namespace": "ns", "name": name, "uid": format!("uid-{name}")});
        let got = serde_json::to_value(&store[0]).expect("serializable slice");
        assert_eq!(
            got,
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": "web-0", "generateName": "web-", "namespace": "ns",
                    "labels": {"team": "a", HEADLESS_LABEL: "", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid",
                                         "controller": true, "blockOwnerDeletion": true}]
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "conditions": conditions(true, true, false), "hostname": "a", "nodeName": "node-1", "targetRef": target("a")},
                    {"addresses": ["10.0.0.2"], "conditions": conditions(false, false, false), "nodeName": "node-1", "targetRef": target("b")},
                    {"addresses": ["10.0.0.3"], "conditions": conditions(false, true, true), "nodeName": "node-1", "targetRef": target("c")},
                ]
            })
        );
    }

    #[test]
    fn a_service_given_a_selector_loses_its_mirrored_slices() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]
        }))
        .expect("test Endpoints");
        let mirrored =
            mirrored_slices(&endpoints, &svc(json!({"spec": {"selector": null}})), &[]).create;
        assert_eq!(mirrored.len(), 1);
        let changes = desired_slices::<Pod>(&svc(json!({})), &[], &mirrored, 100);
        assert_eq!(changes.delete.len(), 1, "{changes:?}");
        assert_eq!(
            label(&changes.delete[0], MANAGED_BY_LABEL),
            Some(MIRRORING_CONTROLLER_NAME)
        );
    }

    #[test]
    fn mirroring() {
        let plain = || svc(json!({"spec": {"selector": null}}));
        let address = |ip: &str| json!({"ip": ip});
        let endpoints = |extra: Value, first_ips: Vec<Value>| {
            let mut v = json!({
                "metadata": {"name": "web", "namespace": "ns", "uid": "ep-uid", "labels": {"team": "a"},
                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "note": "x"}},
                "subsets": [
                    {"addresses": first_ips, "notReadyAddresses": [address("10.0.0.9")],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                    {"addresses": [address("10.0.1.1"), address("fd00::1"), address("not-an-ip")],
                     "ports": [{"port": 53, "protocol": "UDP"}]}
                ]
            });
            crate::testing::merge(&mut v, extra);
            v
        };
        let two = || vec![address("10.0.0.1"), address("10.0.0.2")];
        let store = check(vec![
            step(
                "each subset becomes a slice per family",
                mirror_for(endpoints(json!({}), two()), plain()),
                &[1, 3, 1],
                &[],
                0,
            ),
            step(
                "a changed address rewrites only that subset's slice",
                mirror_for(
                    endpoints(json!({}), vec![address("10.0.0.1"), address("10.0.0.3")]),
                    plain(),
                ),
                &[],
                &[3],
                0,
            ),
        ]);
        let Some(first) = store.iter().find(|s| s.endpoints.len() == 3) else {
            panic!("no mirrored slice for the first subset");
        };
        let meta = serde_json::to_value(&first.metadata).expect("serializable metadata");
        assert_eq!(
            meta["labels"],
            json!({"team": "a", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: MIRRORING_CONTROLLER_NAME})
        );
        assert_eq!(meta["annotations"], json!({"note": "x"}));
        assert_eq!(meta["ownerReferences"][0]["kind"], "Endpoints");
        let ready: Vec<Option<bool>> = first
            .endpoints
            .iter()
            .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
            .collect();
        assert_eq!(ready, vec![Some(true), Some(true), Some(false)]);

        for (case, run) in [
            (
                "skip-mirror label",
                mirror_for(
                    endpoints(
                        json!({"metadata": {"labels": {SKIP_MIRROR_LABEL: "true"}}}),
                        two(),
                    ),
                    plain(),
                ),
            ),
            (
                "Service has a selector",
                mirror_for(endpoints(json!({}), two()), svc(json!({}))),
            ),
        ] {
            let changes = run(&store);
            assert_eq!(
                (
                    changes.create.len(),
                    changes.update.len(),
                    changes.delete.len()
                ),
                (0, 0, 3),
                "{case}"
            );
        }
        let others = run_on_empty(mirror_for(endpoints(json!({}), two()), plain()));
        assert_eq!(
            others.create.len(),
            3,
            "slices of other managers are not ours"
        );
    }

    /// Runs against slices managed by someone else only.
    fn run_on_empty(run: Run) -> SliceChanges {
        let foreign: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: "someone"}},
            "addressType": "IPv4", "endpoints": []
        }))
        .expect("test slice");
        run(&[foreign])
    }
}
