//! The fast path: answers for the cluster zone kept as wire bytes, keyed by lower-cased wire
//! name and type, so a plain query costs a header parse, one hash lookup and a copy with the
//! ID, flags and question (the client's case) patched in. Anything unusual (EDNS options we
//! do not expect, several questions, ANY, pod names, CNAMEs, big answers) is left to the slow
//! path in `answer`, which is also what built these bytes.

use std::collections::HashMap;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::answer::MAX_UDP_PAYLOAD;

/// The record types compiled per name; every other type at an existing name is no data.
pub(crate) const COMPILED_TYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::CNAME,
];

/// Responses larger than this are left to the slow path (it truncates for small clients).
const MAX_COMPILED: usize = 512;

const OPT_RR_LEN: usize = 11;

/// What the fast path needs to know of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    /// Exists; a type without a compiled answer is no data.
    Exists,
    /// Answer through the slow path (an alias).
    Slow,
}

/// Compiled answers of one zone.
#[derive(Debug, Default)]
pub struct FastTable {
    /// lower-case wire name + type -> response bytes (ID 0, no OPT); `None`: use the slow path.
    answers: HashMap<Box<[u8]>, Option<Box<[u8]>>>,
    /// The zone apex, lower-case wire form.
    apex: Box<[u8]>,
    /// An SOA record after its owner name (type, class, TTL, length, uncompressed rdata).
    soa_tail: Box<[u8]>,
}

/// The wire form of a name, lower case.
pub(crate) fn wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

