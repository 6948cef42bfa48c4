//! What an attacker or a careless start could do: private files on disk, no plain HTTP on the
//! TLS port, no unauthenticated port off loopback, patches that cannot crash a handler, and
//! the size limits that keep one object from filling the store.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_testkit::Backend;

fn modes(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        let path = entry.path();
        out.push((
            path.display().to_string(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            modes(&path, out);
        }
    }
}

#[test]
fn data_on_disk_is_readable_by_its_owner_only() {
    let c = super::cluster(Backend::Embedded);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=password=hunter2",
    ]);
    let data = c.dir().join("data");
    let mut found = Vec::new();
    modes(&data, &mut found);
    let names: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
    for wanted in ["pki/ca.key", "pki/ca.crt", "store/berth.redb", "kubeconfig"] {
        assert!(
            names.iter().any(|n| n.ends_with(wanted)),
            "{wanted} in {names:?}"
        );
    }
    let data_mode = std::fs::metadata(&data).expect("stat").permissions().mode() & 0o777;
    assert_eq!(data_mode, 0o700, "{}", data.display());
    for (path, mode, is_dir) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:o}");
    }
}

#[test]
fn plain_http_to_the_tls_port_is_told_so() {
    let c = super::cluster(Backend::Embedded);
    let addr = c.url.trim_start_matches("https://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /version HTTP/1.1\r\nHost: berth\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.ends_with("Client sent an HTTP request to an HTTPS server.\n"),
        "{answer:?}"
    );
    // The port still serves TLS afterwards.
    c.ok(&["get", "ns", "default"]);
}

#[test]
fn insecure_http_refuses_an_address_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Refused before anything is bound, so nothing ever listens on the host's addresses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "server",
            "--no-node",
            "--insecure-http",
            "--bind",
            "0.0.0.0:0",
        ])
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .output()
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure-http") && err.contains("0.0.0.0:0"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn patches_that_make_a_non_object_are_refused_and_lose_nothing() {
    let c = super::cluster(Backend::Embedded);
    c.ok(&["create", "configmap", "cm", "--from-literal=a=1"]);
    for (kind, patch) in [
        ("merge", r#""str""#),
        ("merge", "[1]"),
        ("json", r#"[{"op":"replace","path":"","value":"str"}]"#),
    ] {
        let err = c.fails(&["patch", "cm", "cm", "--type", kind, "-p", patch]);
        assert!(
            err.contains("couldn't get version/kind"),
            "{kind} {patch}: {err}"
        );
    }
    assert_eq!(c.ok(&["get", "cm", "cm", "-o", "jsonpath={.data.a}"]), "1");
}

#[test]
fn configmaps_and_secrets_hold_at_most_one_mebibyte() {
    let c = super::cluster(Backend::Embedded);
    let big = c.file("big.txt", &"x".repeat(1024 * 1024 + 1));
    let fits = c.file("fits.txt", &"x".repeat(1024 * 1024));
    let from = |p: &std::path::Path| format!("--from-file=v={}", p.display());
    let err = c.fails(&["create", "configmap", "big", &from(&big)]);
    assert!(
        err.contains("Too long: may not be more than 1048576 bytes"),
        "{err}"
    );
    let err = c.fails(&["create", "secret", "generic", "big", &from(&big)]);
    assert!(
        err.contains("data: Too long: may not be more than 1048576 bytes"),
        "{err}"
    );
    c.ok(&["create", "configmap", "fits", &from(&fits)]);
    c.ok(&["create", "secret", "generic", "fits", &from(&fits)]);
    let err = c.fails(&["get", "configmap", "big"]);
    assert!(err.contains("NotFound"), "{err}");
}

/// `curl` of a public path of the server at `port` (no client certificate needed).
fn public_get(port: u16, path: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_owned(), code.to_owned())
}

