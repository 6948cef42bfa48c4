//! berth's Ingress controller: watches Ingresses (of IngressClass `berth`, the default
//! class), Services, EndpointSlices and TLS Secrets through the kube client, keeps a route
//! table ([`routes`]) and serves it as a reverse proxy on the node ([`server`], [`tls`]).
//! It publishes itself as the LoadBalancer Service `kube-system/berth-ingress` (selector-less,
//! endpoints the node's address), so it gets an address from the pool, and writes that
//! address into each Ingress's `status.loadBalancer`. Start from [`run`].

pub mod pool;
pub mod routes;
pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The Service that gives the ingress controller its address.
pub const SERVICE: &str = "berth-ingress";
const NAMESPACE: &str = "kube-system";
/// `spec.controller` of IngressClass `berth`.
pub const CONTROLLER: &str = "berth.dev/ingress";

/// What can stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the proxy's workers")]
    Workers(#[source] std::io::Error),
    #[error("TLS settings")]
    Tls(#[from] rustls::Error),
    #[error("publishing {what}")]
    Publish {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// How the controller runs on one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where HTTP is served (default 0.0.0.0:80).
    pub http: SocketAddr,
    /// Where HTTPS is served (default 0.0.0.0:443).
    pub https: SocketAddr,
    /// The node's address: the endpoint of `kube-system/berth-ingress`, and the Ingresses'
    /// address until that Service has a LoadBalancer IP.
    pub node_ip: Ipv4Addr,
    /// The LoadBalancer IP `kube-system/berth-ingress` asks for (`spec.loadBalancerIP`), so
    /// the ingress keeps one well-known address and other Services get the pool from its
    /// start; `None` takes whatever the pool gives.
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// Set once the first route table is served.
    pub synced: Arc<tokio::sync::SetOnce<()>>,
    /// Proxy worker threads, each with its own runtime and upstream pool, as nginx's
    /// `worker_processes` (default: one per CPU).
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([0, 0, 0, 0], 80)),
            https: SocketAddr::from(([0, 0, 0, 0], 443)),
            node_ip: Ipv4Addr::LOCALHOST,
            load_balancer_ip: None,
            synced: Arc::default(),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// A reflector for `api` whose every change wakes `notify`.
fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    notify: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let stream = watcher(api, cfg).default_backoff().reflect(writer);
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
            }
        }
    });
    (store, task)
}

/// Serves Ingresses until `shutdown`.
pub async fn run(
    config: Config,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Bound here once so a taken port fails the start; each worker binds its own beside it.
    let bind = |addr: SocketAddr| server::bind(addr).map_err(|source| Error::Bind { addr, source });
    let http = bind(config.http)?;
    let https = bind(config.https)?;
    let certs = Arc::new(tls::Certs::new());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(certs.clone())?));
    let shared = Arc::new(server::Shared::new(certs));
    if let Err(e) = publish(&client, config.node_ip, config.load_balancer_ip).await {
        tracing::warn!(error = %e, "the ingress class or Service could not be published");
    }
    let notify = Arc::new(Notify::new());
    let (ingresses, t1) = reflect(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let (services, t2) = reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let (slices, t3) = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let (secrets, t4) = reflect(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().fields("type=kubernetes.io/tls"),
        notify.clone(),
    );
    let watches = [t1, t2, t3, t4];
    let listeners = vec![
        server::Listener {
            addr: config.http,
            tls: None,
            socket: Some(http),
        },
        server::Listener {
            addr: config.https,
            tls: Some(acceptor),
            socket: Some(https),
        },
    ];
    let workers = tokio::spawn(server::run_workers(
        listeners,
        shared.clone(),
        config.workers,
        shutdown.clone(),
    ));
    let wait = async {
        let _ = ingresses.wait_until_ready().await;
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
        let _ = secrets.wait_until_ready().await;
    };
    tokio::select! {
        () = wait => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(http = %config.http, https = %config.https, "ingress controller serving");
    let mut statuses: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let ings = ingresses.state();
        let svcs = services.state();
        let sls = slices.state();
        let tls_pem: BTreeMap<String, (String, String)> = secrets
            .state()
            .iter()
            .filter_map(|s| {
                let data = s.data.as_ref()?;
                let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
                Some((
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?
                    ),
                    (text("tls.crt")?, text("tls.key")?),
                ))
            })
            .collect();
        let table = routes::build(
            &ings.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &svcs.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &sls.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &tls_pem,
        );
        shared.set_table(table);
        let _ = config.synced.set(());
        let address = svcs
            .iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(SERVICE)
                    && s.metadata.namespace.as_deref() == Some(NAMESPACE)
            })
            .and_then(|s| {
                s.status
                    .as_ref()?
                    .load_balancer
                    .as_ref()?
                    .ingress
                    .as_ref()?
                    .first()?
                    .ip
                    .clone()
            })
            .unwrap_or_else(|| config.node_ip.to_string());
        write_statuses(&client, &ings, &address, &mut statuses).await;
        tokio::select! {
            () = notify.notified() => {}
            _ = shutdown.cancelled() => break,
        }
        // Let a burst of changes land in one rebuild.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watches {
        w.abort();
    }
    match workers.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(Error::Workers(source)),
        Err(e) => Err(Error::Workers(std::io::Error::other(e))),
    }
}

