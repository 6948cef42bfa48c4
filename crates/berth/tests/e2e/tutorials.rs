//! The five Service tutorials (`examples/`), each walked through with the real kubectl on the
//! default single node (`berth server` as `scripts/run.sh` starts it): the same manifest files
//! the example READMEs use, and checks of what each tutorial shows (Services by ClusterIP and
//! by name, env vars, DNS, NodePorts and LoadBalancer IPs from the user's shell, readiness,
//! port-forward and kubectl proxy). "The user's shell" is the host netns the harness makes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use berth_testkit::{Cluster, Process, eventually};

/// The node's InternalIP in the default single node (`--node-link 10.201.0.0/30`).
const NODE_IP: &str = "10.201.0.2";

/// The default single node, as the README starts it, with extra `flags`.
fn start(flags: &[&str]) -> Cluster {
    Cluster::start_single_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), flags)
}

/// The node's name (berth's default: the machine's host name).
fn node_name(c: &Cluster) -> String {
    c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
}

/// A file of `examples/<tutorial>/`.
fn example(tutorial: &str, file: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "examples",
        tutorial,
        file,
    ]
    .iter()
    .collect();
    assert!(path.exists(), "{} is missing", path.display());
    path.display().to_string()
}

/// The words of the line of `table` whose first word is `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether `text` has a line whose words are `words`.
fn has_line(text: &str, words: &[&str]) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().eq(words.iter().copied()))
}

/// Waits until every pod matching `selector` (`-l`, or a pod name) runs and is Ready, with
/// `n` of them; their names.
fn ready_pods(c: &Cluster, selector: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} ready pods {selector}"), || {
        let mut args = vec!["get", "pods"];
        if selector.contains('=') {
            args.extend(["-l", selector]);
        } else {
            args.push(selector);
        }
        args.extend([
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ]);
        let text = if selector.contains('=') {
            c.ok(&args)
        } else {
            // A single pod: jsonpath over one object.
            c.ok(&[
                "get",
                "pod",
                selector,
                "-o",
                r#"jsonpath={.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status}"#,
            ])
        };
        let pods: Vec<String> = text
            .lines()
            .filter(|l| l.ends_with(" Running True"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        (pods.len() == n && text.lines().count() == n).then_some(pods)
    })
}

