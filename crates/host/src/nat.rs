//! berth's two masquerade tables: on the host, `ip <netns>-host` masquerades what comes from
//! the node (its link address) when it leaves the host by another link; in the node,
//! `ip berth-egress` masquerades pod traffic leaving the node by `eth0` to the node's
//! address, as the bridge CNI plugin's `ipMasq` does. Each is replaced whole in one
//! transaction, through the proxy's nf_tables layer.

use berth_proxy::nft::expr::{Base, CmpOp, MetaKey};
use berth_proxy::nft::{BaseChain, Expr, Hook, Msg, Reg, Socket};
use ipnet::Ipv4Net;

use crate::{Error, NODE_LINK, Plan, Result};

/// The node's egress table.
pub(crate) const NODE_TABLE: &str = "berth-egress";

fn nft(op: &str) -> impl FnOnce(berth_proxy::Error) -> Error + '_ {
    move |source| Error::Nft {
        op: op.to_owned(),
        source,
    }
}

/// `ip saddr|daddr NET` compared with `op`, loaded into register 0.
fn addr_in(offset: u32, net: Ipv4Net, op: CmpOp) -> [Expr; 3] {
    let net = net.trunc();
    [
        Expr::Payload {
            base: Base::Network,
            offset,
            len: 4,
            dreg: Reg::r32(0),
        },
        Expr::Bitwise {
            sreg: Reg::r32(0),
            dreg: Reg::r32(0),
            mask: net.netmask().octets().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: Reg::r32(0),
            op,
            data: net.network().octets().to_vec(),
        },
    ]
}

/// `oifname op NAME` (registers 1-4: a name is 16 bytes).
fn oifname(name: &str, op: CmpOp) -> [Expr; 2] {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0);
    [
        Expr::Meta {
            key: MetaKey::OifName,
            dreg: Reg::r32(1),
        },
        Expr::Cmp {
            sreg: Reg::r32(1),
            op,
            data,
        },
    ]
}

/// Replaces `table` in the calling thread's namespace with one postrouting NAT chain holding
/// `rule` followed by a masquerade.
fn replace(table: &str, rule: Vec<Expr>) -> Result<()> {
    let mut sock = Socket::open().map_err(nft("opening a netlink socket"))?;
    let exists = sock.has_table(table).map_err(nft("listing tables"))?;
    let mut batch = sock.batch(table);
    if exists {
        batch.push(Msg::DelTable);
    }
    batch.push(Msg::NewTable);
    batch.push(Msg::NewChain {
        name: "postrouting".into(),
        base: Some(BaseChain {
            hook: Hook::Postrouting,
            priority: 100,
            kind: "nat",
        }),
    });
    let mut exprs = rule;
    exprs.push(Expr::Masquerade);
    batch.push(Msg::NewRule {
        chain: "postrouting".into(),
        exprs,
    });
    sock.commit(batch)
        .map_err(nft(&format!("writing table ip {table}")))
}

/// On the host: `ip saddr LINK oifname != HOST_LINK masquerade`.
pub(crate) fn host_table(p: &Plan) -> Result<()> {
    let mut rule = addr_in(12, p.link, CmpOp::Eq).to_vec();
    rule.extend(oifname(&p.host_link(), CmpOp::Neq));
    replace(&p.host_table(), rule)
}

/// In the node: `ip saddr POD_CIDR ip daddr != POD_CIDR oifname "eth0" masquerade`.
pub(crate) fn node_table(p: &Plan) -> Result<()> {
    let mut rule = addr_in(12, p.pod_cidr, CmpOp::Eq).to_vec();
    rule.extend(addr_in(16, p.pod_cidr, CmpOp::Neq));
    rule.extend(oifname(NODE_LINK, CmpOp::Eq));
    replace(NODE_TABLE, rule)
}

/// Deletes the host's table; returns whether there was one.
pub(crate) fn remove_host_table(p: &Plan) -> Result<bool> {
    let table = p.host_table();
    let mut sock = Socket::open().map_err(nft("opening a netlink socket"))?;
    if !sock.has_table(&table).map_err(nft("listing tables"))? {
        return Ok(false);
    }
    let mut batch = sock.batch(&table);
    batch.push(Msg::DelTable);
    sock.commit(batch)
        .map_err(nft(&format!("deleting table ip {table}")))?;
    Ok(true)
}
