//! The command line: one subcommand per component, flags named as upstream names them.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

pub use berth::{DnsCmdArgs, KubeconfigArg};
use berth_apiserver::Ipv4Net;
use clap::{Args, Parser, Subcommand};

/// berth: Kubernetes Service networking in one binary.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a whole single-node cluster: the API server (with its embedded store unless
    /// --store names etcd), the controllers, and a node (agent, service proxy, cluster DNS) in
    /// a network namespace of its own joined to this one, with routes so this machine reaches
    /// ClusterIPs, pod IPs, LoadBalancer IPs and node ports. Needs root for the node;
    /// `--no-node` runs only the API server and controllers. Ctrl-C stops the pods and
    /// removes the namespace, links, routes and nftables tables it made.
    Server(ServerArgs),
    /// Remove what a `berth server` that was killed left on this machine: its pods' and its
    /// node's network namespaces, the veth and the host routes to the node, and berth's
    /// nftables table on the host. Use the same --data-dir and --node-netns as the server.
    Cleanup(CleanupArgs),
    /// Run only the node agent, against the API server the kubeconfig names (a berth server
    /// or any Kubernetes cluster): it registers the node and runs the pods bound to it. Start
    /// it inside the node's network namespace: it makes bridge `berth0` and the pods'
    /// namespaces in the one it runs in. SIGTERM stops its pods before it exits.
    Agent(AgentCmdArgs),
    /// Run only the service proxy (kube-proxy's job), against the API server the kubeconfig
    /// names: Services and EndpointSlices become an nftables table `ip berth`, programmed over
    /// netlink in the network namespace berth runs in. `--cleanup` removes the table and exits.
    Proxy(ProxyCmdArgs),
    /// Run only the cluster DNS server (CoreDNS's job for `cluster.local`), against the API
    /// server the kubeconfig names; other names are forwarded to upstream resolvers.
    Dns(DnsCmdArgs),
    /// Run only the Ingress controller, against the API server the kubeconfig names: serves
    /// the Ingresses of class `berth` (the default class) as a reverse proxy on this machine,
    /// and publishes itself as the LoadBalancer Service kube-system/berth-ingress.
    Ingress(IngressCmdArgs),
    /// Run only the NetworkPolicy enforcer, against the API server the kubeconfig names:
    /// policies, pods and namespaces become an nftables table `ip berth-netpol` guarding the
    /// pods of this node, in the network namespace berth runs in. `--cleanup` removes it.
    Netpol(NetpolCmdArgs),
    /// Manage the node's container images (the store in DATA_DIR/images that the agent runs
    /// image pods from): `import` docker-save or OCI archives, `ls`, `rm`.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Run a built-in workload (what an image name such as berth/whoami runs in a pod):
    /// `berth workload whoami [--port N]` or `berth workload number-crunch [--port N]`.
    #[command(hide = true)]
    Workload {
        /// The workload and its flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The first program of every container the agent starts (it enters the pod's
    /// namespaces and execs the container's command):
    /// `berth container-init --netns NS --hostname NAME [--tty] -- COMMAND...`.
    #[command(hide = true)]
    ContainerInit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `berth container-shim --state FILE --exit FILE -- COMMAND...`: holds one container so
    /// it outlives the agent.
    #[command(hide = true)]
    ContainerShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `berth image ...`, as `ctr images` and `crictl images`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Import the images of an archive: `docker save` output (manifest.json, layers as tar
    /// or tar.gz) or an OCI image layout tar (index.json); `-` reads standard input. Safe
    /// while a server runs on the same data directory.
    Import {
        /// The archive, or `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
    /// List the images: reference, digest, size.
    Ls {
        #[command(flatten)]
        store: ImageStoreArgs,
    },
    /// Pull an image from its registry into the store, as `crictl pull` does: an index picks
    /// linux on this machine's architecture; blobs the store has are not fetched again.
    /// Prints the manifest's digest and the image ID (the config's digest).
    Pull {
        /// The image (`nginx`, `registry.example:5000/team/app:v1`, `app@sha256:...`).
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
    /// Push an image of the store to the registry its reference names, as `ctr images
    /// push` does (blobs, then the manifest under its tag).
    Push {
        /// The image, by the reference it has in the store (`berth image ls`).
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
    /// Remove an image reference (`nginx`, `docker.io/library/nginx:1.27`, a digest) and
    /// whatever blobs no other image needs.
    Rm {
        /// The references to remove.
        #[arg(required = true)]
        references: Vec<String>,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
}

/// How `berth image pull|push` reach a registry.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// A registry (`HOST:PORT`, as written in image references) reached over plain HTTP
    /// instead of HTTPS, as containerd's and docker's insecure registries. Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,

    /// A PEM file of CA certificates trusted for HTTPS registries besides the system's roots
    /// (a private registry's CA, as containerd's `certs.d/HOST/ca.crt`). Repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<std::path::PathBuf>,

    /// Credentials for the registry, `USER:PASSWORD` (as `crictl pull --creds`); without
    /// them, anonymous.
    #[arg(long)]
    pub creds: Option<String>,
}

/// Which image store a `berth image` command works on.
#[derive(Debug, Args)]
pub struct ImageStoreArgs {
    /// The data directory of the server or agent whose images these are (DATA_DIR/images).
    #[arg(long, default_value = "/var/lib/berth")]
    pub data_dir: PathBuf,
}

/// Where objects are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in the data directory.
    Embedded,
    /// An etcd v3 cluster: one or more `http://host:port` endpoints.
    Etcd(Vec<String>),
}

fn parse_store(s: &str) -> Result<StoreUrl, String> {
    if s == "embedded" {
        return Ok(StoreUrl::Embedded);
    }
    let Some(rest) = s.strip_prefix("etcd://") else {
        return Err(format!(
            "expected `embedded` or `etcd://HOST:PORT[,HOST:PORT...]`, got `{s}`"
        ));
    };
    let endpoints: Vec<String> = rest
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|e| format!("http://{e}"))
        .collect();
    if endpoints.is_empty() {
        return Err("etcd:// needs at least one HOST:PORT".into());
    }
    Ok(StoreUrl::Etcd(endpoints))
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, got `{s}`"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("`{lo}`: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("`{hi}`: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!(
            "`{s}` is not a range of ports (LOW-HIGH, 1 <= LOW <= HIGH)"
        ));
    }
    Ok(lo..=hi)
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address and port the API server listens on (port 0 picks a free one).
    #[arg(
        long = "bind",
        alias = "bind-address",
        default_value = "127.0.0.1:6443"
    )]
    pub bind: SocketAddr,

    /// Directory for the embedded store, certificates and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/berth")]
    pub data_dir: PathBuf,

    /// Where objects are kept: `embedded` (a file in --data-dir) or `etcd://HOST:PORT[,...]`.
    #[arg(long, default_value = "embedded", value_parser = parse_store)]
    pub store: StoreUrl,

    /// CIDR that Service cluster IPs are allocated from; the first address is `kubernetes`.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: Ipv4Net,

    /// Ports that NodePort and LoadBalancer Services get their node ports from.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: RangeInclusive<u16>,

    /// Serve plain HTTP with no authentication instead of HTTPS with client certificates.
    /// Anyone who can reach the port gets full access, so berth refuses to start it on an
    /// address other than loopback (127.0.0.0/8, ::1).
    #[arg(long)]
    pub insecure_http: bool,

    /// Addresses LoadBalancer Services get their external IP from, as ranges (FIRST-LAST) or
    /// CIDRs, comma-separated or repeated. Default: 10.201.1.0/24 when the node has its own
    /// namespace (routed from this machine), else none; without a pool they stay `<pending>`.
    #[arg(long = "lb-pool", value_delimiter = ',')]
    pub lb_pool: Vec<berth_controllers::lb_pool::Range>,

    /// Most endpoints one EndpointSlice holds before another slice is started.
    #[arg(long, default_value_t = berth_controllers::DEFAULT_MAX_ENDPOINTS_PER_SLICE)]
    pub max_endpoints_per_slice: usize,

    /// The node's name. The node is the node agent (pods bound to it run as processes, each
    /// in its own network namespace on bridge `berth0`), the service proxy (nftables table
    /// `ip berth`) and the cluster DNS (port 53, behind Service kube-system/kube-dns at
    /// --cluster-dns); its state goes to DATA_DIR/agent. (`berth agent`, `berth proxy` and
    /// `berth dns` run the same parts on their own.) Default: this machine's host name,
    /// lowercased.
    #[arg(long = "node")]
    pub node: Option<String>,

    /// Run no node: only the API server and the controllers (pods stay Pending until an
    /// agent registers a node).
    #[arg(long, conflicts_with_all = ["node", "node_netns"])]
    pub no_node: bool,

    /// The network namespace the node runs in, made at start (`/run/netns/NAME`) and removed
    /// at stop. `current` runs the node in the namespace berth was started in instead, as
    /// k3s does, programming that namespace's nftables and routes (for a dedicated machine,
    /// or a namespace you made).
    #[arg(long, default_value = "berth")]
    pub node_netns: String,

    /// The link between this namespace and the node's: the host takes the first address
    /// (the API server also listens there, for the node and the pods) and the node the
    /// second (its InternalIP, where node ports answer).
    #[arg(long, default_value = "10.201.0.0/30")]
    pub node_link: Ipv4Net,

    /// Route the Service CIDR, the pod CIDR and the LoadBalancer pool from this namespace to
    /// the node, so this machine reaches them (like `minikube tunnel`, always on). berth
    /// refuses to start if one overlaps a route the host has; `--host-routes=false` adds none.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub host_routes: bool,

    #[command(flatten)]
    pub agent: AgentArgs,

    /// Also write the admin kubeconfig to this path (it is always written to DATA_DIR/kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// `berth cleanup`'s flags: what names the server's leftovers.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The data directory of the server (its agent's state names the pods' namespaces).
    #[arg(long, default_value = "/var/lib/berth")]
    pub data_dir: PathBuf,

    /// The server's --node-netns.
    #[arg(long, default_value = "berth")]
    pub node_netns: String,

    /// The server's --node-link.
    #[arg(long, default_value = "10.201.0.0/30")]
    pub node_link: Ipv4Net,

    /// The server's --pod-cidr.
    #[arg(long, default_value = "10.244.0.0/24")]
    pub pod_cidr: Ipv4Net,
}

