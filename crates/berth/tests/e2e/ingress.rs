//! The built-in Ingress controller on the default single node: routing by host and path to
//! whoami Deployments through the address `kube-system/berth-ingress` gets from the pool,
//! 404 and 503 pages, TLS by SNI from a Secret, the Ingress status, the default class.

use std::path::Path;

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
}
