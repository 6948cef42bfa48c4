//! The single node's place on the host. `berth server` runs its node (agent, proxy, DNS) in
//! a network namespace of its own, `berth` by default, joined to the namespace berth was
//! started in (the host) by a veth pair: `eth0` in the node, `<netns>-host` on the host. The
//! host gets routes to the Service, pod and LoadBalancer ranges via the node (so the user's
//! shell reaches ClusterIPs, pod IPs and LB IPs, as with `minikube tunnel`), and traffic
//! from the node leaving the host is masqueraded in a table of berth's own, as is pod
//! traffic leaving the node (the bridge CNI plugin's `ipMasq`).
//!
//! [`NodeNet::create`] builds it all, or takes on the node an earlier berth left (so pods that
//! outlived it keep their network) and makes what is missing of it again; [`NodeNet::remove`]
//! takes it down, [`cleanup`] removes what a killed berth left. [`Plan`] is the pure part: names, addresses, overlap checks.

pub mod dns;
mod nat;
mod routes;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

pub use routes::{Overlap, overlaps};

/// The node's end of the veth, named as a machine's uplink usually is.
pub const NODE_LINK: &str = "eth0";
/// The routing protocol number that marks the host routes as berth's (`ip route` shows
/// `proto 203`); the proxy's LoadBalancer routes use 202.
pub const ROUTE_PROTOCOL: u8 = 203;
/// Where `ip netns add` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Where the PID of the berth that owns a node namespace is kept.
const PID_DIR: &str = "/run/berth";

/// What went wrong setting the node up or taking it down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run berth with sudo, or pass --no-node to run only the API server and controllers"
    )]
    NotRoot,
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("running `{command}` (is iproute2 installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node namespace {netns} belongs to a berth that is running (pid {pid}); stop it, or pick another --node-netns"
    )]
    InUse { netns: String, pid: u32 },
    #[error(transparent)]
    Overlap(#[from] Overlap),
    #[error("--node-link {0} must be an IPv4 network of at least 4 addresses (a /30 or larger)")]
    LinkTooSmall(Ipv4Net),
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {netns}")]
    Enter {
        netns: String,
        #[source]
        source: nix::Error,
    },
    #[error("opening a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("netlink: {op}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    NoLink(String),
    #[error("link {link} has address {found}, not {wanted} (--node-link changed)")]
    LinkChanged {
        link: String,
        found: String,
        wanted: String,
    },
    #[error("nftables: {op}")]
    Nft {
        op: String,
        #[source]
        source: berth_proxy::Error,
    },
    #[error("setting net.ipv4.ip_forward on the host")]
    Forward(#[source] std::io::Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the netns thread panicked")]
    Thread,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the node's link to the host looks like. Pure data: nothing is made until
/// [`NodeNet::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The node's network namespace (`/run/netns/NAME`).
    pub netns: String,
    /// The veth pair's network: the host takes its first address, the node the second.
    pub link: Ipv4Net,
    /// The node's pod CIDR: pod traffic leaving the node is masqueraded to the node's address.
    pub pod_cidr: Ipv4Net,
    /// Destinations the host routes via the node (Service CIDR, pod CIDR, LoadBalancer
    /// pool); empty for `--host-routes=false`.
    pub routes: Vec<Ipv4Net>,
}

impl Plan {
    /// The host's address on the link; the API server listens there for the node and pods.
    pub fn host_ip(&self) -> Ipv4Addr {
        nth(self.link, 1)
    }

    /// The node's address (its InternalIP).
    pub fn node_ip(&self) -> Ipv4Addr {
        nth(self.link, 2)
    }

    /// The host end of the veth: `<netns>-host`, or `bh-<hash>` when that is longer than a
    /// link name may be (15 bytes).
    pub fn host_link(&self) -> String {
        let plain = format!("{}-host", self.netns);
        if plain.len() <= 15 {
            return plain;
        }
        // FNV-1a: stable across runs and versions, so `berth cleanup` finds the same name.
        let hash = self.netns.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        format!("bh-{hash:08x}")
    }

    /// The nftables table berth keeps on the host (`ip <netns>-host`).
    pub fn host_table(&self) -> String {
        format!("{}-host", self.netns)
    }

    /// Checks the plan against the host's routes: the link and every routed range must
    /// overlap no route the host has (a VPN, Docker's bridge, the LAN); default routes and
    /// berth's own are fine.
    pub fn check(&self, host_routes: &[Ipv4Net]) -> Result<()> {
        if self.link.prefix_len() > 30 {
            return Err(Error::LinkTooSmall(self.link));
        }
        let mut wanted = vec![("--node-link", self.link)];
        wanted.extend(self.routes.iter().map(|r| ("a host route", *r)));
        overlaps(&wanted, host_routes)?;
        Ok(())
    }

    fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    fn pid_path(&self) -> PathBuf {
        Path::new(PID_DIR).join(format!("{}.pid", self.netns))
    }
}

fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(n))
}

