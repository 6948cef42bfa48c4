//! berth's API server: the Kubernetes REST API over HTTPS with client-certificate auth.
//! kubectl and every berth component talk to it; it is the only writer to the store.
//!
//! Start from [`run`]: it binds, serves [`router`], and hands requests to `rest` (verbs),
//! `watch`, `discovery` and `openapi`, and pod logs and exec to `node_proxy`; kind-specific rules live in `admission`.

mod admission;
mod alloc;
mod discovery;
pub mod error;
pub mod files;
mod filter;
#[cfg(test)]
mod fuzz;
mod managed;
mod meta;
mod metrics;
mod node_proxy;
mod openapi;
mod openapi_pb;
mod patch;
pub mod pki;
mod proxy;
mod rawjson;
mod request;
mod rest;
mod serve;
mod table;
pub mod token;
mod watch;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_store::Store;
pub use ipnet::Ipv4Net;
pub use metrics::Metrics;
pub use serve::{Inputs, Listening, run};

/// How the API server is set up; built by the binary from its flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Where certificates and the kubeconfig live.
    pub data_dir: PathBuf,
    /// Serve plain HTTP without authentication (for trusted loopback use only).
    pub insecure_http: bool,
    pub service_cluster_ip_range: Ipv4Net,
    pub service_node_port_range: RangeInclusive<u16>,
    /// Largest request body accepted (kube-apiserver: 3 MiB).
    pub max_body_bytes: usize,
    /// The address pods and nodes reach the API server at (kube-apiserver's
    /// `--advertise-address`): the `kubernetes` Endpoints hold it and the serving certificate
    /// names it. Default: the bind address (127.0.0.1 for an unspecified one).
    pub advertise_address: Option<std::net::IpAddr>,
    /// More addresses to listen on, at the port `bind` got.
    pub also_listen: Vec<std::net::IpAddr>,
    /// Parts of the cluster `/readyz` waits for, by name, besides the store: each is ready
    /// once its `SetOnce` is set.
    pub readiness: Vec<(String, std::sync::Arc<tokio::sync::SetOnce<()>>)>,
}

impl Config {
    pub fn new(bind: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            bind,
            data_dir,
            insecure_http: false,
            service_cluster_ip_range: Ipv4Net::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 12)
                .unwrap_or_default(),
            service_node_port_range: 30000..=32767,
            max_body_bytes: 3 * 1024 * 1024,
            advertise_address: None,
            also_listen: Vec::new(),
            readiness: Vec::new(),
        }
    }
}

/// Allocation state guarded by one lock: ClusterIPs and NodePorts.
#[derive(Debug)]
struct Allocations {
    ips: alloc::ClusterIps,
    ports: alloc::NodePorts,
}

/// Everything a request handler needs.
pub struct Server {
    store: Arc<dyn Store>,
    config: Config,
    alloc: Mutex<Allocations>,
    /// `https://host:port` as clients reach this server.
    address: Mutex<String>,
    metrics: Metrics,
    registry: Arc<prometheus_client::registry::Registry>,
    /// How the server dials node agents (logs, exec, port-forward).
    kubelet_tls: Arc<rustls::ClientConfig>,
    /// TLS for `https:` proxying to pods and Services: no verification, as kube-apiserver.
    insecure_tls: Arc<rustls::ClientConfig>,
    /// Signs and checks ServiceAccount tokens.
    tokens: token::Tokens,
}
