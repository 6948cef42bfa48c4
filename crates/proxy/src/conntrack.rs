//! Conntrack cleanup for UDP: when a UDP endpoint goes away, the flows DNATed to it are
//! deleted, or a client that keeps its socket would keep sending to the dead backend until the
//! entry times out (kube-proxy's pkg/proxy/conntrack/cleanup.go has the same policy). Dumped
//! and deleted over ctnetlink with the same hand-written framing as nf_tables.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::error::Result;
use crate::nft::Socket;
use crate::nft::wire::{attr, attrs};

const SUBSYS_CTNETLINK: u16 = 1;
const CT_NEW: u16 = SUBSYS_CTNETLINK << 8;
const CT_GET: u16 = (SUBSYS_CTNETLINK << 8) | 1;
const CT_DELETE: u16 = (SUBSYS_CTNETLINK << 8) | 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const UDP: u8 = 17;

/// `reply` source of a conntrack entry: the endpoint a DNATed flow really goes to.
fn reply_source(entry: &[u8]) -> Option<(u8, SocketAddrV4)> {
    let tuple = attr(entry, CTA_TUPLE_REPLY)?;
    let ip = attr(attr(tuple, 1)?, 1)?;
    let proto = attr(tuple, 2)?;
    let num = *attr(proto, 1)?.first()?;
    let port = attr(proto, 2)?;
    Some((
        num,
        SocketAddrV4::new(
            Ipv4Addr::new(*ip.first()?, *ip.get(1)?, *ip.get(2)?, *ip.get(3)?),
            u16::from_be_bytes([*port.first()?, *port.get(1)?]),
        ),
    ))
}

/// Deletes the UDP conntrack entries whose replies come from one of `endpoints`. Returns how
/// many were deleted; entries that vanished meanwhile are not an error.
pub fn delete_udp_flows(sock: &mut Socket, endpoints: &BTreeSet<SocketAddrV4>) -> Result<usize> {
    if endpoints.is_empty() {
        return Ok(0);
    }
    let entries = sock.dump_raw(CT_GET, CT_NEW, |_| {})?.unwrap_or_default();
    let mut deleted = 0;
    for e in &entries {
        let Some((UDP, from)) = reply_source(e) else {
            continue;
        };
        if !endpoints.contains(&from) {
            continue;
        }
        let Some(orig) = attr(e, CTA_TUPLE_ORIG) else {
            continue;
        };
        // The original tuple as dumped identifies the entry; copy its attributes as they are.
        let errno = sock.request(CT_DELETE, |w| {
            w.nest(CTA_TUPLE_ORIG, |w| {
                // CTA_TUPLE_IP and CTA_TUPLE_PROTO (the zone is not nested).
                for (kind, value) in attrs(orig).filter(|(k, _)| *k == 1 || *k == 2) {
                    w.nest(kind, |w| {
                        for (k, v) in attrs(value) {
                            w.put(k, v);
                        }
                    });
                }
            })
        })?;
        if errno == 0 {
            deleted += 1;
        }
    }
    Ok(deleted)
}
