//! What a node agent waits on before starting a new pod's containers, so a pod that a policy
//! isolates is filtered from its first packet: after each sync that reached the kernel the
//! enforcer publishes the pods (uid and address) its table accounts for. A pod whose
//! namespace holds no policy has nothing to wait for.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use crate::policy::PodView;

/// The enforcer's published progress; clones share it.
#[derive(Clone)]
pub struct Programmed {
    pods: watch::Sender<Arc<HashSet<(String, Ipv4Addr)>>>,
    /// The enforcer's cache of policies, once it runs.
    policies: Arc<OnceLock<Store<NetworkPolicy>>>,
    synced: Arc<tokio::sync::SetOnce<()>>,
}

impl Default for Programmed {
    fn default() -> Self {
        Self {
            pods: watch::Sender::new(Arc::default()),
            policies: Arc::default(),
            synced: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Programmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programmed")
            .field("pods", &self.pods.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Programmed {
    /// Whether a new pod in `namespace` must wait for the table: a policy is there, or the
    /// enforcer has not written its first table yet (then nobody knows).
    pub fn isolating(&self, namespace: &str) -> bool {
        let Some(store) = self.policies.get().filter(|_| self.synced.initialized()) else {
            return true;
        };
        store
            .state()
            .iter()
            .any(|p| p.metadata.namespace.as_deref() == Some(namespace))
    }

    /// Resolves once a table that accounts for pod `uid` at `ip` is in the kernel.
    pub async fn programmed(&self, uid: &str, ip: Ipv4Addr) {
        let mut rx = self.pods.subscribe();
        let key = (uid.to_owned(), ip);
        // Err: the enforcer is gone; nothing will come.
        let _ = rx.wait_for(|pods| pods.contains(&key)).await;
    }

    pub(crate) fn set_policies(&self, store: Store<NetworkPolicy>) {
        let _ = self.policies.set(store);
    }

    /// After a sync that reached the kernel, computed from `pods`.
    pub(crate) fn publish(&self, pods: HashSet<(String, Ipv4Addr)>) {
        let _ = self.synced.set(());
        self.pods.send_replace(Arc::new(pods));
    }

    /// The (uid, address) pairs a table computed from `pods` accounts for.
    pub(crate) fn accounted<'a>(
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> HashSet<(String, Ipv4Addr)> {
        pods.into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, PodView::from_pod(p)?.ip)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pod(uid: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"containers": []},
            "status": {"podIP": ip, "phase": "Pending"}
        }))
        .expect("pod")
    }

    #[tokio::test]
    async fn a_pod_is_programmed_once_a_sync_accounts_for_it() {
        let gate = Programmed::default();
        assert!(gate.isolating("ns"), "nothing known before the first sync");
        let ip: Ipv4Addr = "10.244.0.5".parse().expect("ip");
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.programmed("u1", ip).await })
        };
        // Another pod, and the same address with another uid, do not count.
        gate.publish(Programmed::accounted(&[
            pod("u2", "10.244.0.5"),
            pod("u1", "10.244.0.6"),
        ]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        gate.publish(Programmed::accounted(&[pod("u1", "10.244.0.5")]));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released")
            .expect("task");
    }

    #[test]
    fn only_namespaces_with_policies_isolate_once_synced() {
        let gate = Programmed::default();
        let (store, mut writer) = kube::runtime::reflector::store::<NetworkPolicy>();
        let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deny", "namespace": "x"}, "spec": {}
        }))
        .expect("policy");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(policy));
        gate.set_policies(store);
        gate.publish(HashSet::new());
        assert!(gate.isolating("x"));
        assert!(!gate.isolating("y"));
    }
}
