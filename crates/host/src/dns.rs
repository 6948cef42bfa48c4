//! The cluster DNS address answered without conntrack, as NodeLocal DNSCache does: the node
//! takes the kube-dns ClusterIP as a local address (a `local` route on `lo`, protocol
//! [`ROUTE_PROTOCOL`]) and `ip berth-dns` marks UDP port 53 to and from it `notrack` before
//! conntrack sees it, so queries skip the proxy's DNAT and reach the DNS server bound there.
//! No conntrack entry means no insert race (the 5-second lookups Kubernetes users know) and
//! no table filling up with one-packet flows. TCP still goes through the Service's DNAT.

use std::net::Ipv4Addr;

use berth_proxy::nft::expr::{Base, CmpOp, MetaKey};
use berth_proxy::nft::{BaseChain, Expr, Hook, Msg, Reg, Socket};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope, RouteType};

use crate::{Error, Result, connect, netlink};

/// Marks the local route of the DNS address (the proxy's LoadBalancer routes use 202, the
/// host's routes to the node 203).
pub const ROUTE_PROTOCOL: u8 = 204;
/// The table holding the notrack rules.
pub const TABLE: &str = "berth-dns";
/// `raw` priority: before conntrack (-200).
const RAW: i32 = -300;
const UDP: u8 = 17;

fn udp_port(ip: Ipv4Addr, ip_offset: u32, port_offset: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Reg::r32(0),
        },
        Expr::Cmp {
            sreg: Reg::r32(0),
            op: CmpOp::Eq,
            data: vec![UDP],
        },
        Expr::Payload {
            base: Base::Network,
            offset: ip_offset,
            len: 4,
            dreg: Reg::r32(0),
        },
        Expr::Cmp {
            sreg: Reg::r32(0),
            op: CmpOp::Eq,
            data: ip.octets().to_vec(),
        },
        Expr::Payload {
            base: Base::Transport,
            offset: port_offset,
            len: 2,
            dreg: Reg::r32(0),
        },
        Expr::Cmp {
            sreg: Reg::r32(0),
            op: CmpOp::Eq,
            data: 53u16.to_be_bytes().to_vec(),
        },
        Expr::Notrack,
    ]
}

/// Makes `ip` (the kube-dns ClusterIP) a local address of the calling thread's namespace
/// and replaces table `ip berth-dns` with: queries to `ip:53/udp` arriving (prerouting) or
/// sent by the node (output), and answers from it, untracked. Needs a tokio runtime.
pub async fn local_dns(ip: Ipv4Addr) -> Result<()> {
    let handle = connect()?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .table_id(255)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .output_interface(1)
        .build();
    match handle.route().add(route).execute().await {
        Err(rtnetlink::Error::NetlinkError(m)) if m.code.is_some_and(|c| c.get() == -17) => {}
        r => r.map_err(netlink(format!("adding {ip} as a local address")))?,
    }
    let nft = |op: &str| {
        let op = op.to_owned();
        move |source| Error::Nft { op, source }
    };
    let mut sock = Socket::open().map_err(nft("opening a netlink socket"))?;
    let exists = sock.has_table(TABLE).map_err(nft("listing tables"))?;
    let mut batch = sock.batch(TABLE);
    if exists {
        batch.push(Msg::DelTable);
    }
    batch.push(Msg::NewTable);
    for (chain, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        batch.push(Msg::NewChain {
            name: chain.into(),
            base: Some(BaseChain {
                hook,
                priority: RAW,
                kind: "filter",
            }),
        });
        // daddr is at 16, dport at 2; saddr at 12, sport at 0.
        batch.push(Msg::NewRule {
            chain: chain.into(),
            exprs: udp_port(ip, 16, 2),
        });
    }
    batch.push(Msg::NewRule {
        chain: "output".into(),
        exprs: udp_port(ip, 12, 0),
    });
    sock.commit(batch)
        .map_err(nft(&format!("writing table ip {TABLE}")))
}

/// Undoes [`local_dns`]: the table and the local route go. Each is fine to be gone already.
pub async fn remove_local_dns(ip: Ipv4Addr) -> Result<()> {
    let nft = |op: &'static str| {
        move |source| Error::Nft {
            op: op.to_owned(),
            source,
        }
    };
    let mut sock = Socket::open().map_err(nft("opening a netlink socket"))?;
    if sock.has_table(TABLE).map_err(nft("listing tables"))? {
        let mut batch = sock.batch(TABLE);
        batch.push(Msg::DelTable);
        sock.commit(batch)
            .map_err(nft("deleting table ip berth-dns"))?;
    }
    let handle = connect()?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .table_id(255)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .output_interface(1)
        .build();
    match handle.route().del(route).execute().await {
        // ESRCH: no such route.
        Err(rtnetlink::Error::NetlinkError(m)) if m.code.is_some_and(|c| c.get() == -3) => Ok(()),
        r => r.map_err(netlink(format!("removing {ip} as a local address"))),
    }
}
