//! Answering one query: cluster names from the `Zone` (authoritative, with the spec's
//! NXDOMAIN/no-data rules and SOA), pod names from the name itself, everything else handed
//! back to the caller to forward or refuse. Pure: no I/O, no clocks.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::Zone;

/// The largest UDP response we send (and advertise), whatever the client offers: the DNS flag
/// day 2020 size that avoids IP fragmentation.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Longest CNAME chain followed inside the zone.
const MAX_CNAME_HOPS: usize = 8;

/// What to do with one received packet.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response.
    Answer(Message),
    /// Not a cluster name: forward the (valid, single-question) request if the client may
    /// recurse, else refuse it.
    Forward,
    /// Say nothing (a response, or a packet too short to carry a header).
    Drop,
}

/// How large a UDP response to `req` may be: its EDNS payload size (at least 512, at most
/// [`MAX_UDP_PAYLOAD`]), or 512 without EDNS.
pub fn udp_limit(req: &Message) -> usize {
    req.edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD))
        .into()
}

/// A response to `req` with its ID, opcode, RD bit, question and (if it had one) an OPT.
pub fn response_to(req: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.metadata.response_code = code;
    resp.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        resp.edns = Some(edns);
    }
    resp
}

/// FORMERR for bytes that do not parse as a DNS message, built from the header alone (RFC
/// 1035: ID, opcode and RD echoed, no sections); nothing for a response or a runt.
pub fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let flags = 0x80 | (header[2] & 0x79);
    Some(vec![
        header[0], header[1], flags, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
    ])
}

/// Decides what to do with one received packet (parse, check, answer from the zone).
pub fn handle(zone: &Zone, bytes: &[u8]) -> Result<(Message, Outcome), Option<Vec<u8>>> {
    let req = Message::from_vec(bytes).map_err(|_| formerr(bytes))?;
    let outcome = respond(zone, &req);
    Ok((req, outcome))
}

/// The answer to a parsed request, or `Forward` for a name outside the cluster zone.
pub fn respond(zone: &Zone, req: &Message) -> Outcome {
    if req.metadata.message_type != MessageType::Query {
        return Outcome::Drop;
    }
    if req.metadata.op_code != OpCode::Query {
        return Outcome::Answer(response_to(req, ResponseCode::NotImp));
    }
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Outcome::Answer(response_to(req, ResponseCode::BADVERS));
    }
    let [query] = req.queries.as_slice() else {
        return Outcome::Answer(response_to(req, ResponseCode::FormErr));
    };
    let qtype = query.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT) {
        return Outcome::Answer(response_to(req, ResponseCode::Refused));
    }
    let name = query.name();
    let in_zone = zone.origin().zone_of(name);
    // Reverse names are ours only when a Service or endpoint has the address.
    if !in_zone && zone.node(name).is_none() {
        return Outcome::Forward;
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Outcome::Answer(response_to(req, ResponseCode::Refused));
    }
    Outcome::Answer(authoritative(zone, req, name, qtype))
}

/// What the zone knows of a name.
enum Found {
    Node(crate::zone::Node),
    Synthesized(Box<Record>),
    Empty,
}

fn find(zone: &Zone, name: &Name, qtype: RecordType) -> Option<Found> {
    if let Some(found) = pod_name(zone, name, qtype) {
        return found;
    }
    zone.node(name).map(Found::Node)
}

/// `<a-b-c-d>.<ns>.pod.<zone>`: the address read from the name, as CoreDNS's `pods insecure`.
/// `None` when the name is not under `pod.<zone>`; `Some(None)` for NXDOMAIN.
fn pod_name(zone: &Zone, name: &Name, qtype: RecordType) -> Option<Option<Found>> {
    let depth = usize::from(name.num_labels()).checked_sub(zone.origin().num_labels().into())?;
    if depth < 2 {
        return None;
    }
    let pod = name.iter().nth(depth - 1)?;
    if !pod.eq_ignore_ascii_case(b"pod") {
        return None;
    }
    Some(match depth {
        2 => Some(Found::Empty),
        3 => {
            let label = std::str::from_utf8(name.iter().next()?).ok()?;
            let ip = dashed_ip(label)?;
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            if qtype == data.record_type() || qtype == RecordType::ANY {
                Some(Found::Synthesized(Box::new(Record::from_rdata(
                    name.clone(),
                    zone.ttl(),
                    data,
                ))))
            } else {
                Some(Found::Empty)
            }
        }
        _ => None,
    })
}

/// `10-1-2-3` -> 10.1.2.3, `fd00--1` -> fd00::1.
fn dashed_ip(label: &str) -> Option<IpAddr> {
    if label.contains(':') || label.contains('.') {
        return None;
    }
    let v4 = label.replace('-', ".");
    v4.parse()
        .ok()
        .filter(|ip: &IpAddr| ip.is_ipv4())
        .or_else(|| label.replace('-', ":").parse().ok())
}

fn authoritative(zone: &Zone, req: &Message, qname: &Name, qtype: RecordType) -> Message {
    let mut resp = response_to(req, ResponseCode::NoError);
    resp.metadata.authoritative = true;
    let mut name = qname.clone();
    for hop in 0..MAX_CNAME_HOPS {
        let found = match find(zone, &name, qtype) {
            Some(found) => found,
            // A CNAME to a missing in-zone name still answers NOERROR with the CNAME.
            None if hop == 0 => return negative(zone, resp, ResponseCode::NXDomain),
            None => return resp,
        };
        let node = match found {
            Found::Empty => break,
            Found::Synthesized(record) => {
                resp.answers.push(*record);
                break;
            }
            Found::Node(node) => node,
        };
        let echo = |mut r: Record| {
            // The question's case is echoed; chased names keep the zone's.
            if hop == 0 {
                r.name = qname.clone();
            }
            r
        };
        if let (Some(target), false) = (node.cname(), qtype == RecordType::CNAME) {
            resp.answers
                .extend(node.records(&name, RecordType::CNAME).map(echo));
            if !zone.origin().zone_of(target) {
                return resp;
            }
            name = target.clone();
            continue;
        }
        resp.answers.extend(node.records(&name, qtype).map(echo));
        break;
    }
    if resp.answers.is_empty() {
        return negative(zone, resp, ResponseCode::NoError);
    }
    if qtype == RecordType::SRV {
        additional_addresses(zone, &mut resp);
    }
    resp
}

/// The A/AAAA records of SRV targets, so clients need no second query.
fn additional_addresses(zone: &Zone, resp: &mut Message) {
    let mut seen: Vec<&Name> = Vec::new();
    for record in &resp.answers {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        if seen.contains(&&srv.target) {
            continue;
        }
        seen.push(&srv.target);
        if let Some(node) = zone.node(&srv.target) {
            resp.additionals
                .extend(node.records(&srv.target, RecordType::A));
            resp.additionals
                .extend(node.records(&srv.target, RecordType::AAAA));
        }
    }
}

fn negative(zone: &Zone, mut resp: Message, code: ResponseCode) -> Message {
    resp.metadata.response_code = code;
    resp.authorities.push(zone.soa().clone());
    resp
}

/// The wire form of `resp`, at most `limit` bytes: additional records go first, then the
/// answers with TC set (RFC 2181 §9) so the client retries over TCP.
pub fn encode(resp: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut smaller = resp.clone();
    smaller.additionals.clear();
    if let Ok(bytes) = smaller.to_vec()
        && bytes.len() <= limit
    {
        return Some(bytes);
    }
    smaller.answers.clear();
    smaller.authorities.clear();
    smaller.metadata.truncation = true;
    smaller.to_vec().ok()
}

#[cfg(test)]
mod tests;
