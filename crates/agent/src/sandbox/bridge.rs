//! The node bridge (`berth0`): every pod's host-side veth is a port of it, and it holds the
//! gateway address pods route through.

use std::net::IpAddr;

use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::{LinkBridge, LinkUnspec};

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
    /// (e.g. 10.244.0.1/24) and is up. Safe to call again: an existing bridge or address is
    /// kept, never recreated (pods already attached stay attached).
    pub async fn ensure(name: &str, gateway: Ipv4Net) -> Result<Bridge> {
        let bridge = Bridge {
            name: name.to_owned(),
            gateway,
        };
        let b = bridge.clone();
        on_thread(move || async move {
            let handle = connect()?;
            if link_index(&handle, &b.name).await?.is_none() {
                match handle
                    .link()
                    .add(LinkBridge::new(&b.name).build())
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