/// The node's namespace and link, made by [`NodeNet::create`]. Dropping it changes nothing:
/// call [`NodeNet::remove`].
#[derive(Debug)]
pub struct NodeNet {
    plan: Plan,
    /// Held open so threads can enter the namespace even while it is being removed.
    ns: std::fs::File,
}

impl NodeNet {
    /// Makes the node: namespace (loopback up), veth pair with addresses, the node's default
    /// route via the host, host routes to `plan.routes`, the host's and the node's masquerade
    /// tables, and `net.ipv4.ip_forward=1` on the host (pods reach the outside through it).
    /// An earlier berth's node under the same name is taken on when its namespace and both
    /// ends of its link are there (pods left running on it keep their network), and removed
    /// first otherwise; not while that berth still runs. On failure, removes what it made.
    pub async fn create(plan: Plan) -> Result<NodeNet> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        if let Some(pid) = owner(&plan) {
            return Err(Error::InUse {
                netns: plan.netns.clone(),
                pid,
            });
        }
        let host = connect()?;
        let there = plan.netns_path().exists();
        let link = link_index(&host, &plan.host_link()).await?;
        if there && let Some(index) = link {
            // Pods that outlived an earlier berth (`--keep-pods-on-exit`) are on its bridge.
            match NodeNet::take_on(plan.clone(), &host, index).await {
                Ok(node) => {
                    tracing::info!(netns = %node.plan.netns, "took on the node namespace an earlier berth left");
                    return Ok(node);
                }
                Err(e) => {
                    tracing::info!(netns = %plan.netns, error = %e, "the node namespace an earlier berth left is not whole; making it afresh");
                }
            }
        }
        if there || link.is_some() {
            tracing::info!(netns = %plan.netns, "removing what an earlier berth left");
            cleanup(&plan).await?;
        }
        plan.check(&routes::foreign(&host).await?)?;
        ip(&["netns", "add", &plan.netns])?;
        let leftover = plan.clone();
        let made = async {
            let ns = std::fs::File::open(plan.netns_path()).map_err(|source| Error::Open {
                path: plan.netns_path(),
                source,
            })?;
            let node = NodeNet { plan, ns };
            write_pid(&node.plan)?;
            node.plumb(&host).await?;
            Ok::<_, Error>(node)
        };
        match made.await {
            Ok(node) => Ok(node),
            Err(e) => {
                let _ = cleanup(&leftover).await;
                Err(e)
            }
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Moves the calling thread into the node's namespace. Threads it starts afterwards
    /// (a tokio runtime's workers) start there too.
    pub fn enter(&self) -> Result<()> {
        nix::sched::setns(&self.ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
            Error::Enter {
                netns: self.plan.netns.clone(),
                source,
            }
        })
    }

