//! The pod network sandbox: a named network namespace per pod, joined to the node bridge by a
//! veth pair, with the pod's IP on `eth0` and a default route via the bridge's gateway. The
//! agent runs in the node's namespace; links are made there with rtnetlink, and the pod side
//! is configured from a thread that has entered the pod's namespace (see `netns`).

mod bridge;
mod ipam;
mod netns;
pub mod pause;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoPortKind, InfoVeth,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

pub use bridge::Bridge;
pub use ipam::Ipam;
pub use netns::connect_loopback;
pub use netns::exists as netns_exists;
pub(crate) use netns::path as netns_path;
pub use netns::shared_path as shared_ns_path;

use crate::error::{Error, Result};
use netns::{connect, is_errno, link_index, netlink, on_thread, require_link};

/// The link name of a pod's interface inside its namespace, as Kubernetes pods have it.
pub const POD_LINK: &str = "eth0";

/// The names a pod's sandbox uses, all derived from its uid so that an agent that restarts
/// finds them again without state of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNames {
    /// `berth-pod-<first 12 hex digits of the uid>`.
    pub netns: String,
    /// `veth<first 8 hex digits>`: the host side, a port of the bridge (the pod side is
    /// [`POD_LINK`], made in the pod namespace).
    pub host_veth: String,
}

impl SandboxNames {
    /// The names for `pod_uid`; fails with [`Error::InvalidUid`] if the uid has fewer than 12
    /// hex digits (Kubernetes uids are UUIDs).
    pub fn for_uid(pod_uid: &str) -> Result<SandboxNames> {
        let hex: String = pod_uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .take(12)
            .collect();
        if hex.len() < 12 {
            return Err(Error::InvalidUid {
                uid: pod_uid.to_owned(),
            });
        }
        Ok(SandboxNames {
            netns: format!("berth-pod-{hex}"),
            host_veth: format!("veth{}", &hex[..8]),
        })
    }
}

/// A pod's network sandbox. Dropping it changes nothing: call [`Sandbox::destroy`] (or
/// [`Sandbox::destroy_pod`] after a restart) to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pod_uid: String,
    pod_name: String,
    names: SandboxNames,
    ip: Ipv4Net,
}

impl Sandbox {
    /// Creates the sandbox of pod `pod_uid` with address `ip` in `bridge`'s subnet: namespace,
    /// veth pair (host side on the bridge and up; pod side `eth0` with `ip`, up), loopback up,
    /// default route via the gateway. Fails with [`Error::SandboxExists`] if the namespace is
    /// already there (the caller decides whether to reuse or destroy it); on any other failure
    /// removes what it made.
    pub async fn create(
        pod_uid: &str,
        pod_name: &str,
        ip: Ipv4Addr,
        bridge: &Bridge,
    ) -> Result<Sandbox> {
        let names = SandboxNames::for_uid(pod_uid)?;
        let subnet = bridge.gateway().trunc();
        if !subnet.contains(&ip) {
            return Err(Error::IpOutsideSubnet { ip, subnet });
        }
        if netns::exists(&names.netns) {
            return Err(Error::SandboxExists { netns: names.netns });
        }
        let sandbox = Sandbox {
            pod_uid: pod_uid.to_owned(),
            pod_name: pod_name.to_owned(),
            ip: Ipv4Net::new(ip, subnet.prefix_len()).unwrap_or(subnet),
            names,
        };
        let (s, bridge_name, gateway) = (
            sandbox.clone(),
            bridge.name().to_owned(),
            bridge.gateway().addr(),
        );
        let made = on_thread(move || async move {
            netns::add(&s.names.netns)?;
            netns::add_shared(&s.names.netns)?;
            s.plumb(&bridge_name, gateway).await
        })
        .await;
        if let Err(e) = made {
            // From a fresh thread: the failed one may have entered the pod namespace. Best
            // effort, since the error being returned matters more than a cleanup failure.
            let _ = Sandbox::destroy_pod(pod_uid).await;
            return Err(e);
        }
        tracing::debug!(pod = pod_name, uid = pod_uid, netns = %sandbox.names.netns, ip = %sandbox.ip, "sandbox created");
        Ok(sandbox)
    }

    /// The sandbox an earlier agent made for `pod_uid` at `ip` in `subnet`, whose pod it
    /// adopts with its running containers, one of which has process `pid` in the pod's
    /// namespace; fails with [`Error::SandboxMissing`] when that namespace is gone and with
    /// [`Error::LinkNotFound`] when its veth is (the node's namespace was made afresh). Only
    /// the namespace's name may be made again (see `netns::restore`).
    pub async fn existing(
        pod_uid: &str,
        pod_name: &str,
        ip: Ipv4Addr,
        subnet: Ipv4Net,
        pid: u32,
    ) -> Result<Sandbox> {
        let names = SandboxNames::for_uid(pod_uid)?;
        if !netns::exists(&names.netns) {
            return Err(Error::SandboxMissing { netns: names.netns });
        }
        netns::restore(&names.netns, pid)?;
        let veth = names.host_veth.clone();
        on_thread(move || async move {
            let handle = netns::connect()?;
            netns::require_link(&handle, &veth).await.map(drop)
        })
        .await?;
        Ok(Sandbox {
            pod_uid: pod_uid.to_owned(),
            pod_name: pod_name.to_owned(),
            ip: Ipv4Net::new(ip, subnet.prefix_len()).unwrap_or(subnet),
            names,
        })
    }

