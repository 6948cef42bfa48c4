//! LoadBalancer ingress IPs and externalIPs, reachable from the node's LAN: each is a /32
//! `local` route (table local, on `lo`, protocol [`ROUTE_PROTOCOL`] marking it as the
//! proxy's), so the node takes it as its own and answers ARP for it as MetalLB's layer-2
//! mode does (no link needed; kernels without the dummy driver work too), and
//! `loadBalancerSourceRanges` become rules of the `lb-firewall` chain.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{Error, Result};
use crate::nft::expr::{Base, CmpOp, MetaKey};
use crate::nft::{Data, Expr, Reg, Verdict};
use crate::ruleset::IpKey;
use crate::view::{ServiceType, ServiceView};

/// The `rtm_protocol` of the proxy's routes: how it tells its own from everyone else's.
pub const ROUTE_PROTOCOL: u8 = 202;
/// The kernel's `local` routing table.
const TABLE_LOCAL: u32 = 255;
/// `lo`'s index in every network namespace.
const LOOPBACK: u32 = 1;
/// The chain (filter, prerouting, before DNAT) enforcing `loadBalancerSourceRanges`.
pub const FIREWALL: &str = "lb-firewall";

/// An IPv4 prefix: `addr/len`.
pub type Prefix = (Ipv4Addr, u8);

/// What the node exposes beyond its own addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    /// LoadBalancer ingress IPs and externalIPs of Services that get rules.
    pub addresses: BTreeSet<Ipv4Addr>,
    /// LoadBalancer IP ports with `loadBalancerSourceRanges`: only these sources get in.
    pub firewall: BTreeMap<IpKey, Vec<Prefix>>,
}

/// The addresses and source-range rules `services` call for. As kube-proxy: headless and
/// ExternalName Services get nothing, source ranges apply to LoadBalancer IPs only, and a
/// range that does not parse is skipped (the API server validates them).
pub fn exposure<'a>(services: impl IntoIterator<Item = &'a ServiceView>) -> Exposure {
    let mut out = Exposure::default();
    for svc in services {
        if svc.no_cluster_ip || svc.type_ == ServiceType::ExternalName {
            continue;
        }
        out.addresses
            .extend(svc.external_ips.iter().chain(&svc.lb_ips));
        if svc.source_ranges.is_empty() {
            continue;
        }
        for port in &svc.ports {
            let (Some(proto), Ok(port)) = (port.proto, u16::try_from(port.port)) else {
                continue;
            };
            for ip in &svc.lb_ips {
                let key = IpKey {
                    ip: *ip,
                    proto,
                    port,
                };
                out.firewall.insert(key, svc.source_ranges.to_vec());
            }
        }
    }
    out
}

/// `a.b.c.d/len` (or a bare address, as /32).
pub(crate) fn parse_prefix(s: &str) -> Option<Prefix> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, len.parse().ok()?),
        None => (s, 32),
    };
    (len <= 32).then_some(())?;
    Some((ip.parse().ok()?, len))
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// The rules of [`FIREWALL`]: per firewalled key, an `accept` per allowed range, then a
/// `drop`. `accept` ends only this chain; the NAT chains still run.
pub fn firewall_rules(firewall: &BTreeMap<IpKey, Vec<Prefix>>) -> Vec<Vec<Expr>> {
    let r = Reg::r32;
    let matches = |k: &IpKey| {
        vec![
            Expr::Payload {
                base: Base::Network,
                offset: 16,
                len: 4,
                dreg: r(0),
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: k.ip.octets().to_vec(),
            },
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(0),
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: vec![k.proto.number()],
            },
            Expr::Payload {
                base: Base::Transport,
                offset: 2,
                len: 2,
                dreg: r(0),
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: k.port.to_be_bytes().to_vec(),
            },
        ]
    };
    let verdict = |v| Expr::Immediate {
        dreg: Reg::VERDICT,
        data: Data::Verdict(v),
    };
    let mut out = Vec::new();
    for (k, ranges) in firewall {
        for (net, len) in ranges {
            let m = mask(*len);
            let mut rule = matches(k);
            rule.extend([
                Expr::Payload {
                    base: Base::Network,
                    offset: 12,
                    len: 4,
                    dreg: r(0),
                },
                Expr::Bitwise {
                    sreg: r(0),
                    dreg: r(0),
                    mask: m.to_be_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                Expr::Cmp {
                    sreg: r(0),
                    op: CmpOp::Eq,
                    data: (u32::from(*net) & m).to_be_bytes().to_vec(),
                },
                verdict(Verdict::Accept),
            ]);
            out.push(rule);
        }
        let mut drop = matches(k);
        drop.push(verdict(Verdict::Drop));
        out.push(drop);
    }
    out
}

/// A netlink route handle for the calling task's network namespace.
pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::RouteSocket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn route(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Route { op, source }
}

fn is_errno(e: &rtnetlink::Error, errno: Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| c.get() == -(errno as i32)))
}