    /// Starts a thread from `builder` that enters the node's namespace and then runs `work`;
    /// threads `work` starts (a tokio runtime's workers) are in the node too. If the thread
    /// cannot enter, it logs why and `work` does not run.
    pub fn spawn_inside(
        &self,
        builder: std::thread::Builder,
        work: impl FnOnce() + Send + 'static,
    ) -> Result<std::thread::JoinHandle<()>> {
        let ns = self.ns.try_clone().map_err(|source| Error::Open {
            path: self.plan.netns_path(),
            source,
        })?;
        let netns = self.plan.netns.clone();
        builder
            .spawn(
                move || match nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                    Ok(()) => work(),
                    Err(e) => {
                        tracing::error!(netns, error = %e, "cannot enter the node's namespace")
                    }
                },
            )
            .map_err(Error::Socket)
    }

    /// Takes the node down: the namespace (and with it the veth, whose host routes go with
    /// it), the host's table, the PID file. Pods' own namespaces are the agent's to remove.
    pub async fn remove(self) -> Result<()> {
        drop(self.ns);
        cleanup(&self.plan).await.map(drop)
    }

    /// The node an earlier berth made under this plan, whose namespace and host link (index
    /// `index`) are there: what else is missing (addresses, routes, tables) is made again,
    /// what is there is kept, so the pods on its bridge keep their network. Fails, changing
    /// nothing that was whole, when the node's end of the link is gone.
    async fn take_on(plan: Plan, host: &Handle, index: u32) -> Result<NodeNet> {
        let ns = std::fs::File::open(plan.netns_path()).map_err(|source| Error::Open {
            path: plan.netns_path(),
            source,
        })?;
        let node = NodeNet { plan, ns };
        node.in_node(|_| async move {
            let handle = connect()?;
            require_link(&handle, NODE_LINK).await.map(drop)
        })?;
        let p = &node.plan;
        let wanted = (std::net::IpAddr::from(p.host_ip()), p.link.prefix_len());
        if let Some(found) = addresses(host, index)
            .await?
            .into_iter()
            // IPv6 link-local addresses come by themselves.
            .find(|a| a.0.is_ipv4() && *a != wanted)
        {
            return Err(Error::LinkChanged {
                link: p.host_link(),
                found: format!("{}/{}", found.0, found.1),
                wanted: format!("{}/{}", wanted.0, wanted.1),
            });
        }
        node.configure(host, index).await?;
        let stale = routes::remove_stale(host, index, &node.plan.routes).await?;
        if stale > 0 {
            tracing::info!(
                routes = stale,
                "removed host routes an earlier berth made to ranges no longer routed"
            );
        }
        write_pid(&node.plan)?;
        Ok(node)
    }

    async fn plumb(&self, host: &Handle) -> Result<()> {
        let p = &self.plan;
        let host_link = p.host_link();
        // The node end is made inside the node namespace, already named eth0.
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(NODE_LINK)
            .setns_by_fd(self.ns.as_raw_fd())
            .build();
        host.link()
            .add(
                LinkVeth::new(&host_link, NODE_LINK)
                    .set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
                        rtnetlink::packet_route::link::InfoVeth::Peer(peer),
                    ))
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("creating veth {host_link}")))?;
        let index = require_link(host, &host_link).await?;
        self.configure(host, index).await
    }

    /// Everything but the veth pair, on both sides; what is there already is left as it is
    /// (an address or route that exists is no error), tables are replaced whole.
    async fn configure(&self, host: &Handle, index: u32) -> Result<()> {
        let p = &self.plan;
        let host_link = p.host_link();
        add_address(host, index, p.host_ip(), p.link.prefix_len(), &host_link).await?;
        set_up(host, index, &host_link).await?;
        for dest in &p.routes {
            let added = host
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(dest.network(), dest.prefix_len())
                        .gateway(p.node_ip())
                        .output_interface(index)
                        .protocol(rtnetlink::packet_route::route::RouteProtocol::Other(
                            ROUTE_PROTOCOL,
                        ))
                        .build(),
                )
                .execute()
                .await;
            exists_ok(added).map_err(netlink(format!(
                "adding a route to {dest} via {}",
                p.node_ip()
            )))?;
        }
        nat::host_table(p)?;
        enable_forwarding()?;
        // The node's side, from a thread inside it.
        self.in_node(|plan| async move {
            plumb_node(&plan).await?;
            nat::node_table(&plan)
        })
    }

    /// Runs `work` on a thread inside the node's namespace, in a current-thread runtime.
    fn in_node<F, Fut>(&self, work: F) -> Result<()>
    where
        F: FnOnce(Plan) -> Fut + Send,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let plan = self.plan.clone();
        let ns = self.ns.try_clone().map_err(|source| Error::Open {
            path: plan.netns_path(),
            source,
        })?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
                    Error::Enter {
                        netns: plan.netns.clone(),
                        source,
                    }
                })?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(Error::Socket)?;
                rt.block_on(work(plan))
            })
            .join()
            .map_err(|_| Error::Thread)?
        })
    }
}

/// A netlink request whose object exists already (`EEXIST`) counts as done.
fn exists_ok(
    r: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match r {
        Err(rtnetlink::Error::NetlinkError(m)) if m.code.is_some_and(|c| c.get() == -17) => Ok(()),
        r => r,
    }
}

/// Inside the node: loopback and eth0 up, eth0's address, default route via the host.
async fn plumb_node(p: &Plan) -> Result<()> {
    let node = connect()?;
    let eth0 = require_link(&node, NODE_LINK).await?;
    add_address(&node, eth0, p.node_ip(), p.link.prefix_len(), NODE_LINK).await?;
    let lo = require_link(&node, "lo").await?;
    set_up(&node, lo, "lo").await?;
    set_up(&node, eth0, NODE_LINK).await?;
    let added = node
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(p.host_ip())
                .output_interface(eth0)
                .build(),
        )
        .execute()
        .await;
    exists_ok(added).map_err(netlink(format!(
        "adding the default route via {}",
        p.host_ip()
    )))
}

