//! `berth dns` run alone against a `berth server` (one malloc arena, two runtime workers): it
//! answers the Services the API has and follows later changes.

use std::path::Path;
use std::process::Command;

use berth_testkit::{Backend, Cluster, Process, eventually, free_port};

/// The A records `dig` gets for `name` from the server on 127.0.0.1:`port`.
fn dig(port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
            name,
            "A",
        ])
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn standalone_dns_answers_and_follows_changes() {
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    let c = Cluster::start(bin, Backend::Embedded);
    c.ok(&["create", "service", "clusterip", "first", "--tcp=80:8080"]);
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg("dns")
        .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--upstream=127.0.0.1:9")
        .env("RUST_LOG", "info,berth=debug");
    let mut dns = Process::start("berth dns", cmd, &c.dir().join("dns"));
    eventually("berth dns to sync", || {
        dns.assert_running();
        dns.output().contains("synced").then_some(())
    });
    let ip = c.ok(&[
        "get",
        "service",
        "first",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(dig(port, "first.default.svc.cluster.local"), ip.trim());
    // Later changes reach the zone.
    c.ok(&["create", "service", "clusterip", "second", "--tcp=80:8080"]);
    let ip = c.ok(&[
        "get",
        "service",
        "second",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    eventually("the second Service to resolve", || {
        (dig(port, "second.default.svc.cluster.local") == ip.trim()).then_some(())
    });
    c.ok(&["delete", "service", "first"]);
    eventually("the deleted Service to be gone", || {
        dig(port, "first.default.svc.cluster.local")
            .is_empty()
            .then_some(())
    });
    // Two runtime workers, the UDP threads, the main thread: no thread per core beyond that.
    let pid = dns.pid().expect("pid");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        threads <= 3 + cpus + 1,
        "{threads} threads with {cpus} CPUs"
    );
    dns.assert_running();
}
