//! berth's cluster DNS, in place of CoreDNS for `cluster.local`: the Kubernetes DNS
//! specification (schema 1.1.0) answered from Services, EndpointSlices and Namespaces watched
//! through the API, every other name forwarded upstream with a cache.
//!
//! Data flow: `watch` (kube-runtime watchers) -> `Zone` (names with their records and their
//! answers as wire bytes in `fast`, recompiled per changed object) -> `server` (UDP threads in
//! `batch`, TCP tasks): compiled bytes for plain queries, `answer::respond` (pure) for the rest,
//! `forward::Forwarder` for names outside the zone. Start from [`run`], or [`serve`] with a
//! [`Zone`] filled by hand (`fixtures` builds the objects).

pub mod answer;
mod batch;
pub mod config;
pub mod error;
pub mod fast;
pub mod fixtures;
pub mod forward;
pub mod memory;
pub mod metrics;
pub mod publish;
pub mod records;
pub mod server;
pub mod slim;
pub mod watch;
pub mod zone;

use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{Server, SharedZone, serve};
pub use zone::{Zone, ZoneConfig};

impl Config {
    /// The zone settings within this config.
    pub fn zone(&self) -> ZoneConfig {
        ZoneConfig {
            domain: self.domain.clone(),
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
        }
    }
}

/// Runs the DNS server: binds `config.listen`, watches Services, EndpointSlices and Namespaces
/// through `client`, starts answering once all three are listed, and serves until `shutdown`.
/// Fails when a listener cannot be bound or fails, or a watch ends.
pub async fn run(config: Config, client: kube::Client, shutdown: CancellationToken) -> Result<()> {
    let server = Server::bind(&config.listen, config.udp_sockets)?;
    run_on(server, config, client, shutdown).await
}

/// [`run`] on sockets bound already (`config.listen` is not used).
pub async fn run_on(
    server: Server,
    config: Config,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<()> {
    let zone: SharedZone = Arc::new(RwLock::new(Zone::new(&config.zone())?));
    let mut watchers = vec![
        Watcher::spawn::<Service>(&client, &zone),
        Watcher::spawn::<EndpointSlice>(&client, &zone),
        Watcher::spawn::<Namespace>(&client, &zone),
    ];
    // Answering before the first lists would give NXDOMAIN for names that exist.
    let synced = async {
        for w in &mut watchers {
            let _ = w.synced.wait_for(|s| *s).await;
        }
    };
    tokio::select! {
        () = synced => {}
        () = shutdown.cancelled() => return Ok(()),
    }
    let names = zone.read().map_or(0, |z| z.len());
    tracing::info!(addrs = ?server.local_addrs(), names, "cluster DNS serving");
    let _ = config.synced.set(());
    let ended = futures_util::future::select_all(watchers.iter_mut().map(|w| &mut w.task.0));
    let result = tokio::select! {
        r = server.serve(&config, zone, shutdown.clone()) => r,
        (_, i, _) = ended => Err(Error::WatchEnded {
            resource: watchers.get(i).map_or("?", |w| w.resource),
        }),
    };
    shutdown.cancel();
    result
}

/// One resource type's watcher task and whether its first list is in.
struct Watcher {
    resource: &'static str,
    task: AbortOnDrop,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl Watcher {
    fn spawn<K: watch::Indexed>(client: &kube::Client, zone: &SharedZone) -> Self {
        let (tx, synced) = tokio::sync::watch::channel(false);
        let follow = watch::follow(Api::<slim::Slim<K>>::all(client.clone()), zone.clone(), tx);
        Self {
            resource: K::PLURAL,
            task: AbortOnDrop(tokio::spawn(follow)),
            synced,
        }
    }
}

/// A spawned task that ends with its owner (the watchers stop when `run` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