/// Runs `script` with sh inside `pod`; its stdout.
fn in_pod(c: &Cluster, pod: &str, script: &str) -> String {
    let out = c.kubectl(&["exec", pod, "--", "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One curl from the user's shell, the host (empty if it failed).
fn curl_host(c: &Cluster, url: &str) -> String {
    let host = c.host().expect("a single node");
    let out = host.exec(&["curl", "-s", "--max-time", "2", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `url` answers the host with a body containing `want`; the body.
fn host_answers(c: &Cluster, url: &str, want: &str) -> String {
    eventually(&format!("{url} from the host to answer {want:?}"), || {
        let body = curl_host(c, url);
        body.contains(want).then_some(body)
    })
}

/// Waits for a LoadBalancer Service's EXTERNAL-IP.
fn external_ip(c: &Cluster, svc: &str) -> String {
    eventually(&format!("an EXTERNAL-IP for {svc}"), || {
        let ip = c.ok(&[
            "get",
            "svc",
            svc,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!ip.is_empty()).then_some(ip)
    })
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    c.ok(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"])
}

/// The `IP:PORT` addresses of a Service's Endpoints, sorted.
fn endpoints(c: &Cluster, svc: &str) -> Vec<String> {
    let text = c.ok(&[
        "get",
        "endpoints",
        svc,
        "-o",
        r#"jsonpath={range .subsets[*]}{range .addresses[*]}{.ip}{" "}{end}{"|"}{.ports[0].port}{"\n"}{end}"#,
    ]);
    let mut out: Vec<String> = text
        .lines()
        .flat_map(|l| {
            let (ips, port) = l.split_once('|').unwrap_or((l, ""));
            ips.split_whitespace()
                .map(|ip| format!("{ip}:{port}"))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

/// The ready addresses of a Service's Endpoints.
fn ready_ips(c: &Cluster, svc: &str) -> BTreeSet<String> {
    c.ok(&[
        "get",
        "endpoints",
        svc,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn pod_ip(c: &Cluster, pod: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
}

/// whoami's host names in the answers of `text`.
fn hostnames(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Hostname: "))
        .map(str::to_owned)
        .collect()
}

fn curl_loop(url: &str, n: usize) -> String {
    format!("for i in $(seq {n}); do curl -s --max-time 2 {url}; echo; done")
}

/// `kubectl ARGS` left running in the host (port-forward, proxy), stopped by PID.
fn kubectl_process(c: &Cluster, what: &str, args: &[&str]) -> Process {
    let host = c.host().expect("a single node");
    let mut cmd = host.command("kubectl");
    cmd.args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .env("HOME", c.dir());
    Process::start(what, cmd, &c.dir().join(what.replace(' ', "-")))
}

/// 000, "What is a Service in Kubernetes": number-crunch behind a ClusterIP Service, an nginx
/// reverse proxy that names it `number-crunch-service.default`, and a LoadBalancer in front.
#[test]
fn t000_number_crunch_through_nginx_and_a_load_balancer() {
    let c = start(&[]);
    let ex = |f| example("000-number-crunch", f);
    assert_eq!(
        c.ok(&["apply", "-f", &ex("number-crunch-deployment.yml")]),
        "deployment.apps/number-crunch-app created\n"
    );
    let pods = ready_pods(&c, "app=number-crunch", 2);
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    let node = node_name(&c);
    for pod in &pods {
        let r = row(&wide, pod);
        assert_eq!(r[1..3], ["1/1", "Running"], "{wide}");
        assert!(r[5].starts_with("10.244.0.") && r[6] == node, "{wide}");
    }
    assert_eq!(
        c.ok(&["apply", "-f", &ex("number-crunch-service.yml")]),
        "service/number-crunch-service created\n"
    );
    let svcs = c.ok(&["get", "services"]);
    let r = row(&svcs, "number-crunch-service");
    assert_eq!([&r[1], &r[3], &r[4]], ["ClusterIP", "<none>", "8080/TCP"]);
    assert!(r[2].starts_with("10.96."), "{svcs}");

    // The reverse proxy's configuration is the tutorial's nginx.conf, as a ConfigMap.
    c.ok(&["apply", "-f", &ex("number-crunch-nginx-config.yml")]);
    let conf = c.ok(&[
        "get",
        "configmap",
        "number-crunch-nginx-config",
        "-o",
        r"jsonpath={.data.default\.conf}",
    ]);
    let file = std::fs::read_to_string(ex("nginx.conf")).expect("nginx.conf");
    assert_eq!(conf, file, "the ConfigMap holds nginx.conf");
    c.ok(&["apply", "-f", &ex("number-crunch-nginx.yml")]);
    ready_pods(&c, "app=number-crunch-nginx", 1);
    let deploys = c.ok(&["get", "deployment"]);
    assert_eq!(row(&deploys, "number-crunch-app")[1..4], ["2/2", "2", "2"]);
    assert_eq!(
        row(&deploys, "number-crunch-nginx")[1..4],
        ["1/1", "1", "1"]
    );

    c.ok(&["apply", "-f", &ex("number-crunch-nginx-service.yml")]);
    let ip = external_ip(&c, "number-crunch-nginx-service");
    assert_eq!(ip, "10.201.1.0", "the default pool's first address");
    let svcs = c.ok(&["get", "services"]);
    let r = row(&svcs, "number-crunch-nginx-service");
    assert_eq!([&r[1], &r[3]], ["LoadBalancer", &ip]);
    assert!(
        r[4].starts_with("8080:") && r[4].ends_with("/TCP"),
        "{svcs}"
    );
    // From the user's shell, through nginx, which finds number-crunch by its DNS name.
    let answer = host_answers(&c, &format!("http://{ip}:8080/square-root/4"), "SquareRoot");
    assert_eq!(answer, "{\"InputNumber\":4,\"SquareRoot\":2}\n");
}

/// 001, "Introduction to Kubernetes", Services: the imperative ways, describe, ports,
/// discovery by env vars and DNS, kubectl proxy, NodePort, LoadBalancer, readiness, headless.
#[test]
fn t001_services_introduction() {
    let c = start(&[]);
    let ex = |f| example("001-services-introduction", f);
    assert_eq!(
        c.ok(&[
            "create",
            "service",
            "clusterip",
            "nginx-service",
            "--tcp=80:80"
        ]),
        "service/nginx-service created\n"
    );
    assert_eq!(
        c.ok(&[
            "run",
            "nginx",
            "--image=nginx",
            "--restart=Never",
            "--port=80",
            "--expose"
        ]),
        "service/nginx created\npod/nginx created\n"
    );
    c.ok(&["create", "deployment", "my-deploy", "--image=nginx"]);
    assert_eq!(
        c.ok(&[
            "expose",
            "deployment",
            "my-deploy",
            "--port=80",
            "--target-port=80"
        ]),
        "service/my-deploy exposed\n"
    );
    assert_eq!(
        c.ok(&["apply", "-f", &ex("nginx-service.yaml")]),
        "service/nginx-service configured\n"
    );
    let svcs = c.ok(&["get", "services"]);
    let r = row(&svcs, "nginx-service");
    assert_eq!([&r[1], &r[3], &r[4]], ["ClusterIP", "<none>", "80/TCP"]);
    let desc = c.ok(&["describe", "service", "nginx-service"]);
    for line in [
        &["Name:", "nginx-service"][..],
        &["Namespace:", "default"],
        &["Labels:", "app=nginx-service"],
        &["Selector:", "app=nginx-service"],
        &["Type:", "ClusterIP"],
        &["IP:", &r[2]],
        &["Port:", "80-80", "80/TCP"],
        &["TargetPort:", "80/TCP"],
        &["Session", "Affinity:", "None"],
    ] {
        assert!(has_line(&desc, line), "{line:?} in:\n{desc}");
    }
    assert!(
        has_line(&desc, &["Endpoints:"]) || has_line(&desc, &["Endpoints:", "<none>"]),
        "{desc}"
    );

    // The ClusterIP from a busybox pod made after the Service: env vars, DNS, wget.
    ready_pods(&c, "nginx", 1);
    let ip = cluster_ip(&c, "nginx");
    let out = c.kubectl_stdin(
        &[
            "run",
            "busybox",
            "--image=busybox",
            "--restart=Never",
            "-i",
            "--",
            "/bin/sh",
        ],
        &format!("env | sort | grep ^NGINX_\nnslookup nginx\nwget -q -O- {ip}:80\nexit\n"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Service's variables; NGINX_SERVICE_PORT itself is nginx-service's docker-link
    // variable, which comes later in the kubelet's sorted order and wins.
    for var in [
        format!("NGINX_SERVICE_HOST={ip}"),
        format!("NGINX_PORT=tcp://{ip}:80"),
        format!("NGINX_PORT_80_TCP_ADDR={ip}"),
        "NGINX_PORT_80_TCP_PORT=80".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == var), "{var} in:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "Name:\tnginx.default.svc.cluster.local\nAddress: {ip}\n"
        )),
        "{text}"
    );
    assert!(text.contains("<h1>Welcome to nginx!</h1>"), "{text}");

    // kubectl proxy in the user's shell, as in the tutorial (its port; curl -L to the bare
    // /proxy). The host netns is the test's own, so the port is free.
    let _proxy = kubectl_process(&c, "kubectl proxy", &["proxy", "--port=9999"]);
    let url = "http://localhost:9999/api/v1/namespaces/default/services/nginx/proxy";
    let host = c.host().expect("a single node");
    eventually("nginx through kubectl proxy", || {
        let out = host.exec(&["curl", "-s", "-L", "--max-time", "5", url]);
        String::from_utf8_lossy(&out.stdout)
            .contains("<h1>Welcome to nginx!</h1>")
            .then_some(())
    });

    // Patched to a NodePort, reached on the node's InternalIP from the user's shell.
    assert_eq!(
        c.ok(&[
            "patch",
            "service",
            "nginx",
            "-p",
            r#"{ "spec": {"type": "NodePort"} }"#
        ]),
        "service/nginx patched\n"
    );
    let r = row(&c.ok(&["get", "service", "nginx"]), "nginx");
    assert_eq!([&r[1], &r[2]], ["NodePort", &ip]);
    let node_port = r[4]
        .strip_prefix("80:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .expect("80:PORT/TCP")
        .to_owned();
    let node = node_name(&c);
    assert_eq!(row(&c.ok(&["get", "nodes"]), &node)[1], "Ready");
    let desc = c.ok(&["describe", "node", &node]);
    assert!(has_line(&desc, &["InternalIP:", NODE_IP]), "{desc}");
    host_answers(
        &c,
        &format!("http://{NODE_IP}:{node_port}"),
        "<h1>Welcome to nginx!</h1>",
    );

    // kubia: named ports, a multi-port Service, a headless one, a LoadBalancer, and a
    // readiness probe that passes once /srv/ready exists.
    for f in [
        "kubia.yaml",
        "kubia-svc.yaml",
        "kubia-headless.yaml",
        "kubia-loadbalancer.yaml",
    ] {
        c.ok(&["apply", "-f", &ex(f)]);
    }
    let pods: Vec<String> = eventually("2 running kubia pods", || {
        let text = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=kubia",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[*].started}{"\n"}{end}"#,
        ]);
        let pods: Vec<String> = text
            .lines()
            .filter(|l| l.ends_with(" true true"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        (pods.len() == 2).then_some(pods)
    });
    // Not ready yet: the Service has no ready endpoints (kubectl prints an empty ENDPOINTS
    // column for an Endpoints object holding only not-ready addresses, as upstream does).
    let eps = eventually("kubia's Endpoints", || {
        let out = c.kubectl(&["get", "endpoints", "kubia"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(
        row(&eps, "kubia").len(),
        2,
        "no ENDPOINTS, only NAME and AGE: {eps}"
    );
    assert!(ready_ips(&c, "kubia").is_empty(), "{eps}");
    for pod in &pods {
        c.ok(&["exec", pod, "-c", "kubia", "--", "touch", "/srv/ready"]);
    }
    ready_pods(&c, "app=kubia", 2);
    let ips: BTreeSet<String> = pods.iter().map(|p| pod_ip(&c, p)).collect();
    eventually("both pods behind kubia", || {
        (ready_ips(&c, "kubia") == ips).then_some(())
    });
    let ports = c.ok(&[
        "get",
        "endpoints",
        "kubia",
        "-o",
        "jsonpath={.subsets[*].ports[*].port}",
    ]);
    let ports: BTreeSet<&str> = ports.split_whitespace().collect();
    assert_eq!(ports, BTreeSet::from(["8080", "8443"]), "the named ports");
    let kubia = cluster_ip(&c, "kubia");
    let both = in_pod(
        &c,
        "nginx",
        &format!("curl -s http://{kubia}:80/; curl -s http://{kubia}:443/"),
    );
    assert_eq!(both.matches("Hostname: kubia-").count(), 2, "{both}");
    assert!(
        both.contains(&format!("Host: {kubia}\r\n"))
            && both.contains(&format!("Host: {kubia}:443\r\n")),
        "{both}"
    );
    let headless = |c: &Cluster| -> BTreeSet<String> {
        in_pod(
            c,
            "nginx",
            "dig +short kubia-headless.default.svc.cluster.local",
        )
        .split_whitespace()
        .map(str::to_owned)
        .collect()
    };
    eventually("the headless name to list both pods", || {
        (headless(&c) == ips).then_some(())
    });
    let lb = external_ip(&c, "kubia-loadbalancer");
    host_answers(&c, &format!("http://{lb}/"), "Hostname: kubia-");

    // The readiness probe fails on one pod: it leaves the Service, the other serves.
    c.ok(&["exec", &pods[0], "-c", "kubia", "--", "rm", "/srv/ready"]);
    let left = pod_ip(&c, &pods[1]);
    eventually("one pod left behind kubia", || {
        (ready_ips(&c, "kubia") == BTreeSet::from([left.clone()])).then_some(())
    });
    let eps = c.ok(&["get", "endpoints", "kubia"]);
    let listed = &row(&eps, "kubia")[1];
    assert!(
        listed.contains(&format!("{left}:8080")) && !listed.contains(&pod_ip(&c, &pods[0])),
        "{eps}"
    );
    eventually("only the ready pod to answer", || {
        let seen = hostnames(&in_pod(
            &c,
            "nginx",
            &curl_loop(&format!("http://{kubia}/"), 10),
        ));
        (seen == BTreeSet::from([pods[1].clone()])).then_some(())
    });
    eventually("the headless name to list only the ready pod", || {
        (headless(&c) == BTreeSet::from([left.clone()])).then_some(())
    });
}

/// 002, the pizza workshop: label a pod into a Service, reach it by ClusterIP and name from a
/// utility pod, a second pod, a LoadBalancer from `<pending>` to an address, the topping
/// exercise, and kubectl port-forward.
#[test]
fn t002_pizza() {
    // A pool of two addresses: the ingress controller's Service holds the last one, so one is
    // left, and the webapp LoadBalancer waits while another Service holds it.
    let c = start(&["--lb-pool=10.201.1.0/31"]);
    let ex = |f| example("002-pizza", f);
    c.ok(&["apply", "-f", &ex("hs-pizza-webapp-pod.yaml")]);
    ready_pods(&c, "hs-pizza-webapp", 1);
    let labels = c.ok(&["get", "po", "--show-labels"]);
    assert_eq!(
        row(&labels, "hs-pizza-webapp")[1..=5],
        [
            "1/1",
            "Running",
            "0",
            &row(&labels, "hs-pizza-webapp")[4],
            "best_pasta_shape=penne"
        ]
    );
    assert_eq!(
        c.ok(&["label", "pod", "hs-pizza-webapp", "app=hs-pizza-webapp"]),
        "pod/hs-pizza-webapp labeled\n"
    );
    c.ok(&["apply", "-f", &ex("webapp-service.yaml")]);
    let ip = pod_ip(&c, "hs-pizza-webapp");
    let desc = eventually("webapp's endpoint in describe", || {
        let desc = c.ok(&["describe", "service", "webapp"]);
        has_line(&desc, &["Endpoints:", &format!("{ip}:1234")]).then_some(desc)
    });
    for line in [
        &["Selector:", "app=hs-pizza-webapp"][..],
        &["Port:", "default", "80/TCP"],
        &["TargetPort:", "1234/TCP"],
    ] {
        assert!(has_line(&desc, line), "{line:?} in:\n{desc}");
    }
    let pod_desc = c.ok(&["describe", "pod", "hs-pizza-webapp"]);
    assert!(has_line(&pod_desc, &["IP:", &ip]), "{pod_desc}");

    c.ok(&["apply", "-f", &ex("utility-pod.yaml")]);
    ready_pods(&c, "utility", 1);
    let cluster = cluster_ip(&c, "webapp");
    for url in [format!("{cluster}:80/pizza"), "webapp/pizza".to_owned()] {
        let answer = eventually(&format!("curl {url} from utility"), || {
            let out = in_pod(&c, "utility", &format!("curl -s --max-time 2 {url}"));
            out.contains("Hostname: hs-pizza-webapp\n").then_some(out)
        });
        assert!(answer.contains("GET /pizza HTTP/1.1"), "{answer}");
    }

    c.ok(&["apply", "-f", &ex("hs-pizza-webapp-pod-2.yaml")]);
    ready_pods(&c, "app=hs-pizza-webapp", 2);
    eventually("both pods to answer /pod_info", || {
        let seen = hostnames(&in_pod(
            &c,
            "utility",
            &curl_loop("http://webapp/pod_info", 10),
        ));
        (seen.len() == 2).then_some(())
    });

    // The one pool address is taken: webapp shows <pending> until it is free.
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "placeholder",
        "--tcp=80:80",
    ]);
    external_ip(&c, "placeholder");
    c.ok(&["apply", "-f", &ex("webapp-service-lb.yaml")]);
    for _ in 0..3 {
        let r = row(&c.ok(&["get", "svc", "webapp"]), "webapp");
        assert_eq!(
            [&r[1], &r[2], &r[3]],
            ["LoadBalancer", &cluster, "<pending>"]
        );
        assert!(r[4].starts_with("80:"), "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    c.ok(&["delete", "svc", "placeholder"]);
    let lb = external_ip(&c, "webapp");
    assert_eq!(lb, "10.201.1.0");
    let r = row(&c.ok(&["get", "svc", "webapp"]), "webapp");
    assert_eq!([&r[2], &r[3]], [&cluster, &lb], "the ClusterIP stays");
    host_answers(&c, &format!("http://{lb}/"), "Hostname: hs-pizza-webapp");

    // The exercise: the topping suggestion Service.
    c.ok(&[
        "apply",
        "-f",
        &ex("hs-pizza-topping-suggestion-service-pod.yaml"),
    ]);
    ready_pods(&c, "hs-pizza-topping-suggestion", 1);
    c.ok(&[
        "label",
        "pod",
        "hs-pizza-topping-suggestion",
        "app=hs-pizza-topping-suggestion",
    ]);
    c.ok(&["apply", "-f", &ex("topping-suggestion-service.yaml")]);
    let topping = cluster_ip(&c, "topping-suggestion-service");
    for url in [
        format!("{topping}/topping_combo"),
        "topping-suggestion-service/topping_combo".to_owned(),
    ] {
        let answer = eventually(&format!("curl {url} from utility"), || {
            let out = in_pod(&c, "utility", &format!("curl -s --max-time 2 {url}"));
            out.contains("Hostname: hs-pizza-topping-suggestion\n")
                .then_some(out)
        });
        assert!(answer.contains("GET /topping_combo HTTP/1.1"), "{answer}");
    }

    // kubectl port-forward, the workshop's way in before Services, to a pod and a Service.
    let _pf_pod = kubectl_process(
        &c,
        "port-forward pod",
        &["port-forward", "pod/hs-pizza-webapp", "8080:1234"],
    );
    let _pf_svc = kubectl_process(
        &c,
        "port-forward svc",
        &["port-forward", "svc/topping-suggestion-service", "8081:80"],
    );
    host_answers(
        &c,
        "http://localhost:8080/pizza",
        "Hostname: hs-pizza-webapp\n",
    );
    host_answers(
        &c,
        "http://localhost:8081/topping_combo",
        "Hostname: hs-pizza-topping-suggestion\n",
    );
}

/// 003, Service resources: Endpoints of a selector, a selector-less Service with manual
/// Endpoints (mirrored, then replaced when a selector comes back), a chosen clusterIP and the
/// 422 outside the range, DNS and SRV across namespaces, headless, nodePort 30007, name rules.
#[test]
fn t003_service_resources() {
    let c = start(&[]);
    let ex = |f| example("003-service-resources", f);
    assert_eq!(
        c.ok(&["create", "-f", &ex("nginx-svc.yaml")]),
        "service/nginx-svc created\n"
    );
    assert_eq!(row(&c.ok(&["get", "svc"]), "nginx-svc")[1], "ClusterIP");
    eventually("nginx-svc's empty Endpoints", || {
        let out = c.kubectl(&["get", "ep", "nginx-svc"]);
        (out.status.success()
            && row(&String::from_utf8_lossy(&out.stdout), "nginx-svc")[1] == "<none>")
            .then_some(())
    });
    c.ok(&["create", "-f", &ex("nginx-pod.yaml")]);
    ready_pods(&c, "nginx", 1);
    let nginx = pod_ip(&c, "nginx");
    eventually("the pod in nginx-svc's Endpoints", || {
        (row(&c.ok(&["get", "ep"]), "nginx-svc")[1] == format!("{nginx}:80")).then_some(())
    });

    // my-service with a selector, then without one and with Endpoints of its own.
    c.ok(&["apply", "-f", &ex("myapp-pod.yaml")]);
    c.ok(&["apply", "-f", &ex("my-service.yaml")]);
    ready_pods(&c, "myapp", 1);
    let myapp = pod_ip(&c, "myapp");
    eventually("myapp behind my-service", || {
        (endpoints(&c, "my-service") == [format!("{myapp}:9376")]).then_some(())
    });
    c.ok(&["apply", "-f", &ex("my-service-without-selector.yaml")]);
    c.ok(&["apply", "-f", &ex("my-service-endpoints.yaml")]);
    assert_eq!(endpoints(&c, "my-service"), ["192.0.2.42:9376"]);
    let mirrored = "kubernetes.io/service-name=my-service,endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io";
    let slice_ips = |c: &Cluster| {
        c.ok(&[
            "get",
            "endpointslices",
            "-l",
            mirrored,
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ])
    };
    eventually("the mirrored EndpointSlice", || {
        (slice_ips(&c) == "192.0.2.42").then_some(())
    });
    // Manual Endpoints work as selected ones: pointed at myapp (no traffic to 192.0.2.42).
    c.apply(&format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: my-service\nsubsets:\n- addresses:\n  - ip: {myapp}\n  ports:\n  - port: 9376\n"
    ));
    let my_service = cluster_ip(&c, "my-service");
    eventually("my-service to reach myapp through manual Endpoints", || {
        in_pod(
            &c,
            "nginx",
            &format!("curl -s --max-time 2 http://{my_service}/"),
        )
        .contains("Hostname: myapp\n")
        .then_some(())
    });
    // The selector back: the controllers own the Endpoints again and the mirror goes.
    c.ok(&["apply", "-f", &ex("my-service.yaml")]);
    eventually("the mirrored slice to go", || {
        slice_ips(&c).is_empty().then_some(())
    });
    eventually("selected Endpoints again", || {
        (endpoints(&c, "my-service") == [format!("{myapp}:9376")]).then_some(())
    });

    // Choosing the cluster IP: inside the range it is granted, outside it is a 422.
    c.ok(&["apply", "-f", &ex("my-service-cluster-ip.yaml")]);
    assert_eq!(cluster_ip(&c, "my-chosen-ip"), "10.96.100.100");
    let out = c.kubectl(&["apply", "-f", &ex("my-service-bad-cluster-ip.yaml"), "-v=6"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("422"), "{err}");
    assert!(
        err.contains("The Service \"my-bad-ip\" is invalid") && err.contains("10.96.0.0/12"),
        "{err}"
    );

    // DNS: my-service.my-ns from another namespace, the SRV record of its named port.
    c.ok(&["apply", "-f", &ex("my-ns.yaml")]);
    let other = c.ok(&[
        "get",
        "svc",
        "my-service",
        "-n",
        "my-ns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    eventually("my-service.my-ns to resolve", || {
        in_pod(&c, "nginx", "nslookup my-service.my-ns")
            .contains(&format!(
                "Name:\tmy-service.my-ns.svc.cluster.local\nAddress: {other}\n"
            ))
            .then_some(())
    });
    let srv = in_pod(
        &c,
        "nginx",
        "dig +search +short SRV _http._tcp.my-service.my-ns",
    );
    assert_eq!(srv.trim(), "0 100 80 my-service.my-ns.svc.cluster.local.");
    // Headless: the name is the pods' addresses.
    c.ok(&["apply", "-f", &ex("my-service-headless.yaml")]);
    eventually("my-headless to resolve to myapp", || {
        (in_pod(
            &c,
            "nginx",
            "dig +short my-headless.default.svc.cluster.local",
        )
        .trim()
            == myapp)
            .then_some(())
    });

    // NodePort 30007, from the user's shell.
    c.ok(&["apply", "-f", &ex("my-service-nodeport.yaml")]);
    let r = row(&c.ok(&["get", "svc", "my-service"]), "my-service");
    assert_eq!([&r[1], &r[4]], ["NodePort", "80:30007/TCP"]);
    host_answers(
        &c,
        &format!("http://{NODE_IP}:30007/"),
        "<h1>Welcome to nginx!</h1>",
    );

    // Names must be RFC 1035 labels.
    for bad in ["My-Service", "1-service", "my-service-", &"a".repeat(64)] {
        let err = c.fails(&["create", "service", "clusterip", bad, "--tcp=80"]);
        assert!(err.contains("is invalid"), "{bad}: {err}");
    }
    c.ok(&[
        "create",
        "service",
        "clusterip",
        &"a".repeat(63),
        "--tcp=80",
    ]);
}

/// 004, basic routing models: three whoami destinations behind a ClusterIP found with
/// nslookup, a NodePort from the user's shell, nginx behind a LoadBalancer, an ExternalName CNAME, and
/// the blue/green selector switch in its own namespace.
#[test]
fn t004_routing_models() {
    let c = start(&[]);
    let ex = |f| example("004-routing-models", f);
    for (f, said) in [
        (
            "deploy-destination.yaml",
            "deployment.apps/destination created\n",
        ),
        ("deploy-origin.yaml", "deployment.apps/origin created\n"),
        ("svc-destination.yaml", "service/svc-destination created\n"),
    ] {
        assert_eq!(c.ok(&["apply", "-f", &ex(f)]), said);
    }
    let destinations = ready_pods(&c, "app=destination", 3);
    let origin = ready_pods(&c, "app=origin", 1).remove(0);
    let pods = c.ok(&["get", "pod"]);
    for p in destinations.iter().chain([&origin]) {
        assert_eq!(row(&pods, p)[1..4], ["1/1", "Running", "0"]);
    }
    let ip = cluster_ip(&c, "svc-destination");
    let lookup = eventually("nslookup svc-destination", || {
        let out = in_pod(&c, &origin, "nslookup svc-destination");
        out.contains(&format!("Address: {ip}\n")).then_some(out)
    });
    assert!(
        lookup.contains("Server:\t\t10.96.0.10\nAddress:\t10.96.0.10#53\n")
            && lookup.contains("Name:\tsvc-destination.default.svc.cluster.local\n"),
        "{lookup}"
    );
    let answers = in_pod(&c, &origin, &curl_loop("svc-destination:8080", 1));
    assert!(
        answers.contains("Host: svc-destination:8080\r\n"),
        "{answers}"
    );
    eventually("all three destinations to answer", || {
        let seen = hostnames(&in_pod(&c, &origin, &curl_loop("svc-destination:8080", 30)));
        (seen == destinations.iter().cloned().collect()).then_some(())
    });
    assert_eq!(
        c.ok(&["delete", "-f", &ex("svc-destination.yaml")]),
        "service \"svc-destination\" deleted\n"
    );

    // NodePort, from the user's shell.
    c.ok(&["apply", "-f", &ex("svc-nodeport-destination.yaml")]);
    let r = row(
        &c.ok(&["get", "svc", "svc-nodeport-destination"]),
        "svc-nodeport-destination",
    );
    assert_eq!(r[1], "NodePort");
    let port = r[4]
        .strip_prefix("8080:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .expect("8080:PORT/TCP")
        .to_owned();
    let body = host_answers(
        &c,
        &format!("http://{NODE_IP}:{port}"),
        "Hostname: destination-",
    );
    assert!(
        body.contains(&format!("Host: {NODE_IP}:{port}\r\n")),
        "{body}"
    );
    c.ok(&["delete", "svc", "svc-nodeport-destination"]);
    c.ok(&["delete", "deploy", "destination"]);
    c.ok(&["delete", "deploy", "origin"]);

    // nginx behind a LoadBalancer.
    c.ok(&["create", "deployment", "web01", "--image=nginx"]);
    c.ok(&[
        "expose",
        "deployment",
        "web01",
        "--type",
        "LoadBalancer",
        "--port",
        "80",
        "--name",
        "lb-web01",
    ]);
    ready_pods(&c, "app=web01", 1);
    assert_eq!(row(&c.ok(&["get", "deploy"]), "web01")[1], "1/1");
    let lb = external_ip(&c, "lb-web01");
    assert_eq!(lb, "10.201.1.0", "the default pool's first address");
    let r = row(&c.ok(&["get", "svc"]), "lb-web01");
    assert_eq!([&r[1], &r[3]], ["LoadBalancer", &lb]);
    host_answers(&c, &format!("http://{lb}"), "<h1>Welcome to nginx!</h1>");

    // ExternalName: the cluster DNS answers a CNAME, asked from the user's shell.
    c.ok(&["apply", "-f", &ex("externalname.yaml")]);
    let host = c.host().expect("a single node");
    eventually("the CNAME of my-service", || {
        let out = host.exec(&[
            "dig",
            "+short",
            "+time=2",
            "@10.96.0.10",
            "CNAME",
            "my-service.default.svc.cluster.local",
        ]);
        (String::from_utf8_lossy(&out.stdout).trim() == "my.database.example.com.").then_some(())
    });

    // Blue/green in namespace bluegreen, made the context's default as in the tutorial.
    assert_eq!(
        c.ok(&["create", "namespace", "bluegreen"]),
        "namespace/bluegreen created\n"
    );
    let said = c.ok(&[
        "config",
        "set-context",
        "--current",
        "--namespace",
        "bluegreen",
    ]);
    assert!(
        said.starts_with("Context \"") && said.ends_with("\" modified.\n"),
        "{said}"
    );
    c.ok(&["apply", "-f", &ex("kubeanimals-1.yaml")]);
    c.ok(&["apply", "-f", &ex("kubeanimals-svc.yaml")]);
    ready_pods(&c, "app=kubeanimals", 1);
    let lb = external_ip(&c, "kubeanimals");
    assert_eq!(lb, "10.201.1.1", "the next one (lb-web01 holds the first)");
    assert_eq!(
        c.ok(&[
            "get",
            "svc",
            "kubeanimals",
            "--output",
            "jsonpath={.status.loadBalancer.ingress[0].ip}{\"\\n\"}"
        ]),
        format!("{lb}\n")
    );
    host_answers(&c, &format!("http://{lb}"), "Hostname: phippy-");
    c.ok(&["apply", "-f", &ex("kubeanimals-2.yaml")]);
    ready_pods(&c, "app=kubeanimals", 2);
    let labels = |c: &Cluster| row(&c.ok(&["get", "svc", "--show-labels"]), "kubeanimals");
    assert_eq!(labels(&c)[6], "app=kubeanimals,version=1.0");
    assert_eq!(
        c.ok(&["apply", "-f", &ex("kubeanimals-svc-green.yaml")]),
        "service/kubeanimals configured\n"
    );
    let r = labels(&c);
    assert_eq!([&r[3], &r[6]], [&lb, "app=kubeanimals,version=2.0"]);
    eventually("captainkube behind the same address", || {
        let seen = hostnames(&curl_host(&c, &format!("http://{lb}")));
        seen.iter()
            .all(|h| h.starts_with("captainkube-"))
            .then_some(())
            .filter(|()| !seen.is_empty())
    });

    // Clean up as the tutorial does (web01 lives in default, not in the context's namespace).
    c.ok(&["delete", "svc", "kubeanimals"]);
    c.ok(&["delete", "deploy", "captainkube"]);
    c.ok(&["delete", "deploy", "phippy"]);
    c.ok(&["delete", "deploy", "web01", "-n", "default"]);
}
