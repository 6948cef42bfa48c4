//! The `kube-system/kube-dns` Service that fronts the cluster DNS, as clusters name it: the
//! cluster DNS address pods have in resolv.conf (10.96.0.10) as its ClusterIP, and Endpoints
//! naming the address this server answers on, so the service proxy carries queries to it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, Result};

const NAME: &str = "kube-dns";
const NAMESPACE: &str = "kube-system";

/// Makes `kube-system/kube-dns` (ClusterIP `cluster_ip`, no selector) and its Endpoints
/// (`server_ip`, port 53 over UDP and TCP), or brings existing ones up to date. A Service of
/// that name with another ClusterIP is kept and its address logged: pods then need it in
/// their resolv.conf.
pub async fn publish_service(
    client: kube::Client,
    cluster_ip: Ipv4Addr,
    server_ip: Ipv4Addr,
) -> Result<()> {
    let labels = BTreeMap::from([
        ("k8s-app".to_owned(), NAME.to_owned()),
        (
            "kubernetes.io/cluster-service".to_owned(),
            "true".to_owned(),
        ),
        ("kubernetes.io/name".to_owned(), "berth-dns".to_owned()),
    ]);
    let meta = || ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: 53,
        protocol: Some(protocol.into()),
        target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(53)),
        ..ServicePort::default()
    };
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    match services.get_opt(NAME).await.map_err(Error::Publish)? {
        Some(existing) => {
            let ip = existing.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
            if ip != cluster_ip.to_string() {
                tracing::warn!(%ip, wanted = %cluster_ip, "kube-dns has another ClusterIP");
            }
        }
        None => {
            let svc = Service {
                metadata: meta(),
                spec: Some(ServiceSpec {
                    cluster_ip: Some(cluster_ip.to_string()),
                    ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            match services.create(&PostParams::default(), &svc).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Error::Publish(e)),
            }
        }
    }
    let endpoints = Endpoints {
        metadata: meta(),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: server_ip.to_string(),
                ..EndpointAddress::default()
            }]),
            ports: Some(vec![
                EndpointPort {
                    name: Some("dns".into()),
                    port: 53,
                    protocol: Some("UDP".into()),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some("dns-tcp".into()),
                    port: 53,
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                },
            ]),
            ..EndpointSubset::default()
        }]),
    };
    let api: Api<Endpoints> = Api::namespaced(client, NAMESPACE);
    match api.get_opt(NAME).await.map_err(Error::Publish)? {
        Some(current) if current.subsets == endpoints.subsets => Ok(()),
        Some(current) => {
            let mut new = endpoints;
            new.metadata.resource_version = current.metadata.resource_version;
            api.replace(NAME, &PostParams::default(), &new)
                .await
                .map(|_| ())
                .map_err(Error::Publish)
        }
        None => api
            .create(&PostParams::default(), &endpoints)
            .await
            .map(|_| ())
            .map_err(Error::Publish),
    }
}
