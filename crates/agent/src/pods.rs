//! The agent's dispatcher: registers the Node, binds unscheduled pods to it (a one-node
//! scheduler), and hands each pod bound here to a worker of its own (see `worker`), which runs
//! it. At start it clears sandboxes (and kills the containers) an earlier run left behind for
//! pods that are gone; a pod that still exists is adopted by its worker when its containers
//! still run under their shims, else started afresh.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Event, Node, ObjectReference, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::runtime::Processes;
use crate::sandbox::{Bridge, Ipam, Sandbox};
use crate::worker::{self, Handle, Shared};

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The node's pod CIDR; the bridge takes its first address.
    pub pod_cidr: Ipv4Net,
    /// Where IPAM state, pod logs and per-pod files live.
    pub state_dir: PathBuf,
    /// The `berth` binary, which runs built-in workloads (`berth workload ...`).
    pub self_exe: PathBuf,
    /// Directories pods must not see: berth's data directory, with the cluster's keys.
    pub hide: Vec<PathBuf>,
    /// The cluster DNS server pods are pointed at.
    pub cluster_dns: String,
    /// The node's InternalIP, which the API server dials for logs and exec.
    pub node_ip: std::net::Ipv4Addr,
    /// The port the agent's server (logs, exec, port-forward) listens on.
    pub kubelet_port: u16,
    /// PEM of the CA whose client certificates the agent's server accepts (the cluster CA).
    pub client_ca: String,
    /// Set once the first the Node is registered, the bridge is up and the caches have listed; `berth server` prints "ready" and `/readyz` passes only
    /// after every part of the node has set its own.
    pub synced: std::sync::Arc<tokio::sync::SetOnce<()>>,
    /// What must have seen a new pod's address before its containers start (the node's
    /// NetworkPolicy enforcer in `berth server`); none: start at once.
    pub network_gate: NetworkGate,
    /// How image pulls reach registries: plain HTTP ones (`--insecure-registry`), extra CAs
    /// (`--registry-ca`).
    pub registries: berth_image::pull::Options,
    /// Leave the pods running when the agent stops (`--keep-pods-on-exit`): their shims
    /// hold them and the next agent adopts them.
    pub keep_pods_on_exit: bool,
}

/// Something that must account for a new pod's address before its containers start, so a
/// pod that a NetworkPolicy isolates is filtered from its first packet (as CNI plugins with
/// policy hold a pod until its rules are in place).
pub trait PodNetworkGate: Send + Sync {
    /// Whether a new pod in `namespace` must wait.
    fn applies(&self, namespace: &str) -> bool;
    /// Resolves once pod `uid` at `ip` is accounted for.
    fn ready<'a>(
        &'a self,
        uid: &'a str,
        ip: std::net::Ipv4Addr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// An optional [`PodNetworkGate`].
#[derive(Clone, Default)]
pub struct NetworkGate(pub Option<Arc<dyn PodNetworkGate>>);

impl std::fmt::Debug for NetworkGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "NetworkGate(set)"
        } else {
            "NetworkGate(none)"
        })
    }
}

/// Runs the agent until `shutdown`; on the way out, every pod it started is stopped.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<()> {
    let gateway = Ipv4Net::new(
        std::net::Ipv4Addr::from(u32::from(config.pod_cidr.network()).saturating_add(1)),
        config.pod_cidr.prefix_len(),
    )
    .unwrap_or(config.pod_cidr);
    let bridge = Bridge::ensure("berth0", gateway).await?;
    let mut ipam = Ipam::open(&config.state_dir, config.pod_cidr)?;
    crate::node::register(&client, &config).await?;
    let consoles = Arc::<crate::runtime::Consoles>::default();
    crate::server::spawn(
        client.clone(),
        config.clone(),
        consoles.clone(),
        shutdown.clone(),
    );
    reclaim(&client, &config, &mut ipam).await?;
    let (services, writer) = reflector::store();
    let reflect = reflector(
        writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| std::future::ready(()));
    let stop_services = shutdown.child_token();
    let services_task = {
        let stop = stop_services.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = reflect => {}
                _ = stop.cancelled() => {}
            }
        })
    };
    let heartbeat = tokio::spawn(heartbeat(
        client.clone(),
        config.node_name.clone(),
        shutdown.clone(),
    ));
    tokio::select! {
        r = services.wait_until_ready() => if r.is_err() { return Ok(()) },
        _ = shutdown.cancelled() => return Ok(()),
    }
    let _ = config.synced.set(());
    let (recorder, events_task) =
        crate::events::Recorder::start(client.clone(), config.node_name.clone());
    let oci = crate::oci::Oci::new(
        config.state_dir.parent().unwrap_or(&config.state_dir),
        &config.state_dir,
    )
    .map(Arc::new);
    let puller = oci.as_ref().map(|o| {
        Arc::new(crate::pull::Puller::new(
            o.store().clone(),
            config.registries.clone(),
        ))
    });
    let shared = Arc::new(Shared {
        puller,
        runtime: Arc::new(crate::oci::Select {
            oci,
            processes: Processes {
                self_exe: config.self_exe.clone(),
                state_dir: config.state_dir.clone(),
                hide: config.hide.clone(),
            },
        }),
        client: client.clone(),
        config,
        bridge,
        ipam: std::sync::Mutex::new(ipam),
        services,
        consoles,
        events: recorder,
    });
    let mut workers: HashMap<String, Handle> = HashMap::new();
    // Workers told to stop, still cleaning up.
    let mut stopping: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // The pods a (re-)list has shown so far, between Init and InitDone.
    let mut listed: Option<HashSet<String>> = None;
    let mut events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { break };
        match ev {
            Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let Some(seen) = &mut listed {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                on_pod(&shared, &mut workers, pod, &shutdown).await;
            }
            Ok(watcher::Event::InitDone) => {
                // A re-list after the watch broke: pods deleted meanwhile sent no Delete.
                if let Some(seen) = listed.take() {
                    let gone: Vec<String> = workers
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        if let Some(h) = workers.remove(&uid) {
                            h.gone.cancel();
                            stopping.push(h.task);
                        }
                    }
                }
            }
            Ok(watcher::Event::Apply(pod)) => {
                on_pod(&shared, &mut workers, pod, &shutdown).await;
            }
            Ok(watcher::Event::Delete(pod)) => {
                // Not awaited here: the worker may be in the middle of an API call, and the
                // other pods must not wait for it.
                if let Some(h) = workers.remove(&pod.uid().unwrap_or_default()) {
                    h.gone.cancel();
                    stopping.push(h.task);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
        // Workers of pods that finished their deletion are done.
        workers.retain(|_, h| !h.task.is_finished());
        stopping.retain(|t| !t.is_finished());
    }
    for (_, h) in workers {
        let _ = h.task.await;
    }
    for t in stopping {
        let _ = t.await;
    }
    drop(shared);
    let _ = events_task.await;
    stop_services.cancel();
    let _ = services_task.await;
    let _ = heartbeat.await;
    Ok(())
}

