//! The `proxy` subresources through the API server: Services (by port name and number, a
//! path and query), pods, a Service without endpoints, the node agent, and `kubectl proxy`
//! from outside the node as tutorial 001 uses it, all with the real kubectl.

use std::process::Command;

use berth_testkit::{Cluster, Process, eventually, free_port};

fn start() -> Cluster {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c
}

/// A Deployment `web` of two whoami pods on :8080, exposed as kubectl does it (`web`, one
/// unnamed port 80) and by a Service `named` whose port 80 is named `http`.
fn whoami(c: &Cluster) {
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=berth/whoami",
        "--replicas=2",
        "--port=8080",
    ]);
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: named\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
    );
    for name in ["web", "named"] {
        eventually(&format!("2 ready endpoints of {name}"), || {
            let ips = c.ok(&[
                "get",
                "endpoints",
                name,
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ]);
            (ips.split_whitespace().count() == 2).then_some(())
        });
    }
}

/// `kubectl get --raw PATH`: its stdout, or its stderr when it fails.
fn raw(c: &Cluster, path: &str) -> Result<String, String> {
    let out = c.kubectl(&["get", "--raw", path]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// whoami's echo of the request line.
fn request_line(answer: &str) -> Option<&str> {
    answer.lines().find(|l| l.starts_with("GET "))
}

#[test]
fn services_pods_and_nodes_are_reached_through_their_proxy_subresources() {
    let c = start();
    whoami(&c);
    let svc = "/api/v1/namespaces/default/services";

    // A port by name; the path joined with its trailing slash; the query passed through.
    let answer = raw(&c, &format!("{svc}/named:http/proxy/")).expect("named:http/proxy/");
    assert!(answer.starts_with("Hostname: web-"), "{answer}");
    assert_eq!(request_line(&answer), Some("GET / HTTP/1.1"), "{answer}");
    let answer = raw(&c, &format!("{svc}/web/proxy/some/path/?x=1")).expect("web/proxy/some/path/");
    assert_eq!(
        request_line(&answer),
        Some("GET /some/path/?x=1 HTTP/1.1"),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("X-Forwarded-Uri: {svc}/web/proxy/some/path/\r")),
        "{answer}"
    );
    let answer = raw(&c, &format!("{svc}/web/proxy/a/./b/../c")).expect("a cleaned path");
    assert_eq!(request_line(&answer), Some("GET /a/c HTTP/1.1"), "{answer}");
    // A bare `/proxy` is redirected to `/proxy/`, which kubectl follows.
    let answer = raw(&c, &format!("{svc}/web/proxy")).expect("web/proxy");
    assert_eq!(request_line(&answer), Some("GET / HTTP/1.1"), "{answer}");

    // A port number is the Service port of that number, by its name; a scheme may lead.
    let answer = raw(&c, &format!("{svc}/http:named:80/proxy/n")).expect("http:named:80");
    assert_eq!(request_line(&answer), Some("GET /n HTTP/1.1"), "{answer}");
    let err = raw(&c, &format!("{svc}/named:81/proxy/")).expect_err("no port 81");
    assert!(
        err.contains("no service port 81 found for service \"named\""),
        "{err}"
    );
    // Without a port only an unnamed port matches, as in kube-apiserver.
    let err = raw(&c, &format!("{svc}/named/proxy/")).expect_err("no unnamed port");
    assert!(
        err.contains("no endpoints available for service \"named\""),
        "{err}"
    );

    // A pod by name and container port.
    let pod = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let answer = raw(
        &c,
        &format!("/api/v1/namespaces/default/pods/{pod}:8080/proxy/p?q=2"),
    )
    .expect("pods proxy");
    assert!(
        answer.starts_with(&format!("Hostname: {pod}\n")),
        "{answer}"
    );
    assert_eq!(
        request_line(&answer),
        Some("GET /p?q=2 HTTP/1.1"),
        "{answer}"
    );
    // Without a port: the first container port.
    let answer = raw(&c, &format!("/api/v1/namespaces/default/pods/{pod}/proxy/"))
        .expect("pods proxy without a port");
    assert!(
        answer.starts_with(&format!("Hostname: {pod}\n")),
        "{answer}"
    );

    // A Service that selects nothing.
    c.ok(&["create", "service", "clusterip", "empty", "--tcp=80:8080"]);
    eventually("the empty Service's Endpoints", || {
        c.kubectl(&["get", "endpoints", "empty"])
            .status
            .success()
            .then_some(())
    });
    let err = raw(&c, &format!("{svc}/empty/proxy/")).expect_err("503");
    assert!(
        err.contains("no endpoints available for service \"empty\"")
            && err.contains("ServiceUnavailable"),
        "{err}"
    );

    // Unknown subresources are not found, not refused.
    for path in [
        format!("{svc}/web/bogus"),
        "/api/v1/namespaces/default/pods/x/bogus".to_owned(),
    ] {
        let err = raw(&c, &path).expect_err("unknown subresource");
        assert!(err.contains("NotFound"), "{path}: {err}");
    }

    // The node agent.
    let answer = raw(&c, "/api/v1/nodes/node-1/proxy/healthz").expect("nodes proxy");
    assert_eq!(answer, "ok");
}

#[test]
fn kubectl_proxy_reaches_a_service_from_outside_the_node() {
    let c = start();
    whoami(&c);
    let node = c.node().expect("a node cluster");
    let port = free_port();
    let mut cmd: Command = node.outside_command("kubectl");
    cmd.args(["proxy", &format!("--port={port}")])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .env("HOME", c.dir());
    // Stopped by PID when dropped, on success or failure.
    let _proxy = Process::start("kubectl proxy", cmd, &c.dir().join("kubectl-proxy"));
    let base = format!("http://127.0.0.1:{port}/api/v1/namespaces/default/services/web/proxy");
    let curl = |url: &str, extra: &[&str]| {
        let mut args = vec!["curl", "-s", "--max-time", "5"];
        args.extend_from_slice(extra);
        args.push(url);
        String::from_utf8_lossy(&node.outside_exec(&args).stdout).into_owned()
    };
    let answer = eventually("the Service through kubectl proxy", || {
        let out = curl(&format!("{base}/"), &[]);
        out.starts_with("Hostname: web-").then_some(out)
    });
    assert_eq!(request_line(&answer), Some("GET / HTTP/1.1"), "{answer}");
    // Other methods pass through with their bodies.
    let answer = curl(&format!("{base}/post"), &["-X", "POST", "-d", "hello"]);
    assert!(answer.contains("POST /post HTTP/1.1"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    // A bare `/proxy` is sent on to `/proxy/`, as by kube-apiserver.
    let answer = curl(&base, &["-L"]);
    assert_eq!(request_line(&answer), Some("GET / HTTP/1.1"), "{answer}");
}
