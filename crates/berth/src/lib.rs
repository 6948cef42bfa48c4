//! What berth's two programs share: how a component run on its own reaches the API server,
//! stops on a signal and logs, glibc's malloc settings, and the cluster DNS's flags and
//! start-up. `berth` is the multi-call binary; `berth-dns` is `berth dns` alone, for a small
//! footprint: the code it runs is packed in a third of the pages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod pages;

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

/// Once `synced` is set, drops the mappings of the process's start-up code and read-only
/// data, its program's and libraries' ([`pages`]): a part run alone then counts only the
/// pages it keeps using.
pub fn unmap_start_up_pages_when_synced(synced: &Arc<tokio::sync::SetOnce<()>>) {
    let synced = synced.clone();
    tokio::spawn(async move {
        synced.wait().await;
        unmap_start_up_pages();
    });
}

/// Drops the mappings of the process's code and read-only data now ([`pages`]).
pub fn unmap_start_up_pages() {
    match pages::unmap_clean_file_pages() {
        Ok(bytes) => tracing::info!(
            kib = bytes / 1024,
            "start-up code and read-only data unmapped (mapped back as used)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not unmap the program's start-up pages"),
    }
}

/// Addresses as `a, b, c`.
pub fn listen_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sets glibc's malloc up for a long-running server; call before any thread starts.
/// - `mmap_threshold`: blocks this large or larger get mappings of their own, returned to
///   the system when freed. glibc's default threshold rises to the largest block freed so
///   far (up to 32 MiB); from then on a LIST's megabytes of buffers are carved from the heap
///   and stay there as holes between long-lived blocks (10 LISTs of 10,000 Services grew
///   the API server by 25 MB; with 1 MiB fixed, by 2 MB).
/// - `one_arena`: one malloc arena for the whole process instead of one per thread, each of
///   which keeps the pages freed in it (~5 MB for the DNS at 10,000 Services). For
///   processes whose threads allocate little on their hot path.
///
/// No crate wraps `mallopt` (`libc` declares it); elsewhere than glibc this does nothing.
#[allow(unsafe_code)]
pub fn tune_malloc(mmap_threshold: i32, one_arena: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc tunables; it takes no pointers.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, mmap_threshold);
        if one_arena {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap_threshold, one_arena);
}

/// The runtime of the DNS run alone: its UDP threads answer; the runtime only watches,
/// forwards and serves TCP, so two workers do. One malloc arena, and blocks from 64 KiB up
/// mapped alone: a list's page buffers would otherwise leave holes between the zone's small
/// long-lived blocks (~1.4 MB at 10,000 Services).
pub fn dns_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_malloc(64 * 1024, true);
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
    unmap_start_up_pages_when_synced(&config.synced);
    berth_dns::run(config, client, shutdown)
        .instrument(tracing::info_span!("dns"))
        .await
        .context("cluster DNS")
}
