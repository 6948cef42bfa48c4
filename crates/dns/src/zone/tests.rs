//! Incremental updates must equal a rebuild: random sequences of Service and EndpointSlice
//! applies and deletes, then every interesting name is asked of the updated zone and of a zone
//! built from scratch from the surviving objects, on both the slow and the fast path.

use std::collections::BTreeMap;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;

use super::*;
use crate::answer::{Outcome, respond};
use crate::fixtures;

const NAMESPACES: [&str; 2] = ["x", "y"];
const SERVICES: [&str; 3] = ["a", "b", "c"];
const IPS: [&str; 4] = ["10.96.0.1", "10.96.0.2", "10.244.0.1", "fd00::1"];

#[derive(Debug, Clone)]
enum Op {
    Service {
        ns: usize,
        svc: usize,
        kind: usize,
        ip: usize,
    },
    DeleteService {
        ns: usize,
        svc: usize,
    },
    Slice {
        ns: usize,
        slice: usize,
        svc: usize,
        eps: Vec<(usize, bool, bool)>,
    },
    DeleteSlice {
        ns: usize,
        slice: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..3usize, 0..4usize, 0..4usize).prop_map(|(ns, svc, kind, ip)| Op::Service {
            ns,
            svc,
            kind,
            ip
        }),
        (0..2usize, 0..3usize).prop_map(|(ns, svc)| Op::DeleteService { ns, svc }),
        (
            0..2usize,
            0..2usize,
            0..3usize,
            prop::collection::vec((0..4usize, any::<bool>(), any::<bool>()), 0..3)
        )
            .prop_map(|(ns, slice, svc, eps)| Op::Slice {
                ns,
                slice,
                svc,
                eps
            }),
        (0..2usize, 0..2usize).prop_map(|(ns, slice)| Op::DeleteSlice { ns, slice }),
    ]
}

fn service(ns: &str, name: &str, kind: usize, ip: usize) -> Service {
    let ports = [("http", "TCP", 80)];
    match kind {
        0 => fixtures::cluster_ip(ns, name, &[IPS[ip]], &ports),
        1 => fixtures::headless(ns, name, &ports, false),
        2 => fixtures::headless(ns, name, &ports, true),
        _ => fixtures::external_name(ns, name, "www.example.com"),
    }
}

fn slice(ns: &str, name: &str, svc: &str, eps: &[(usize, bool, bool)]) -> EndpointSlice {
    let eps: Vec<fixtures::Ep<'_>> = eps
        .iter()
        .map(|&(ip, named, ready)| (IPS[ip], named.then_some("h0"), ready))
        .collect();
    fixtures::slice(ns, name, svc, &eps, &[("http", "TCP", 8080)])
}

fn questions() -> Vec<(String, RecordType)> {
    let mut q = Vec::new();
    for ns in NAMESPACES {
        q.push((format!("{ns}.svc.cluster.local."), RecordType::A));
        for svc in SERVICES {
            for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
                q.push((format!("{svc}.{ns}.svc.cluster.local."), t));
            }
            q.push((
                format!("_http._tcp.{svc}.{ns}.svc.cluster.local."),
                RecordType::SRV,
            ));
            q.push((format!("h0.{svc}.{ns}.svc.cluster.local."), RecordType::A));
        }
    }
    for ip in IPS {
        let name = Name::from(ip.parse::<std::net::IpAddr>().expect("ip"));
        q.push((name.to_ascii(), RecordType::PTR));
    }
    q
}

