//! What berth's two programs share: how a component run on its own reaches the API server,
//! stops on a signal, logs, and the cluster DNS's flags and start-up. `berth` is the
//! multi-call binary; `berth-dns` is `berth dns` alone, a small program for a small
//! footprint (a DNS server's pages are most of its RSS, issue 13).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where a standalone component finds the API server.
#[derive(Debug, Args)]
pub struct KubeconfigArg {
    /// The kubeconfig to reach the API server with. Default: as kubectl finds one ($KUBECONFIG,
    /// then ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// The flags of `berth dns` and `berth-dns`.
#[derive(Debug, Args)]
pub struct DnsCmdArgs {
    #[command(flatten)]
    pub kube: KubeconfigArg,

    /// Addresses to answer on, over UDP and TCP; repeat or comma-separate.
    #[arg(long, value_delimiter = ',', default_value = "0.0.0.0:53")]
    pub listen: Vec<SocketAddr>,

    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Resolvers for names outside the cluster domain (IP or IP:PORT); repeat or
    /// comma-separate. Default: the nameservers of /etc/resolv.conf.
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,

    /// Clients allowed to have names outside the cluster domain resolved (CIDRs, e.g. the pod
    /// and node ranges); everyone else gets REFUSED for them. Loopback is always allowed.
    #[arg(long, value_delimiter = ',')]
    pub allow_recursion: Vec<Ipv4Net>,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("expected IP or IP:PORT, got `{s}`"))
}

/// Logs to standard error at `RUST_LOG`'s levels (default `info`), in colour only for a
/// person at a terminal, not in files or `kubectl logs`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
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

/// The API client settings of a component run on its own: from `--kubeconfig`, or found as
/// kubectl finds them.
pub async fn standalone_kube_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<kube::Config> {
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

/// The API client of a component run on its own (see [`standalone_kube_config`]).
pub async fn standalone_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(standalone_kube_config(path).await?).context("building the API client")
}

/// Prints "berth: WHAT synced" once a component run alone has its first full state in (the
/// line scripts wait for, as `berth server`'s "ready").
pub fn say_when_synced(what: &'static str, synced: &Arc<tokio::sync::SetOnce<()>>) {
    let synced = synced.clone();
    tokio::spawn(async move {
        synced.wait().await;
        println!("berth: {what} synced");
    });
}

/// Addresses as `a, b, c`.
pub fn listen_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runtime of the DNS run alone: its UDP threads answer; the runtime only watches,
/// forwards and serves TCP, so two workers do, and one malloc arena keeps its RSS small.
pub fn dns_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    berth_dns::memory::one_arena();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// `berth dns` / `berth-dns`: the cluster DNS alone, against the API server the kubeconfig
/// names, until SIGINT or SIGTERM.
pub async fn dns(args: DnsCmdArgs) -> anyhow::Result<()> {
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
    say_when_synced("cluster DNS", &config.synced);
    berth_dns::run(config, client, shutdown)
        .instrument(tracing::info_span!("dns"))
        .await
        .context("cluster DNS")
}
