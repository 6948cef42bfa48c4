//! Table-driven tests of `respond` on the sample cluster: one `check(question, expected)`
//! per spec rule, the expected answer written as dig-like text.

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use proptest::prelude::*;

use super::*;
use crate::fixtures;
use crate::zone::ZoneConfig;

fn zone() -> Zone {
    fixtures::sample_zone(&ZoneConfig::default()).expect("sample zone")
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut req = Message::query();
    req.metadata.recursion_desired = true;
    req.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    req
}

fn line(section: &str, r: &Record) -> String {
    format!(
        "{section} {} {} {} {}",
        r.name,
        r.ttl,
        r.record_type(),
        r.data
    )
}

/// The response as text: rcode and flags, then one line per record.
fn render(outcome: Outcome) -> String {
    let resp = match outcome {
        Outcome::Answer(resp) => resp,
        Outcome::Forward => return "forward".to_owned(),
        Outcome::Drop => return "drop".to_owned(),
    };
    let mut out = format!("{}", resp.metadata.response_code);
    if resp.metadata.authoritative {
        out.push_str(" aa");
    }
    for r in &resp.answers {
        out.push('\n');
        out.push_str(&line("an", r));
    }
    for r in &resp.authorities {
        out.push('\n');
        out.push_str(&line("ns", r));
    }
    for r in &resp.additionals {
        out.push('\n');
        out.push_str(&line("ad", r));
    }
    out
}

fn check(name: &str, rtype: RecordType, expected: &str) {
    let got = render(respond(&zone(), &query(name, rtype)));
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(got, expected.join("\n"), "{name} {rtype}");
}

const SOA: &str =
    "ns cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5";

#[test]
fn cluster_ip_a_and_aaaa() {
    check(
        "web.default.svc.cluster.local.",
        RecordType::A,
        "No Error aa\nan web.default.svc.cluster.local. 30 A 10.96.0.20",
    );
    check(
        "v6.default.svc.cluster.local.",
        RecordType::AAAA,
        "No Error aa\nan v6.default.svc.cluster.local. 30 AAAA fd00::20",
    );
    // An IPv4-only Service has no AAAA: no data, not NXDOMAIN.
    check(
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        &format!("No Error aa\n{SOA}"),
    );
}

#[test]
fn question_case_is_echoed_and_matched_case_insensitively() {
    check(
        "WeB.DeFault.SVC.cluster.LOCAL.",
        RecordType::A,
        "No Error aa\nan WeB.DeFault.SVC.cluster.LOCAL. 30 A 10.96.0.20",
    );
}

#[test]
fn srv_for_named_ports_with_additional_addresses() {
    check(
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        "No Error aa
         an _http._tcp.web.default.svc.cluster.local. 30 SRV 0 100 80 web.default.svc.cluster.local.
         ad web.default.svc.cluster.local. 30 A 10.96.0.20",
    );
    check(
        "_dns._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
        "No Error aa
         an _dns._udp.web.default.svc.cluster.local. 30 SRV 0 100 53 web.default.svc.cluster.local.
         ad web.default.svc.cluster.local. 30 A 10.96.0.20",
    );
    // The port is UDP, not TCP; `_tcp` exists (http), so no data.
    check(
        "_dns._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        &format!("Non-Existent Domain aa\n{SOA}"),
    );
    check(
        "_tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        &format!("No Error aa\n{SOA}"),
    );
}

#[test]
fn headless_answers_ready_endpoints() {
    check(
        "db.default.svc.cluster.local.",
        RecordType::A,
        "No Error aa
         an db.default.svc.cluster.local. 30 A 10.244.0.5
         an db.default.svc.cluster.local. 30 A 10.244.0.6",
    );
    check(
        "db-1.db.default.svc.cluster.local.",
        RecordType::A,
        "No Error aa\nan db-1.db.default.svc.cluster.local. 30 A 10.244.0.6",
    );
    check(
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        "No Error aa
         an _pg._tcp.db.default.svc.cluster.local. 30 SRV 0 50 5432 db-0.db.default.svc.cluster.local.
         an _pg._tcp.db.default.svc.cluster.local. 30 SRV 0 50 5432 db-1.db.default.svc.cluster.local.
         ad db-0.db.default.svc.cluster.local. 30 A 10.244.0.5
         ad db-1.db.default.svc.cluster.local. 30 A 10.244.0.6",
    );
    // The not-ready endpoint is not published.
    check(
        "10-244-0-7.db.default.svc.cluster.local.",
        RecordType::A,
        &format!("Non-Existent Domain aa\n{SOA}"),
    );
}