#[test]
fn a_full_disk_is_reported_and_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let port = berth_testkit::free_port();
    let kubeconfig = d.join("kubeconfig");
    // berth in a mount namespace of its own whose data dir is a small tmpfs holding a ballast
    // file: the host's mounts are untouched, and the tmpfs goes when berth does.
    let script = format!(
        "mkdir -p {m} && mount -t tmpfs -o size=8m tmpfs {m} && \
         dd if=/dev/zero of={m}/ballast bs=64k count=32 2>/dev/null && \
         exec {bin} server --no-node --bind 127.0.0.1:{port} --data-dir {m}/data --kubeconfig {k}",
        m = d.join("mnt").display(),
        bin = env!("CARGO_BIN_EXE_berth"),
        k = kubeconfig.display(),
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let server = berth_testkit::Process::start("berth on a small disk", cmd, &d.join("server.log"));
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBECACHEDIR", d.join("cache"))
            .output()
            .expect("kubectl")
    };
    berth_testkit::eventually("berth to be ready", || {
        (public_get(port, "/readyz").1 == "200" && kubeconfig.exists()).then_some(())
    });
    assert_eq!(
        public_get(port, "/readyz?verbose").0,
        "[+]ping ok\n[+]store ok\n[+]controllers ok\nreadyz check passed\n"
    );
    // Fill the disk with ConfigMaps of 900 KB until a write fails.
    let value = d.join("value");
    std::fs::write(&value, "x".repeat(900 * 1024)).expect("value");
    let mut stored = 0;
    for i in 0..20 {
        let out = kubectl(&[
            "create",
            "configmap",
            &format!("fill-{i}"),
            &format!("--from-file=v={}", value.display()),
        ]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Internal error occurred") && err.contains("No space left on device"),
                "{err}"
            );
            break;
        }
        stored += 1;
    }
    assert!(stored < 20, "the disk never filled");
    let (body, code) = public_get(port, "/readyz?verbose");
    assert_eq!(code, "500", "{body}");
    assert!(body.contains("[-]store failed"), "{body}");
    // Space comes back: the store recovers by itself, and nothing stored was lost.
    let pid = server.pid().expect("pid").to_string();
    let freed = std::process::Command::new("nsenter")
        .args([
            "-t",
            &pid,
            "-m",
            "rm",
            &d.join("mnt/ballast").to_string_lossy(),
        ])
        .status()
        .expect("nsenter");
    assert!(freed.success());
    berth_testkit::eventually("the store to recover", || {
        (public_get(port, "/readyz").0 == "ok").then_some(())
    });
    let out = kubectl(&["create", "configmap", "after", "--from-literal=a=1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&kubectl(&["get", "cm", "-o", "name"]).stdout).into_owned();
    for i in 0..stored {
        assert!(
            names.contains(&format!("configmap/fill-{i}\n")),
            "fill-{i} lost: {names}"
        );
    }
    assert!(names.contains("configmap/after"), "{names}");
}

#[test]
fn refusals_mid_upload_arrive_as_statuses_over_http2() {
    let c = super::cluster(Backend::Embedded);
    let big = c.file("big.json", &"a".repeat(5 * 1024 * 1024));
    // The admin client certificate and key, from the kubeconfig.
    let kubeconfig = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    let field = |name: &str| {
        use base64::Engine as _;
        let b64 = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .expect("field");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64"),
        )
        .expect("pem")
    };
    let cert = c.file("admin.crt", &field("client-certificate-data"));
    let key = c.file("admin.key", &field("client-key-data"));
    let post = |auth: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(auth)
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", big.display()))
            .arg(format!("{}/api/v1/namespaces/default/configmaps", c.url))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(post(&[]), "401 2", "no client certificate");
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    assert_eq!(
        post(&["--cert", &cert, "--key", &key]),
        "413 2",
        "over 3 MiB"
    );
}

#[test]
fn readyz_reports_etcd_not_answering() {
    let c = super::cluster(Backend::Etcd);
    let port: u16 = c
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_eq!(public_get(port, "/readyz").0, "ok");
    let etcd = c.etcd().expect("etcd");
    etcd.pause();
    let (body, code) = public_get(port, "/readyz?verbose");
    etcd.resume();
    assert_eq!(code, "500", "{body}");
    assert!(body.contains("[-]store failed"), "{body}");
    berth_testkit::eventually("readyz to recover with etcd", || {
        (public_get(port, "/readyz").0 == "ok").then_some(())
    });
}
