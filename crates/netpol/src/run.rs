//! The enforcer's loop: a watcher + reflector per resource (NetworkPolicies, Pods,
//! Namespaces) wakes a debounced sync that computes the desired table from the caches and
//! applies the difference to the last one written (the whole table, atomically, at the first
//! sync and after a failure) on a blocking thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apply::Netlink;
use crate::desired::{Scope, desired};
use crate::error::{Error, Result};
use crate::gate::Programmed;
use crate::policy::PodView;
use crate::ruleset::{Ruleset, diff};

/// How the enforcer runs on one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Isolate only the pods bound to this node; `None`: every pod (one node).
    pub node_name: Option<String>,
    /// Servers the node runs that policies should see as pods (see [`Scope::node_pods`]).
    pub node_pods: Vec<PodView>,
    /// Bursts of watch events within this interval are applied as one sync.
    pub min_sync_interval: Duration,
    /// Set `net.bridge.bridge-nf-call-iptables=1` in this network namespace (never in the
    /// root one), so traffic between pods on the bridge passes the forward hook.
    pub bridge_nf_call_iptables: bool,
    /// Set once the first sync is in the kernel.
    pub synced: Arc<tokio::sync::SetOnce<()>>,
    /// Told of the pods each sync in the kernel accounts for (what the agent waits on).
    pub programmed: Programmed,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_name: None,
            node_pods: Vec::new(),
            min_sync_interval: Duration::from_millis(10),
            bridge_nf_call_iptables: true,
            synced: Default::default(),
            programmed: Programmed::default(),
        }
    }
}

/// Deletes `table ip berth-netpol` in the calling thread's network namespace. Returns
/// whether there was one.
pub fn cleanup() -> Result<bool> {
    Netlink::open()?.delete_table()
}

/// Watches NetworkPolicies, Pods and Namespaces through `client` and keeps the table in
/// step until `shutdown`. Programs the network namespace the process runs in; nothing is
/// written before all three caches have listed once. The table stays when it stops (the
/// policies stay enforced); [`cleanup`] removes it.
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) -> Result<()> {
    if config.bridge_nf_call_iptables
        && let Err(e) = berth_proxy::sysctl::enable_bridge_netfilter()
    {
        tracing::warn!(error = %e, "traffic between pods on one bridge will not be filtered");
    }
    let wake = Arc::new(Notify::new());
    let (policies, policies_w) = reflector::store::<NetworkPolicy>();
    let (pods, pods_w) = reflector::store::<Pod>();
    let (namespaces, namespaces_w) = reflector::store::<Namespace>();
    let watches = [
        tokio::spawn(drive(Api::all(client.clone()), policies_w, wake.clone())),
        tokio::spawn(drive(Api::all(client.clone()), pods_w, wake.clone())),
        tokio::spawn(drive(Api::all(client), namespaces_w, wake.clone())),
    ];
    config.programmed.set_policies(policies.clone());
    let caches = Caches {
        policies,
        pods,
        namespaces,
    };
    let result = tokio::select! {
        r = sync_loop(&config, &caches, &wake) => r,
        () = shutdown.cancelled() => Ok(()),
    };
    for w in watches {
        w.abort();
    }
    result
}

struct Caches {
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
}

async fn sync_loop(config: &Config, caches: &Caches, wake: &Notify) -> Result<()> {
    let gone = |resource| move |_| Error::CacheGone { resource };
    caches
        .policies
        .wait_until_ready()
        .await
        .map_err(gone("networkpolicies"))?;
    caches.pods.wait_until_ready().await.map_err(gone("pods"))?;
    caches
        .namespaces
        .wait_until_ready()
        .await
        .map_err(gone("namespaces"))?;
    let scope = Scope {
        node: config.node_name.clone(),
        node_pods: config.node_pods.clone(),
    };
    // What the kernel holds, as far as this process knows; `None`: replace it whole.
    let mut current: Option<Ruleset> = None;
    // One socket for every sync (closing one after a transaction costs milliseconds);
    // opened again after a failure.
    let mut socket: Option<Netlink> = None;
    loop {
        let start = Instant::now();
        let (policies, pods, namespaces) = (
            caches.policies.state(),
            caches.pods.state(),
            caches.namespaces.state(),
        );
        let scope = scope.clone();
        let before = current.take();
        let nl = socket.take();
        // Computing the table takes milliseconds at a thousand pods: off the async workers.
        let (want, accounted, nl, outcome) = blocking(move || {
            let accounted = Programmed::accounted(pods.iter().map(AsRef::as_ref));
            let want = desired(
                policies.iter().map(AsRef::as_ref),
                pods.iter().map(AsRef::as_ref),
                namespaces.iter().map(AsRef::as_ref),
                &scope,
            );
            let mut nl = match nl {
                Some(nl) => nl,
                None => match Netlink::open() {
                    Ok(nl) => nl,
                    Err(e) => return Ok((want, accounted, None, Err(e))),
                },
            };
            let outcome = write(&mut nl, before.as_ref(), &want);
            Ok((want, accounted, Some(nl), outcome))
        })
        .await?;
        match outcome {
            Ok(ops) => {
                if ops > 0 {
                    tracing::debug!(
                        ops,
                        chains = want.chains.len(),
                        sets = want.sets.len(),
                        took = ?start.elapsed(),
                        "synced"
                    );
                }
                current = Some(want);
                socket = nl;
                config.programmed.publish(accounted);
                if config.synced.set(()).is_ok() {
                    tracing::info!(took = ?start.elapsed(), "table ip berth-netpol written");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sync failed; replacing the whole table next");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        wake.notified().await;
        // Coalesce a burst of events into one sync.
        tokio::time::sleep(config.min_sync_interval).await;
    }
}

/// Brings the kernel from `before` (unknown if `None`) to `want`; returns how many
/// operations that took (a replacement counts as one).
fn write(nl: &mut Netlink, before: Option<&Ruleset>, want: &Ruleset) -> Result<usize> {
    match before.and_then(|b| diff(b, want)) {
        Some(ops) if ops.is_empty() => Ok(0),
        Some(ops) => {
            nl.update(&ops)?;
            Ok(ops.len())
        }
        None => {
            nl.replace(want)?;
            Ok(1)
        }
    }
}

/// Runs a reflector until aborted, waking the sync at every event.
async fn drive<K>(api: Api<K>, writer: reflector::store::Writer<K>, wake: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => wake.notify_one(),
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        }
    }
}

/// Runs netlink work on the blocking pool (the socket is synchronous).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Thread)?
}