/// `EEXIST` is success (another sync, or an earlier run, got there first).
fn ignore_exists(e: rtnetlink::Error, op: &'static str) -> Result<()> {
    if is_errno(&e, Errno::EEXIST) {
        Ok(())
    } else {
        Err(route(op)(e))
    }
}

fn local_route(ip: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .table_id(TABLE_LOCAL)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .output_interface(LOOPBACK)
        .build()
}

/// The proxy's local routes: their destinations and the messages to delete them with.
async fn own_routes(handle: &Handle) -> Result<Vec<(Option<Ipv4Addr>, RouteMessage)>> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = routes.try_next().await.map_err(route("listing routes"))? {
        if msg.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
            continue;
        }
        let dest = msg.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let exact =
            msg.header.kind == RouteType::Local && msg.header.destination_prefix_length == 32;
        out.push((dest.filter(|_| exact), msg));
    }
    Ok(out)
}

/// Makes the proxy's local routes exactly `want`: adds the missing ones and deletes the
/// others. Never touches a route of another protocol.
pub async fn sync_addresses(handle: &Handle, want: &BTreeSet<Ipv4Addr>) -> Result<()> {
    let mut have = BTreeSet::new();
    for (dest, msg) in own_routes(handle).await? {
        match dest {
            Some(ip) if want.contains(&ip) => {
                have.insert(ip);
            }
            _ => handle
                .route()
                .del(msg)
                .execute()
                .await
                .map_err(route("deleting a LoadBalancer IP route"))?,
        }
    }
    for ip in want.difference(&have) {
        handle
            .route()
            .add(local_route(*ip))
            .execute()
            .await
            .or_else(|e| ignore_exists(e, "adding a LoadBalancer IP route"))?;
    }
    Ok(())
}

/// Deletes the proxy's local routes. Returns how many there were.
pub async fn remove_routes(handle: &Handle) -> Result<usize> {
    let routes = own_routes(handle).await?;
    let n = routes.len();
    for (_, msg) in routes {
        handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(route("deleting a LoadBalancer IP route"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;
    use crate::ruleset::Proto;

    fn svc(mut v: serde_json::Value) -> Service {
        v["metadata"] = serde_json::json!({"namespace": "ns", "name": "s"});
        serde_json::from_value(v).expect("service")
    }

    fn check(services: &[Service], addresses: &[&str], firewall: &[(&str, u16, &[Prefix])]) {
        let got = exposure(&crate::view::services(services));
        let want_addrs: BTreeSet<Ipv4Addr> =
            addresses.iter().map(|a| a.parse().expect("ip")).collect();
        assert_eq!(got.addresses, want_addrs);
        let want_fw: BTreeMap<IpKey, Vec<Prefix>> = firewall
            .iter()
            .map(|(ip, port, r)| {
                let key = IpKey {
                    ip: ip.parse().expect("ip"),
                    proto: Proto::Tcp,
                    port: *port,
                };
                (key, r.to_vec())
            })
            .collect();
        assert_eq!(got.firewall, want_fw);
    }

    #[test]
    fn load_balancer_and_external_ips_are_exposed() {
        let lb = svc(json!({
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5",
                     "externalIPs": ["192.0.2.7"], "ports": [{"port": 80}],
                     "loadBalancerSourceRanges": ["10.0.0.0/8", " 192.0.2.9 ", "bad"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.100"}]}},
        }));
        let headless = svc(json!({
            "spec": {"clusterIP": "None", "externalIPs": ["192.0.2.8"]},
        }));
        let external_name = svc(json!({
            "spec": {"type": "ExternalName", "externalName": "x", "externalIPs": ["192.0.2.9"]},
        }));
        let ten = (Ipv4Addr::new(10, 0, 0, 0), 8);
        let one = (Ipv4Addr::new(192, 0, 2, 9), 32);
        check(
            &[lb, headless, external_name],
            &["192.0.2.7", "192.0.2.100"],
            &[("192.0.2.100", 80, &[ten, one])],
        );
        check(&[], &[], &[]);
    }

    #[test]
    fn each_range_accepts_then_the_key_drops() {
        let key = IpKey {
            ip: Ipv4Addr::new(192, 0, 2, 100),
            proto: Proto::Tcp,
            port: 80,
        };
        let fw = BTreeMap::from([(key, vec![(Ipv4Addr::new(10, 1, 2, 3), 8)])]);
        let rules = firewall_rules(&fw);
        assert_eq!(rules.len(), 2);
        assert!(rules[0].contains(&Expr::Cmp {
            sreg: Reg::r32(0),
            op: CmpOp::Eq,
            data: vec![10, 0, 0, 0],
        }));
        assert_eq!(
            rules[1].last(),
            Some(&Expr::Immediate {
                dreg: Reg::VERDICT,
                data: Data::Verdict(Verdict::Drop),
            })
        );
        assert_eq!(mask(0), 0);
        assert_eq!(mask(32), u32::MAX);
    }
}