fn ask(zone: &Zone, name: &str, rtype: RecordType) -> (String, Option<Vec<u8>>) {
    let mut req = Message::query();
    req.metadata.id = 7;
    req.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    let slow = match respond(zone, &req) {
        Outcome::Answer(mut resp) => {
            // Record order within an RRset is not part of the contract.
            resp.answers.sort_by_key(|r| r.to_string());
            resp.additionals.sort_by_key(|r| r.to_string());
            format!("{resp:?}")
        }
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    let fast = zone
        .fast_answer(&req.to_vec().expect("encode"), false, true, &mut out)
        .map(|_| out);
    (slow, fast)
}

fn same_answers(zone: &Zone, fresh: &Zone) -> std::result::Result<(), TestCaseError> {
    for (name, rtype) in questions() {
        // Slow paths must agree exactly; fast answers too (both keyed on the same state).
        let (a, b) = (ask(zone, &name, rtype), ask(fresh, &name, rtype));
        prop_assert_eq!(&a.0, &b.0, "{} {}", name, rtype);
        prop_assert_eq!(
            a.1.is_some(),
            b.1.is_some(),
            "fast path taken: {} {}",
            name,
            rtype
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn incremental_equals_rebuild(ops in prop::collection::vec(op(), 1..25)) {
        let mut zone = Zone::new(&ZoneConfig::default()).expect("zone");
        let mut services: BTreeMap<(usize, usize), Service> = BTreeMap::new();
        let mut slices: BTreeMap<(usize, usize), EndpointSlice> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Service { ns, svc, kind, ip } => {
                    let s = service(NAMESPACES[ns], SERVICES[svc], kind, ip);
                    zone.apply_service(&s);
                    services.insert((ns, svc), s);
                }
                Op::DeleteService { ns, svc } => {
                    if let Some(s) = services.remove(&(ns, svc)) {
                        zone.delete_service(&s);
                    }
                }
                Op::Slice { ns, slice: i, svc, eps } => {
                    let name = format!("s{i}");
                    let s = slice(NAMESPACES[ns], &name, SERVICES[svc], &eps);
                    zone.apply_slice(&s);
                    slices.insert((ns, i), s);
                }
                Op::DeleteSlice { ns, slice: i } => {
                    if let Some(s) = slices.remove(&(ns, i)) {
                        zone.delete_slice(&s);
                    }
                }
            }
        }
        // Every name is found at its own slot, and the table holds nothing else.
        prop_assert_eq!(zone.names.len(), zone.entries.len());
        for (i, e) in zone.entries.iter().enumerate() {
            prop_assert_eq!(zone.slot_of(e.name()), Some(i));
        }
        // Every slice with a Service label is filed once, and found.
        prop_assert_eq!(zone.slice_index.len(), slices.len());
        for (ns, i) in slices.keys() {
            let name = format!("s{i}");
            prop_assert!(zone.find_slice(NAMESPACES[*ns], &name).is_some(), "{} not filed", name);
        }
        let mut fresh = Zone::new(&ZoneConfig::default()).expect("zone");
        fresh.replace_services(services.values());
        fresh.replace_slices(slices.values());
        same_answers(&zone, &fresh)?;
        // A relist that finds only some of the slices drops the others.
        let kept: Vec<&EndpointSlice> = slices.values().step_by(2).collect();
        zone.replace_slices(kept.iter().copied());
        prop_assert_eq!(zone.slice_index.len(), kept.len());
        let mut fresh = Zone::new(&ZoneConfig::default()).expect("zone");
        fresh.replace_services(services.values());
        fresh.replace_slices(kept);
        same_answers(&zone, &fresh)?;
    }
}

#[test]
fn a_name_takes_at_most_40_bytes() {
    // 10,000 Services make ~40,000 names; every 8 bytes here is ~0.3 MB.
    assert!(std::mem::size_of::<NameEntry>() <= 40);
    assert!(std::mem::size_of::<Owners>() <= 16);
}

#[test]
fn namespaces_and_port_names_are_kept_once() {
    let mut zone = Zone::new(&ZoneConfig::default()).expect("zone");
    let services: Vec<Service> = (0..3)
        .map(|i| {
            let ip = format!("10.96.0.{}", i + 1);
            fixtures::cluster_ip("x", &format!("s{i}"), &[&ip], &[("http", "TCP", 80)])
        })
        .collect();
    zone.replace_services(&services);
    let states: Vec<&ServiceState> = zone.services.iter().flatten().collect();
    assert_eq!(states.len(), 3);
    for pair in states.windows(2) {
        assert!(Arc::ptr_eq(&pair[0].key.namespace, &pair[1].key.namespace));
        let port = |s: &ServiceState| s.spec.as_ref().expect("spec").ports[0].name.clone();
        assert!(Arc::ptr_eq(&port(pair[0]), &port(pair[1])));
    }
    assert_eq!(zone.strings.len(), 2, "x and http");
    // A relist without them: the copies go too.
    zone.replace_services(&[]);
    assert!(zone.strings.is_empty());
}
