//! The `berth` binary: parses the command line, sets up logging and the runtime, wires the
//! components together and prints the lines a person needs (kubeconfig path, readiness).

mod cli;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use berth::{cancel_on_signal, say_when_synced, standalone_client, standalone_kube_config};
use berth_store::Store;
use clap::Parser;
use cli::{
    AgentArgs, AgentCmdArgs, CleanupArgs, Cli, Cmd, IngressCmdArgs, NetpolCmdArgs, NodeMode,
    ProxyCmdArgs, ServerArgs, StoreUrl,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

fn main() -> std::process::ExitCode {
    let started = Instant::now();
    // The shim comes first, before the subscriber and the parser: it is on every container
    // start's path (`berth container-shim --state F --exit F -- COMMAND...`).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("container-shim") {
        return berth_agent::shim::main_for(&argv[2..]);
    }
    berth::init_logging();
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
    if let Cmd::Image(cmd) = &cli.cmd {
        return report(image(cmd));
    }
    let runtime = if let Cmd::Dns(_) = &cli.cmd {
        berth::dns_runtime()
    } else {
        if let Cmd::Server(_) = &cli.cmd {
            berth::tune_malloc(1024 * 1024, false);
            berth::pages::trim_heap_after_bursts();
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
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
            Cmd::Dns(args) => berth::dns(args).await,
            Cmd::Netpol(args) => netpol(args).await,
            Cmd::Cleanup(args) => cleanup(args).await,
            Cmd::Ingress(args) => ingress(args).await,
            Cmd::Workload { .. }
            | Cmd::ContainerInit { .. }
            | Cmd::ContainerShim { .. }
            | Cmd::Image(_) => Ok(()),
        }
    });
    report(result)
}