#[test]
fn headless_follows_slices_and_publish_not_ready() {
    let mut zone = zone();
    zone.apply_service(&fixtures::headless(
        "default",
        "db",
        &[("pg", "TCP", 5432)],
        true,
    ));
    let got = render(respond(
        &zone,
        &query("10-244-0-7.db.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(
        got,
        "No Error aa\nan 10-244-0-7.db.default.svc.cluster.local. 30 A 10.244.0.7"
    );
    // Without any endpoint the headless name does not exist (spec 2.4.1).
    zone.delete_slice(&fixtures::slice("default", "db-abcde", "db", &[], &[]));
    let got = render(respond(
        &zone,
        &query("db.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(got, format!("Non-Existent Domain aa\n{SOA}"));
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    check(
        "20.0.96.10.in-addr.arpa.",
        RecordType::PTR,
        "No Error aa\nan 20.0.96.10.in-addr.arpa. 30 PTR web.default.svc.cluster.local.",
    );
    check(
        "5.0.244.10.in-addr.arpa.",
        RecordType::PTR,
        "No Error aa\nan 5.0.244.10.in-addr.arpa. 30 PTR db-0.db.default.svc.cluster.local.",
    );
    check(
        "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        RecordType::PTR,
        "No Error aa
         an 0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 30 PTR v6.default.svc.cluster.local.",
    );
    // An address nobody has is not ours: forwarded.
    check("99.0.96.10.in-addr.arpa.", RecordType::PTR, "forward");
}

#[test]
fn external_name_is_a_cname() {
    check(
        "ext.default.svc.cluster.local.",
        RecordType::A,
        "No Error aa\nan ext.default.svc.cluster.local. 30 CNAME www.example.com.",
    );
    check(
        "ext.default.svc.cluster.local.",
        RecordType::CNAME,
        "No Error aa\nan ext.default.svc.cluster.local. 30 CNAME www.example.com.",
    );
}

#[test]
fn external_name_follows_changes() {
    let mut zone = zone();
    zone.apply_service(&fixtures::external_name(
        "default",
        "ext",
        "web.default.svc.cluster.local",
    ));
    let got = render(respond(
        &zone,
        &query("ext.default.svc.cluster.local.", RecordType::A),
    ));
    // An in-zone target is chased.
    assert_eq!(
        got,
        "No Error aa
an ext.default.svc.cluster.local. 30 CNAME web.default.svc.cluster.local.
an web.default.svc.cluster.local. 30 A 10.96.0.20"
    );
}

#[test]
fn pod_names_from_the_name() {
    check(
        "10-244-1-9.default.pod.cluster.local.",
        RecordType::A,
        "No Error aa\nan 10-244-1-9.default.pod.cluster.local. 30 A 10.244.1.9",
    );
    check(
        "fd00--9.default.pod.cluster.local.",
        RecordType::AAAA,
        "No Error aa\nan fd00--9.default.pod.cluster.local. 30 AAAA fd00::9",
    );
    check(
        "10-244-1-9.default.pod.cluster.local.",
        RecordType::AAAA,
        &format!("No Error aa\n{SOA}"),
    );
    check(
        "not-an-ip.default.pod.cluster.local.",
        RecordType::A,
        &format!("Non-Existent Domain aa\n{SOA}"),
    );
    check(
        "default.pod.cluster.local.",
        RecordType::A,
        &format!("No Error aa\n{SOA}"),
    );
}

#[test]
fn schema_version_and_apex() {
    check(
        "dns-version.cluster.local.",
        RecordType::TXT,
        "No Error aa\nan dns-version.cluster.local. 30 TXT 1.1.0",
    );
    check(
        "cluster.local.",
        RecordType::SOA,
        &format!("No Error aa\n{}", SOA.replacen("ns ", "an ", 1)),
    );
}

#[test]
fn negative_answers_per_the_spec() {
    // A namespace with Services exists; one without does not.
    check(
        "default.svc.cluster.local.",
        RecordType::A,
        &format!("No Error aa\n{SOA}"),
    );
    check(
        "nope.svc.cluster.local.",
        RecordType::A,
        &format!("Non-Existent Domain aa\n{SOA}"),
    );
    check(
        "svc.cluster.local.",
        RecordType::A,
        &format!("No Error aa\n{SOA}"),
    );
    check(
        "missing.default.svc.cluster.local.",
        RecordType::A,
        &format!("Non-Existent Domain aa\n{SOA}"),
    );
    // The search-list expansions of ndots:5 are plain NXDOMAINs from memory.
    check(
        "www.example.com.default.svc.cluster.local.",
        RecordType::A,
        &format!("Non-Existent Domain aa\n{SOA}"),
    );
    check("www.example.com.", RecordType::A, "forward");
}

#[test]
fn namespaces_exist_without_services() {
    let mut zone = zone();
    let empty = fixtures::namespace("empty");
    zone.apply_namespace(&empty);
    let ask = |zone: &Zone| {
        render(respond(
            zone,
            &query("Empty.svc.cluster.local.", RecordType::A),
        ))
    };
    assert_eq!(ask(&zone), format!("No Error aa\n{SOA}"));
    zone.delete_namespace(&empty);
    assert_eq!(ask(&zone), format!("Non-Existent Domain aa\n{SOA}"));
    // A namespace that also has Services keeps existing through them.
    zone.replace_namespaces([&fixtures::namespace("default")]);
    zone.replace_namespaces([]);
    let got = render(respond(
        &zone,
        &query("default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(got, format!("No Error aa\n{SOA}"));
}

#[test]
fn deleting_a_service_removes_its_names() {
    let mut zone = zone();
    let web = fixtures::cluster_ip("default", "web", &["10.96.0.20"], &[]);
    zone.delete_service(&web);
    for (name, rtype) in [
        ("web.default.svc.cluster.local.", RecordType::A),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
    ] {
        let got = render(respond(&zone, &query(name, rtype)));
        assert_eq!(got, format!("Non-Existent Domain aa\n{SOA}"), "{name}");
    }
    let got = render(respond(
        &zone,
        &query("20.0.96.10.in-addr.arpa.", RecordType::PTR),
    ));
    assert_eq!(got, "forward");
}

#[test]
fn a_slice_that_changes_service_moves_its_endpoints() {
    let mut zone = zone();
    zone.apply_service(&fixtures::headless("default", "other", &[], false));
    let moved = fixtures::slice(
        "default",
        "db-abcde",
        "other",
        &[("10.244.0.9", Some("x"), true)],
        &[],
    );
    zone.apply_slice(&moved);
    let got = render(respond(
        &zone,
        &query("db.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(got, format!("Non-Existent Domain aa\n{SOA}"));
    let got = render(respond(
        &zone,
        &query("x.other.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(
        got,
        "No Error aa\nan x.other.default.svc.cluster.local. 30 A 10.244.0.9"
    );
    // Relisting slices without it empties `other` too.
    zone.replace_slices([]);
    let got = render(respond(
        &zone,
        &query("other.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(got, format!("Non-Existent Domain aa\n{SOA}"));
}

#[test]
fn relist_drops_what_is_gone() {
    let mut zone = zone();
    let keep = fixtures::cluster_ip("default", "web", &["10.96.0.21"], &[]);
    zone.replace_services([&keep]);
    let got = render(respond(
        &zone,
        &query("web.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(
        got,
        "No Error aa\nan web.default.svc.cluster.local. 30 A 10.96.0.21"
    );
    let got = render(respond(
        &zone,
        &query("ext.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(got, format!("Non-Existent Domain aa\n{SOA}"));
}

#[test]
fn configurable_domain_and_ttls() {
    let config = ZoneConfig {
        domain: "Corp.Example".to_owned(),
        ttl: 7,
        negative_ttl: 2,
    };
    let zone = fixtures::sample_zone(&config).expect("zone");
    let got = render(respond(
        &zone,
        &query("web.default.svc.corp.example.", RecordType::A),
    ));
    assert_eq!(
        got,
        "No Error aa\nan web.default.svc.corp.example. 7 A 10.96.0.20"
    );
    let got = render(respond(
        &zone,
        &query("x.default.svc.corp.example.", RecordType::A),
    ));
    assert!(
        got.starts_with("Non-Existent Domain aa\nns corp.example. 2 SOA"),
        "{got}"
    );
    let got = render(respond(
        &zone,
        &query("web.default.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(got, "forward");
}

#[test]
fn malformed_and_odd_requests() {
    let zone = zone();
    let mut two = query("web.default.svc.cluster.local.", RecordType::A);
    two.add_query(Query::query(Name::root(), RecordType::A));
    assert_eq!(render(respond(&zone, &two)), "Form Error");
    let mut none = query("web.default.svc.cluster.local.", RecordType::A);
    none.queries.clear();
    assert_eq!(render(respond(&zone, &none)), "Form Error");
    let mut notify = query("web.default.svc.cluster.local.", RecordType::A);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(render(respond(&zone, &notify)), "Not Implemented");
    let mut chaos = query("web.default.svc.cluster.local.", RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(render(respond(&zone, &chaos)), "Query Refused");
    let axfr = query("cluster.local.", RecordType::AXFR);
    assert_eq!(render(respond(&zone, &axfr)), "Query Refused");
    let mut edns1 = query("web.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    edns1.edns = Some(edns);
    assert_eq!(render(respond(&zone, &edns1)), "Bad option versions");
    let resp = Message::response(1, OpCode::Query);
    assert_eq!(render(respond(&zone, &resp)), "drop");
    // A question name that points at itself (a compression loop), and one that points past
    // the end: FORMERR, never a hang or a panic.
    for name in [[0xc0, 0x0c], [0xc0, 0xff]] {
        let mut packet = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        packet.extend(name);
        packet.extend([0, 1, 0, 1]);
        let Err(Some(reply)) = handle(&zone, &packet) else {
            panic!("{name:x?} parsed");
        };
        let reply = Message::from_vec(&reply).expect("FORMERR parses");
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(
            reply.metadata.response_code,
            hickory_proto::op::ResponseCode::FormErr
        );
    }
    assert_eq!(formerr(&[1, 2, 3]), None);
    assert_eq!(
        formerr(&[0xab, 0xcd, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
        Some(vec![0xab, 0xcd, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0])
    );
}

#[test]
fn edns_is_echoed_and_truncation_sets_tc() {
    let mut zone = zone();
    let eps: Vec<String> = (0..60).map(|i| format!("10.244.3.{i}")).collect();
    let eps: Vec<(&str, Option<&str>, bool)> =
        eps.iter().map(|ip| (ip.as_str(), None, true)).collect();
    zone.apply_service(&fixtures::headless("default", "big", &[], false));
    zone.apply_slice(&fixtures::slice("default", "big-1", "big", &eps, &[]));
    let mut req = query("big.default.svc.cluster.local.", RecordType::A);
    let Outcome::Answer(resp) = respond(&zone, &req) else {
        panic!("no answer")
    };
    assert_eq!(resp.answers.len(), 60);
    assert!(resp.edns.is_none());
    let small = encode(&resp, udp_limit(&req)).expect("encode");
    let small = Message::from_vec(&small).expect("decode");
    assert!(small.metadata.truncation && small.answers.is_empty());
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    req.edns = Some(edns);
    let Outcome::Answer(resp) = respond(&zone, &req) else {
        panic!("no answer")
    };
    assert_eq!(
        resp.edns.as_ref().map(|e| e.max_payload()),
        Some(MAX_UDP_PAYLOAD)
    );
    let big = Message::from_vec(&encode(&resp, udp_limit(&req)).expect("encode")).expect("decode");
    assert!(!big.metadata.truncation);
    assert_eq!(big.answers.len(), 60);
}

fn valid_queries() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "web.default.svc.cluster.local.",
        "_http._tcp.web.default.svc.cluster.local.",
        "db.default.svc.cluster.local.",
        "10-1-2-3.default.pod.cluster.local.",
        "20.0.96.10.in-addr.arpa.",
        "ext.default.svc.cluster.local.",
    ]);
    let types = prop::sample::select(vec![
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::PTR,
        RecordType::ANY,
        RecordType::TXT,
    ]);
    (names, types, any::<bool>()).prop_map(|(name, rtype, edns)| {
        let mut req = query(name, rtype);
        if edns {
            req.edns = Some(Edns::new());
        }
        req.to_vec().expect("encode")
    })
}

/// Feeds the whole per-packet path; every answer must re-parse.
fn survives(zone: &Zone, bytes: &[u8]) {
    match handle(zone, bytes) {
        Ok((req, Outcome::Answer(resp))) => {
            let out = encode(&resp, udp_limit(&req)).expect("an answer always encodes");
            assert!(out.len() <= udp_limit(&req));
            Message::from_vec(&out).expect("an answer always re-parses");
        }
        Ok(_) | Err(None) => {}
        Err(Some(formerr)) => {
            Message::from_vec(&formerr).expect("FORMERR re-parses");
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        survives(&zone(), &bytes);
    }

    #[test]
    fn mutated_queries_never_panic(
        query in valid_queries(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        shorten in any::<bool>(),
    ) {
        let mut bytes = query;
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if shorten {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        survives(&zone(), &bytes);
    }
}