/// Writes `status.loadBalancer.ingress` of berth's Ingresses that do not show `address` yet.
async fn write_statuses(
    client: &kube::Client,
    ings: &[Arc<Ingress>],
    address: &str,
    done: &mut BTreeMap<String, String>,
) {
    for ing in ings.iter().filter(|i| routes::is_ours(i)) {
        let (Some(ns), Some(name)) = (
            ing.metadata.namespace.as_deref(),
            ing.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let shown = ing.status.as_ref().and_then(|s| {
            s.load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?
                .ip
                .clone()
        });
        let key = format!("{ns}/{name}");
        if shown.as_deref() == Some(address)
            || done.get(&key).map(String::as_str) == Some(address) && shown.is_some()
        {
            continue;
        }
        let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
        let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": address}]}}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                done.insert(key, address.to_owned());
            }
            Err(e) => tracing::warn!(ingress = %key, error = %e, "writing the Ingress status"),
        }
    }
}

/// IngressClass `berth` (the default class) and the LoadBalancer Service
/// `kube-system/berth-ingress` with Endpoints at `node_ip`, made if missing.
async fn publish(
    client: &kube::Client,
    node_ip: Ipv4Addr,
    lb_ip: Option<Ipv4Addr>,
) -> Result<(), Error> {
    let created = |r: Result<(), kube::Error>, what| match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(Error::Publish { what, source }),
    };
    let classes: Api<k8s_openapi::api::networking::v1::IngressClass> = Api::all(client.clone());
    let class = serde_json::from_value(json!({
        "metadata": {"name": routes::CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": CONTROLLER},
    }))
    .unwrap_or_default();
    created(
        classes
            .create(&PostParams::default(), &class)
            .await
            .map(drop),
        "IngressClass berth",
    )?;
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let mut svc = json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": SERVICE}},
        "spec": {"type": "LoadBalancer", "ports": [
            {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"},
        ]},
    });
    if let Some(ip) = lb_ip {
        svc["spec"]["loadBalancerIP"] = json!(ip.to_string());
    }
    let svc: Service = serde_json::from_value(svc).unwrap_or_default();
    created(
        services
            .create(&PostParams::default(), &svc)
            .await
            .map(drop),
        "Service kube-system/berth-ingress",
    )?;
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), NAMESPACE);
    let ep = json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": SERVICE}},
        "subsets": [{"addresses": [{"ip": node_ip.to_string()}], "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "https", "port": 443, "protocol": "TCP"},
        ]}],
    });
    endpoints
        .patch(
            SERVICE,
            &PatchParams::apply("berth-ingress").force(),
            &Patch::Apply(&ep),
        )
        .await
        .map_err(|source| Error::Publish {
            what: "Endpoints kube-system/berth-ingress",
            source,
        })?;
    Ok(())
}
