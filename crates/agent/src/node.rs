//! The Node object: registration with its addresses, pod CIDR and the port the agent's
//! server listens on (`status.daemonEndpoints.kubeletEndpoint`, which the API server dials
//! for logs and exec), and the node's own IP when none is given.

use std::net::Ipv4Addr;
use std::process::Command;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::error::{Error, Result};
use crate::pods::Config;

/// Creates the Node if it does not exist and reports it Ready with its addresses.
pub async fn register(client: &Client, config: &Config) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": config.node_name, "labels": {"kubernetes.io/hostname": config.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": go_arch()}},
        "spec": {"podCIDR": config.pod_cidr.to_string(), "podCIDRs": [config.pod_cidr.to_string()]},
    }))
    .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let now = crate::pods::now();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "berth agent is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": config.node_ip.to_string()}, {"type": "Hostname", "address": config.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {"kubeletVersion": "v1.33.0-berth", "containerRuntimeVersion": "berth://process", "operatingSystem": "linux", "architecture": "amd64",
                     "kernelVersion": "", "osImage": "berth", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// The first global IPv4 address of this network namespace that is not on `bridge`, or
/// 127.0.0.1 when there is none (a node with only loopback still works for itself).
pub fn detect_ip(bridge: &str) -> Ipv4Addr {
    let out = Command::new("ip")
        .args(["-j", "-4", "addr", "show", "scope", "global"])
        .output();
    let Ok(out) = out else {
        return Ipv4Addr::LOCALHOST;
    };
    first_address(&out.stdout, bridge).unwrap_or(Ipv4Addr::LOCALHOST)
}

fn first_address(json_out: &[u8], bridge: &str) -> Option<Ipv4Addr> {
    let links: Vec<serde_json::Value> = serde_json::from_slice(json_out).ok()?;
    links
        .iter()
        .filter(|l| l["ifname"].as_str() != Some(bridge))
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .find_map(|a| a["local"].as_str()?.parse().ok())
}

/// This machine's architecture as Go names it (`GOARCH`), which is what the kubelet puts in
/// the `kubernetes.io/arch` label and what node selectors in manifests use.
fn go_arch() -> &'static str {
    berth_image::platform::go_arch(std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_address_off_the_bridge() {
        let out = br#"[{"ifname":"berth0","addr_info":[{"local":"10.244.0.1"}]},
                       {"ifname":"eth0","addr_info":[{"local":"192.168.1.5"}]}]"#;
        assert_eq!(
            first_address(out, "berth0"),
            Some(Ipv4Addr::new(192, 168, 1, 5))
        );
        assert_eq!(first_address(b"[]", "berth0"), None);
        assert_eq!(first_address(b"not json", "berth0"), None);
    }
}
