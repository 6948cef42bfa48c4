//! What the DNS decodes of the objects it watches: only the fields its records are made of.
//! A whole Service or EndpointSlice decodes its managed fields, annotations and status into
//! dozens of small blocks, freed as soon as the zone has its view; at 10,000 Services the
//! holes they leave between the zone's long-lived blocks stay in the resident memory, and
//! their decoders are code the DNS would keep paged in. [`Slim`] decodes the wire JSON into
//! the same Kubernetes type with only those fields set (unknown fields are skipped without
//! being built), so the zone reads it as it reads a whole object.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de};

use crate::records::SERVICE_NAME_LABEL;

/// A `K` decoded with only the fields the DNS reads (see the module docs). The kube client
/// lists and watches it as it would `K`.
#[derive(Debug, Clone)]
pub struct Slim<K>(pub K);

/// A Kubernetes type that can be decoded slim.
pub trait SlimDecode: Sized {
    /// Decodes the fields the DNS reads; the rest are skipped.
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl<'de, K: SlimDecode> Deserialize<'de> for Slim<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::decode(d).map(Slim)
    }
}

impl<K: kube::Resource<DynamicType = ()>> kube::Resource for Slim<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// `metadata`: what identifies the object and what the watch resumes from, and of the labels
/// only the one that ties a slice to its Service.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "service_name_label")]
    labels: Option<String>,
}

impl From<MetaWire> for ObjectMeta {
    fn from(m: MetaWire) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            resource_version: m.resource_version,
            labels: m
                .labels
                .map(|s| BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), s)])),
            ..ObjectMeta::default()
        }
    }
}

/// A label's key: the service-name label or another (compared, never allocated).
enum LabelKey {
    ServiceName,
    Other,
}

