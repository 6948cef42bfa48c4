//! The fast path: answers for the cluster zone kept as wire bytes next to each lower-cased wire
//! name, so a plain query costs a header parse, one hash lookup, a short scan and a copy with
//! the ID, flags and question (the client's case) patched in. Anything unusual (EDNS options we
//! do not expect, several questions, ANY, pod names, CNAMEs, big answers) is left to the slow
//! path in `answer`, which is also what built these bytes.

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
pub(crate) const MAX_COMPILED: usize = 512;

const OPT_RR_LEN: usize = 11;

/// What the fast path knows of a name of the zone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known<'a> {
    /// An alias: every type goes to the slow path.
    pub alias: bool,
    /// The compiled answers (see [`compile`]).
    pub answers: &'a [u8],
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

/// Appends the compiled answers of one name to `out`: for each type with records, its type
/// (2 bytes), length (2 bytes) and response (ID 0, no OPT) without its question, which is
/// the name already kept beside the answers and is copied from the query when answering (the
/// same length, so compression pointers into it stay right); an empty response means the
/// slow path answers that type (too big to keep). `present(type)` says whether the name has
/// records of a type, `answer(query)` is the slow path's response to a lower-case query.
pub(crate) fn compile(
    name: &Name,
    present: impl Fn(RecordType) -> bool,
    answer: impl Fn(&Message) -> Option<Message>,
    out: &mut Vec<u8>,
) {
    let question = wire(name).len() + 4;
    for t in COMPILED_TYPES {
        if !present(t) {
            continue;
        }
        let mut req = Message::query();
        req.metadata.id = 0;
        req.add_query(Query::query(name.clone(), t));
        let bytes =
            answer(&req).and_then(|resp| (!resp.answers.is_empty()).then(|| resp.to_vec().ok())?);
        let Some(bytes) = bytes else {
            continue;
        };
        let (header, rest) = match bytes.split_at_checked(12) {
            Some((header, rest)) if bytes.len() <= MAX_COMPILED => {
                (header, rest.get(question..).unwrap_or_default())
            }
            _ => (&[][..], &[][..]),
        };
        out.extend(u16::from(t).to_be_bytes());
        out.extend(
            u16::try_from(header.len() + rest.len())
                .unwrap_or(0)
                .to_be_bytes(),
        );
        out.extend_from_slice(header);
        out.extend_from_slice(rest);
    }
}

/// The compiled response of one type: `Some(empty)` for "ask the slow path".
fn compiled(mut answers: &[u8], qtype: u16) -> Option<&[u8]> {
    while let [t0, t1, l0, l1, rest @ ..] = answers {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let (resp, next) = rest.split_at_checked(len)?;
        if u16::from_be_bytes([*t0, *t1]) == qtype {
            return Some(resp);
        }
        answers = next;
    }
    None
}

/// How many responses `answers` holds.
pub(crate) fn count(mut answers: &[u8]) -> usize {
    let mut n = 0;
    while let [_, _, l0, l1, rest @ ..] = answers {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some((_, next)) = rest.split_at_checked(len) else {
            break;
        };
        n += 1;
        answers = next;
    }
    n
}

/// The zone-wide part of the fast path: the apex and the SOA of negative answers.
#[derive(Debug, Default)]
pub struct FastTable {
    /// The zone apex, lower-case wire form.
    apex: Box<[u8]>,
    /// An SOA record after its owner name (type, class, TTL, length, uncompressed rdata).
    soa_tail: Box<[u8]>,
}

impl FastTable {
    /// The table of the zone `apex` whose negative answers carry `soa`.
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
            apex: wire(apex).into(),
            soa_tail: soa_tail.into(),
        }
    }

    /// Writes the response to `req` into `out` and returns the query type, or `None` when the
    /// slow path must answer. `ra` is the RA bit for this client; over UDP the response fits
    /// the client's EDNS size (512 bytes without EDNS). `lookup` finds a lower-case wire name
    /// in the zone.
    pub(crate) fn answer<'a>(
        &self,
        req: &[u8],
        ra: bool,
        tcp: bool,
        out: &mut Vec<u8>,
        lookup: impl Fn(&[u8]) -> Option<Known<'a>>,
    ) -> Option<u16> {
        let q = parse(req)?;
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            q.edns_payload
                .map_or(512, |p| usize::from(p.clamp(512, MAX_UDP_PAYLOAD)))
        };
        let mut key = [0u8; 256];
        let name = &mut key[..q.name_len];
        name.copy_from_slice(&req[12..12 + q.name_len]);
        name.make_ascii_lowercase();
        let name = &key[..q.name_len];
        out.clear();
        let known = lookup(name);
        match known.map(|k| (k.alias, compiled(k.answers, q.qtype))) {
            Some((_, Some([]))) | Some((true, _)) => return None,
            Some((false, Some(template))) => {
                // The header, the client's question, then the records.
                let (header, records) = template.split_at_checked(12)?;
                out.extend_from_slice(header);
                out.extend_from_slice(req.get(12..12 + q.name_len + 4)?);
                out.extend_from_slice(records);
            }
            Some((false, None)) => {
                if !self.negative(name, &q, out, true) {
                    return None;
                }
            }
            None => {
                if !self.negative(name, &q, out, false) {
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

    /// NXDOMAIN (`exists` false) or no data with the SOA, for a name under the apex that has
    /// no compiled answer of the type.
    fn negative(&self, name: &[u8], q: &Parsed, out: &mut Vec<u8>, exists: bool) -> bool {
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
        let rcode = if exists {
            0
        } else {
            // `<x>.<ns>.pod.<zone>` is answered from the name by the slow path.
            let before_apex = starts.iter().rev().find(|&&s| usize::from(s) < apex_at);
            if let Some(&s) = before_apex
                && name[usize::from(s)..apex_at].eq_ignore_ascii_case(b"\x03pod")
            {
                return false;
            }
            3
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