/// The node agent's flags, shared by `berth server --node` and `berth agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node's pod CIDR; the `berth0` bridge takes its first address.
    #[arg(long, default_value = "10.244.0.0/24")]
    pub pod_cidr: Ipv4Net,

    /// The node's InternalIP, which the API server dials for logs and exec. Default: the first
    /// global IPv4 address of the network namespace berth runs in, else 127.0.0.1.
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,

    /// The port the node agent serves logs, exec and port-forward on (the kubelet's port).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,

    /// The cluster DNS server written into each pod's /etc/resolv.conf.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: Ipv4Addr,

    /// A registry (`HOST:PORT`, as written in image references) that image pulls reach over
    /// plain HTTP instead of HTTPS, as containerd's and docker's insecure registries (for a
    /// registry on this machine or a lab network; credentials travel in the clear).
    /// Repeatable. Pulls of other registries use HTTPS with the system's trusted roots.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,

    /// A PEM file of CA certificates image pulls trust for HTTPS registries besides the
    /// system's roots (a private registry's CA, as containerd's `certs.d/HOST/ca.crt`).
    /// Repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<std::path::PathBuf>,
    /// Leave the node's pods running when berth stops on purpose (SIGTERM, ^C): each
    /// container is held by a small shim process, and the next agent on this data directory
    /// takes them on (same processes, restart counts, logs). Without it, stopping berth
    /// stops its pods. A crash or SIGKILL leaves them running either way.
    #[arg(long)]
    pub keep_pods_on_exit: bool,
}

