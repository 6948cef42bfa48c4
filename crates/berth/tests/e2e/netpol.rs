//! NetworkPolicy on the default single node, in the upstream e2e "truth table" style: pods
//! a, b, c in namespaces x and y each serve TCP 80 and 81 (whoami) and UDP 80 (an echo), and
//! after each policy every pod probes every pod (from inside its own network namespace, via
//! `kubectl exec`) until the observed table is the expected one. One test for ingress, one
//! for egress (with DNS and a ClusterIP, filtered on the pod address behind it).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::{Cluster, eventually, patience};
use serde_json::json;

const NAMESPACES: [&str; 2] = ["x", "y"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// What a pod probes at each other pod.
const KINDS: [Kind; 3] = [Kind::Tcp(80), Kind::Tcp(81), Kind::Udp(80)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Tcp(u16),
    Udp(u16),
}

impl Kind {
    fn target(self, ip: &str) -> String {
        match self {
            Kind::Tcp(p) => format!("tcp:{ip}:{p}"),
            Kind::Udp(p) => format!("udp:{ip}:{p}"),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Tcp(p) => write!(f, "tcp/{p}"),
            Kind::Udp(p) => write!(f, "udp/{p}"),
        }
    }
}

/// UDP 80 and 81 answer every datagram with "ok".
const UDP_ECHO: &str = r#"
import socket, threading
def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(b"ok", peer)
for p in (80, 81):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()
"#;

/// Probes `KIND:IP:PORT` targets in parallel with a 1 s timeout and prints `TARGET ok|no`:
/// `tcp` connects, `udp` expects an answer, `dns` asks for kubernetes.default's A record.
const PROBE: &str = r#"
import socket, sys, threading
def query():
    name = b"".join(bytes([len(l)]) + l for l in b"kubernetes.default.svc.cluster.local".split(b"."))
    return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x00\x01\x00\x01"
def probe(t, out):
    kind, ip, port = t.split(":")
    try:
        if kind == "tcp":
            socket.create_connection((ip, int(port)), timeout=1.0).close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1.0)
            s.sendto(query() if kind == "dns" else b"hi", (ip, int(port)))
            s.recvfrom(512)
        out[t] = "ok"
    except Exception:
        out[t] = "no"
out = {}
threads = [threading.Thread(target=probe, args=(t, out)) for t in sys.argv[1:]]
for t in threads: t.start()
for t in threads: t.join()
for t in sys.argv[1:]: print(t, out.get(t, "no"))
"#;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pod {
    ns: &'static str,
    name: &'static str,
}

impl std::fmt::Display for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

/// The cluster, its six pods and their addresses.
struct Matrix {
    c: Cluster,
    pods: Vec<Pod>,
    ips: BTreeMap<Pod, String>,
}

fn pod_manifest(ns: &str, name: &str) -> serde_json::Value {
    let whoami = |port: u16| {
        json!({"name": format!("serve-{port}"), "image": "traefik/whoami",
               "ports": [{"containerPort": port, "name": format!("serve-{port}-tcp")}]})
    };
    let mut serve80 = whoami(80);
    // The node's probes reach the pod whatever the policies.
    serve80["readinessProbe"] = json!({"tcpSocket": {"port": 80}, "periodSeconds": 1});
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"pod": name}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [
            serve80,
            whoami(81),
            {"name": "udp", "image": "busybox", "command": ["/usr/bin/python3", "-c", UDP_ECHO],
             "ports": [{"containerPort": 80, "protocol": "UDP", "name": "serve-80-udp"},
                       {"containerPort": 81, "protocol": "UDP", "name": "serve-81-udp"}]},
        ]},
    })
}