fn report(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `berth image import|ls|rm`: no runtime needed, the store is files under a lock.
fn image(cmd: &cli::ImageCmd) -> anyhow::Result<()> {
    use cli::ImageCmd;
    let open = |args: &cli::ImageStoreArgs| {
        berth_image::Store::open(&args.data_dir)
            .with_context(|| format!("opening the image store in {}", args.data_dir.display()))
    };
    match cmd {
        ImageCmd::Import { file, store } => {
            let store = open(store)?;
            let started = Instant::now();
            let imported = if file.as_os_str() == "-" {
                berth_image::import(&store, std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(file)
                    .with_context(|| format!("opening {}", file.display()))?;
                berth_image::import(&store, std::io::BufReader::new(f))
            }
            .with_context(|| format!("importing {}", file.display()))?;
            for i in &imported {
                println!("imported {} ({})", i.reference, i.digest);
            }
            println!(
                "{} image(s) in {} ms",
                imported.len(),
                started.elapsed().as_millis()
            );
        }
        ImageCmd::Ls { store } => {
            let images = open(store)?.list().context("listing the images")?;
            println!("{:<60} {:<20} {:>10}", "REF", "DIGEST", "SIZE");
            for i in images {
                println!(
                    "{:<60} {:<20} {:>10}",
                    i.reference,
                    i.digest.get(..19).unwrap_or(&i.digest),
                    human_size(i.size())
                );
            }
        }
        ImageCmd::Pull {
            reference,
            registry,
            store,
        } => {
            let store = open(store)?;
            let pulled = registry_call(registry, |auth, options| async move {
                berth_image::pull::pull(&store, reference, &auth, &options).await
            })
            .with_context(|| format!("pulling {reference}"))?;
            println!("{}: resolved to {}", pulled.reference, pulled.digest);
            println!(
                "fetched {} blob(s), {}, in {} ms; image size {}",
                pulled.fetched,
                human_size(pulled.fetched_bytes),
                pulled.elapsed.as_millis(),
                human_size(pulled.size)
            );
            println!("Image is up to date for {}", pulled.config);
        }
        ImageCmd::Push {
            reference,
            registry,
            store,
        } => {
            let store = open(store)?;
            let digest = registry_call(registry, |auth, options| async move {
                berth_image::pull::push(&store, reference, &auth, &options).await
            })
            .with_context(|| format!("pushing {reference}"))?;
            println!("pushed {reference} ({digest})");
        }
        ImageCmd::Rm { references, store } => {
            let store = open(store)?;
            for r in references {
                for gone in store.remove(r).with_context(|| format!("removing {r}"))? {
                    println!("removed {gone}");
                }
            }
        }
    }
    Ok(())
}

/// Runs one registry operation on a runtime of its own, with the flags' credentials and
/// insecure registries.
fn registry_call<T, F>(
    args: &cli::RegistryArgs,
    call: impl FnOnce(berth_image::pull::Auth, berth_image::pull::Options) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = berth_image::Result<T>>,
{
    let auth = match args.creds.as_deref() {
        None => berth_image::pull::Auth::Anonymous,
        Some(c) => {
            let (user, password) = c.split_once(':').unwrap_or((c, ""));
            berth_image::pull::Auth::Basic(user.to_owned(), password.to_owned())
        }
    };
    let options = berth_image::pull::Options {
        insecure: args.insecure_registry.clone(),
        timeout: Some(std::time::Duration::from_secs(30)),
        extra_roots: berth_image::pull::read_roots(&args.registry_ca)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(call(auth, options))?)
}

/// `1.2 MiB`, as crictl prints sizes.
fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
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

/// The User-Agents of berth's own clients, named after the upstream component whose job
/// they do: the API server records writes under the User-Agent's first word when no
/// fieldManager is given, so managedFields name them as a cluster would.
const CONTROLLERS_AGENT: &str = concat!(
    "kube-controller-manager/v",
    env!("CARGO_PKG_VERSION"),
    " berth"
);
const NODE_AGENT: &str = concat!("kubelet/v", env!("CARGO_PKG_VERSION"), " berth");

/// A client for the API server just started, as any component of berth would build one;
/// `url` replaces the kubeconfig's server address (the node reaches it over its link).
async fn kube_client(
    kubeconfig: &std::path::Path,
    url: Option<&str>,
    agent: &'static str,
) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(kube_config(kubeconfig, url, agent).await?)
        .context("building the API client")
}

/// The settings [`kube_client`] builds its client from, for a client made on another runtime.
async fn kube_config(
    kubeconfig: &std::path::Path,
    url: Option<&str>,
    agent: &'static str,
) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("using {}", kubeconfig.display()))?;
    if let Some(url) = url {
        config.cluster_url = url
            .parse()
            .with_context(|| format!("the API address {url}"))?;
    }
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(agent),
    ));
    Ok(config)
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn server(args: ServerArgs, started: Instant) -> anyhow::Result<()> {
    berth_apiserver::files::private_dir(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let _lock = lock_data_dir(&args.data_dir)?;
    let node_net = match args.node_mode() {
        NodeMode::Own(netns) => {
            let plan = node_plan(&args, netns);
            let net = berth_host::NodeNet::create(plan.clone())
                .await
                .with_context(|| {
                    format!(
                        "making the node's network namespace {} (or run without a node: --no-node)",
                        plan.netns
                    )
                })?;
            println!(
                "berth: node namespace {} at {} (this machine is {} on link {})",
                plan.netns,
                plan.node_ip(),
                plan.host_ip(),
                plan.host_link()
            );
            if !plan.routes.is_empty() {
                let routes: Vec<String> = plan.routes.iter().map(ToString::to_string).collect();
                println!("berth: routes to {} via the node", routes.join(", "));
            }
            Some(net)
        }
        NodeMode::Current | NodeMode::None => None,
    };
    let result = serve(&args, started, node_net.as_ref()).await;
    if let Some(net) = node_net.as_ref()
        && args.agent.keep_pods_on_exit
    {
        // The pods left running are on the node's bridge: the next start takes the node on.
        println!(
            "berth: left the node's namespace {} for the pods kept running",
            net.plan().netns
        );
    } else if let Some(net) = node_net {
        let netns = net.plan().netns.clone();
        match net.remove().await {
            Ok(()) => tracing::info!(
                netns,
                "removed the node's namespace, link, routes and tables"
            ),
            Err(e) => eprintln!(
                "berth: removing the node's namespace {netns}: {:#} (run `berth cleanup`)",
                anyhow::Error::from(e)
            ),
        }
    }
    result
}

/// The node's namespace, link and host routes from the flags.
fn node_plan(args: &ServerArgs, netns: String) -> berth_host::Plan {
    let mut routes = Vec::new();
    if args.host_routes {
        routes.push(args.service_cluster_ip_range);
        routes.push(args.agent.pod_cidr);
        for r in args.lb_pool() {
            routes.extend(ipnet::Ipv4Subnets::new(r.first(), r.last(), 0));
        }
    }
    berth_host::Plan {
        netns,
        link: args.node_link,
        pod_cidr: args.agent.pod_cidr,
        routes,
    }
}

/// Holds DATA_DIR/lock for as long as this server runs, so a second server on the same data
/// directory says so instead of sharing the store.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::Write as _;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            write!(lock, "{}", std::process::id())?;
            Ok(lock)
        }
        Err((_, _)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another berth server (pid {}) is running with data directory {}; stop it first, or pass another --data-dir",
                pid.trim(),
                dir.display()
            )
        }
    }
}

