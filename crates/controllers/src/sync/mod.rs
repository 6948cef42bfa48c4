//! The controllers' watch-and-write loops. One shared watcher and reflector per resource type
//! feeds every controller (kube-runtime shared streams); each controller is a kube-runtime
//! `Controller` whose reconcile calls the pure functions of this crate and writes the result
//! through the API.

mod daemonsets;
mod endpoints;
mod events;
mod gc;
mod history;
mod lb;
mod serviceaccounts;
mod slices;
mod statefulsets;
mod workloads;
mod written;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, ReplicationController, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::cache::{PackedCache, PackedWriter, Slim};
use crate::endpointslices::SERVICE_NAME_LABEL;
use crate::index::{Indexed, LabelIndex, Labels, ServiceIndex, TargetIndex, map_selects};
use crate::lb_pool::Pool;

/// How the controllers are set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses for LoadBalancer Services (`--lb-pool`); empty leaves them `<pending>`.
    pub lb_pool: Pool,
    /// Most endpoints in one EndpointSlice (`--max-endpoints-per-slice`, default 100).
    pub max_endpoints_per_slice: usize,
    /// The cluster CA (PEM) published in every namespace as the `kube-root-ca.crt` ConfigMap.
    pub root_ca: Option<String>,
    /// Set once the first lists of every watched resource are in the caches; `berth server` prints "ready" and `/readyz` passes only
    /// after every part of the node has set its own.
    pub synced: std::sync::Arc<tokio::sync::SetOnce<()>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lb_pool: Pool::default(),
            max_endpoints_per_slice: crate::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            root_ca: None,
            synced: Default::default(),
        }
    }
}

/// What every reconcile can see: the API client and the shared caches.
pub(crate) struct Ctx {
    pub client: Client,
    pub config: Config,
    /// Slim Pods (`cache::slim_pod`): only the fields the controllers read, decoded on read.
    pub pods: PackedCache<Pod>,
    pub services: Store<Service>,
    pub endpoints: PackedCache<Endpoints>,
    pub slices: PackedCache<EndpointSlice>,
    pub deployments: Store<Deployment>,
    pub replicasets: Store<ReplicaSet>,
    pub replication_controllers: Store<ReplicationController>,
    pub daemonsets: Store<DaemonSet>,
    pub nodes: Store<Node>,
    pub statefulsets: Store<StatefulSet>,
    /// The history of StatefulSets and DaemonSets.
    pub revisions: Store<ControllerRevision>,
    /// Pods by namespace and label, Services by selector, Endpoints by the Pods they list,
    /// EndpointSlices by their Service: kept from the same watches as the caches.
    pub pod_index: Indexed<LabelIndex>,
    pub service_index: Indexed<ServiceIndex>,
    pub endpoints_index: Indexed<TargetIndex>,
    pub slice_index: Indexed<LabelIndex>,
    /// The garbage collector's graph, kept from the same watches.
    pub graph: gc::Graph,
    /// Pods ReplicaSets created or deleted that the Pod cache has not shown yet.
    pub expectations: workloads::Expectations,
    /// LoadBalancer addresses handed out but not yet seen in the Service cache, with the uid
    /// of the Service they went to.
    pub lb_pending: tokio::sync::Mutex<std::collections::BTreeMap<Ipv4Addr, String>>,
}

const BUFFER: usize = 1024;

/// A shared reflector: the store, a subscriber factory, and the stream that drives both.
struct Shared<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    writer: reflector::store::Writer<K>,
}

fn shared<K>() -> Shared<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let (store, writer) = reflector::store_shared(BUFFER);
    Shared { store, writer }
}