#[derive(Debug, Args)]
pub struct ProxyCmdArgs {
    #[command(flatten)]
    pub kube: KubeconfigArg,

    /// The name of this node, for `internalTrafficPolicy: Local` (kube-proxy's
    /// `--hostname-override`). Default: this machine's host name, lowercased.
    #[arg(long = "hostname-override", alias = "node")]
    pub node: Option<String>,

    /// Remove the `ip berth` nftables table from this network namespace and exit.
    #[arg(long)]
    pub cleanup: bool,
}

#[derive(Debug, Args)]
pub struct NetpolCmdArgs {
    #[command(flatten)]
    pub kube: KubeconfigArg,

    /// The name of this node: only its pods are isolated. Default: this machine's host
    /// name, lowercased.
    #[arg(long = "hostname-override", alias = "node")]
    pub node: Option<String>,

    /// Remove the `ip berth-netpol` nftables table from this network namespace and exit.
    #[arg(long)]
    pub cleanup: bool,
}

#[derive(Debug, Args)]
pub struct IngressCmdArgs {
    #[command(flatten)]
    pub kube: KubeconfigArg,

    /// Where HTTP is served.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http: SocketAddr,

    /// Where HTTPS is served (certificates from the Ingresses' TLS Secrets, by SNI).
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https: SocketAddr,

    /// This machine's address: the endpoint of kube-system/berth-ingress, and the Ingresses'
    /// address until that Service has a LoadBalancer IP.
    #[arg(long)]
    pub node_ip: Ipv4Addr,
}

#[derive(Debug, Args)]
pub struct AgentCmdArgs {
    /// The kubeconfig to reach the API server with. Default: as kubectl finds one ($KUBECONFIG,
    /// then ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// The name of this node (the Node object the agent registers and the pods bound to it).
    /// Default: this machine's host name, lowercased.
    #[arg(long = "node")]
    pub node: Option<String>,