/// Under `sudo`, hands the kubeconfig copy to the user who ran sudo, so their kubectl can read
/// it (it stays 0600).
fn give_to_sudo_user(path: &std::path::Path) {
    let id = |var| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        let owner = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        if let Err(e) = nix::unistd::chown(path, owner.0, owner.1) {
            tracing::warn!(path = %path.display(), error = %e, "giving the kubeconfig to the sudo user");
        }
    }
}

/// The readiness of each part, as `/readyz` lists them.
struct Readiness {
    controllers: Arc<tokio::sync::SetOnce<()>>,
    node: Option<[Arc<tokio::sync::SetOnce<()>>; 5]>,
}

impl Readiness {
    fn checks(&self) -> Vec<(String, Arc<tokio::sync::SetOnce<()>>)> {
        let mut out = vec![("controllers".to_owned(), self.controllers.clone())];
        if let Some(parts) = &self.node {
            for (name, s) in ["node-agent", "proxy", "dns", "ingress", "netpol"]
                .iter()
                .zip(parts)
            {
                out.push(((*name).to_owned(), s.clone()));
            }
        }
        out
    }

    /// Waits until every part has synced, saying which ones it still waits for now and then.
    async fn wait(&self) {
        loop {
            let pending: Vec<String> = self
                .checks()
                .into_iter()
                .filter(|(_, s)| !s.initialized())
                .map(|(n, _)| n)
                .collect();
            let Some(first) = self.checks().into_iter().find(|(_, s)| !s.initialized()) else {
                return;
            };
            if tokio::time::timeout(std::time::Duration::from_secs(10), first.1.wait())
                .await
                .is_err()
            {
                eprintln!("berth: still waiting for: {}", pending.join(", "));
            }
        }
    }
}

