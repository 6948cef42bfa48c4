//! The server as a client sees it: the real `dig` (dnsutils) against `berth_dns::serve` on
//! 127.0.0.1 with the sample cluster, and a fake upstream resolver on 127.0.0.2 for the names
//! outside the cluster zone. Only loopback traffic.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use berth_dns::{Config, Server, ZoneConfig, fixtures};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

struct Harness {
    port: u16,
    registry: prometheus_client::registry::Registry,
    upstream_queries: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A resolver for `example.com` only: www has A 192.0.2.1 (TTL 60), the rest is NXDOMAIN.
async fn fake_upstream(count: Arc<AtomicUsize>, shutdown: CancellationToken) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.2:0").await.expect("bind upstream");
    let addr = socket.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
                () = shutdown.cancelled() => return,
            };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = req.queries.first() else {
                continue;
            };
            let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
            resp.queries = req.queries.clone();
            resp.metadata.recursion_available = true;
            let www = Name::from_ascii("www.example.com.").expect("name");
            if q.name() == &www && q.query_type() == RecordType::A {
                let a = RData::A(A::new(192, 0, 2, 1));
                resp.answers.push(Record::from_rdata(www, 60, a));
            } else {
                if q.name() != &www {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                }
                let apex = Name::from_ascii("example.com.").expect("name");
                let soa = SOA::new(apex.clone(), apex.clone(), 1, 1, 1, 1, 30);
                resp.authorities
                    .push(Record::from_rdata(apex, 30, RData::SOA(soa)));
            }
            let _ = socket.send_to(&resp.to_vec().expect("encode"), peer).await;
        }
    });
    addr
}

async fn start(allow_recursion: Vec<IpNet>) -> Harness {
    let shutdown = CancellationToken::new();
    let upstream_queries = Arc::new(AtomicUsize::new(0));
    let upstream = fake_upstream(upstream_queries.clone(), shutdown.clone()).await;
    let mut zone = fixtures::sample_zone(&ZoneConfig::default()).expect("zone");
    let eps: Vec<String> = (0..60).map(|i| format!("10.244.3.{i}")).collect();
    let eps: Vec<fixtures::Ep<'_>> = eps.iter().map(|ip| (ip.as_str(), None, true)).collect();
    zone.apply_service(&fixtures::headless("default", "big", &[], false));
    zone.apply_slice(&fixtures::slice("default", "big-1", "big", &eps, &[]));
    let mut registry = prometheus_client::registry::Registry::default();
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstream: vec![upstream],
        allow_recursion,
        metrics: berth_dns::metrics::Metrics::register(&mut registry),
        ..Config::default()
    };
    let server = Server::bind(&config.listen, config.udp_sockets).expect("bind");
    let port = server.local_addrs()[0].port();
    let zone = Arc::new(RwLock::new(zone));
    let token = shutdown.clone();
    tokio::spawn(async move { server.serve(&config, zone, token).await });
    Harness {
        port,
        registry,
        upstream_queries,
        shutdown,
    }
}