    /// Directory for the agent's state: pod IPs (IPAM), pod logs and per-pod files, all in
    /// DATA_DIR/agent, the same layout as `berth server --node`, so both can share one
    /// --data-dir and a node keeps its pod IPs when it switches between them.
    #[arg(long, default_value = "/var/lib/berth")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Where `berth server`'s node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMode {
    /// `--no-node`.
    None,
    /// `--node-netns=current`.
    Current,
    /// A namespace berth makes (the default, `berth`).
    Own(String),
}

/// The LoadBalancer pool the node has when `--lb-pool` is not given and the node has a
/// namespace of its own (so the host routes it there).
pub const DEFAULT_LB_POOL: &str = "10.201.1.0/24";

impl ServerArgs {
    pub fn node_mode(&self) -> NodeMode {
        match (self.no_node, self.node_netns.as_str()) {
            (true, _) => NodeMode::None,
            (false, "current") => NodeMode::Current,
            (false, ns) => NodeMode::Own(ns.to_owned()),
        }
    }

    /// `--lb-pool`, or [`DEFAULT_LB_POOL`] for a node in its own namespace.
    pub fn lb_pool(&self) -> Vec<berth_controllers::lb_pool::Range> {
        match (self.lb_pool.is_empty(), self.node_mode()) {
            (true, NodeMode::Own(_)) => {
                DEFAULT_LB_POOL.parse().map(|r| vec![r]).unwrap_or_default()
            }
            _ => self.lb_pool.clone(),
        }
    }
}

impl From<&ServerArgs> for berth_controllers::Config {
    fn from(a: &ServerArgs) -> Self {
        berth_controllers::Config {
            lb_pool: berth_controllers::lb_pool::Pool::new(a.lb_pool()),
            max_endpoints_per_slice: a.max_endpoints_per_slice.max(1),
            ..Default::default()
        }
    }
}

impl From<&ServerArgs> for berth_apiserver::Config {
    fn from(a: &ServerArgs) -> Self {
        let mut c = berth_apiserver::Config::new(a.bind, a.data_dir.clone());
        c.insecure_http = a.insecure_http;
        c.service_cluster_ip_range = a.service_cluster_ip_range;
        c.service_node_port_range = a.service_node_port_range.clone();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(parse_store("embedded"), Ok(StoreUrl::Embedded));
        assert_eq!(
            parse_store("etcd://127.0.0.1:2379"),
            Ok(StoreUrl::Etcd(vec!["http://127.0.0.1:2379".into()]))
        );
        assert!(parse_store("mysql://x").is_err());
        assert!(parse_store("etcd://").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000-32767"), Ok(30000..=32767));
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("x").is_err());
    }

    #[test]
    fn server_and_agent_share_the_agent_flags() {
        let cli = Cli::parse_from(["berth", "server", "--node=n1", "--pod-cidr=10.1.0.0/24"]);
        let Cmd::Server(s) = cli.cmd else {
            panic!("not server")
        };
        assert_eq!(s.node.as_deref(), Some("n1"));
        assert_eq!(s.node_mode(), NodeMode::Own("berth".into()));
        assert_eq!(s.lb_pool().len(), 1);
        assert!(s.host_routes);
        assert_eq!(s.agent.pod_cidr.to_string(), "10.1.0.0/24");
        assert_eq!(s.agent.kubelet_port, 10250);
        let cli = Cli::parse_from([
            "berth",
            "agent",
            "--kubeconfig=/k",
            "--node-ip=192.168.1.5",
            "--kubelet-port=10251",
        ]);
        let Cmd::Agent(a) = cli.cmd else {
            panic!("not agent")
        };
        assert_eq!(a.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(a.node, None);
        assert_eq!(a.data_dir, PathBuf::from("/var/lib/berth"));
        assert_eq!(a.agent.node_ip, Some(Ipv4Addr::new(192, 168, 1, 5)));
        assert_eq!(a.agent.kubelet_port, 10251);
        assert_eq!(a.agent.pod_cidr.to_string(), "10.244.0.0/24");
    }

    #[test]
    fn node_modes() {
        let mode = |args: &[&str]| {
            let Cmd::Server(s) = Cli::parse_from([&["berth", "server"], args].concat()).cmd else {
                panic!("not server")
            };
            (s.node_mode(), s.lb_pool().len(), s.host_routes)
        };
        assert_eq!(mode(&[]), (NodeMode::Own("berth".into()), 1, true));
        assert_eq!(mode(&["--no-node"]), (NodeMode::None, 0, true));
        assert_eq!(
            mode(&["--node-netns=current", "--host-routes=false"]),
            (NodeMode::Current, 0, false)
        );
        assert!(
            Cli::try_parse_from(["berth", "server", "--no-node", "--node=x"]).is_err(),
            "--no-node with --node is a contradiction"
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