/// Drives a shared reflector until the stream ends; `index` sees every event before the
/// reflector applies it (so a controller woken by the dispatch finds the indexes at least as
/// new as the cache), `on_delete` sees deleted objects and `on_change` is told of deletions
/// and of objects being deleted (the garbage collector).
fn drive<K>(
    client: &Client,
    writer: impl Reflect<K>,
    index: impl Fn(&watcher::Event<K>) + Send + 'static,
    on_delete: impl Fn(K) + Send + 'static,
    on_change: Option<Arc<tokio::sync::Notify>>,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Slim
        + Default
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |ev| {
            // The caches keep only what the controllers read (`cache`): no managedFields
            // (half the cache at 10,000 Services), and slim Pods.
            let ev = ev.map(|ev| ev.modify(|o| *o = std::mem::take(o).slim()));
            if let Ok(ev) = &ev {
                index(ev);
            }
            ev
        })
        .boxed();
    let stream = writer.reflect(stream);
    async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            // Only what can change ownership outcomes wakes the collector: deletions, and
            // objects marked for deletion (owners waiting on finalizers).
            let wake = match ev {
                Ok(watcher::Event::Delete(obj)) => {
                    on_delete(obj);
                    true
                }
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    obj.meta().deletion_timestamp.is_some()
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
                    false
                }
            };
            if let (true, Some(n)) = (wake, &on_change) {
                n.notify_one();
            }
        }
    }
}

/// What keeps a cache from a watch: kube-runtime's shared reflector, or the Pod cache.
trait Reflect<K>: Send + 'static {
    /// The watch stream, applied to the cache and passed on.
    fn reflect(
        self,
        events: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    ) -> BoxStream<'static, watcher::Result<watcher::Event<K>>>;
}

impl<K> Reflect<K> for reflector::store::Writer<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn reflect(
        self,
        events: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    ) -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
        events.reflect_shared(self).boxed()
    }
}

impl<K: crate::cache::Object> Reflect<K> for PackedWriter<K> {
    fn reflect(
        self,
        events: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    ) -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
        PackedWriter::reflect(self, events)
    }
}

/// A channel of Services to reconcile, as a stream for `Controller::reconcile_on`.
fn refs_channel<K: kube::Resource<DynamicType = ()> + 'static>() -> (
    tokio::sync::mpsc::UnboundedSender<ObjectRef<K>>,
    impl Stream<Item = ObjectRef<K>> + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    (
        tx,
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    )
}

/// Every Service in the Pod's namespace whose selector matches it, plus the Service whose
/// Endpoints list it (so a Pod that stops matching leaves them): two index lookups.
fn services_for_pod(
    services: &Indexed<ServiceIndex>,
    endpoints: &Indexed<TargetIndex>,
    pod: &Pod,
) -> Vec<ObjectRef<Service>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let empty = Labels::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let mut out = services.read().selecting(ns, labels);
    if let Some(listing) = endpoints.read().listing(ns, name) {
        out.extend(listing.iter().cloned());
    }
    out.into_iter()
        .map(|n| ObjectRef::new(&n).within(ns))
        .collect()
}

/// A controller of Services re-run when a Pod they select (or listed) changes or goes, and
/// when their Endpoints change: what the Endpoints and EndpointSlice controllers share.
pub(crate) fn service_controller(
    ctx: &Ctx,
    services: impl Stream<Item = Arc<Service>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    endpoints: impl Stream<Item = Arc<Endpoints>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<Service>> + Send + 'static,
) -> kube::runtime::Controller<Service> {
    let (svc_index, ep_index) = (ctx.service_index.clone(), ctx.endpoints_index.clone());
    kube::runtime::Controller::for_shared_stream(services, ctx.services.clone())
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            services_for_pod(&svc_index, &ep_index, &pod)
        })
        .watches_shared_stream(endpoints, |ep: Arc<Endpoints>| {
            use kube::ResourceExt;
            Some(ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        })
        .reconcile_on(pods_gone)
}

/// The Pods of `svc`'s namespace that its selector picks, cloned for the pure functions:
/// found through the label index, checked against the cache.
/// Shared, not cloned: a reconcile reads them and drops them.
pub(crate) fn selected_pods(ctx: &Ctx, svc: &Service) -> Vec<Arc<Pod>> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let Some(sel) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let names = ctx.pod_index.read().selected(ns, sel);
    let empty = Labels::new();
    names
        .iter()
        .filter_map(|n| ctx.pods.get(ns, n))
        .filter(|p| map_selects(sel, p.metadata.labels.as_ref().unwrap_or(&empty)))
        .collect()
}