impl Matrix {
    fn start() -> Matrix {
        let c = Cluster::start_single_node(Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
        let mut items = Vec::new();
        for ns in NAMESPACES {
            items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": ns, "labels": {"ns": ns}}}));
        }
        let mut pods = Vec::new();
        for ns in NAMESPACES {
            for name in PODS {
                items.push(pod_manifest(ns, name));
                pods.push(Pod { ns, name });
            }
        }
        c.apply(&json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string());
        for ns in NAMESPACES {
            c.ok(&[
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                "pod",
                "--all",
                "--timeout=60s",
            ]);
        }
        let ips = pods
            .iter()
            .map(|p| {
                let ip = c.ok(&[
                    "get",
                    "pod",
                    "-n",
                    p.ns,
                    p.name,
                    "-o",
                    "jsonpath={.status.podIP}",
                ]);
                (p.clone(), ip)
            })
            .collect();
        Matrix { c, pods, ips }
    }

    fn ip(&self, ns: &'static str, name: &'static str) -> &str {
        &self.ips[&Pod { ns, name }]
    }

    /// Runs [`PROBE`] in `from` for `targets`; which ones answered.
    fn probe(&self, from: &Pod, targets: &[String]) -> BTreeMap<String, bool> {
        let mut args = vec![
            "exec",
            "-n",
            from.ns,
            from.name,
            "-c",
            "udp",
            "--",
            "/usr/bin/python3",
            "-c",
            PROBE,
        ];
        args.extend(targets.iter().map(String::as_str));
        let out = self.c.kubectl(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        targets
            .iter()
            .map(|t| (t.clone(), text.contains(&format!("{t} ok"))))
            .collect()
    }

    /// Every pod probes every pod (and `extra` targets) once, all sources in parallel.
    fn observe(&self, extra: &[String]) -> Table {
        let targets: Vec<(String, Pod, String)> = self
            .pods
            .iter()
            .flat_map(|to| {
                KINDS
                    .iter()
                    .map(move |k| (k.target(&self.ips[to]), to.clone(), k.to_string()))
            })
            .collect();
        let mut all: Vec<String> = targets.iter().map(|(t, ..)| t.clone()).collect();
        all.extend(extra.iter().cloned());
        let results: Vec<(Pod, BTreeMap<String, bool>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .pods
                .iter()
                .map(|from| s.spawn(|| (from.clone(), self.probe(from, &all))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect()
        });
        let mut table = Table::default();
        for (from, got) in results {
            for (t, to, kind) in &targets {
                table
                    .0
                    .insert((from.clone(), to.to_string(), kind.clone()), got[t]);
            }
            for t in extra {
                table
                    .0
                    .insert((from.clone(), t.clone(), String::new()), got[t]);
            }
        }
        table
    }

    /// Probes until the table is what `allowed(from, to, kind)` says for every pair (a pod
    /// always reaches itself) and `extra(from, target)` for the extra targets; panics with
    /// both tables after the test patience. Returns how long it took.
    fn expect(
        &self,
        step: &str,
        allowed: impl Fn(&Pod, &Pod, Kind) -> bool,
        extra: &[String],
        extra_allowed: impl Fn(&Pod, &str) -> bool,
    ) -> Duration {
        let mut want = Table::default();
        for from in &self.pods {
            for to in &self.pods {
                for k in KINDS {
                    let ok = from == to || allowed(from, to, k);
                    want.0
                        .insert((from.clone(), to.to_string(), k.to_string()), ok);
                }
            }
            for t in extra {
                want.0.insert(
                    (from.clone(), t.clone(), String::new()),
                    extra_allowed(from, t),
                );
            }
        }
        let start = Instant::now();
        let mut rounds = 0;
        loop {
            let got = self.observe(extra);
            rounds += 1;
            if got == want {
                eprintln!(
                    "netpol step {step:?}: as expected after {:?} ({rounds} rounds)",
                    start.elapsed()
                );
                return start.elapsed();
            }
            assert!(
                start.elapsed() < patience(),
                "step {step:?}: the reachability table is not as expected after {rounds} rounds\nexpected:\n{}\nobserved:\n{}",
                want.render(),
                got.render()
            );
        }
    }

    /// Service `x/web` in front of x/a; its ClusterIP as a TCP probe target.
    fn web(&self) -> String {
        self.c.apply(
            &json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"namespace": "x", "name": "web"},
                    "spec": {"selector": {"pod": "a"}, "ports": [{"port": 80}]}})
            .to_string(),
        );
        let ip = self.c.ok(&[
            "get",
            "svc",
            "-n",
            "x",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        format!("tcp:{ip}:80")
    }

    fn apply(&self, ns: &str, name: &str, spec: serde_json::Value) {
        self.c.apply(
            &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"namespace": ns, "name": name}, "spec": spec})
            .to_string(),
        );
    }

    fn delete_policies(&self) {
        for ns in NAMESPACES {
            self.c.ok(&["delete", "networkpolicy", "--all", "-n", ns]);
        }
    }
}

/// `(from, to, kind)` -> reachable.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table(BTreeMap<(Pod, String, String), bool>);

impl Table {
    /// One grid per kind, rows from, columns to (`.` reachable, `X` not), as upstream prints.
    fn render(&self) -> String {
        let mut kinds: Vec<&String> = self.0.keys().map(|(_, _, k)| k).collect();
        kinds.dedup();
        kinds.sort();
        kinds.dedup();
        let mut out = String::new();
        for kind in kinds {
            let cols: Vec<&String> = {
                let mut c: Vec<&String> = self
                    .0
                    .keys()
                    .filter(|(_, _, k)| k == kind)
                    .map(|(_, to, _)| to)
                    .collect();
                c.sort();
                c.dedup();
                c
            };
            out.push_str(&format!(
                "{:<8}{}\n",
                if kind.is_empty() { "extra" } else { kind },
                cols.iter().map(|c| format!("{c:<6}")).collect::<String>()
            ));
            let mut rows: Vec<&Pod> = self.0.keys().map(|(f, _, _)| f).collect();
            rows.dedup();
            for from in rows {
                out.push_str(&format!("{:<8}", from.to_string()));
                for to in &cols {
                    let cell = match self.0.get(&(from.clone(), (*to).clone(), kind.clone())) {
                        Some(true) => ".",
                        Some(false) => "X",
                        None => "?",
                    };
                    out.push_str(&format!("{cell:<6}"));
                }
                out.push('\n');
            }
        }
        out
    }
}

