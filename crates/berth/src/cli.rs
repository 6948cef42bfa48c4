//! The command line: one subcommand per component, flags named as upstream names them.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

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
    /// Run the API server (with its embedded store unless --store names etcd).
    Server(ServerArgs),
    /// Run only the node agent, against the API server the kubeconfig names (a berth server
    /// or any Kubernetes cluster): it registers the node and runs the pods bound to it. Start
    /// it inside the node's network namespace: it makes bridge `berth0` and the pods'
    /// namespaces in the one it runs in. SIGTERM stops its pods before it exits.
    Agent(AgentCmdArgs),
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
    /// CIDRs, comma-separated or repeated. Without a pool they stay `<pending>`.
    #[arg(long = "lb-pool", value_delimiter = ',')]
    pub lb_pool: Vec<berth_controllers::lb_pool::Range>,

    /// Most endpoints one EndpointSlice holds before another slice is started.
    #[arg(long, default_value_t = berth_controllers::DEFAULT_MAX_ENDPOINTS_PER_SLICE)]
    pub max_endpoints_per_slice: usize,

    /// Also run a node agent with this node name: pods are bound to this node and run as
    /// processes, each in its own network namespace on bridge `berth0`. Start berth inside a
    /// network namespace of its own when you use this: the agent programs the one it runs in.
    /// Its state goes to DATA_DIR/agent. (`berth agent` runs the same agent on its own.)
    #[arg(long = "node")]
    pub node: Option<String>,

    #[command(flatten)]
    pub agent: AgentArgs,

    /// Also write the admin kubeconfig to this path (it is always written to DATA_DIR/kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
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

impl From<&ServerArgs> for berth_controllers::Config {
    fn from(a: &ServerArgs) -> Self {
        berth_controllers::Config {
            lb_pool: berth_controllers::lb_pool::Pool::new(a.lb_pool.clone()),
            max_endpoints_per_slice: a.max_endpoints_per_slice.max(1),
            root_ca: None,
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
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