/// The EndpointSlices of the Service `ns/name` (labelled with its name), from the cache.
pub(crate) fn slices_of(ctx: &Ctx, ns: &str, name: &str) -> Vec<EndpointSlice> {
    let sel: Labels = [(SERVICE_NAME_LABEL.to_owned(), name.to_owned())].into();
    let names = ctx.slice_index.read().selected(ns, &sel);
    names
        .iter()
        .filter_map(|n| ctx.slices.get(ns, n))
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|n| n == name)
        })
        .map(Arc::unwrap_or_clone)
        .collect()
}

fn requeue_on_error<K>(
    _obj: Arc<K>,
    err: &crate::Error,
    _ctx: Arc<Ctx>,
) -> kube::runtime::controller::Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    kube::runtime::controller::Action::requeue(Duration::from_millis(250))
}

fn log_results<T: std::fmt::Debug, E: std::fmt::Display>(
    s: impl Stream<Item = Result<T, E>>,
) -> impl std::future::Future<Output = ()> {
    s.for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "controller event");
        }
    })
}

/// Runs every controller until `shutdown` is cancelled.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> crate::Result<()> {
    let mut pods = PackedWriter::<Pod>::new();
    let services = shared::<Service>();
    let mut endpoints = PackedWriter::<Endpoints>::new();
    let mut slices = PackedWriter::<EndpointSlice>::new();
    let deployments = shared::<Deployment>();
    let replicasets = shared::<ReplicaSet>();
    let rcs = shared::<ReplicationController>();
    let daemonsets = shared::<DaemonSet>();
    let nodes = shared::<Node>();
    let statefulsets = shared::<StatefulSet>();
    let revisions = shared::<ControllerRevision>();
    let subscribe = |w: &reflector::store::Writer<_>| w.subscribe();
    let (Some(svc_for_ep), Some(svc_for_slices), Some(svc_for_lb)) = (
        subscribe(&services.writer),
        subscribe(&services.writer),
        subscribe(&services.writer),
    ) else {
        unreachable!("shared stores always give subscribers")
    };
    let (pods_for_ep, pods_for_slices) = (pods.subscribe(), pods.subscribe());
    let (pods_for_rs, pods_for_rc, pods_for_ds, pods_for_sts) = (
        pods.subscribe(),
        pods.subscribe(),
        pods.subscribe(),
        pods.subscribe(),
    );
    let (ep_for_ep, ep_for_slices) = (endpoints.subscribe(), endpoints.subscribe());
    let slices_sub = slices.subscribe();
    let (Some(rs_primary), Some(rs_for_deploy), Some(deploy_primary)) = (
        replicasets.writer.subscribe(),
        replicasets.writer.subscribe(),
        deployments.writer.subscribe(),
    ) else {
        unreachable!("shared stores always give subscribers")
    };
    let Some(rc_primary) = rcs.writer.subscribe() else {
        unreachable!("shared stores always give subscribers")
    };
    let (Some(ds_primary), Some(nodes_for_ds)) =
        (daemonsets.writer.subscribe(), nodes.writer.subscribe())
    else {
        unreachable!("shared stores always give subscribers")
    };
    let Some(sts_primary) = statefulsets.writer.subscribe() else {
        unreachable!("shared stores always give subscribers")
    };

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config,
        pods: pods.reader(),
        services: services.store.clone(),
        endpoints: endpoints.reader(),
        slices: slices.reader(),
        deployments: deployments.store.clone(),
        replicasets: replicasets.store.clone(),
        replication_controllers: rcs.store.clone(),
        daemonsets: daemonsets.store.clone(),
        nodes: nodes.store.clone(),
        statefulsets: statefulsets.store.clone(),
        revisions: revisions.store.clone(),
        pod_index: Indexed::default(),
        service_index: Indexed::default(),
        endpoints_index: Indexed::default(),
        slice_index: Indexed::new(LabelIndex::only(SERVICE_NAME_LABEL)),
        graph: gc::Graph::default(),
        lb_pending: tokio::sync::Mutex::new(std::collections::BTreeMap::new()),
        expectations: workloads::Expectations::default(),
    });
    let (index, graph) = (ctx.clone(), ctx.graph.clone());

    let mut tasks = tokio::task::JoinSet::new();
    let cleanup_client = client.clone();
    let (released_tx, mut released_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let released = futures_util::stream::poll_fn(move |cx| released_rx.poll_recv(cx));
    let gc_wake = Arc::new(tokio::sync::Notify::new());
    tasks.spawn(drive(
        &client,
        services.writer,
        {
            let (i, g) = (index.service_index.clone(), graph.services.clone());
            move |ev| {
                i.event(ev);
                g.event(ev);
            }
        },
        move |svc: Service| {
            if !crate::lb_pool::assigned(&svc).is_empty() {
                let _ = released_tx.send(());
            }
            tokio::spawn(endpoints::cleanup(cleanup_client.clone(), svc));
        },
        Some(gc_wake.clone()),
    ));
    tasks.spawn(drive(
        &client,
        deployments.writer,
        {
            let g = graph.deployments.clone();
            move |ev| g.event(ev)
        },
        |_| {},
        Some(gc_wake.clone()),
    ));
    let (deploy_gone_tx, deploy_gone) = refs_channel::<Deployment>();
    tasks.spawn(drive(
        &client,
        replicasets.writer,
        {
            let g = graph.replicasets.clone();
            move |ev| g.event(ev)
        },
        move |rs: ReplicaSet| {
            if let Some(r) = workloads::controller_of::<Deployment>(&rs.metadata, "Deployment") {
                let _ = deploy_gone_tx.send(r);
            }
        },
        Some(gc_wake.clone()),
    ));
    // Shared streams carry applied objects only; a deleted Pod must still reach the Services
    // that listed it.
    let (gone_ep_tx, gone_ep) = refs_channel::<Service>();
    let (gone_slices_tx, gone_slices) = refs_channel::<Service>();
    let (rs_gone_tx, rs_gone) = refs_channel::<ReplicaSet>();
    let (rc_gone_tx, rc_gone) = refs_channel::<ReplicationController>();
    let (ds_gone_tx, ds_gone) = refs_channel::<DaemonSet>();
    let (sts_gone_tx, sts_gone) = refs_channel::<StatefulSet>();
    let (svc_index, ep_index) = (ctx.service_index.clone(), ctx.endpoints_index.clone());
    tasks.spawn(drive(
        &client,
        pods,
        {
            let (i, g) = (index.pod_index.clone(), graph.pods.clone());
            move |ev| {
                i.event(ev);
                g.event(ev);
            }
        },
        move |pod: Pod| {
            for r in services_for_pod(&svc_index, &ep_index, &pod) {
                let _ = gone_ep_tx.send(r.clone());
                let _ = gone_slices_tx.send(r);
            }
            if let Some(r) = workloads::controller_of::<ReplicaSet>(&pod.metadata, "ReplicaSet") {
                let _ = rs_gone_tx.send(r);
            }
            if let Some(r) = workloads::controller_of::<StatefulSet>(&pod.metadata, "StatefulSet") {
                let _ = sts_gone_tx.send(r);
            }
            if let Some(r) = workloads::controller_of::<ReplicationController>(
                &pod.metadata,
                "ReplicationController",
            ) {
                let _ = rc_gone_tx.send(r);
            }
            if let Some(r) = workloads::controller_of::<DaemonSet>(&pod.metadata, "DaemonSet") {
                let _ = ds_gone_tx.send(r);
            }
        },
        Some(gc_wake.clone()),
    ));
    let i = index.endpoints_index.clone();
    tasks.spawn(drive(
        &client,
        endpoints,
        move |ev| i.event(ev),
        |_| {},
        None,
    ));
    let g = graph.replication_controllers.clone();
    tasks.spawn(drive(
        &client,
        rcs.writer,
        move |ev| g.event(ev),
        |_| {},
        Some(gc_wake.clone()),
    ));
    let g = graph.daemonsets.clone();
    tasks.spawn(drive(
        &client,
        daemonsets.writer,
        move |ev| g.event(ev),
        |_| {},
        Some(gc_wake.clone()),
    ));
    tasks.spawn(drive(&client, nodes.writer, |_| {}, |_| {}, None));
    let g = graph.statefulsets.clone();
    tasks.spawn(drive(
        &client,
        statefulsets.writer,
        move |ev| g.event(ev),
        |_| {},
        Some(gc_wake.clone()),
    ));
    let g = graph.revisions.clone();
    tasks.spawn(drive(
        &client,
        revisions.writer,
        move |ev| g.event(ev),
        |_| {},
        Some(gc_wake.clone()),
    ));
    let (i, g) = (index.slice_index.clone(), graph.slices.clone());
    tasks.spawn(drive(
        &client,
        slices,
        move |ev| {
            i.event(ev);
            g.event(ev);
        },
        |_| {},
        Some(gc_wake.clone()),
    ));
    for (what, ready) in [
        (
            "pods",
            ctx.pods
                .wait_until_ready()
                .map(Ok::<(), reflector::store::WriterDropped>)
                .boxed(),
        ),
        ("services", ctx.services.wait_until_ready().boxed()),
        (
            "endpoints",
            ctx.endpoints
                .wait_until_ready()
                .map(Ok::<(), reflector::store::WriterDropped>)
                .boxed(),
        ),
        (
            "endpointslices",
            ctx.slices
                .wait_until_ready()
                .map(Ok::<(), reflector::store::WriterDropped>)
                .boxed(),
        ),
        ("deployments", ctx.deployments.wait_until_ready().boxed()),
        ("replicasets", ctx.replicasets.wait_until_ready().boxed()),
        (
            "replicationcontrollers",
            ctx.replication_controllers.wait_until_ready().boxed(),
        ),
        ("statefulsets", ctx.statefulsets.wait_until_ready().boxed()),
        ("daemonsets", ctx.daemonsets.wait_until_ready().boxed()),
        (
            "controllerrevisions",
            ctx.revisions.wait_until_ready().boxed(),
        ),
        ("nodes", ctx.nodes.wait_until_ready().boxed()),
    ] {
        tokio::select! {
            r = ready => if r.is_err() { tracing::warn!(what, "cache closed before it synced") },
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    tracing::info!("caches synced; controllers running");
    let _ = ctx.config.synced.set(());
    tasks.spawn(log_results(endpoints::controller(
        ctx.clone(),
        svc_for_ep,
        pods_for_ep,
        ep_for_ep,
        gone_ep,
    )));
    tasks.spawn(log_results(slices::controller(
        ctx.clone(),
        svc_for_slices,
        pods_for_slices,
        ep_for_slices,
        slices_sub,
        gone_slices,
    )));
    tasks.spawn(gc::run(ctx.clone(), gc_wake));
    tasks.spawn(log_results(workloads::replicaset_controller(
        ctx.clone(),
        rs_primary,
        pods_for_rs,
        rs_gone,
    )));
    tasks.spawn(log_results(workloads::replication_controller_controller(
        ctx.clone(),
        rc_primary,
        pods_for_rc,
        rc_gone,
    )));
    tasks.spawn(log_results(workloads::deployment_controller(
        ctx.clone(),
        deploy_primary,
        rs_for_deploy,
        deploy_gone,
    )));
    tasks.spawn(log_results(statefulsets::controller(
        ctx.clone(),
        sts_primary,
        pods_for_sts,
        sts_gone,
    )));
    tasks.spawn(log_results(daemonsets::controller(
        ctx.clone(),
        ds_primary,
        pods_for_ds,
        nodes_for_ds,
        ds_gone,
    )));
    tasks.spawn(log_results(serviceaccounts::controller(ctx.clone())));
    tasks.spawn(log_results(lb::controller(
        ctx.clone(),
        svc_for_lb,
        released,
    )));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tasks.join_next() => tracing::error!("a controller stopped unexpectedly"),
    }
    tasks.shutdown().await;
    Ok(())
}