/// Removes what a node under `plan` left on this host: the namespace (its links and
/// their routes go with it), the host's link if it survived, berth's host routes through
/// it, the host's nftables table and the PID file. Each step tolerates its object being gone.
/// Returns what it removed, for a person to read.
pub async fn cleanup(plan: &Plan) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    if plan.netns_path().exists() {
        ip(&["netns", "del", &plan.netns])?;
        removed.push(format!("network namespace {}", plan.netns));
    }
    let host = connect()?;
    let link = plan.host_link();
    if let Some(index) = link_index(&host, &link).await? {
        host.link()
            .del(index)
            .execute()
            .await
            .map_err(netlink(format!("deleting link {link}")))?;
        removed.push(format!("link {link}"));
    }
    let routes = routes::remove_own(&host, plan.node_ip()).await?;
    if routes > 0 {
        removed.push(format!("{routes} host route(s)"));
    }
    if nat::remove_host_table(plan)? {
        removed.push(format!("nftables table ip {}", plan.host_table()));
    }
    if std::fs::remove_file(plan.pid_path()).is_ok() {
        removed.push(format!("{}", plan.pid_path().display()));
    }
    Ok(removed)
}

/// The PID of the berth that owns the node namespace, if it still runs.
fn owner(plan: &Plan) -> Option<u32> {
    let pid: i32 = std::fs::read_to_string(plan.pid_path())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if pid == std::process::id() as i32 {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "berth").then_some(pid as u32)
}

fn write_pid(plan: &Plan) -> Result<()> {
    let path = plan.pid_path();
    let write = || {
        std::fs::create_dir_all(PID_DIR)?;
        std::fs::write(&path, format!("{}\n", std::process::id()))
    };
    write().map_err(|source| Error::Write { path, source })
}

/// `net.ipv4.ip_forward=1` on the host, unless it is on already (Docker and k3s need it too).
fn enable_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").map_err(Error::Forward)?;
    tracing::info!(
        sysctl = "net.ipv4.ip_forward",
        value = 1,
        "set on the host so pods reach the outside"
    );
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A netlink handle in the calling thread's namespace; needs a tokio runtime.
fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink {
        op: op.into(),
        source,
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(m)) if m.code.is_some_and(|c| c.get() == -19) => {
            Ok(None)
        }
        Err(e) => Err(netlink(format!("looking up link {name}"))(e)),
    }
}

async fn require_link(handle: &Handle, name: &str) -> Result<u32> {
    link_index(handle, name)
        .await?
        .ok_or_else(|| Error::NoLink(name.to_owned()))
}

/// The addresses on link `index`, with their prefix lengths.
async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(std::net::IpAddr, u8)>> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut msgs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut out = Vec::new();
    while let Some(m) = msgs
        .try_next()
        .await
        .map_err(netlink(format!("listing the addresses of link {index}")))?
    {
        let prefix = m.header.prefix_len;
        out.extend(m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some((*ip, prefix)),
            _ => None,
        }));
    }
    Ok(out)
}

async fn add_address(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    link: &str,
) -> Result<()> {
    let added = handle
        .address()
        .add(index, ip.into(), prefix)
        .execute()
        .await;
    exists_ok(added).map_err(netlink(format!("adding {ip}/{prefix} to {link}")))
}

async fn set_up(handle: &Handle, index: u32, link: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("bringing {link} up")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(netns: &str) -> Plan {
        Plan {
            netns: netns.into(),
            link: "10.201.0.0/30".parse().expect("cidr"),
            pod_cidr: "10.244.0.0/24".parse().expect("cidr"),
            routes: vec!["10.96.0.0/12".parse().expect("cidr")],
        }
    }

    #[test]
    fn addresses_and_names() {
        let p = plan("berth");
        assert_eq!(p.host_ip(), Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(p.node_ip(), Ipv4Addr::new(10, 201, 0, 2));
        assert_eq!(p.host_link(), "berth-host");
        assert_eq!(p.host_table(), "berth-host");
        let long = plan("a-rather-long-namespace");
        assert!(long.host_link().len() <= 15);
        assert!(long.host_link().starts_with("bh-"));
        assert_eq!(
            long.host_link(),
            plan("a-rather-long-namespace").host_link()
        );
        assert_ne!(
            long.host_link(),
            plan("a-rather-long-namespace2").host_link()
        );
    }

    #[test]
    fn a_link_needs_two_host_addresses() {
        let mut p = plan("berth");
        p.link = "10.201.0.0/31".parse().expect("cidr");
        assert!(matches!(p.check(&[]), Err(Error::LinkTooSmall(_))));
    }
}