fn all(_: &Pod, _: &Pod, _: Kind) -> bool {
    true
}

fn no_extra(_: &Pod, _: &str) -> bool {
    false
}

#[test]
fn ingress_policies_follow_the_truth_table() {
    let m = Matrix::start();
    let h = m.c.host().expect("single node");
    let web = m.web();
    m.expect("no policies", all, std::slice::from_ref(&web), |_, _| true);

    // Default deny ingress in x: nothing gets into x's pods, but they still reach y (the
    // replies come back), x/a still reaches itself through its ClusterIP, and the node still
    // reaches them (their readiness probes pass).
    let x_a = format!("http://{}/", m.ip("x", "a"));
    h.ok(&["curl", "-s", "-o", "/dev/null", "--max-time", "2", &x_a]);
    m.apply("x", "deny", json!({"podSelector": {}}));
    // The change is in the kernel by the time the first refused attempt starts.
    let started = Instant::now();
    let took = eventually("the host to be shut out of x/a", || {
        let at = started.elapsed();
        let out = h.exec(&["curl", "-s", "-o", "/dev/null", "--max-time", "0.3", &x_a]);
        (!out.status.success()).then_some(at)
    });
    eprintln!("netpol: deny-all enforced within {took:?} of kubectl apply returning");
    assert!(took < Duration::from_secs(1), "{took:?}");
    m.expect(
        "default deny ingress in x",
        |_, to, _| to.ns != "x",
        std::slice::from_ref(&web),
        |from, _| from.ns == "x" && from.name == "a",
    );
    let node = h.node_netns();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            node,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            &x_a,
        ])
        .output()
        .expect("ip netns exec");
    assert!(out.status.success(), "the node reaches its pods");
    m.delete_policies();

    // From pods of its own namespace by label.
    let x_a_only = |from: serde_json::Value| json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": from}]});
    let into_x_a = |to: &Pod| to.ns == "x" && to.name == "a";
    m.apply(
        "x",
        "from-b",
        x_a_only(json!([{"podSelector": {"matchLabels": {"pod": "b"}}}])),
    );
    m.expect(
        "x/a from pod b of x",
        |from, to, _| !into_x_a(to) || (from.ns == "x" && from.name == "b"),
        &[],
        no_extra,
    );
    m.delete_policies();

    // From every pod of namespaces by label; then only pod c of those.
    m.apply(
        "x",
        "from-y",
        x_a_only(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}])),
    );
    m.expect(
        "x/a from namespace y",
        |from, to, _| !into_x_a(to) || from.ns == "y",
        &[],
        no_extra,
    );
    m.apply(
        "x",
        "from-y",
        x_a_only(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                          "podSelector": {"matchLabels": {"pod": "c"}}}])),
    );
    m.expect(
        "x/a from pod c of namespace y",
        |from, to, _| !into_x_a(to) || (from.ns == "y" && from.name == "c"),
        &[],
        no_extra,
    );
    m.delete_policies();

    // From an address block, except one pod's address.
    let except = format!("{}/32", m.ip("y", "b"));
    m.apply(
        "x",
        "block",
        x_a_only(json!([{"ipBlock": {"cidr": "10.244.0.0/16", "except": [except]}}])),
    );
    m.expect(
        "x/a from 10.244.0.0/16 except y/b",
        |from, to, _| !(into_x_a(to) && from.ns == "y" && from.name == "b"),
        &[],
        no_extra,
    );
    m.delete_policies();

    // Ports: numeric, named (the pod's serve-81-tcp), a range, UDP.
    let ports = |ports: serde_json::Value| json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": ports}]});
    m.apply("x", "ports", ports(json!([{"port": 80}])));
    m.expect(
        "x/a on TCP 80",
        |_, to, k| !into_x_a(to) || k == Kind::Tcp(80),
        &[],
        no_extra,
    );
    m.apply("x", "ports", ports(json!([{"port": "serve-81-tcp"}])));
    m.expect(
        "x/a on serve-81-tcp",
        |_, to, k| !into_x_a(to) || k == Kind::Tcp(81),
        &[],
        no_extra,
    );
    m.apply(
        "x",
        "ports",
        ports(json!([{"port": 80, "endPort": 81}, {"port": "serve-80-udp", "protocol": "UDP"}])),
    );
    m.expect(
        "x/a on TCP 80-81 and serve-80-udp",
        |_, _, _| true,
        &[],
        no_extra,
    );
    m.apply(
        "x",
        "ports",
        ports(json!([{"port": 80, "protocol": "UDP"}])),
    );
    m.expect(
        "x/a on UDP 80",
        |_, to, k| !into_x_a(to) || k == Kind::Udp(80),
        &[],
        no_extra,
    );
    m.delete_policies();

    // Two policies selecting x/a add up.
    m.apply(
        "x",
        "from-b",
        x_a_only(json!([{"podSelector": {"matchLabels": {"pod": "b"}}}])),
    );
    m.apply(
        "x",
        "from-y-a",
        x_a_only(json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                          "podSelector": {"matchLabels": {"pod": "a"}}}])),
    );
    m.expect(
        "x/a from x/b and from y/a",
        |from, to, _| !into_x_a(to) || from.name == if from.ns == "x" { "b" } else { "a" },
        &[],
        no_extra,
    );
    // The node kept probing every pod: all still Ready.
    let ready = m.c.ok(&[
        "get",
        "pods",
        "-A",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert!(ready.split_whitespace().all(|s| s == "True"), "{ready}");
}

#[test]
fn egress_policies_follow_the_truth_table() {
    let m = Matrix::start();
    // A Service in front of x/a: filtered on x/a's address, after the proxy's DNAT.
    let web = m.web();
    let dns = "dns:10.96.0.10:53".to_owned();
    let extra = [web.clone(), dns.clone()];
    m.expect("no policies", all, &extra, |_, _| true);

    // Default deny egress in y: y's pods reach nothing, not even DNS; x still reaches them.
    m.apply(
        "y",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    m.expect(
        "default deny egress in y",
        |from, _, _| from.ns != "y",
        &extra,
        |from, _| from.ns != "y",
    );

    // + DNS, by the kube-dns pods' labels and port name (berth's DNS stands for them).
    m.apply(
        "y",
        "dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]}]}),
    );
    let dns_ok = |from: &Pod, t: &str| from.ns != "y" || t == dns;
    m.expect(
        "deny egress in y, allow DNS",
        |from, _, _| from.ns != "y",
        &extra,
        dns_ok,
    );

    // y/a may reach namespace x on TCP 80, so also the ClusterIP in front of x/a.
    m.apply(
        "y",
        "a-to-x",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                           "ports": [{"port": 80}]}]}),
    );
    let y_a = |p: &Pod| p.ns == "y" && p.name == "a";
    m.expect(
        "y/a to x on TCP 80",
        |from, to, k| from.ns != "y" || (y_a(from) && to.ns == "x" && k == Kind::Tcp(80)),
        &extra,
        |from, t| dns_ok(from, t) || (y_a(from) && t == web),
    );
    m.c.ok(&["delete", "networkpolicy", "-n", "y", "a-to-x"]);

    // Every y pod to any pod's port named serve-81-tcp; y/b to 10.244.0.0/16 except x/a.
    m.apply(
        "y",
        "named",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    let except = format!("{}/32", m.ip("x", "a"));
    m.apply(
        "y",
        "block",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [except]}}]}]}),
    );
    let y_b = |p: &Pod| p.ns == "y" && p.name == "b";
    let x_a = |p: &Pod| p.ns == "x" && p.name == "a";
    m.expect(
        "y to serve-81-tcp, y/b to 10.244.0.0/16 except x/a",
        |from, to, k| from.ns != "y" || k == Kind::Tcp(81) || (y_b(from) && !x_a(to)),
        &extra,
        // The ClusterIP leads to x/a, which y/b may not reach; DNS is on the node's address,
        // not in the block.
        |from, t| dns_ok(from, t),
    );

    // A pod created while the policies are in force is filtered from its first packet: its
    // very first connection (to x/a on TCP 80, which y may not reach) is dropped, and the
    // one after (TCP 81, allowed) passes.
    let script = format!(
        "for p in 80 81; do if timeout 1 bash -c \"exec 3<>/dev/tcp/{}/$p\"; then echo first-$p=ok; else echo first-$p=no; fi; done; sleep 3600",
        m.ip("x", "a")
    );
    let late = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "y", "name": "late", "labels": {"pod": "late"}},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "busybox", "command": ["/bin/bash", "-c", script]}]}});
    m.c.apply(&late.to_string());
    let logs = eventually("the new pod's first connections", || {
        let out = m.c.kubectl(&["logs", "-n", "y", "late"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("first-81=").then_some(text)
    });
    assert!(
        logs.contains("first-80=no") && logs.contains("first-81=ok"),
        "{logs}"
    );
}
