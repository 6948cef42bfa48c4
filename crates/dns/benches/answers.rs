//! Queries per second of the answer core and of the UDP server on loopback, on the zone shape of
//! `shared/bench/gen_dns_zone.py` (Services with an A and an `_http._tcp` SRV, and a slice of 5 endpoints each; mix A 50, SRV 20,
//! AAAA 10, NXDOMAIN 20). `cargo bench -p berth-dns --bench answers`; bounded in time, loopback only.

use std::net::UdpSocket;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use berth_dns::{Config, Server, Zone, ZoneConfig, answer, fixtures};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio_util::sync::CancellationToken;

fn zone(services: usize) -> Zone {
    let mut zone = Zone::new(&ZoneConfig::default()).expect("zone");
    for i in 0..services {
        let ip = format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250);
        let svc = fixtures::cluster_ip(
            &format!("ns-{}", i % 10),
            &format!("svc-{i}"),
            &[&ip],
            &[("http", "TCP", 80)],
        );
        zone.apply_service(&svc);
        // One slice of 5 endpoints each, as scripts/bench-footprint.sh loads.
        let eps: Vec<String> = (0..5)
            .map(|e| format!("10.{}.{}.{e}", 1 + i / 250, i % 250))
            .collect();
        let eps: Vec<fixtures::Ep<'_>> = eps.iter().map(|ip| (ip.as_str(), None, true)).collect();
        let slice = fixtures::slice(
            &format!("ns-{}", i % 10),
            &format!("svc-{i}-abcde"),
            &format!("svc-{i}"),
            &eps,
            &[("http", "TCP", 8080)],
        );
        zone.apply_slice(&slice);
    }
    zone
}

/// A deterministic query mix (a tiny LCG instead of a random crate).
fn queries(services: usize, n: usize) -> Vec<Vec<u8>> {
    let mut seed: u64 = 1;
    let mut next = |m: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        usize::try_from(seed >> 33).unwrap_or(0) % m
    };
    (0..n)
        .map(|id| {
            let i = next(services);
            let (svc, ns) = (format!("svc-{i}"), format!("ns-{}", i % 10));
            let (name, rtype) = match next(100) {
                0..50 => (format!("{svc}.{ns}.svc.cluster.local."), RecordType::A),
                50..70 => (
                    format!("_http._tcp.{svc}.{ns}.svc.cluster.local."),
                    RecordType::SRV,
                ),
                70..80 => (format!("{svc}.{ns}.svc.cluster.local."), RecordType::AAAA),
                80..90 => (
                    format!("{svc}.{ns}.svc.cluster.local.{ns}.svc.cluster.local."),
                    RecordType::A,
                ),
                _ => (
                    format!("nosuch-{}.{ns}.svc.cluster.local.", next(1_000_000)),
                    RecordType::A,
                ),
            };
            let mut req = Message::query();
            req.metadata.id = u16::try_from(id % 65536).unwrap_or(0);
            req.metadata.recursion_desired = true;
            req.add_query(Query::query(Name::from_ascii(&name).expect("name"), rtype));
            req.to_vec().expect("encode")
        })
        .collect()
}

/// This process's resident set, KiB (procfs).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rate(label: &str, mut one: impl FnMut(&[u8]), qs: &[Vec<u8>]) {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for q in qs {
            one(q);
        }
        n += qs.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: {:.0} queries/s ({:.2} us/query)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn udp(zone: Zone, qs: &[Vec<u8>]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let shutdown = CancellationToken::new();
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstream: vec![],
        ..Config::default()
    };
    let server = {
        let _entered = runtime.enter();
        Server::bind(&config.listen, 1).expect("bind")
    };
    let addr = server.local_addrs()[0];
    let token = shutdown.clone();
    runtime.spawn(async move {
        server
            .serve(&config, Arc::new(RwLock::new(zone)), token)
            .await
    });
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client.connect(addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let (mut sent, mut got, window) = (0u64, 0u64, 64u64);
    let start = Instant::now();
    'outer: while start.elapsed() < Duration::from_secs(3) {
        for q in qs {
            while sent - got >= window {
                if client.recv(&mut buf).is_err() {
                    // Lost answers: forget them, keep going.
                    sent = got;
                    continue 'outer;
                }
                got += 1;
            }
            let _ = client.send(q);
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "udp 127.0.0.1 (client and server share the 2 cores, window {window}): {:.0} answers/s",
        got as f64 / secs
    );
    shutdown.cancel();
}

/// `answers serve ADDR:PORT SERVICES SECONDS WORKERS`: serve the bench zone for dnsperf (as
/// `shared/bench/dns.sh` runs NSD and Knot), then exit after SECONDS.
fn serve_for_dnsperf(args: &[String]) {
    let addr = args
        .first()
        .and_then(|a| a.parse().ok())
        .expect("ADDR:PORT");
    let services: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(30);
    let workers: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config {
        listen: vec![addr],
        udp_sockets: workers,
        upstream: vec![],
        ..Config::default()
    };
    let zone = Arc::new(RwLock::new(zone(services)));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    runtime.spawn(async move { berth_dns::serve(config, zone, token).await });
    println!("ready on {addr}");
    std::thread::sleep(Duration::from_secs(seconds));
    shutdown.cancel();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "serve") {
        serve_for_dnsperf(&args[at + 1..]);
        return;
    }
    for services in [1_000, 10_000] {
        let rss_before = rss_kib();
        let start = Instant::now();
        let mut z = zone(services);
        println!(
            "zone of {services} Services: built in {:.1} ms, {} names, {} compiled answers, \
             RSS +{} KiB (process RSS {} KiB)",
            start.elapsed().as_secs_f64() * 1e3,
            z.len(),
            z.compiled_answers(),
            rss_kib().saturating_sub(rss_before),
            rss_kib(),
        );
        // Read-your-writes inside the server: a watch event to a servable answer.
        let start = Instant::now();
        let rounds = 1_000u32;
        for r in 0..rounds {
            let ip = format!("10.97.{}.{}", r / 250, 1 + r % 250);
            let svc = fixtures::cluster_ip("ns-1", "svc-1", &[&ip], &[("http", "TCP", 80)]);
            z.apply_service(&svc);
        }
        println!(
            "  one Service changed and recompiled: {:.1} us",
            start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        );
    }
    let services = 1_000;
    let z = zone(services);
    let qs = queries(services, 20_000);
    let mut out = Vec::with_capacity(1232);
    rate(
        "fast path (parse, lookup, patch)",
        |q| {
            let _ = z.fast_answer(q, true, false, &mut out);
        },
        &qs,
    );
    rate(
        "slow path (hickory parse, answer, encode)",
        |q| {
            if let Ok((req, answer::Outcome::Answer(resp))) = answer::handle(&z, q) {
                let _ = answer::encode(&resp, answer::udp_limit(&req));
            }
        },
        &qs,
    );
    udp(z, &qs);
}
