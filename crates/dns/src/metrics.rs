//! Prometheus metrics under CoreDNS's names (`coredns_dns_requests_total`,
//! `coredns_dns_request_duration_seconds`, `coredns_dns_responses_total`, cache hits and
//! misses), so dashboards made for CoreDNS read berth's. The binary owns the `Registry`.

use std::sync::Arc;

use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `coredns_dns_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub server: Arc<String>,
    pub zone: Arc<String>,
    pub proto: &'static str,
    /// 1 for IPv4 clients, 2 for IPv6, as CoreDNS.
    pub family: &'static str,
    pub r#type: &'static str,
}

/// Labels of `coredns_dns_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub server: Arc<String>,
    pub zone: Arc<String>,
    pub r#type: &'static str,
}

/// Labels of `coredns_dns_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub server: Arc<String>,
    pub zone: Arc<String>,
    pub rcode: &'static str,
    /// `kubernetes` for the cluster zone, `forward` for upstream answers, as CoreDNS's plugins.
    pub plugin: &'static str,
}

/// Labels of the cache counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `success` or `denial` for hits; empty for misses.
    pub r#type: &'static str,
}

/// The DNS server's metrics. `Default` gives working but unregistered ones.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<DurationLabels, Histogram>,
    pub responses: Family<ResponseLabels, Counter>,
    pub cache_hits: Family<CacheLabels, Counter>,
    pub cache_misses: Counter,
}

fn duration_histogram() -> Histogram {
    // 8 us to ~0.5 s: cluster answers take microseconds, forwarded ones milliseconds.
    Histogram::new(exponential_buckets(0.000008, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            responses: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Counter::default(),
        }
    }
}

/// One answered query, as the metrics see it.
pub(crate) struct Observed<'a> {
    pub server: &'a Arc<String>,
    pub zone: &'a Arc<String>,
    pub tcp: bool,
    pub ipv6: bool,
    pub qtype: u16,
    pub rcode: u8,
    pub forwarded: bool,
    pub seconds: f64,
}

impl Metrics {
    /// Registers the metrics under CoreDNS's names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            m.requests.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            m.duration.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes.",
            m.responses.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "The count of cache hits.",
            m.cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "The count of cache misses.",
            m.cache_misses.clone(),
        );
        m
    }

    /// `n` queries alike in every label and duration (one UDP batch): one lookup per family.
    pub(crate) fn observe_many(&self, o: &Observed<'_>, n: u64) {
        let rtype = type_label(o.qtype);
        self.requests
            .get_or_create(&RequestLabels {
                server: o.server.clone(),
                zone: o.zone.clone(),
                proto: if o.tcp { "tcp" } else { "udp" },
                family: if o.ipv6 { "2" } else { "1" },
                r#type: rtype,
            })
            .inc_by(n);
        let histogram = self.duration.get_or_create(&DurationLabels {
            server: o.server.clone(),
            zone: o.zone.clone(),
            r#type: rtype,
        });
        for _ in 0..n {
            histogram.observe(o.seconds);
        }
        drop(histogram);
        self.responses
            .get_or_create(&ResponseLabels {
                server: o.server.clone(),
                zone: o.zone.clone(),
                rcode: rcode_label(o.rcode),
                plugin: if o.forwarded { "forward" } else { "kubernetes" },
            })
            .inc_by(n);
    }
}

/// CoreDNS's `type` label: common types by name, the rest `other` (bounded cardinality).
fn type_label(qtype: u16) -> &'static str {
    match RecordType::from(qtype) {
        t @ (RecordType::A
        | RecordType::AAAA
        | RecordType::SRV
        | RecordType::PTR
        | RecordType::CNAME
        | RecordType::TXT
        | RecordType::SOA
        | RecordType::NS
        | RecordType::MX
        | RecordType::ANY
        | RecordType::HTTPS
        | RecordType::SVCB) => t.into(),
        _ => "other",
    }
}

fn rcode_label(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coredns_names_in_the_exposition() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let server = Arc::new("dns://127.0.0.1:53".to_owned());
        let zone = Arc::new("cluster.local.".to_owned());
        m.observe_many(
            &Observed {
                server: &server,
                zone: &zone,
                tcp: false,
                ipv6: false,
                qtype: 1,
                rcode: 3,
                forwarded: false,
                seconds: 0.00002,
            },
            1,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for want in [
            "coredns_dns_requests_total{server=\"dns://127.0.0.1:53\",zone=\"cluster.local.\",proto=\"udp\",family=\"1\",type=\"A\"} 1",
            "coredns_dns_responses_total{server=\"dns://127.0.0.1:53\",zone=\"cluster.local.\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"} 1",
            "coredns_dns_request_duration_seconds_count{server=\"dns://127.0.0.1:53\",zone=\"cluster.local.\",type=\"A\"} 1",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }
}