/// Removes the sandboxes (and frees the IPs) an earlier run of the agent left for pods that
/// are no longer bound to this node.
async fn reclaim(client: &Client, config: &Config, ipam: &mut Ipam) -> Result<()> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", config.node_name)))
        .await?;
    let live: HashSet<String> = pods.items.iter().filter_map(|p| p.uid()).collect();
    let stale: Vec<String> = ipam
        .allocations()
        .map(|(uid, _)| uid.to_owned())
        .filter(|uid| !live.contains(uid))
        .collect();
    for uid in stale {
        tracing::info!(uid = %uid, "removing the sandbox of a pod that is gone");
        crate::shim::kill_all(&crate::layout::pod_dir(&config.state_dir, &uid));
        Sandbox::destroy_pod(&uid).await?;
        ipam.release(&uid)?;
        let _ = std::fs::remove_dir_all(crate::layout::pod_dir(&config.state_dir, &uid));
    }
    Ok(())
}

/// Keeps the Node's Ready condition fresh, as the kubelet's status updates do.
async fn heartbeat(client: Client, node: String, shutdown: CancellationToken) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "berth agent is posting ready status", "lastHeartbeatTime": now()}]}});
        if let Err(e) = nodes
            .patch_status(&node, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(error = %e, "node heartbeat");
        }
    }
}

async fn on_pod(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Handle>,
    pod: Pod,
    shutdown: &CancellationToken,
) {
    let uid = pod.uid().unwrap_or_default();
    let node = &shared.config.node_name;
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        None | Some("") => {
            // Started from the bind's answer, without waiting for the watch to bring it back.
            if pod.metadata.deletion_timestamp.is_none()
                && let Some(bound) = bind(shared, &pod).await
                && !workers.contains_key(&uid)
            {
                let h = worker::spawn(shared.clone(), bound, shutdown.clone());
                workers.insert(uid, h);
            }
        }
        Some(n) if n == node => match workers.get(&uid) {
            Some(h) => {
                h.pod.send_replace(pod);
            }
            None => {
                let finished = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                if !finished {
                    let h = worker::spawn(shared.clone(), pod, shutdown.clone());
                    workers.insert(uid, h);
                }
            }
        },
        Some(_) => {}
    }
}

/// The one-node scheduler: binds the pod here, and says so in an Event as kube-scheduler does.
/// Returns the bound pod.
async fn bind(shared: &Shared, pod: &Pod) -> Option<Pod> {
    let ns = pod.namespace().unwrap_or_default();
    let node = &shared.config.node_name;
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    // pods/binding, as kube-scheduler binds: the API server refuses a pod bound meanwhile.
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name_any(), "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    if let Err(e) = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
    {
        tracing::warn!(pod = %pod.name_any(), error = %e, "binding the pod");
        return None;
    }
    let mut bound = pod.clone();
    if let Some(spec) = bound.spec.as_mut() {
        spec.node_name = Some(node.clone());
    }
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name_any()),
        namespace: Some(ns.clone()),
        uid: pod.uid(),
        ..Default::default()
    };
    let msg = format!("Successfully assigned {ns}/{} to {node}", pod.name_any());
    let ev = berth_api::events::event(
        reference,
        "default-scheduler",
        None,
        "Normal",
        "Scheduled",
        &msg,
    );
    let events = Api::<Event>::namespaced(shared.client.clone(), &ns);
    tokio::spawn(async move {
        let _ = events.create(&PostParams::default(), &ev).await;
    });
    Some(bound)
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