    /// Gives the pod one PID namespace for all its containers (`shareProcessNamespace`), held
    /// by a [`pause`] process, pinned at `shared_ns_path(netns, "pid")`; removed with the
    /// sandbox.
    pub async fn share_pids(&self, self_exe: &std::path::Path) -> Result<pause::Pause> {
        let (exe, netns) = (self_exe.to_owned(), self.names.netns.clone());
        tokio::task::spawn_blocking(move || pause::start(&exe, &netns))
            .await
            .map_err(|_| Error::ThreadPanicked)?
    }

    /// Removes the sandbox of `pod_uid` (veth pair and namespace) if any of it exists; for an
    /// agent that restarted and holds no [`Sandbox`] value. Processes still in the namespace
    /// keep it alive but lose their network.
    pub async fn destroy_pod(pod_uid: &str) -> Result<()> {
        let names = SandboxNames::for_uid(pod_uid)?;
        let s = Sandbox {
            pod_uid: pod_uid.to_owned(),
            pod_name: String::new(),
            names,
            ip: Ipv4Net::default(),
        };
        on_thread(move || async move { s.unplumb().await }).await
    }

    /// Removes this sandbox; see [`Sandbox::destroy_pod`]. Releasing the IP is the caller's
    /// [`Ipam::release`].
    pub async fn destroy(self) -> Result<()> {
        Sandbox::destroy_pod(&self.pod_uid).await
    }

    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }

    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }

    /// The pod's namespace name (enter it with `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.names.netns
    }

    /// The host-side veth, a port of the bridge.
    pub fn host_veth(&self) -> &str {
        &self.names.host_veth
    }

    /// The pod's address with the subnet's prefix length.
    pub fn ip(&self) -> Ipv4Net {
        self.ip
    }

    /// Node side, then pod side. Runs on a thread from `on_thread`, which it moves into the
    /// pod namespace halfway.
    async fn plumb(&self, bridge: &str, gateway: Ipv4Addr) -> Result<()> {
        let node = connect()?;
        let n = &self.names;
        let pod_ns =
            std::fs::File::open(netns::path(&n.netns)).map_err(|source| Error::OpenNetns {
                path: netns::path(&n.netns),
                source,
            })?;
        // The pod end is made inside the pod namespace, already named eth0: moving a link
        // between namespaces waits for an RCU grace period (13-25 ms here), creating it there
        // does not.
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(POD_LINK)
            .setns_by_fd(pod_ns.as_raw_fd())
            .build();
        node.link()
            .add(
                LinkVeth::new(&n.host_veth, POD_LINK)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("creating veth {}", n.host_veth)))?;
        let bridge_index = require_link(&node, bridge).await?;
        let host = require_link(&node, &n.host_veth).await?;
        node.link()
            .set(
                LinkUnspec::new_with_index(host)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("attaching {} to {bridge}", n.host_veth)))?;
        // Hairpin mode, as the kubelet's bridge plugin sets it: a pod reaching itself through
        // a Service is bridged back out of the port it came in on.
        node.link()
            .set_port(
                LinkUnspec::new_with_index(host)
                    .set_port_kind(InfoPortKind::Bridge)
                    .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                        true,
                    )]))
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("hairpin mode on {}", n.host_veth)))?;
        netns::enter(&n.netns)?;
        self.plumb_pod(&connect()?, gateway).await
    }

    /// Inside the pod namespace: `eth0` with the pod IP, loopback, default route.
    async fn plumb_pod(&self, pod: &Handle, gateway: Ipv4Addr) -> Result<()> {
        let peer = require_link(pod, POD_LINK).await?;
        pod.address()
            .add(peer, IpAddr::V4(self.ip.addr()), self.ip.prefix_len())
            .execute()
            .await
            .map_err(netlink(format!("adding {} to {POD_LINK}", self.ip)))?;
        let lo = require_link(pod, "lo").await?;
        for (index, name) in [(lo, "lo"), (peer, POD_LINK)] {
            pod.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(netlink(format!("bringing {name} up")))?;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(peer)
            .build();
        pod.route()
            .add(route)
            .execute()
            .await
            .map_err(netlink(format!("adding default route via {gateway}")))
    }

    /// Deletes the host veth (which takes its peer along) and the namespace; each step
    /// tolerates its object being gone already, so destroy can be repeated.
    async fn unplumb(&self) -> Result<()> {
        let node = connect()?;
        if let Some(index) = link_index(&node, &self.names.host_veth).await? {
            match node.link().del(index).execute().await {
                Err(e) if !is_errno(&e, Errno::ENODEV) => {
                    return Err(netlink(format!("deleting {}", self.names.host_veth))(e));
                }
                _ => {}
            }
        }
        netns::del_shared(&self.names.netns)?;
        netns::del(&self.names.netns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_uid() {
        let n = SandboxNames::for_uid("0A1B2C3D-4E5F-6789-abcd-ef0123456789").expect("uuid");
        assert_eq!(n.netns, "berth-pod-0a1b2c3d4e5f");
        assert_eq!(n.host_veth, "veth0a1b2c3d");
        // Link names are limited to 15 bytes (IFNAMSIZ - 1).
        assert!(n.host_veth.len() <= 15);
        assert!(matches!(
            SandboxNames::for_uid("abc-123"),
            Err(Error::InvalidUid { .. })
        ));
    }
}