impl<'de> Deserialize<'de> for LabelKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = LabelKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a label key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LabelKey, E> {
                Ok(if v == SERVICE_NAME_LABEL {
                    LabelKey::ServiceName
                } else {
                    LabelKey::Other
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The value of the service-name label in a `labels` map (or null).
fn service_name_label<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct LabelsVisitor;
    impl<'de> Visitor<'de> for LabelsVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of labels")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<LabelKey>()? {
                match key {
                    LabelKey::ServiceName => found = Some(map.next_value::<String>()?),
                    LabelKey::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }
    d.deserialize_any(LabelsVisitor)
}

/// A port of a Service or a slice.
#[derive(Deserialize)]
struct PortWire {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i32>,
}

#[derive(Deserialize)]
struct ServiceWire {
    metadata: Option<MetaWire>,
    spec: Option<ServiceSpecWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpecWire {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    external_name: Option<String>,
    ports: Option<Vec<PortWire>>,
    publish_not_ready_addresses: Option<bool>,
}

impl SlimDecode for Service {
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = ServiceWire::deserialize(d)?;
        Ok(Service {
            metadata: w.metadata.map(ObjectMeta::from).unwrap_or_default(),
            spec: w.spec.map(|s| ServiceSpec {
                type_: s.type_,
                cluster_ip: s.cluster_ip,
                cluster_ips: s.cluster_ips,
                external_name: s.external_name,
                ports: s.ports.map(|ports| {
                    ports
                        .into_iter()
                        .map(|p| ServicePort {
                            name: p.name,
                            protocol: p.protocol,
                            port: p.port.unwrap_or_default(),
                            ..ServicePort::default()
                        })
                        .collect()
                }),
                publish_not_ready_addresses: s.publish_not_ready_addresses,
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceWire {
    metadata: Option<MetaWire>,
    address_type: Option<String>,
    endpoints: Option<Vec<EndpointWire>>,
    ports: Option<Vec<PortWire>>,
}

#[derive(Deserialize)]
struct EndpointWire {
    #[serde(default)]
    addresses: Vec<String>,
    hostname: Option<String>,
    conditions: Option<ConditionsWire>,
}

#[derive(Deserialize)]
struct ConditionsWire {
    ready: Option<bool>,
}

impl SlimDecode for EndpointSlice {
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = SliceWire::deserialize(d)?;
        Ok(EndpointSlice {
            metadata: w.metadata.map(ObjectMeta::from).unwrap_or_default(),
            address_type: w.address_type.unwrap_or_default(),
            endpoints: w
                .endpoints
                .unwrap_or_default()
                .into_iter()
                .map(|e| Endpoint {
                    addresses: e.addresses,
                    hostname: e.hostname,
                    conditions: e.conditions.map(|c| EndpointConditions {
                        ready: c.ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: w.ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: p.name,
                        protocol: p.protocol,
                        port: p.port,
                        ..EndpointPort::default()
                    })
                    .collect()
            }),
        })
    }
}

#[derive(Deserialize)]
struct NamespaceWire {
    metadata: Option<MetaWire>,
}

impl SlimDecode for Namespace {
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = NamespaceWire::deserialize(d)?;
        Ok(Namespace {
            metadata: w.metadata.map(ObjectMeta::from).unwrap_or_default(),
            ..Namespace::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fixtures;
    use crate::records::{ServiceView, SliceView};

    /// Decoding slim and decoding whole give the zone the same view.
    #[test]
    fn slim_and_whole_objects_give_the_same_views() {
        let mut services = vec![
            fixtures::cluster_ip(
                "ns",
                "web",
                &["10.96.0.10", "fd00::10"],
                &[("http", "TCP", 80), ("", "UDP", 53)],
            ),
            fixtures::headless("ns", "db", &[("pg", "TCP", 5432)], true),
            fixtures::external_name("ns", "ext", "example.com"),
        ];
        // What the API adds that the DNS does not read.
        for s in &mut services {
            s.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "web".to_owned())]));
            s.metadata.annotations =
                Some(BTreeMap::from([("a".to_owned(), "{\"x\":1}".to_owned())]));
            s.metadata.resource_version = Some("42".to_owned());
        }
        for svc in &services {
            let json = serde_json::to_vec(svc).expect("encode");
            let slim: Slim<Service> = serde_json::from_slice(&json).expect("decode");
            assert_eq!(
                ServiceView::from_service(&slim.0),
                ServiceView::from_service(svc)
            );
            assert_eq!(slim.0.metadata.resource_version.as_deref(), Some("42"));
            assert_eq!(slim.0.metadata.labels, None);
        }
        let slice = fixtures::slice(
            "ns",
            "db-abc",
            "db",
            &[("10.0.0.1", Some("db-0"), true), ("10.0.0.2", None, false)],
            &[("pg", "TCP", 5432)],
        );
        let json = serde_json::to_vec(&slice).expect("encode");
        let slim: Slim<EndpointSlice> = serde_json::from_slice(&json).expect("decode");
        assert_eq!(
            SliceView::from_slice(&slim.0),
            SliceView::from_slice(&slice)
        );
        assert!(SliceView::from_slice(&slim.0).is_some());
    }

    #[test]
    fn only_the_service_name_label_is_kept() {
        let json = br#"{"metadata":{"name":"s","labels":{"a":"b","kubernetes.io/service-name":"web","c":"d"},"managedFields":[{"manager":"x","fieldsV1":{"f:a":{}}}]},"addressType":"IPv4","endpoints":[]}"#;
        let slim: Slim<EndpointSlice> = serde_json::from_slice(json).expect("decode");
        let labels = slim.0.metadata.labels.expect("labels");
        assert_eq!(labels.len(), 1);
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        let json = br#"{"metadata":{"name":"s","labels":null}}"#;
        let slim: Slim<Namespace> = serde_json::from_slice(json).expect("decode");
        assert_eq!(slim.0.metadata.name.as_deref(), Some("s"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let bad: [&[u8]; 4] = [
            b"{",
            b"[1]",
            br#"{"metadata":{"labels":[1]}}"#,
            br#"{"metadata":{"name":7}}"#,
        ];
        for json in bad {
            assert!(serde_json::from_slice::<Slim<Service>>(json).is_err());
            assert!(serde_json::from_slice::<Slim<EndpointSlice>>(json).is_err());
            assert!(serde_json::from_slice::<Slim<Namespace>>(json).is_err());
        }
        let bad_port = br#"{"spec":{"ports":[{"port":"x"}]}}"#;
        assert!(serde_json::from_slice::<Slim<Service>>(bad_port).is_err());
        let bad_endpoints = br#"{"endpoints":[{"addresses":"10.0.0.1"}]}"#;
        assert!(serde_json::from_slice::<Slim<EndpointSlice>>(bad_endpoints).is_err());
    }

    fn service_strategy() -> impl Strategy<Value = Service> {
        let port = (
            prop::option::of("[a-z]{0,3}"),
            prop::sample::select(vec!["TCP", "UDP", "SCTP", "tcp", "bogus"]),
            any::<u16>(),
        );
        (
            "[a-z]{1,5}",
            prop::collection::vec(any::<[u8; 4]>(), 0..3),
            prop::collection::vec(port, 0..4),
            0..3usize,
            any::<bool>(),
            prop::collection::btree_map("[a-z./-]{1,8}", "[a-z]{0,4}", 0..3),
        )
            .prop_map(|(name, ips, ports, kind, publish, labels)| {
                let ips: Vec<String> = ips
                    .iter()
                    .map(|o| std::net::Ipv4Addr::from(*o).to_string())
                    .collect();
                let ports: Vec<(&str, &str, u16)> = ports
                    .iter()
                    .map(|(n, p, port)| (n.as_deref().unwrap_or(""), *p, *port))
                    .collect();
                let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
                let mut svc = match kind {
                    0 => fixtures::cluster_ip("ns", &name, &ip_refs, &ports),
                    1 => fixtures::headless("ns", &name, &ports, publish),
                    _ => fixtures::external_name("ns", &name, "example.com"),
                };
                svc.metadata.labels = Some(labels);
                svc
            })
    }

    proptest! {
        /// Whatever a Service holds, its slim decoding gives the zone the same view.
        #[test]
        fn slim_decoding_keeps_every_field_the_zone_reads(svc in service_strategy()) {
            let json = serde_json::to_vec(&svc).expect("encode");
            let slim: Slim<Service> = serde_json::from_slice(&json).expect("decode");
            prop_assert_eq!(ServiceView::from_service(&slim.0), ServiceView::from_service(&svc));
        }

        /// Any bytes: an error or an object, never a panic.
        #[test]
        fn any_bytes_decode_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = serde_json::from_slice::<Slim<Service>>(&bytes);
            let _ = serde_json::from_slice::<Slim<EndpointSlice>>(&bytes);
            let _ = serde_json::from_slice::<Slim<Namespace>>(&bytes);
        }
    }
}
