//! The host's routes: which ranges are taken already ([`overlaps`] is the pure check), and
//! berth's own routes to the node, marked with [`crate::ROUTE_PROTOCOL`].

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::Handle;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};

use crate::{Result, netlink};

/// The main routing table.
const TABLE_MAIN: u8 = 254;

/// A range berth would route to the node that the host already routes elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {wanted} overlaps the host's route to {existing}: berth will not take it over. Pick other ranges (--node-link, --service-cluster-ip-range, --pod-cidr, --lb-pool) or pass --host-routes=false"
)]
pub struct Overlap {
    pub what: String,
    pub wanted: Ipv4Net,
    pub existing: Ipv4Net,
}

/// The first of `wanted` (each with what it is for) that shares an address with a route of
/// `existing`; default routes (`/0`) overlap everything and are ignored.
pub fn overlaps(wanted: &[(&str, Ipv4Net)], existing: &[Ipv4Net]) -> Result<(), Overlap> {
    for (what, w) in wanted {
        let w = w.trunc();
        for e in existing.iter().filter(|e| e.prefix_len() > 0) {
            let e = e.trunc();
            if w.contains(&e.network()) || e.contains(&w.network()) {
                return Err(Overlap {
                    what: (*what).to_owned(),
                    wanted: w,
                    existing: e,
                });
            }
        }
    }
    Ok(())
}

async fn dump(handle: &Handle) -> Result<Vec<RouteMessage>> {
    let mut routes = handle
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = routes
        .try_next()
        .await
        .map_err(netlink("listing the host's routes"))?
    {
        out.push(msg);
    }
    Ok(out)
}

fn destination(msg: &RouteMessage) -> Option<Ipv4Net> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    Ipv4Net::new(
        ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        msg.header.destination_prefix_length,
    )
    .ok()
}

fn gateway(msg: &RouteMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn ours(msg: &RouteMessage) -> bool {
    msg.header.protocol == RouteProtocol::Other(crate::ROUTE_PROTOCOL)
}

/// The destinations of the main table's routes that are not berth's.
pub(crate) async fn foreign(handle: &Handle) -> Result<Vec<Ipv4Net>> {
    Ok(dump(handle)
        .await?
        .iter()
        .filter(|m| m.header.table == TABLE_MAIN && !ours(m))
        .filter_map(destination)
        .collect())
}

fn output_link(msg: &RouteMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

/// Deletes berth's routes via `node_ip`; returns how many there were.
pub(crate) async fn remove_own(handle: &Handle, node_ip: Ipv4Addr) -> Result<usize> {
    remove_ours(handle, |m| gateway(m) == Some(node_ip)).await
}

/// Deletes berth's routes out of link `index` to destinations that `keep` does not hold:
/// what an earlier berth run with other ranges (or with host routes it no longer wants)
/// left on the link it takes on; returns how many there were.
pub(crate) async fn remove_stale(handle: &Handle, index: u32, keep: &[Ipv4Net]) -> Result<usize> {
    remove_ours(handle, |m| {
        output_link(m) == Some(index)
            && destination(m).is_none_or(|d| !keep.iter().any(|k| k.trunc() == d.trunc()))
    })
    .await
}

async fn remove_ours(handle: &Handle, which: impl Fn(&RouteMessage) -> bool) -> Result<usize> {
    let mut n = 0;
    for msg in dump(handle).await? {
        if ours(&msg) && which(&msg) {
            let dest = destination(&msg);
            handle
                .route()
                .del(msg)
                .execute()
                .await
                .map_err(netlink(format!("deleting the host route to {dest:?}")))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("a CIDR")
    }

    #[test]
    fn overlapping_ranges_are_named() {
        let existing = [net("0.0.0.0/0"), net("192.168.1.0/24"), net("10.96.5.0/24")];
        assert_eq!(
            overlaps(&[("a host route", net("10.244.0.0/24"))], &existing),
            Ok(())
        );
        let err =
            overlaps(&[("a host route", net("10.96.0.0/12"))], &existing).expect_err("overlaps");
        assert_eq!(err.existing, net("10.96.5.0/24"));
        assert!(
            err.to_string()
                .contains("10.96.0.0/12 overlaps the host's route to 10.96.5.0/24")
        );
        // A wanted range inside an existing one overlaps too.
        assert!(overlaps(&[("--node-link", net("192.168.1.4/30"))], &existing).is_err());
    }

    proptest! {
        /// The check agrees with "some address is in both".
        #[test]
        fn overlap_is_sharing_an_address(a in any::<u32>(), la in 1u8..=32, b in any::<u32>(), lb in 1u8..=32) {
            let (x, y) = (Ipv4Net::new(a.into(), la).expect("prefix <= 32").trunc(), Ipv4Net::new(b.into(), lb).expect("prefix <= 32").trunc());
            let share = u32::from(x.network()) <= u32::from(y.broadcast())
                && u32::from(y.network()) <= u32::from(x.broadcast());
            prop_assert_eq!(overlaps(&[("x", x)], &[y]).is_err(), share);
        }
    }
}
