//! Compact builders for the Kubernetes objects the zone reads, and one sample cluster; used by
//! the unit tests, the `dig` integration test and the benchmark.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::records::SERVICE_NAME_LABEL;
use crate::zone::{Zone, ZoneConfig};

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A Namespace.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// A port as (name, protocol, number); an empty name is an unnamed port.
pub type Port<'a> = (&'a str, &'a str, u16);

fn service_ports(ports: &[Port<'_>]) -> Vec<ServicePort> {
    ports
        .iter()
        .map(|(name, protocol, port)| ServicePort {
            name: (!name.is_empty()).then(|| (*name).to_owned()),
            protocol: Some((*protocol).to_owned()),
            port: i32::from(*port),
            ..ServicePort::default()
        })
        .collect()
}

/// A ClusterIP Service with one address per family in `ips`.
pub fn cluster_ip(ns: &str, name: &str, ips: &[&str], ports: &[Port<'_>]) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: ips.first().map(|ip| (*ip).to_owned()),
            cluster_ips: Some(ips.iter().map(|ip| (*ip).to_owned()).collect()),
            ports: Some(service_ports(ports)),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A headless Service (`clusterIP: None`).
pub fn headless(ns: &str, name: &str, ports: &[Port<'_>], publish_not_ready: bool) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some("None".to_owned()),
            cluster_ips: Some(vec!["None".to_owned()]),
            ports: Some(service_ports(ports)),
            publish_not_ready_addresses: Some(publish_not_ready),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// An ExternalName Service pointing at `target`.
pub fn external_name(ns: &str, name: &str, target: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".to_owned()),
            external_name: Some(target.to_owned()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// An endpoint as (address, hostname, ready).
pub type Ep<'a> = (&'a str, Option<&'a str>, bool);

/// An EndpointSlice of Service `service`.
pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    eps: &[Ep<'_>],
    ports: &[Port<'_>],
) -> EndpointSlice {
    let mut metadata = meta(ns, name);
    metadata.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_owned(),
        service.to_owned(),
    )]));
    let family = if eps.iter().any(|(ip, _, _)| ip.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    EndpointSlice {
        metadata,
        address_type: family.to_owned(),
        endpoints: eps
            .iter()
            .map(|(ip, hostname, ready)| Endpoint {
                addresses: vec![(*ip).to_owned()],
                hostname: hostname.map(str::to_owned),
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, protocol, port)| EndpointPort {
                    name: (!name.is_empty()).then(|| (*name).to_owned()),
                    protocol: Some((*protocol).to_owned()),
                    port: Some(i32::from(*port)),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

/// The sample cluster: `web` (ClusterIP 10.96.0.20 with ports http/80, dns/53 UDP and an
/// unnamed one), `db` (headless, pods db-0 10.244.0.5 and db-1 10.244.0.6 ready, one
/// not-ready 10.244.0.7, port pg/5432), `ext` (ExternalName to www.example.com), `v6`
/// (ClusterIP fd00::20) and `kube-dns` in kube-system; all but the last in `default`.
pub fn sample_zone(config: &ZoneConfig) -> crate::Result<Zone> {
    let mut zone = Zone::new(config)?;
    zone.apply_service(&cluster_ip(
        "default",
        "web",
        &["10.96.0.20"],
        &[("http", "TCP", 80), ("dns", "UDP", 53), ("", "TCP", 8080)],
    ));
    zone.apply_service(&headless("default", "db", &[("pg", "TCP", 5432)], false));
    zone.apply_slice(&slice(
        "default",
        "db-abcde",
        "db",
        &[
            ("10.244.0.5", Some("db-0"), true),
            ("10.244.0.6", Some("db-1"), true),
            ("10.244.0.7", None, false),
        ],
        &[("pg", "TCP", 5432)],
    ));
    zone.apply_service(&external_name("default", "ext", "www.example.com"));
    zone.apply_service(&cluster_ip("default", "v6", &["fd00::20"], &[]));
    zone.apply_service(&cluster_ip(
        "kube-system",
        "kube-dns",
        &["10.96.0.10"],
        &[
            ("dns", "UDP", 53),
            ("dns-tcp", "TCP", 53),
            ("metrics", "TCP", 9153),
        ],
    ));
    Ok(zone)
}
