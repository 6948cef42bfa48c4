//! The cluster DNS run alone against a `berth server`, as the small `berth-dns` program and as
//! `berth dns` (one malloc arena, two runtime workers): it answers the Services the API has
//! and follows later changes.

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
    // The same server as its own program and as a subcommand of the multi-call binary.
    let programs = [
        ("berth-dns", Command::new(env!("CARGO_BIN_EXE_berth-dns"))),
        ("berth dns", {
            let mut cmd = Command::new(bin);
            cmd.arg("dns");
            cmd
        }),
    ];
    let mut servers = Vec::new();
    for (name, mut cmd) in programs {
        let port = free_port();
        cmd.arg(format!("--kubeconfig={}", c.kubeconfig.display()))
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg("--upstream=127.0.0.1:9")
            .env("RUST_LOG", "info,berth=debug");
        let log = c.dir().join(name.replace(' ', "-"));
        servers.push((port, Process::start(name, cmd, &log)));
    }
    for (_, dns) in &mut servers {
        eventually("the DNS to sync", || {
            dns.assert_running();
            dns.output().contains("synced").then_some(())
        });
        // Once synced, its start-up pages are unmapped: what follows runs on code the
        // kernel maps back.
        eventually("the start-up pages to be unmapped", || {
            dns.assert_running();
            dns.output()
                .contains("start-up code and read-only data unmapped")
                .then_some(())
        });
    }
    let ip = c.ok(&[
        "get",
        "service",
        "first",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    for (port, _) in &servers {
        assert_eq!(dig(*port, "first.default.svc.cluster.local"), ip.trim());
    }
    // Later changes reach the zone.
    c.ok(&["create", "service", "clusterip", "second", "--tcp=80:8080"]);
    let ip = c.ok(&[
        "get",
        "service",
        "second",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    c.ok(&["delete", "service", "first"]);
    for (port, _) in &servers {
        eventually("the second Service to resolve", || {
            (dig(*port, "second.default.svc.cluster.local") == ip.trim()).then_some(())
        });
        eventually("the deleted Service to be gone", || {
            dig(*port, "first.default.svc.cluster.local")
                .is_empty()
                .then_some(())
        });
    }
    // Two runtime workers, the UDP threads, the main thread: no thread per core beyond that.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for (_, dns) in &mut servers {
        let pid = dns.pid().expect("pid");
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        assert!(
            threads <= 3 + cpus + 1,
            "{threads} threads with {cpus} CPUs"
        );
        dns.assert_running();
    }
}

#[test]
fn berth_dns_explains_its_flags_as_berth_dns_does() {
    let help = |cmd: &mut Command| {
        let out = cmd.arg("--help").output().expect("help");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let small = help(&mut Command::new(env!("CARGO_BIN_EXE_berth-dns")));
    let multi = help(Command::new(env!("CARGO_BIN_EXE_berth")).arg("dns"));
    for flag in [
        "--kubeconfig",
        "--listen",
        "--cluster-domain",
        "--upstream",
        "--allow-recursion",
    ] {
        assert!(
            small.contains(flag),
            "berth-dns --help lacks {flag}:\n{small}"
        );
        assert!(
            multi.contains(flag),
            "berth dns --help lacks {flag}:\n{multi}"
        );
    }
    assert!(small.starts_with("berth-dns"), "{small}");
    // A bad flag is a usage error naming it, not a start.
    let out = Command::new(env!("CARGO_BIN_EXE_berth-dns"))
        .arg("--listen=nowhere")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
