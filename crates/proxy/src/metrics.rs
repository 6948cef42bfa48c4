//! The proxy's metrics, with kube-proxy's names (pkg/proxy/metrics) so existing dashboards
//! read them; buckets start at 100 µs because a sync here takes well under a millisecond.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Handles to the proxy's metrics; cheap to clone. `Default` makes unregistered ones.
#[derive(Debug, Clone)]
pub struct Metrics {
    sync_duration: Histogram,
    network_programming: Histogram,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    failures: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            sync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 1 ms to ~9 min: the time includes the controller's and the watch's share.
            network_programming: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
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
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
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

    /// Notes that a change made at `trigger` (see [`trigger_time`]) is now in the kernel, at
    /// `now`. A trigger in the future (clocks apart) counts as 0.
    pub(crate) fn programmed(&self, trigger: Timestamp, now: Timestamp) {
        let took = now.duration_since(trigger).as_secs_f64().max(0.0);
        self.network_programming.observe(took);
    }
}

/// Annotation the EndpointSlice controller sets to when the change a slice reflects happened
/// (a Pod or Service update), which kube-proxy's network programming latency starts from.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The slice's [`TRIGGER_TIME_ANNOTATION`] (RFC 3339, as kube-controller-manager writes it);
/// `None` when absent or unreadable, as kube-proxy then skips the slice.
pub fn trigger_time(slice: &EndpointSlice) -> Option<Timestamp> {
    slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?
        .parse()
        .ok()
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

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn network_programming_runs_from_the_trigger_time() {
        let mut r = Registry::default();
        let m = Metrics::register(&mut r);
        m.programmed(at("2025-01-01T00:00:00Z"), at("2025-01-01T00:00:00.003Z"));
        m.programmed(at("2025-01-01T00:00:01Z"), at("2025-01-01T00:00:00Z"));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encodes");
        assert!(out.contains("kubeproxy_network_programming_duration_seconds_count 2"));
        // 3 ms, and the future trigger as 0.
        assert!(out.contains("kubeproxy_network_programming_duration_seconds_sum 0.003"));
        assert!(
            out.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.001\"} 1")
        );
        assert!(
            out.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.004\"} 2")
        );
    }

    fn check(annotation: Option<&str>, expected: Option<&str>) {
        let mut slice = EndpointSlice::default();
        if let Some(a) = annotation {
            slice.metadata.annotations = Some(
                [(TRIGGER_TIME_ANNOTATION.to_owned(), a.to_owned())]
                    .into_iter()
                    .collect(),
            );
        }
        assert_eq!(trigger_time(&slice), expected.map(at), "{annotation:?}");
    }

    #[test]
    fn trigger_times_are_read_as_kube_controller_manager_writes_them() {
        check(
            Some("2025-03-04T05:06:07.123456789Z"),
            Some("2025-03-04T05:06:07.123456789Z"),
        );
        check(Some("2025-03-04T05:06:07Z"), Some("2025-03-04T05:06:07Z"));
        check(
            Some("2025-03-04T07:06:07+02:00"),
            Some("2025-03-04T05:06:07Z"),
        );
        check(Some("yesterday"), None);
        check(None, None);
    }
}
