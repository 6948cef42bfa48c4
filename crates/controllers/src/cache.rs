//! What the controllers' caches keep of each watched object, applied to every watch event
//! before the reflector stores it (as client-go informers' `SetTransform` does): no object
//! keeps its managedFields, Services and Pods lose the last-applied annotation too, and a Pod
//! keeps only the fields some controller reads.
//!
//! A decoded Pod is several times its JSON (every volume source, probe and security context
//! is an inline struct); at 10,000 Pods the cache was the largest part of the server's heap
//! (79 of 321 MB live in a heaptrack of the scale bench). The reflector stores a clone of
//! what this returns, so its vectors come out without spare capacity anyway.
//! **Invariant:** cached Pods and Services are never written back (controllers patch them,
//! never replace them), so what is dropped here never reaches the API. A controller reading a Pod field
//! that [`slim_pod`] drops must add it here; `tests` compares every Pod-reading pure function
//! on whole and slimmed Pods.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerStatus, Endpoints, Node, Pod, PodSpec, PodStatus,
    ReplicationController, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The annotation `kubectl apply` keeps its last manifest in: often the largest part of a
/// Pod's metadata, and read by no controller.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as a controllers' cache keeps it.
pub(crate) trait Slim: kube::Resource + Sized {
    /// Drops what no controller reads. By default only managedFields: writes omit them,
    /// which the API server takes as "keep them", as kube-apiserver does.
    fn slim(self) -> Self {
        let mut o = self;
        o.meta_mut().managed_fields = None;
        o
    }
}

/// Services are only read and status-patched here, never written whole: the last-applied
/// annotation (a copy of the whole manifest for `kubectl apply` users) goes too.
impl Slim for Service {
    fn slim(self) -> Self {
        let mut o = self;
        without_apply_history(&mut o.metadata);
        o
    }
}

impl Slim for Endpoints {}
impl Slim for EndpointSlice {}
impl Slim for Deployment {}
impl Slim for ReplicaSet {}
impl Slim for ReplicationController {}
impl Slim for DaemonSet {}
impl Slim for Node {}
impl Slim for StatefulSet {}
impl Slim for ControllerRevision {}

impl Slim for Pod {
    fn slim(self) -> Self {
        slim_pod(self)
    }
}

/// Drops managedFields and the last-applied annotation: what writers left, read by no
/// controller.
fn without_apply_history(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// The Pod with only what the controllers read:
/// - metadata, but managedFields and the last-applied annotation (names, labels, owners,
///   timestamps, the deletion-cost annotation, finalizers);
/// - spec: `nodeName`, `hostname`, `subdomain`, and only the containers a named target port
///   can resolve to: regular containers and `restartPolicy: Always` init containers
///   (sidecars) with named ports, each with its name, its named ports and its
///   `restartPolicy`. A container is a large inline struct however little is kept of it,
///   and most Pods' ports are unnamed;
/// - status: `phase`, `conditions`, `podIP`, `podIPs`, and of the container statuses only the
///   highest `restartCount` (the ReplicaSet's deletion order), as one status, none when it
///   is 0.
pub(crate) fn slim_pod(pod: Pod) -> Pod {
    let Pod {
        mut metadata,
        spec,
        status,
    } = pod;
    without_apply_history(&mut metadata);
    Pod {
        metadata,
        spec: spec.map(slim_spec),
        status: status.map(slim_status),
    }
}

fn slim_spec(spec: PodSpec) -> PodSpec {
    let sidecars: Vec<Container> = spec
        .init_containers
        .into_iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .filter_map(slim_container)
        .collect();
    PodSpec {
        containers: spec
            .containers
            .into_iter()
            .filter_map(slim_container)
            .collect(),
        init_containers: (!sidecars.is_empty()).then_some(sidecars),
        hostname: spec.hostname,
        subdomain: spec.subdomain,
        node_name: spec.node_name,
        ..PodSpec::default()
    }
}

/// The container's name, named ports and `restartPolicy`; `None` when it has no named port
/// (no target port can resolve to it).
fn slim_container(c: Container) -> Option<Container> {
    let ports: Vec<ContainerPort> = c
        .ports
        .into_iter()
        .flatten()
        .filter(|p| p.name.as_deref().is_some_and(|n| !n.is_empty()))
        .collect();
    (!ports.is_empty()).then(|| Container {
        name: c.name,
        ports: Some(ports),
        restart_policy: c.restart_policy,
        ..Container::default()
    })
}

fn slim_status(status: PodStatus) -> PodStatus {
    let restarts = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    PodStatus {
        phase: status.phase,
        conditions: status.conditions,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        container_statuses: (restarts != 0).then(|| {
            vec![ContainerStatus {
                restart_count: restarts,
                ..ContainerStatus::default()
            }]
        }),
        ..PodStatus::default()
    }
}

mod packed;
pub(crate) use packed::Object;
#[cfg(test)]
mod tests;

pub(crate) use packed::{PackedCache, PackedWriter};
