//! The built-in Ingress controller on the default single node: routing by host and path to
//! whoami Deployments through the address `kube-system/berth-ingress` gets from the pool,
//! 404 and 503 pages, TLS by SNI from a Secret, the Ingress status, the default class, an
//! HTTP upgrade spliced through, and connections held across an Ingress change.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use berth_testkit::{Cluster, eventually};

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: demo
spec:
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
      - path: /api
        pathType: Prefix
        backend:
          service:
            name: api
            port:
              number: 80
      - path: /exact
        pathType: Exact
        backend:
          service:
            name: api
            port:
              number: 80
      - path: /down
        pathType: Prefix
        backend:
          service:
            name: down
            port:
              number: 80
"#;

#[test]
fn ingress_routes_by_host_and_path_with_tls() {
    let c = Cluster::start_single_node(Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    let h = c.host().expect("single node");
    for app in ["web", "api"] {
        c.ok(&["create", "deployment", app, "--image=traefik/whoami"]);
        c.ok(&["expose", "deployment", app, "--port=80"]);
    }
    c.ok(&["create", "service", "clusterip", "down", "--tcp=80:80"]);
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_owned()])
        .expect("certificate");
    let crt = c.file("shop.crt", &cert.cert.pem());
    let key = c.file("shop.key", &cert.signing_key.serialize_pem());
    c.ok(&[
        "create",
        "secret",
        "tls",
        "shop-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    c.apply(INGRESS);
    for app in ["web", "api"] {
        c.ok(&[
            "rollout",
            "status",
            &format!("deployment/{app}"),
            "--timeout=60s",
        ]);
    }
    let classes = c.ok(&["get", "ingressclass"]);
    assert!(classes.contains("berth"), "{classes}");
    let lb = eventually("berth-ingress to get a LoadBalancer IP", || {
        let ip = c.ok(&[
            "get",
            "svc",
            "-n",
            "kube-system",
            "berth-ingress",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!ip.is_empty()).then_some(ip)
    });
    eventually("the Ingress status to show the address", || {
        let ip = c.ok(&[
            "get",
            "ingress",
            "demo",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (ip == lb).then_some(())
    });
    let get = |host: &str, path: &str| {
        let out = h.exec(&[
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            "\ncode=%{http_code}",
            "-H",
            &format!("Host: {host}"),
            &format!("http://{lb}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("web.example.com to reach web", || {
        get("web.example.com", "/")
            .contains("Hostname: web-")
            .then_some(())
    });
    let api = get("shop.example.com", "/api/v1/items?x=1");
    assert!(api.contains("Hostname: api-"), "{api}");
    assert!(api.contains("GET /api/v1/items?x=1 HTTP/1.1"), "{api}");
    assert!(api.contains("X-Forwarded-Proto: http"), "{api}");
    assert!(get("shop.example.com", "/apix").contains("Hostname: web-"));
    assert!(get("shop.example.com", "/exact").contains("Hostname: api-"));
    assert!(get("shop.example.com", "/exact/more").contains("Hostname: web-"));
    assert!(get("nobody.example.com", "/").ends_with("code=404"));
    assert!(get("shop.example.com", "/down").ends_with("code=503"));

    // HTTPS: the Secret's certificate for its host (curl checks it against the CA).
    let out = h.exec(&[
        "curl",
        "-s",
        "-m",
        "5",
        "--cacert",
        &crt.display().to_string(),
        "--resolve",
        &format!("shop.example.com:443:{lb}"),
        "https://shop.example.com/api/items",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Hostname: api-"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("X-Forwarded-Proto: https"), "{text}");

    // Connections made before a change: a keep-alive one and one upgraded to whoami's echo.
    let mut held = h
        .command("python3")
        .args(["-c", HELD_CONNECTIONS, &lb])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(held.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    let before = [next(), next(), next()];
    assert!(
        before[0].starts_with("first HTTP/1.1 200 OK Hostname: web-"),
        "{before:?}"
    );
    assert!(before[1].starts_with("upgrade HTTP/1.1 101"), "{before:?}");
    assert_eq!(before[2], "echo ping-1", "{before:?}");

    // A change applies: the Ingress now sends web.example.com to api.
    c.ok(&[
        "patch",
        "ingress",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/rules/0/http/paths/0/backend/service/name","value":"api"}]"#,
    ]);
    eventually("web.example.com to move to api", || {
        get("web.example.com", "/")
            .contains("Hostname: api-")
            .then_some(())
    });
    // Both survived: the keep-alive connection's next request follows the new table, and
    // the upgraded connection still echoes.
    let mut stdin = held.stdin.take().expect("stdin");
    stdin
        .write_all(b"go\n")
        .expect("signal the held connections");
    drop(stdin);
    let after = [next(), next()];
    let out = held.wait_with_output().expect("python3");
    assert!(
        after[0].starts_with("second HTTP/1.1 200 OK Hostname: api-") && after[1] == "echo ping-2",
        "{after:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens a keep-alive connection and one upgraded to `Upgrade: echo` to the ingress at
/// argv[1] for web.example.com, uses both, then waits for a line on stdin and uses both again
/// (a request, an echo), printing what it got; it fails if either was closed meanwhile.
const HELD_CONNECTIONS: &str = r#"
import socket, sys
lb = sys.argv[1]
def head(s, buf=b""):
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d: sys.exit("connection closed: %r" % buf)
        buf += d
    return buf.split(b"\r\n\r\n", 1)
def get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
    h, body = head(s)
    lines = h.split(b"\r\n")
    n = int([l.split(b":")[1] for l in lines if l.lower().startswith(b"content-length:")][0])
    while len(body) < n:
        d = s.recv(65536)
        if not d: sys.exit("closed in the body")
        body += d
    return lines[0].decode() + " " + body.decode().split("\n")[0]
def echo(s, msg, got=b""):
    s.sendall(msg)
    while len(got) < len(msg):
        d = s.recv(100)
        if not d: sys.exit("upgraded connection closed")
        got += d
    return got.decode()
ka = socket.create_connection((lb, 80), timeout=5)
print("first", get(ka), flush=True)
up = socket.create_connection((lb, 80), timeout=5)
up.sendall(b"GET /ws HTTP/1.1\r\nHost: web.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
h, rest = head(up)
print("upgrade", h.split(b"\r\n")[0].decode(), flush=True)
print("echo", echo(up, b"ping-1", rest), flush=True)
sys.stdin.readline()
print("second", get(ka), flush=True)
print("echo", echo(up, b"ping-2"), flush=True)
"#;