impl Harness {
    /// Runs dig against the server; the output with runs of blanks squeezed to one space.
    async fn dig(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("dig")
            .arg("@127.0.0.1")
            .args(["-p", &self.port.to_string(), "+time=2", "+tries=1"])
            .args(args)
            .output()
            .await
            .expect("dig runs (dnsutils, scripts/deps.sh)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The Prometheus text exposition of the server's metrics.
    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    /// The metrics once they hold every line of `want`: a query is counted after its answer
    /// is sent, so the last one may still be on its way when dig returns.
    async fn metrics_with(&self, want: &[String]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = self.metrics();
            if want.iter().all(|w| text.contains(w.as_str()))
                || std::time::Instant::now() > deadline
            {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The answer (and any other sections asked for) only, one record a line.
    async fn records(&self, args: &[&str]) -> String {
        let mut all = vec!["+noall", "+answer"];
        all.extend_from_slice(args);
        self.dig(&all).await
    }
}

fn loopback() -> Vec<IpNet> {
    berth_dns::config::loopback()
}

#[tokio::test]
async fn a_aaaa_and_headless() {
    let h = start(loopback()).await;
    assert_eq!(
        h.records(&["web.default.svc.cluster.local", "A"]).await,
        "web.default.svc.cluster.local. 30 IN A 10.96.0.20"
    );
    assert_eq!(
        h.records(&["v6.default.svc.cluster.local", "AAAA"]).await,
        "v6.default.svc.cluster.local. 30 IN AAAA fd00::20"
    );
    assert_eq!(
        h.records(&["db.default.svc.cluster.local", "+short"]).await,
        "10.244.0.5\n10.244.0.6"
    );
    assert_eq!(
        h.records(&["db-0.db.default.svc.cluster.local", "+short"])
            .await,
        "10.244.0.5"
    );
}

#[tokio::test]
async fn srv_with_additional_records() {
    let h = start(loopback()).await;
    let got = h
        .records(&[
            "+additional",
            "_http._tcp.web.default.svc.cluster.local",
            "SRV",
        ])
        .await;
    assert_eq!(
        got,
        "_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 100 80 web.default.svc.cluster.local.\n\
         web.default.svc.cluster.local. 30 IN A 10.96.0.20"
    );
    let got = h
        .records(&[
            "+additional",
            "_pg._tcp.db.default.svc.cluster.local",
            "SRV",
        ])
        .await;
    assert_eq!(
        got,
        "_pg._tcp.db.default.svc.cluster.local. 30 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.\n\
         _pg._tcp.db.default.svc.cluster.local. 30 IN SRV 0 50 5432 db-1.db.default.svc.cluster.local.\n\
         db-0.db.default.svc.cluster.local. 30 IN A 10.244.0.5\n\
         db-1.db.default.svc.cluster.local. 30 IN A 10.244.0.6"
    );
}

#[tokio::test]
async fn ptr_records() {
    let h = start(loopback()).await;
    assert_eq!(
        h.records(&["-x", "10.96.0.20"]).await,
        "20.0.96.10.in-addr.arpa. 30 IN PTR web.default.svc.cluster.local."
    );
    assert_eq!(
        h.records(&["-x", "10.244.0.6"]).await,
        "6.0.244.10.in-addr.arpa. 30 IN PTR db-1.db.default.svc.cluster.local."
    );
}

#[tokio::test]
async fn external_name_cname_resolved_upstream() {
    let h = start(loopback()).await;
    assert_eq!(
        h.records(&["ext.default.svc.cluster.local", "A"]).await,
        "ext.default.svc.cluster.local. 30 IN CNAME www.example.com.\n\
         www.example.com. 60 IN A 192.0.2.1"
    );
}

#[tokio::test]
async fn nxdomain_and_no_data_carry_the_soa() {
    let h = start(loopback()).await;
    let soa = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5";
    let got = h
        .dig(&[
            "+noall",
            "+comments",
            "+authority",
            "missing.default.svc.cluster.local",
        ])
        .await;
    assert!(got.contains("status: NXDOMAIN"), "{got}");
    assert!(got.contains("flags: qr aa rd ra;"), "{got}");
    assert!(got.ends_with(soa), "{got}");
    let got = h
        .dig(&[
            "+noall",
            "+comments",
            "+authority",
            "web.default.svc.cluster.local",
            "AAAA",
        ])
        .await;
    assert!(got.contains("status: NOERROR"), "{got}");
    assert!(got.contains("ANSWER: 0"), "{got}");
    assert!(got.ends_with(soa), "{got}");
}

#[tokio::test]
async fn tcp_mixed_case_and_version() {
    let h = start(loopback()).await;
    assert_eq!(
        h.records(&["+tcp", "web.default.svc.cluster.local"]).await,
        "web.default.svc.cluster.local. 30 IN A 10.96.0.20"
    );
    assert_eq!(
        h.records(&["WeB.DeFault.SVC.Cluster.LOCAL"]).await,
        "WeB.DeFault.SVC.Cluster.LOCAL. 30 IN A 10.96.0.20"
    );
    assert_eq!(
        h.records(&["dns-version.cluster.local", "TXT"]).await,
        "dns-version.cluster.local. 30 IN TXT \"1.1.0\""
    );
    assert_eq!(
        h.records(&["10-244-1-9.default.pod.cluster.local", "+short"])
            .await,
        "10.244.1.9"
    );
    let server = format!("server=\"dns://127.0.0.1:{}\"", h.port);
    let wanted: Vec<String> = vec![
        format!(
            "coredns_dns_requests_total{{{server},zone=\"cluster.local.\",proto=\"tcp\",family=\"1\",type=\"A\"}} 1"
        ),
        format!(
            "coredns_dns_requests_total{{{server},zone=\"cluster.local.\",proto=\"udp\",family=\"1\",type=\"A\"}} 2"
        ),
        format!(
            "coredns_dns_responses_total{{{server},zone=\"cluster.local.\",rcode=\"NOERROR\",plugin=\"kubernetes\"}} 4"
        ),
        format!(
            "coredns_dns_request_duration_seconds_count{{{server},zone=\"cluster.local.\",type=\"TXT\"}} 1"
        ),
    ];
    let metrics = h.metrics_with(&wanted).await;
    for want in wanted {
        assert!(metrics.contains(&want), "{want} not in\n{metrics}");
    }
}

#[tokio::test]
async fn truncation_then_tcp() {
    let h = start(loopback()).await;
    let got = h
        .dig(&[
            "+noedns",
            "+ignore",
            "+noall",
            "+comments",
            "big.default.svc.cluster.local",
        ])
        .await;
    assert!(got.contains("flags: qr aa tc rd"), "{got}");
    // dig retries over TCP by itself and gets all 60.
    let got = h
        .records(&["+noedns", "big.default.svc.cluster.local"])
        .await;
    assert_eq!(got.lines().count(), 60, "{got}");
    // With EDNS (dig offers 1232) the 60 addresses fit in UDP.
    let got = h
        .dig(&[
            "+noall",
            "+comments",
            "+answer",
            "big.default.svc.cluster.local",
        ])
        .await;
    assert!(!got.contains(" tc "), "{got}");
    assert!(got.contains("; EDNS: version: 0"), "{got}");
}

#[tokio::test]
async fn forwarding_with_cache() {
    let h = start(loopback()).await;
    assert_eq!(
        h.records(&["www.example.com", "A"]).await,
        "www.example.com. 60 IN A 192.0.2.1"
    );
    assert_eq!(h.upstream_queries.load(Ordering::SeqCst), 1);
    let again = h.records(&["WWW.example.com", "A"]).await;
    assert!(again.starts_with("WWW.example.com. "), "{again}");
    assert!(again.ends_with(" IN A 192.0.2.1"), "{again}");
    assert_eq!(
        h.upstream_queries.load(Ordering::SeqCst),
        1,
        "served from cache"
    );
    let got = h.dig(&["+noall", "+comments", "nothing.example.com"]).await;
    assert!(got.contains("status: NXDOMAIN"), "{got}");
    let got = h.dig(&["+noall", "+comments", "nothing.example.com"]).await;
    assert!(got.contains("status: NXDOMAIN"), "{got}");
    assert_eq!(
        h.upstream_queries.load(Ordering::SeqCst),
        2,
        "negative answer cached"
    );
    let server = format!("server=\"dns://127.0.0.1:{}\"", h.port);
    let wanted: Vec<String> = vec![
        format!(
            "coredns_dns_requests_total{{{server},zone=\".\",proto=\"udp\",family=\"1\",type=\"A\"}} 4"
        ),
        format!(
            "coredns_dns_responses_total{{{server},zone=\".\",rcode=\"NXDOMAIN\",plugin=\"forward\"}} 2"
        ),
        "coredns_cache_hits_total{type=\"success\"} 1".to_owned(),
        "coredns_cache_hits_total{type=\"denial\"} 1".to_owned(),
        "coredns_cache_misses_total 2".to_owned(),
    ];
    let metrics = h.metrics_with(&wanted).await;
    for want in wanted {
        assert!(metrics.contains(&want), "{want} not in\n{metrics}");
    }
}

#[tokio::test]
async fn no_recursion_for_outsiders() {
    let only_one: Vec<IpNet> = vec![IpNet::from(IpAddr::from([127, 0, 0, 1]))];
    let h = start(only_one).await;
    let got = h
        .dig(&["-b", "127.0.0.3", "+noall", "+comments", "www.example.com"])
        .await;
    assert!(got.contains("status: REFUSED"), "{got}");
    assert_eq!(h.upstream_queries.load(Ordering::SeqCst), 0);
    // Cluster names are still answered to them.
    assert_eq!(
        h.records(&["-b", "127.0.0.3", "web.default.svc.cluster.local", "+short"])
            .await,
        "10.96.0.20"
    );
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    // Nothing listens on the upstream port: the connected UDP socket is refused at once.
    let dead = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let shutdown = CancellationToken::new();
    let zone = fixtures::sample_zone(&ZoneConfig::default()).expect("zone");
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstream: vec![dead_addr],
        upstream_timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    };
    let server = Server::bind(&config.listen, 1).expect("bind");
    let port = server.local_addrs()[0].port();
    let token = shutdown.clone();
    tokio::spawn(async move {
        server
            .serve(&config, Arc::new(RwLock::new(zone)), token)
            .await
    });
    let h = Harness {
        port,
        registry: prometheus_client::registry::Registry::default(),
        upstream_queries: Arc::new(AtomicUsize::new(0)),
        shutdown,
    };
    let got = h.dig(&["+noall", "+comments", "www.example.com"]).await;
    assert!(got.contains("status: SERVFAIL"), "{got}");
    // Cluster names do not depend on upstreams.
    assert_eq!(
        h.records(&["web.default.svc.cluster.local", "+short"])
            .await,
        "10.96.0.20"
    );
}

#[tokio::test]
async fn ipv6_listener() {
    let config = Config {
        listen: vec!["[::1]:0".parse().expect("addr")],
        upstream: vec![],
        ..Config::default()
    };
    // A machine without IPv6 on loopback has nothing to test here.
    let Ok(server) = Server::bind(&config.listen, 2) else {
        eprintln!("no [::1] on this machine; skipping");
        return;
    };
    let port = server.local_addrs()[0].port();
    let shutdown = CancellationToken::new();
    let zone = fixtures::sample_zone(&ZoneConfig::default()).expect("zone");
    let token = shutdown.clone();
    tokio::spawn(async move {
        server
            .serve(&config, Arc::new(RwLock::new(zone)), token)
            .await
    });
    for transport in ["+notcp", "+tcp"] {
        let out = tokio::process::Command::new("dig")
            .args([
                "@::1",
                "-p",
                &port.to_string(),
                "+time=2",
                "+tries=1",
                "+short",
            ])
            .args([transport, "v6.default.svc.cluster.local", "AAAA"])
            .output()
            .await
            .expect("dig runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "fd00::20",
            "{transport}"
        );
    }
    shutdown.cancel();
}
