//! The node bridge (`berth0`): every pod's host-side veth is a port of it, and it holds the
//! gateway address pods route through, with a MAC address of its own that never changes.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use super::netns::{connect, is_errno, link_index, netlink, on_thread, require_link};
use crate::error::Result;

/// A bridge in the agent's namespace with the gateway address of the node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    name: String,
    gateway: Ipv4Net,
}

impl Bridge {
    /// Makes sure bridge `name` exists in the caller's network namespace, holds `gateway`
    /// (e.g. 10.244.0.1/24), has a MAC address set by hand (see [`gateway_mac`]) and is up.
    /// Safe to call again: an existing bridge or address is kept, never recreated (pods
    /// already attached stay attached), and an existing bridge keeps the MAC it has.
    pub async fn ensure(name: &str, gateway: Ipv4Net) -> Result<Bridge> {
        let bridge = Bridge {
            name: name.to_owned(),
            gateway,
        };
        let b = bridge.clone();
        on_thread(move || async move {
            let handle = connect()?;
            if link_index(&handle, &b.name).await?.is_none() {
                let mac = gateway_mac(b.gateway.addr()).to_vec();
                match handle
                    .link()
                    .add(LinkBridge::new(&b.name).address(mac).build())
                    .execute()
                    .await
                {
                    // Another agent call won the race: fine, it is the same bridge.
                    Err(e) if !is_errno(&e, Errno::EEXIST) => {
                        return Err(netlink(format!("creating bridge {}", b.name))(e));
                    }
                    _ => {}
                }
            }
            let index = require_link(&handle, &b.name).await?;
            pin_mac(&handle, index, &b).await?;
            let added = handle
                .address()
                .add(index, IpAddr::V4(b.gateway.addr()), b.gateway.prefix_len())
                .execute()
                .await;
            match added {
                Err(e) if !is_errno(&e, Errno::EEXIST) => {
                    return Err(netlink(format!("adding {} to {}", b.gateway, b.name))(e));
                }
                _ => {}
            }
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(netlink(format!("bringing {} up", b.name)))
        })
        .await?;
        // Pods reach Services (DNAT to other pods) and the outside through this node: it
        // routes, as the bridge plugin makes it. /proc/sys/net is the caller's namespace.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| {
            crate::Error::Sysctl {
                name: "net.ipv4.ip_forward",
                source,
            }
        })?;
        tracing::debug!(bridge = name, %gateway, "bridge ready");
        Ok(bridge)
    }

    /// The bridge's link name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The gateway address with the pod subnet's prefix length.
    pub fn gateway(&self) -> Ipv4Net {
        self.gateway
    }
}

/// The bridge's MAC address: locally administered unicast `02:be:` and the gateway's four
/// octets, so a bridge made again for the same pod CIDR answers with the address its pods
/// already hold. Docker's bridge and the CNI bridge plugin also set their bridge's MAC: left
/// to itself, a Linux bridge takes the lowest MAC among its ports and changes it as ports come
/// and go, and when the port whose MAC it had goes (a pod deleted), the pods that cached
/// that MAC for their gateway send into the void (the bridge floods the frames to its ports
/// instead of taking them) until their neighbour entry expires, 15 to 45 s later.
pub fn gateway_mac(gateway: std::net::Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = gateway.octets();
    [0x02, 0xbe, a, b, c, d]
}

/// Sets the bridge's MAC by hand if an earlier version of the agent made it without one: to
/// the address it has now (which pods may hold), so it stops following its ports. A MAC set
/// by hand, even to the same value, is one the kernel never changes on its own.
async fn pin_mac(handle: &Handle, index: u32, b: &Bridge) -> Result<()> {
    let mut links = handle.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .map_err(netlink(format!("reading {}", b.name)))?;
    let mac = link.and_then(|l| {
        l.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(mac),
            _ => None,
        })
    });
    let Some(mac) = mac else {
        return Ok(());
    };
    if mac == gateway_mac(b.gateway.addr()) {
        return Ok(());
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).address(mac).build())
        .execute()
        .await
        .map_err(netlink(format!("pinning the MAC of {}", b.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_mac_is_local_unicast_and_names_the_gateway() {
        let mac = gateway_mac("10.244.0.1".parse().expect("an address"));
        assert_eq!(mac, [0x02, 0xbe, 10, 244, 0, 1]);
        // Locally administered (bit 1 set), unicast (bit 0 clear).
        assert_eq!(mac[0] & 0b11, 0b10);
    }
}