/// The cluster on top of a node namespace made (or not) by [`server`].
async fn serve(
    args: &ServerArgs,
    started: Instant,
    node_net: Option<&berth_host::NodeNet>,
) -> anyhow::Result<()> {
    let store = open_store(args).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mode = args.node_mode();
    let readiness = Readiness {
        controllers: Default::default(),
        node: (mode != NodeMode::None).then(Default::default),
    };
    let mut config = berth_apiserver::Config::from(args);
    config.readiness = readiness.checks();
    if let Some(net) = node_net {
        // The node and its pods reach the API server over the link.
        let host_ip = std::net::IpAddr::V4(net.plan().host_ip());
        config.advertise_address = Some(host_ip);
        config.also_listen.push(host_ip);
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = berth_apiserver::Metrics::register(&mut registry);
    // The node's proxy and DNS report under kube-proxy's and CoreDNS's names at /metrics.
    let node_metrics = (mode != NodeMode::None).then(|| {
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
        give_to_sudo_user(extra);
    }
    // The controllers run beside the API server: their client calls it in-process.
    let client = kube::Client::new(
        l.loopback.clone().with_user_agent(CONTROLLERS_AGENT),
        "default",
    );
    let ca = std::fs::read_to_string(args.data_dir.join("pki/ca.crt"))
        .context("reading the cluster CA")?;
    let controllers_config = berth_controllers::Config {
        root_ca: Some(ca.clone()),
        synced: readiness.controllers.clone(),
        ..berth_controllers::Config::from(args)
    };
    let controllers = tokio::spawn(
        berth_controllers::run(client, controllers_config, shutdown.clone())
            .instrument(tracing::info_span!("controllers")),
    );
    let node = match (&readiness.node, node_metrics) {
        (Some(synced), Some((proxy_metrics, dns_metrics))) => {
            let node_name = match &args.node {
                Some(n) => n.clone(),
                None => host_name()?,
            };
            let mut agent = agent_config(node_name, &args.agent, &args.data_dir, ca)?;
            agent.synced = synced[0].clone();
            let mut parts = NodeParts {
                agent,
                proxy_metrics,
                dns_metrics,
                proxy_synced: synced[1].clone(),
                dns_synced: synced[2].clone(),
                ingress_synced: synced[3].clone(),
                ingress_ip: args.lb_pool().last().map(|r| r.last()),
                netpol_synced: synced[4].clone(),
                cluster_dns: args.agent.cluster_dns,
                extra_recursion: Vec::new(),
            };
            Some(match node_net {
                Some(net) => {
                    parts.agent.node_ip = net.plan().node_ip();
                    parts
                        .extra_recursion
                        .push(ipnet::IpNet::V4(net.plan().link));
                    let url = format!("https://{}:{}", net.plan().host_ip(), l.addr.port());
                    let config = kube_config(&l.kubeconfig, Some(&url), NODE_AGENT).await?;
                    spawn_node_in(net, parts, config, shutdown.clone())?
                }
                None => {
                    let client = kube_client(&l.kubeconfig, None, NODE_AGENT).await?;
                    tokio::spawn(run_node(parts, client, shutdown.clone()))
                }
            })
        }
        _ => None,
    };
    let mut node = node;
    let early = tokio::select! {
        () = readiness.wait() => None,
        _ = shutdown.cancelled() => None,
        r = async {
            match node.as_mut() {
                Some(h) => h.await,
                None => std::future::pending().await,
            }
        } => Some(r),
    };
    if let Some(r) = early {
        // The node stopped before it was ready (it could not enter its namespace, the
        // agent failed): nothing will become ready, so stop with its error.
        shutdown.cancel();
        let _ = api.await;
        r.context("node task")?
            .context("the node stopped before it was ready")?;
        anyhow::bail!("the node stopped before it was ready");
    }
    if !shutdown.is_cancelled() {
        let kubeconfig = args.kubeconfig.as_ref().unwrap_or(&l.kubeconfig);
        println!("berth: kubeconfig written to {}", kubeconfig.display());
        println!(
            "berth: use it with: export KUBECONFIG={}",
            std::path::absolute(kubeconfig)
                .unwrap_or_else(|_| kubeconfig.clone())
                .display()
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
        berth::unmap_start_up_pages();
    }
    tokio::select! {
        r = controllers => {
            r.context("controllers task")?.context("controllers")?;
            shutdown.cancel();
        }
        _ = shutdown.cancelled() => {}
    }
    // The agent stops its pods before the API server goes away.
    if let Some(node) = node {
        node.await.context("node task")?.context("node agent")?;
    }
    api.await
        .context("API server task")?
        .context("API server")?;
    Ok(())
}

/// What the node's agent, proxy and DNS are given.
struct NodeParts {
    agent: berth_agent::Config,
    proxy_metrics: berth_proxy::Metrics,
    dns_metrics: berth_dns::metrics::Metrics,
    proxy_synced: Arc<tokio::sync::SetOnce<()>>,
    dns_synced: Arc<tokio::sync::SetOnce<()>>,
    ingress_synced: Arc<tokio::sync::SetOnce<()>>,
    /// The pool's last address, for `kube-system/berth-ingress`.
    ingress_ip: Option<std::net::Ipv4Addr>,
    netpol_synced: Arc<tokio::sync::SetOnce<()>>,
    cluster_dns: std::net::Ipv4Addr,
    /// Clients besides pods and the node that may have outside names resolved.
    extra_recursion: Vec<ipnet::IpNet>,
}

/// Runs the node on a thread of its own that enters the node's namespace first: its tokio
/// runtime's threads start there too, so every socket the agent, proxy and DNS open (netlink
/// included) and every process they start belong to the node. Finishes when they have
/// stopped (the agent's pods with them).
fn spawn_node_in(
    net: &berth_host::NodeNet,
    parts: NodeParts,
    config: kube::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    net.spawn_inside(
        std::thread::Builder::new().name("berth-node".into()),
        move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .thread_name("berth-node")
                .enable_all()
                .build()
                .context("starting the node's runtime")
                .and_then(|rt| {
                    // Built here, so its connections and tasks live in the node too.
                    rt.block_on(async {
                        let client =
                            kube::Client::try_from(config).context("building the API client")?;
                        run_node(parts, client, shutdown).await
                    })
                });
            let _ = tx.send(result);
        },
    )
    .context("starting the node's thread")?;
    Ok(tokio::spawn(async move {
        rx.await
            .context("the node's thread ended without a result")?
    }))
}

/// The node agent, service proxy, cluster DNS and ingress controller, and the
/// `kube-system/kube-dns` Service (at
/// `--cluster-dns`) in front of the DNS server, which answers on the pod bridge's address.
/// A part that fails logs why; the rest of the node goes on. Returns the agent's result once
/// all have stopped.
async fn run_node(
    parts: NodeParts,
    client: kube::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let agent = &parts.agent;
    let proxy = berth_proxy::Config {
        node_name: agent.node_name.clone(),
        metrics: parts.proxy_metrics,
        synced: parts.proxy_synced,
        ..berth_proxy::Config::default()
    };
    // The DNS server answers on the bridge's own address, the kube-dns endpoint: a UDP reply
    // then leaves from the address the query was DNATed to, so conntrack undoes the DNAT (a
    // server on 0.0.0.0 would answer from the address of the route back). Loopback is for
    // the node itself.
    let gateway = std::net::Ipv4Addr::from(u32::from(agent.pod_cidr.network()).saturating_add(1));
    // UDP queries to the kube-dns address skip conntrack and the proxy: the node holds the
    // address and the DNS server answers on it (berth_host::dns).
    let mut listen = vec![
        std::net::SocketAddr::from((gateway, 53)),
        std::net::SocketAddr::from(([127, 0, 0, 1], 53)),
    ];
    match berth_host::dns::local_dns(parts.cluster_dns).await {
        Ok(()) => listen.push(std::net::SocketAddr::from((parts.cluster_dns, 53))),
        Err(e) => tracing::warn!(
            error = %anyhow::Error::from(e),
            "DNS queries will go through conntrack and the Service's DNAT"
        ),
    }
    let mut dns = berth_dns::Config {
        listen,
        metrics: parts.dns_metrics,
        synced: parts.dns_synced,
        ..berth_dns::Config::default()
    };
    dns.allow_recursion.extend([
        ipnet::IpNet::V4(agent.pod_cidr),
        ipnet::IpNet::V4(ipnet::Ipv4Net::from(agent.node_ip)),
    ]);
    dns.allow_recursion.extend(parts.extra_recursion);
    let ingress = berth_ingress::Config {
        node_ip: agent.node_ip,
        load_balancer_ip: parts.ingress_ip,
        synced: parts.ingress_synced,
        ..berth_ingress::Config::default()
    };
    // Policies see the DNS as the kube-dns pod it stands for, at the addresses it answers on
    // for pods: the kube-dns ClusterIP the node holds, and the bridge's (what it is DNATed to
    // when the node could not take the ClusterIP, and for TCP).
    let netpol = berth_netpol::Config {
        node_name: Some(agent.node_name.clone()),
        node_pods: vec![
            berth_netpol::PodView::cluster_dns(parts.cluster_dns),
            berth_netpol::PodView::cluster_dns(gateway),
        ],
        synced: parts.netpol_synced,
        ..berth_netpol::Config::default()
    };
    let mut agent_config = parts.agent.clone();
    agent_config.network_gate =
        berth_agent::NetworkGate(Some(Arc::new(PolicyGate(netpol.programmed.clone()))));
    let tasks = [
        spawn_part(
            tracing::info_span!("ingress"),
            "the ingress controller stopped",
            berth_ingress::run(ingress, client.clone(), shutdown.clone()),
        ),
        spawn_part(
            tracing::info_span!("proxy"),
            "the service proxy stopped",
            berth_proxy::run(proxy, client.clone(), shutdown.clone()),
        ),
        spawn_part(
            tracing::info_span!("dns"),
            "the cluster DNS stopped",
            berth_dns::run(dns, client.clone(), shutdown.clone()),
        ),
        spawn_part(
            tracing::info_span!("netpol"),
            "the NetworkPolicy enforcer stopped",
            berth_netpol::run(netpol, client.clone(), shutdown.clone()),
        ),
        spawn_part(
            tracing::info_span!("dns"),
            "kube-dns Service",
            berth_dns::publish::publish_service(client.clone(), parts.cluster_dns, gateway),
        ),
    ];
    let parts_cluster_dns = parts.cluster_dns;
    let result = berth_agent::run(client, agent_config, shutdown.clone())
        .instrument(tracing::info_span!("agent"))
        .await;
    // The agent stops only on shutdown (or failing); the others follow the same token.
    if result.is_err() {
        tracing::error!("the node agent stopped; pods on this node no longer run");
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Err(e) = berth_host::dns::remove_local_dns(parts_cluster_dns).await {
        tracing::warn!(error = %anyhow::Error::from(e), "removing the DNS address");
    }
    result.context("node agent")
}

/// Runs one part of the node in its own task and span; a failure is logged as `what`, and the
/// rest of the node goes on.
fn spawn_part<E>(
    span: tracing::Span,
    what: &'static str,
    part: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::spawn(
        async move {
            if let Err(e) = part.await {
                tracing::error!(error = %anyhow::Error::from(e), "{what}");
            }
        }
        .instrument(span),
    )
}

/// The node's NetworkPolicy enforcer as the agent's gate for new pods.
struct PolicyGate(berth_netpol::Programmed);

impl berth_agent::PodNetworkGate for PolicyGate {
    fn applies(&self, namespace: &str) -> bool {
        self.0.isolating(namespace)
    }

    fn ready<'a>(
        &'a self,
        uid: &'a str,
        ip: std::net::Ipv4Addr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.0.programmed(uid, ip))
    }
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
        hide: vec![std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf())],
        cluster_dns: args.cluster_dns.to_string(),
        node_ip: args
            .node_ip
            .unwrap_or_else(|| berth_agent::detect_ip("berth0")),
        kubelet_port: args.kubelet_port,
        client_ca,
        synced: Default::default(),
        network_gate: berth_agent::NetworkGate::default(),
        registries: berth_image::pull::Options {
            insecure: args.insecure_registry.clone(),
            timeout: None,
            extra_roots: berth_image::pull::read_roots(&args.registry_ca)?,
        },
        keep_pods_on_exit: args.keep_pods_on_exit,
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
    say_when_synced("service proxy", &config.synced);
    berth_proxy::run(config, client, shutdown)
        .instrument(tracing::info_span!("proxy"))
        .await
        .context("service proxy")
}

