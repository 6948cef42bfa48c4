//! The `berth` binary: parses the command line, sets up logging and the runtime, wires the
//! components together and prints the lines a person needs (kubeconfig path, readiness).

mod cli;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use berth_store::Store;
use clap::Parser;
use cli::{AgentArgs, AgentCmdArgs, Cli, Cmd, DnsCmdArgs, ProxyCmdArgs, ServerArgs, StoreUrl};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

fn main() -> std::process::ExitCode {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or `kubectl logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Cmd::Workload { args } = &cli.cmd {
        // Workloads run their own small runtime, as a container's process would.
        return berth_workloads::main_for(args);
    }
    if let Cmd::ContainerInit { args } = &cli.cmd {
        // No runtime, no threads: it only sets up namespaces and execs.
        return berth_agent::init::main_for(args);
    }
    // Keys, the store (every Secret), pod logs: nothing berth writes is for other users.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.cmd {
            Cmd::Server(args) => server(args, started).await,
            Cmd::Agent(args) => agent(args).await,
            Cmd::Proxy(args) => proxy(args).await,
            Cmd::Dns(args) => dns(args).await,
            Cmd::Workload { .. } | Cmd::ContainerInit { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn open_store(args: &ServerArgs) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &args.store {
        StoreUrl::Embedded => {
            let dir = args.data_dir.join("store");
            let opts = berth_store::embedded::EmbeddedOptions::default();
            Arc::new(
                berth_store::embedded::Embedded::open(&dir, opts)
                    .with_context(|| format!("opening the store in {}", dir.display()))?,
            )
        }
        StoreUrl::Etcd(endpoints) => Arc::new(
            berth_store::etcd::Etcd::connect(endpoints, "/registry")
                .await
                .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?,
        ),
    })
}

/// A client for the API server just started, as any component of berth would build one.
async fn kube_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("using {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("building the API client")
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

async fn server(args: ServerArgs, started: Instant) -> anyhow::Result<()> {
    berth_apiserver::files::private_dir(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = open_store(&args).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let config = berth_apiserver::Config::from(&args);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = berth_apiserver::Metrics::register(&mut registry);
    // The node's proxy and DNS report under kube-proxy's and CoreDNS's names at /metrics.
    let node_metrics = args.node.is_some().then(|| {
        (
            berth_proxy::Metrics::register(&mut registry),
            berth_dns::metrics::Metrics::register(&mut registry),
        )
    });
    let inputs = berth_apiserver::Inputs {
        store,
        metrics,
        registry: Arc::new(registry),
        ready: ready_tx,
    };
    let api = tokio::spawn(
        berth_apiserver::run(config, inputs, shutdown.clone())
            .instrument(tracing::info_span!("apiserver")),
    );
    let Ok(l) = ready_rx.await else {
        // The API server stopped before it was ready; its error is the one to report.
        api.await
            .context("API server task")?
            .context("API server")?;
        return Ok(());
    };
    if let Some(extra) = &args.kubeconfig {
        let text = std::fs::read_to_string(&l.kubeconfig)
            .with_context(|| format!("reading {}", l.kubeconfig.display()))?;
        berth_apiserver::pki::write_private(extra, &text)
            .with_context(|| format!("writing {}", extra.display()))?;
    }
    let client = kube_client(&l.kubeconfig).await?;
    let controllers_config = berth_controllers::Config {
        root_ca: Some(
            std::fs::read_to_string(args.data_dir.join("pki/ca.crt"))
                .context("reading the cluster CA for kube-root-ca.crt")?,
        ),
        ..berth_controllers::Config::from(&args)
    };
    let controllers = tokio::spawn(
        berth_controllers::run(client, controllers_config, shutdown.clone())
            .instrument(tracing::info_span!("controllers")),
    );
    let mut node_parts = Vec::new();
    let agent = match (&args.node, node_metrics) {
        (Some(node), Some((proxy_metrics, dns_metrics))) => {
            let ca = std::fs::read_to_string(args.data_dir.join("pki/ca.crt"))
                .context("reading the cluster CA for the agent")?;
            let config = agent_config(node.clone(), &args.agent, &args.data_dir, ca)?;
            let client = kube_client(&l.kubeconfig).await?;
            node_parts = node_services(
                &args,
                &config,
                &client,
                proxy_metrics,
                dns_metrics,
                &shutdown,
            );
            Some(tokio::spawn(
                berth_agent::run(client, config, shutdown.clone())
                    .instrument(tracing::info_span!("agent")),
            ))
        }
        _ => None,
    };
    println!("berth: kubeconfig written to {}", l.kubeconfig.display());
    println!(
        "berth: use it with: export KUBECONFIG={}",
        l.kubeconfig.display()
    );
    if l.addr.ip().is_unspecified() {
        println!(
            "berth: listening on {} (every address of this host)",
            l.addr
        );
    }
    println!(
        "berth: ready at {} in {} ms",
        l.url,
        started.elapsed().as_millis()
    );
    tokio::select! {
        r = controllers => {
            r.context("controllers task")?.context("controllers")?;
            shutdown.cancel();
        }
        _ = shutdown.cancelled() => {}
    }
    // The agent stops its pods before the API server goes away.
    if let Some(agent) = agent {
        agent.await.context("agent task")?.context("node agent")?;
    }
    for part in node_parts {
        let _ = part.await;
    }
    api.await
        .context("API server task")?
        .context("API server")?;
    Ok(())
}

/// The node's service proxy and cluster DNS inside `berth server --node`, and the
/// `kube-system/kube-dns` Service (at `--cluster-dns`) in front of the DNS server, which
/// answers on the pod bridge's address. A part that fails logs why; the rest of the node goes on.
fn node_services(
    args: &ServerArgs,
    agent: &berth_agent::Config,
    client: &kube::Client,
    proxy_metrics: berth_proxy::Metrics,
    dns_metrics: berth_dns::metrics::Metrics,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let proxy = berth_proxy::Config {
        node_name: agent.node_name.clone(),
        metrics: proxy_metrics,
        ..berth_proxy::Config::default()
    };
    let mut dns = berth_dns::Config {
        listen: vec![std::net::SocketAddr::from(([0, 0, 0, 0], 53))],
        metrics: dns_metrics,
        ..berth_dns::Config::default()
    };
    dns.allow_recursion.extend([
        ipnet::IpNet::V4(agent.pod_cidr),
        ipnet::IpNet::V4(ipnet::Ipv4Net::from(agent.node_ip)),
    ]);
    // The DNS endpoint is the bridge's own address: a reply to a pod then leaves from the
    // address the query was DNATed to (a server on 0.0.0.0 answers UDP from the address of
    // the route back, so with the node's other address conntrack would not undo the DNAT).
    let gateway = std::net::Ipv4Addr::from(u32::from(agent.pod_cidr.network()).saturating_add(1));
    let cluster_dns = args.agent.cluster_dns;
    let publish_client = client.clone();
    vec![
        tokio::spawn(
            {
                let (client, shutdown) = (client.clone(), shutdown.clone());
                async move {
                    if let Err(e) = berth_proxy::run(proxy, client, shutdown).await {
                        tracing::error!(error = %anyhow::Error::from(e), "the service proxy stopped");
                    }
                }
            }
            .instrument(tracing::info_span!("proxy")),
        ),
        tokio::spawn(
            {
                let (client, shutdown) = (client.clone(), shutdown.clone());
                async move {
                    if let Err(e) = berth_dns::run(dns, client, shutdown).await {
                        tracing::error!(error = %anyhow::Error::from(e), "the cluster DNS stopped");
                    }
                }
            }
            .instrument(tracing::info_span!("dns")),
        ),
        tokio::spawn(
            async move {
                if let Err(e) =
                    berth_dns::publish::publish_service(publish_client, cluster_dns, gateway).await
                {
                    tracing::error!(error = %anyhow::Error::from(e), "kube-dns Service");
                }
            }
            .instrument(tracing::info_span!("dns")),
        ),
    ]
}

/// The agent's configuration from its flags; makes its state directory, DATA_DIR/agent.
fn agent_config(
    node_name: String,
    args: &AgentArgs,
    data_dir: &std::path::Path,
    client_ca: String,
) -> anyhow::Result<berth_agent::Config> {
    let config = berth_agent::Config {
        node_name,
        pod_cidr: args.pod_cidr,
        state_dir: data_dir.join("agent"),
        self_exe: std::env::current_exe().context("finding the berth binary")?,
        cluster_dns: args.cluster_dns.to_string(),
        node_ip: args
            .node_ip
            .unwrap_or_else(|| berth_agent::detect_ip("berth0")),
        kubelet_port: args.kubelet_port,
        client_ca,
    };
    berth_apiserver::files::private_dir(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    Ok(config)
}

/// This machine's host name as a node name: lowercased, as the kubelet does.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name from /proc/sys/kernel/hostname (or pass --node)")?;
    let name = name.trim().to_lowercase();
    anyhow::ensure!(!name.is_empty(), "the host name is empty; pass --node");
    Ok(name)
}

/// `berth agent`: the node agent alone, against whatever API server the kubeconfig names.
/// SIGTERM or SIGINT stops its pods before it exits.
async fn agent(args: AgentCmdArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let node = match &args.node {
        Some(n) => n.clone(),
        None => host_name()?,
    };
    let kube_config = standalone_kube_config(args.kubeconfig.as_deref()).await?;
    // The API server's client certificates are signed by the CA the kubeconfig trusts.
    let ca = kube_config
        .root_cert
        .iter()
        .flatten()
        .map(|der| pem("CERTIFICATE", der))
        .collect::<String>();
    anyhow::ensure!(
        !ca.is_empty(),
        "the kubeconfig names no certificate authority; the agent needs it to check the API server's client certificate"
    );
    let client = kube::Client::try_from(kube_config).context("building the API client")?;
    let config = agent_config(node, &args.agent, &args.data_dir, ca)?;
    println!(
        "berth: agent for node {} started (pod CIDR {}, state in {})",
        config.node_name,
        config.pod_cidr,
        config.state_dir.display()
    );
    berth_agent::run(client, config, shutdown)
        .instrument(tracing::info_span!("agent"))
        .await
        .context("node agent")
}

/// The API client settings of a component run on its own: from `--kubeconfig`, or found as
/// kubectl finds them.
async fn standalone_kube_config(path: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    match path {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using {}", path.display()))
        }
        None => kube::Config::infer().await.context(
            "finding a kubeconfig ($KUBECONFIG, ~/.kube/config, in-cluster); or pass --kubeconfig",
        ),
    }
}

async fn standalone_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(standalone_kube_config(path).await?).context("building the API client")
}

/// `berth proxy`: the service proxy alone. The table stays when it stops, so traffic keeps
/// flowing while it restarts; `--cleanup` removes it.
async fn proxy(args: ProxyCmdArgs) -> anyhow::Result<()> {
    if args.cleanup {
        let removed = berth_proxy::cleanup().context("removing the nftables table ip berth")?;
        println!(
            "berth: {}",
            if removed {
                "removed the nftables table ip berth"
            } else {
                "no nftables table ip berth to remove"
            }
        );
        let routes = berth_proxy::cleanup_routes()
            .await
            .context("removing the LoadBalancer IP routes")?;
        println!("berth: removed {routes} LoadBalancer/external IP routes");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let node_name = match &args.node {
        Some(n) => n.clone(),
        None => host_name()?,
    };
    let client = standalone_client(args.kube.kubeconfig.as_deref()).await?;
    println!("berth: service proxy for node {node_name} started (nftables table ip berth)");
    let config = berth_proxy::Config {
        node_name,
        ..berth_proxy::Config::default()
    };
    berth_proxy::run(config, client, shutdown)
        .instrument(tracing::info_span!("proxy"))
        .await
        .context("service proxy")
}

/// `berth dns`: the cluster DNS server alone.
async fn dns(args: DnsCmdArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let client = standalone_client(args.kube.kubeconfig.as_deref()).await?;
    let mut config = berth_dns::Config {
        listen: args.listen.clone(),
        domain: args.cluster_domain.clone(),
        ..berth_dns::Config::default()
    };
    if !args.upstream.is_empty() {
        config.upstream = args.upstream.clone();
    }
    config
        .allow_recursion
        .extend(args.allow_recursion.iter().map(|n| ipnet::IpNet::V4(*n)));
    println!(
        "berth: cluster DNS for {} on {}",
        config.domain,
        listen_list(&config.listen)
    );
    berth_dns::run(config, client, shutdown)
        .instrument(tracing::info_span!("dns"))
        .await
        .context("cluster DNS")
}

fn listen_list(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// DER as PEM.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