impl FastTable {
    /// An empty table for the zone `apex` whose negative answers carry `soa`.
    pub(crate) fn new(apex: &Name, soa: &hickory_proto::rr::Record) -> Self {
        let mut soa_tail = Vec::new();
        if let RData::SOA(s) = &soa.data {
            let mut rdata = wire(&s.mname);
            rdata.extend(wire(&s.rname));
            for v in [
                s.serial,
                s.refresh as u32,
                s.retry as u32,
                s.expire as u32,
                s.minimum,
            ] {
                rdata.extend(v.to_be_bytes());
            }
            soa_tail.extend(u16::from(RecordType::SOA).to_be_bytes());
            soa_tail.extend(1u16.to_be_bytes());
            soa_tail.extend(soa.ttl.to_be_bytes());
            soa_tail.extend(u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
            soa_tail.extend(rdata);
        }
        Self {
            answers: HashMap::new(),
            apex: wire(apex).into(),
            soa_tail: soa_tail.into(),
        }
    }

    /// Recompiles one name: `answer(query)` is the slow path's response to a lower-case query
    /// of that name and type; `exists` says whether the name exists and is an alias;
    /// `present(type)` whether it has records of a type.
    pub(crate) fn compile(
        &mut self,
        name: &Name,
        exists: Option<bool>,
        present: impl Fn(RecordType) -> bool,
        answer: impl Fn(&Message) -> Option<Message>,
    ) {
        let key = wire(name);
        let Some(alias) = exists else {
            for t in COMPILED_TYPES {
                self.answers.remove(typed(&key, t).as_slice());
            }
            return;
        };
        for t in COMPILED_TYPES {
            let k = typed(&key, t);
            if alias || !present(t) {
                self.answers.remove(k.as_slice());
                continue;
            }
            let mut req = Message::query();
            req.metadata.id = 0;
            req.add_query(Query::query(name.clone(), t));
            let bytes = answer(&req)
                .and_then(|resp| (!resp.answers.is_empty()).then(|| resp.to_vec().ok())?);
            match bytes {
                Some(b) if b.len() <= MAX_COMPILED => {
                    self.answers.insert(k.into(), Some(b.into()));
                }
                Some(_) => {
                    self.answers.insert(k.into(), None);
                }
                None => {
                    self.answers.remove(k.as_slice());
                }
            }
        }
    }

    /// How many compiled answers the table holds.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether nothing is compiled.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Writes the response to `req` into `out` and returns the query type, or `None` when the
    /// slow path must answer. `ra` is the RA bit for this client; over UDP the response fits
    /// the client's EDNS size (512 bytes without EDNS). `kind` tells of a lower-case wire name
    /// in the zone.
    pub(crate) fn answer(
        &self,
        req: &[u8],
        ra: bool,
        tcp: bool,
        out: &mut Vec<u8>,
        kind: impl Fn(&[u8]) -> Option<NameKind>,
    ) -> Option<u16> {
        let q = parse(req)?;
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            q.edns_payload
                .map_or(512, |p| usize::from(p.clamp(512, MAX_UDP_PAYLOAD)))
        };
        let mut key = [0u8; 257];
        let name = &mut key[..q.name_len];
        name.copy_from_slice(&req[12..12 + q.name_len]);
        name.make_ascii_lowercase();
        key[q.name_len..q.name_len + 2].copy_from_slice(&q.qtype.to_be_bytes());
        out.clear();
        match self.answers.get(&key[..q.name_len + 2]) {
            Some(Some(template)) => out.extend_from_slice(template),
            Some(None) => return None,
            None => {
                if !self.negative(&key[..q.name_len], &q, out, kind) {
                    return None;
                }
            }
        }
        // ID, then QR AA + the client's RD; RA for this client, the client's CD, our RCODE.
        out[..2].copy_from_slice(&req[..2]);
        out[2] = 0x84 | (req[2] & 0x01);
        out[3] = (if ra { 0x80 } else { 0 }) | (req[3] & 0x10) | (out[3] & 0x0f);
        // The question as the client wrote it (same length: only the case may differ).
        let qlen = q.name_len + 4;
        out[12..12 + qlen].copy_from_slice(&req[12..12 + qlen]);
        if q.edns_payload.is_some() {
            let arcount = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
            out[10..12].copy_from_slice(&arcount.to_be_bytes());
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        (out.len() <= limit).then_some(q.qtype)
    }

    /// NXDOMAIN or no data with the SOA, for a name under the apex that is not compiled.
    fn negative(
        &self,
        name: &[u8],
        q: &Parsed,
        out: &mut Vec<u8>,
        kind: impl Fn(&[u8]) -> Option<NameKind>,
    ) -> bool {
        if q.qtype == 0 || q.qtype > 127 || q.qtype == u16::from(RecordType::OPT) {
            return false;
        }
        let Some(apex_at) = name.len().checked_sub(self.apex.len()) else {
            return false;
        };
        let starts = &q.label_starts[..q.labels];
        if name[apex_at..] != *self.apex || !starts.iter().any(|&s| usize::from(s) == apex_at) {
            return false;
        }
        let rcode = match kind(name) {
            Some(NameKind::Exists) => 0,
            Some(NameKind::Slow) => return false,
            None => {
                // `<x>.<ns>.pod.<zone>` is answered from the name by the slow path.
                let before_apex = starts.iter().rev().find(|&&s| usize::from(s) < apex_at);
                if let Some(&s) = before_apex
                    && name[usize::from(s)..apex_at].eq_ignore_ascii_case(b"\x03pod")
                {
                    return false;
                }
                3
            }
        };
        out.extend_from_slice(&[0, 0, 0x84, rcode, 0, 1, 0, 0, 0, 1, 0, 0]);
        out.extend_from_slice(name);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        let pointer = 0xc000 | (12 + apex_at) as u16;
        out.extend_from_slice(&pointer.to_be_bytes());
        out.extend_from_slice(&self.soa_tail);
        true
    }
}

fn typed(name: &[u8], t: RecordType) -> Vec<u8> {
    let mut k = name.to_vec();
    k.extend(u16::from(t).to_be_bytes());
    k
}

/// A plain query as the fast path takes it.
struct Parsed {
    /// Length of the wire name starting at offset 12.
    name_len: usize,
    /// Offsets of each label within the name (the root's too), `labels` of them.
    label_starts: [u8; 128],
    labels: usize,
    qtype: u16,
    /// The EDNS payload size, when the query has an OPT (version 0).
    edns_payload: Option<u16>,
}

/// The payload size of an OPT record that is all of `rest`: root owner, type OPT, version 0,
/// options skipped but their length must fit exactly.
fn opt_payload(rest: &[u8]) -> Option<u16> {
    let opt = rest.get(..OPT_RR_LEN)?;
    if opt[..3] != [0, 0, 41] || opt[6] != 0 {
        return None;
    }
    let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
    (OPT_RR_LEN + rdlen == rest.len()).then(|| u16::from_be_bytes([opt[3], opt[4]]))
}

/// Accepts only: a query (QR 0, opcode 0), one question of class IN with an uncompressed
/// name, no answer or authority records, and either nothing or exactly one OPT after it.
fn parse(req: &[u8]) -> Option<Parsed> {
    let header = req.get(..12)?;
    if header[2] & 0xf8 != 0 || header[4..10] != [0, 1, 0, 0, 0, 0] || header[10] != 0 {
        return None;
    }
    let arcount = header[11];
    let mut at = 12;
    let mut label_starts = [0u8; 128];
    let mut labels = 0;
    loop {
        // At most 127 labels fit in 255 bytes; the length check below stops longer names.
        *label_starts.get_mut(labels)? = u8::try_from(at - 12).ok()?;
        labels += 1;
        let len = usize::from(*req.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at - 12 > 254 {
            return None;
        }
    }
    let name_len = at - 12;
    let fixed = req.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if fixed[2..4] != [0, 1] {
        return None;
    }
    let rest = req.get(at + 4..)?;
    let edns_payload = match arcount {
        0 if rest.is_empty() => None,
        1 => Some(opt_payload(rest)?),
        _ => return None,
    };
    Some(Parsed {
        name_len,
        label_starts,
        labels,
        qtype,
        edns_payload,
    })
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Edns;
    use proptest::prelude::*;

    use super::*;
    use crate::answer::{self, Outcome};
    use crate::fixtures;
    use crate::zone::{Zone, ZoneConfig};

    fn zone() -> Zone {
        fixtures::sample_zone(&ZoneConfig::default()).expect("zone")
    }

    fn request(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut req = Message::query();
        req.metadata.recursion_desired = true;
        req.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        req.edns = edns.map(|payload| {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e
        });
        req.to_vec().expect("encode")
    }

    /// The fast answer, if taken, must decode to what the slow path says.
    fn agrees(zone: &Zone, bytes: &[u8], tcp: bool) -> bool {
        let mut out = Vec::new();
        if zone.fast_answer(bytes, false, tcp, &mut out).is_none() {
            return false;
        }
        let fast = Message::from_vec(&out).expect("fast answer parses");
        let req = Message::from_vec(bytes).expect("request parses");
        let Outcome::Answer(slow) = answer::respond(zone, &req) else {
            panic!("fast path answered what the slow path would not");
        };
        let limit = if tcp { 65535 } else { answer::udp_limit(&req) };
        assert!(out.len() <= limit);
        let slow =
            Message::from_vec(&answer::encode(&slow, limit).expect("encode")).expect("parse");
        assert_eq!(fast, slow);
        true
    }

    #[test]
    fn plain_queries_take_the_fast_path() {
        let zone = zone();
        for (name, rtype, fast) in [
            ("web.default.svc.cluster.local.", RecordType::A, true),
            ("WEB.default.svc.cluster.local.", RecordType::AAAA, true),
            (
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV,
                true,
            ),
            (
                "_pg._tcp.db.default.svc.cluster.local.",
                RecordType::SRV,
                true,
            ),
            ("nope.default.svc.cluster.local.", RecordType::A, true),
            ("default.svc.cluster.local.", RecordType::A, true),
            ("20.0.96.10.in-addr.arpa.", RecordType::PTR, true),
            ("dns-version.cluster.local.", RecordType::TXT, true),
            ("10-1-2-3.default.pod.cluster.local.", RecordType::A, false),
            ("ext.default.svc.cluster.local.", RecordType::A, false),
            ("web.default.svc.cluster.local.", RecordType::ANY, false),
            ("www.example.com.", RecordType::A, false),
            ("99.0.96.10.in-addr.arpa.", RecordType::PTR, false),
        ] {
            for edns in [None, Some(1232)] {
                let taken = agrees(&zone, &request(name, rtype, edns), false);
                assert_eq!(taken, fast, "{name} {rtype} {edns:?}");
            }
        }
    }

    #[test]
    fn compiled_answers_follow_updates() {
        let mut zone = zone();
        zone.apply_service(&fixtures::cluster_ip(
            "default",
            "web",
            &["10.96.0.99"],
            &[],
        ));
        let bytes = request("web.default.svc.cluster.local.", RecordType::A, None);
        assert!(agrees(&zone, &bytes, false));
        let bytes = request(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            None,
        );
        assert!(
            agrees(&zone, &bytes, false),
            "the port is gone: NXDOMAIN, fast"
        );
        zone.apply_namespace(&fixtures::namespace("empty"));
        let bytes = request("empty.svc.cluster.local.", RecordType::A, None);
        assert!(agrees(&zone, &bytes, false), "namespace: no data, fast");
        zone.delete_service(&fixtures::cluster_ip("default", "web", &[], &[]));
        let bytes = request("20.0.96.10.in-addr.arpa.", RecordType::PTR, None);
        assert!(
            !agrees(&zone, &bytes, false),
            "the address is no longer ours"
        );
    }

    fn names() -> impl Strategy<Value = String> {
        let base = prop::sample::select(vec![
            "web.default.svc.cluster.local.",
            "_http._tcp.web.default.svc.cluster.local.",
            "_tcp.web.default.svc.cluster.local.",
            "db.default.svc.cluster.local.",
            "db-0.db.default.svc.cluster.local.",
            "x.db.default.svc.cluster.local.",
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            "pod.cluster.local.",
            "default.pod.cluster.local.",
            "1-2-3-4.default.pod.cluster.local.",
            "ext.default.svc.cluster.local.",
            "20.0.96.10.in-addr.arpa.",
            "local.",
            "www.example.com.",
        ]);
        (base, any::<u64>(), any::<bool>()).prop_map(|(name, case, prefix)| {
            let mut name: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            if prefix {
                name.insert_str(0, "more.");
            }
            name
        })
    }

    proptest! {
        #[test]
        fn fast_and_slow_paths_agree(
            name in names(),
            rtype in prop_oneof![
                prop::sample::select(COMPILED_TYPES.to_vec()),
                any::<u16>().prop_map(RecordType::from),
            ],
            edns in prop::option::of(any::<u16>()),
            tcp in any::<bool>(),
        ) {
            agrees(&zone(), &request(&name, rtype, edns), tcp);
        }
    }
}