/// `berth netpol`: the NetworkPolicy enforcer alone. The table stays when it stops (the
/// policies stay enforced); `--cleanup` removes it.
async fn netpol(args: NetpolCmdArgs) -> anyhow::Result<()> {
    if args.cleanup {
        let removed =
            berth_netpol::cleanup().context("removing the nftables table ip berth-netpol")?;
        let what = if removed { "removed" } else { "no" };
        println!("berth: {what} nftables table ip berth-netpol");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let node_name = match &args.node {
        Some(n) => n.clone(),
        None => host_name()?,
    };
    let client = standalone_client(args.kube.kubeconfig.as_deref()).await?;
    println!(
        "berth: NetworkPolicy enforcer for node {node_name} started (nftables table ip berth-netpol)"
    );
    let config = berth_netpol::Config {
        node_name: Some(node_name),
        ..berth_netpol::Config::default()
    };
    berth_netpol::run(config, client, shutdown)
        .instrument(tracing::info_span!("netpol"))
        .await
        .context("NetworkPolicy enforcer")
}

/// `berth cleanup`: removes what a killed `berth server` left: the pods' namespaces (named
/// in the agent's state), then the node's namespace, link, routes and host table.
async fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let state_dir = args.data_dir.join("agent");
    let mut pods = 0;
    if state_dir.exists() {
        let containers = berth_agent::oci::remove_containers(&state_dir);
        if containers > 0 {
            println!("berth: removed {containers} image container(s)");
        }
        let ipam = berth_agent::sandbox::Ipam::open(&state_dir, args.pod_cidr)
            .with_context(|| format!("reading the agent's state in {}", state_dir.display()))?;
        for (uid, _) in ipam.allocations() {
            let there = berth_agent::sandbox::SandboxNames::for_uid(uid)
                .is_ok_and(|n| berth_agent::sandbox::netns_exists(&n.netns));
            if there
                && berth_agent::sandbox::Sandbox::destroy_pod(uid)
                    .await
                    .is_ok()
            {
                pods += 1;
            }
        }
    }
    println!("berth: removed the sandboxes of {pods} pod(s)");
    let plan = berth_host::Plan {
        netns: args.node_netns,
        link: args.node_link,
        pod_cidr: args.pod_cidr,
        routes: Vec::new(),
    };
    let removed = berth_host::cleanup(&plan)
        .await
        .context("removing the node's namespace, link, routes and table")?;
    if removed.is_empty() {
        println!(
            "berth: nothing else to remove for node namespace {}",
            plan.netns
        );
    }
    for r in removed {
        println!("berth: removed {r}");
    }
    Ok(())
}

/// `berth ingress`: the Ingress controller alone.
async fn ingress(args: IngressCmdArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let client = standalone_client(args.kube.kubeconfig.as_deref()).await?;
    println!(
        "berth: ingress controller on {} and {} (class berth)",
        args.http, args.https
    );
    let config = berth_ingress::Config {
        http: args.http,
        https: args.https,
        node_ip: args.node_ip,
        ..berth_ingress::Config::default()
    };
    berth_ingress::run(config, client, shutdown)
        .instrument(tracing::info_span!("ingress"))
        .await
        .context("ingress controller")
}

/// `berth dns`: the cluster DNS server alone.
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
