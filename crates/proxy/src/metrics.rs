//! The proxy's metrics, with kube-proxy's names (pkg/proxy/metrics) so existing dashboards
//! read them; buckets start at 100 µs because a sync here takes well under a millisecond.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Handles to the proxy's metrics; cheap to clone. `Default` makes unregistered ones.
#[derive(Debug, Clone)]
pub struct Metrics {
    sync_duration: Histogram,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    failures: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            sync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            last_sync: Gauge::default(),
            failures: Counter::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.failures.clone(),
        );
        m
    }

    pub(crate) fn synced(&self, took: Duration) {
        self.sync_duration.observe(took.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_sync.set(now);
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kube_proxys() {
        let mut r = Registry::default();
        let m = Metrics::register(&mut r);
        m.synced(Duration::from_micros(300));
        m.failed();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encodes");
        assert!(out.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1"));
        assert!(out.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1"));
    }
}
