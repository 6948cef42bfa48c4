//! Pod lifecycle on the node agent: restart policies and crash-loop back-off, liveness and
//! readiness probes (readiness moving the pod in and out of a Service's endpoints), graceful
//! termination, and an agent restart. Each test runs a cluster in its own node netns.

use std::time::{Duration, Instant};

use berth_testkit::{Cluster, eventually};

fn node_cluster() -> Cluster {
    let c = Cluster::start_on_node(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), &[]);
    c.wait_node_ready();
    c
}

fn jsonpath(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

fn wait_for(c: &Cluster, pod: &str, path: &str, want: &str) {
    eventually(&format!("{pod} {path} to be {want}"), || {
        (jsonpath(c, pod, path) == want).then_some(())
    });
}

fn pod(name: &str, extra_spec: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\n    tier: front\nspec:\n{extra_spec}  containers:\n  - name: c\n{container}"
    )
}

#[test]
fn restart_policies_back_off_and_liveness() {
    let c = node_cluster();
    c.apply(&pod(
        "crash",
        "",
        "    image: busybox\n    command: [sh, -c, 'echo run; exit 1']\n",
    ));
    c.apply(&pod(
        "once",
        "  restartPolicy: Never\n",
        "    image: busybox\n    command: [sh, -c, 'exit 3']\n",
    ));
    c.apply(&pod(
        "done",
        "  restartPolicy: OnFailure\n",
        "    image: busybox\n    command: [sh, -c, 'exit 0']\n",
    ));
    c.apply(&pod(
        "live",
        "",
        "    image: busybox\n    command: [sleep, '600']\n    livenessProbe:\n      tcpSocket:\n        port: 9\n      periodSeconds: 1\n      failureThreshold: 1\n",
    ));
    // Always: restarted at once, then held back with CrashLoopBackOff.
    wait_for(
        &c,
        "crash",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CrashLoopBackOff",
    );
    assert_eq!(jsonpath(&c, "crash", "{.status.phase}"), "Running");
    assert_eq!(
        jsonpath(
            &c,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    let restarts: u32 = jsonpath(&c, "crash", "{.status.containerStatuses[0].restartCount}")
        .parse()
        .unwrap_or(0);
    assert!(restarts >= 1, "restartCount {restarts}");
    let table = c.ok(&["get", "pod", "crash"]);
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crash",
    ]);
    assert!(
        events.contains("Back-off restarting failed container c"),
        "{events}"
    );
    // Never: the pod fails with the container's exit code; OnFailure after success: done.
    wait_for(&c, "once", "{.status.phase}", "Failed");
    assert_eq!(
        jsonpath(
            &c,
            "once",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    // A command that is not there fails the way a shell reports it, in the container's log.
    c.apply(&pod(
        "missing",
        "  restartPolicy: Never\n",
        "    image: busybox\n    command: [no-such-program]\n",
    ));
    wait_for(&c, "missing", "{.status.phase}", "Failed");
    assert_eq!(
        jsonpath(
            &c,
            "missing",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "127"
    );
    let log = c.ok(&["logs", "missing"]);
    assert!(log.contains("cannot run \"no-such-program\""), "{log}");
    wait_for(&c, "done", "{.status.phase}", "Succeeded");
    let table = c.ok(&["get", "pod", "done"]);
    assert!(table.contains("Completed"), "{table}");
    // Finished pods give their network back.
    eventually("finished pods to lose their netns", || {
        (c.pod_netns().len() == 2).then_some(())
    });
    // A failing liveness probe restarts the container and says why.
    eventually("live to be restarted", || {
        let n: u32 = jsonpath(&c, "live", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .ok()?;
        (n >= 1).then_some(())
    });
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
    ]);
    assert!(
        events.contains("Liveness probe failed") && events.contains("Killing"),
        "{events}"
    );
}

#[test]
fn readiness_probe_moves_the_pod_in_and_out_of_endpoints() {
    let c = node_cluster();
    // The flag lives in the container's own /tmp: `kubectl exec` sets and clears it.
    let flag = "/tmp/ready-flag";
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    tier: front\n  ports:\n  - port: 80\n    targetPort: http\n");
    c.apply(&pod(
        "web",
        "",
        &format!(
            "    image: berth/whoami\n    ports:\n    - name: http\n      containerPort: 8080\n    readinessProbe:\n      exec:\n        command: [test, -f, {flag}]\n      periodSeconds: 1\n      failureThreshold: 1\n",
        ),
    ));
    c.apply(&pod(
        "web2",
        "",
        "    image: berth/whoami\n    ports:\n    - name: http\n      containerPort: 8080\n    readinessProbe:\n      httpGet:\n        path: /\n        port: http\n      periodSeconds: 1\n",
    ));
    wait_for(&c, "web2", "{.status.containerStatuses[0].ready}", "true");
    let ip = jsonpath(&c, "web", "{.status.podIP}");
    let ip2 = jsonpath(&c, "web2", "{.status.podIP}");
    let addresses = || {
        c.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
    };
    eventually("web2 in the endpoints", || {
        addresses().contains(&ip2).then_some(())
    });
    assert_eq!(jsonpath(&c, "web", "{.status.phase}"), "Running");
    assert_eq!(
        jsonpath(
            &c,
            "web",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    assert!(!addresses().contains(&ip), "{}", addresses());
    c.ok(&["exec", "web", "--", "touch", flag]);
    eventually("web to turn ready", || {
        addresses().contains(&ip).then_some(())
    });
    assert_eq!(
        jsonpath(
            &c,
            "web",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );
    c.ok(&["exec", "web", "--", "rm", flag]);
    eventually("web to leave the endpoints", || {
        (!addresses().contains(&ip)).then_some(())
    });
    let table = c.ok(&["get", "pod", "web"]);
    assert!(
        table.contains("0/1") && table.contains("Running"),
        "{table}"
    );
    let described = c.ok(&["describe", "pod", "web"]);
    for want in [
        // Pods run as the default ServiceAccount, which widens describe's first column.
        "Service Account:  default",
        "Node:             node-1/",
        "Status:           Running",
        "delay=0s timeout=1s period=1s #success=1 #failure=1",
        "Successfully assigned default/web to node-1",
        "Started container c",
        "Readiness probe failed",
    ] {
        assert!(
            described.contains(want),
            "{want:?} missing from:\n{described}"
        );
    }
    // Repeated failures are counted on one Event, not posted again.
    let unhealthy = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web,reason=Unhealthy",
        "-o",
        "jsonpath={.items[*].count}",
    ]);
    let counts: Vec<u32> = unhealthy
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        counts.len() <= 2 && counts.iter().any(|n| *n > 1),
        "{unhealthy}"
    );
}

#[test]
fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let c = node_cluster();
    c.apply(&pod(
        "polite",
        "",
        "    image: busybox\n    command: [sh, -c, 'trap \"echo bye; exit 0\" TERM; echo hi; while true; do sleep 0.2; done']\n",
    ));
    c.apply(&pod(
        "stubborn",
        "  terminationGracePeriodSeconds: 2\n",
        "    image: busybox\n    command: [sh, -c, 'trap \"\" TERM; sleep 600']\n",
    ));
    wait_for(&c, "polite", "{.status.phase}", "Running");
    wait_for(&c, "stubborn", "{.status.phase}", "Running");
    // The container's log, followed from before the deletion to its end, shows the trap ran.
    let node = c.node().expect("a node cluster");
    let mut follow = node.outside_command("kubectl");
    follow
        .args(["logs", "-f", "polite"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .env("HOME", c.dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut follow = follow.spawn().expect("kubectl logs -f");
    let mut stdout = std::io::BufReader::new(follow.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("the first line");
    assert_eq!(first, "hi\n");
    let t = Instant::now();
    c.ok(&["delete", "pod", "polite"]);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest of the log");
    let _ = follow.wait();
    assert_eq!(rest, "bye\n", "the container got SIGTERM and ran its trap");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let t = Instant::now();
    let stubborn = std::thread::scope(|s| {
        let h = s.spawn(|| c.ok(&["delete", "pod", "stubborn"]));
        eventually("stubborn to show Terminating", || {
            c.ok(&["get", "pod", "stubborn"])
                .contains("Terminating")
                .then_some(())
        });
        h.join()
    });
    assert!(stubborn.is_ok());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "SIGKILL after the 2 s grace period, took {took:?}"
    );
    let left = c.ok(&["get", "pods", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    assert!(c.pod_netns().is_empty(), "{:?}", c.pod_netns());
    // Forced deletion removes the object at once; the agent still cleans up.
    c.apply(&pod(
        "forced",
        "",
        "    image: busybox\n    command: [sh, -c, 'trap \"\" TERM; sleep 600']\n",
    ));
    wait_for(&c, "forced", "{.status.phase}", "Running");
    c.ok(&["delete", "pod", "forced", "--grace-period=0", "--force"]);
    eventually("forced's netns to go", || {
        c.pod_netns().is_empty().then_some(())
    });
}

#[test]
fn an_agent_restart_starts_its_pods_again_with_the_same_ip() {
    let mut c = node_cluster();
    c.ok(&["run", "web", "--image=berth/whoami", "--port=8080"]);
    wait_for(&c, "web", "{.status.phase}", "Running");
    let ip = jsonpath(&c, "web", "{.status.podIP}");
    c.restart();
    eventually("web to run again", || {
        let restarts = jsonpath(&c, "web", "{.status.containerStatuses[0].restartCount}");
        let running = jsonpath(
            &c,
            "web",
            "{.status.containerStatuses[0].state.running.startedAt}",
        );
        (restarts == "1" && !running.is_empty()).then_some(())
    });
    assert_eq!(jsonpath(&c, "web", "{.status.podIP}"), ip);
    let node = c.node().expect("a node cluster");
    let body = eventually("whoami to answer after the restart", || {
        let out = node.exec(&[
            "curl",
            "-s",
            "--max-time",
            "2",
            &format!("http://{ip}:8080/"),
        ]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        body.contains("Hostname: web").then_some(body)
    });
    assert!(body.contains(&ip), "{body}");
    assert_eq!(c.pod_netns().len(), 1);
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let c = node_cluster();
    // The containers share an emptyDir, as init containers hand files to the app.
    let m = "    volumeMounts:\n    - name: work\n      mountPath: /shared\n";
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: staged\nspec:\n  volumes:\n  - name: work\n    emptyDir: {{}}\n  initContainers:\n  - name: first\n    image: busybox\n    command: [sh, -c, 'sleep 1; echo first >> /shared/order']\n{m}  - name: second\n    image: busybox\n    command: [sh, -c, 'echo second >> /shared/order']\n{m}  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, 'echo app >> /shared/order; exec sleep 600']\n{m}",
    ));
    eventually("staged to show its init progress", || {
        let t = c.ok(&["get", "pod", "staged"]);
        t.contains("Init:0/2").then_some(())
    });
    assert_eq!(jsonpath(&c, "staged", "{.status.phase}"), "Pending");
    wait_for(&c, "staged", "{.status.phase}", "Running");
    assert_eq!(
        jsonpath(
            &c,
            "staged",
            "{.status.initContainerStatuses[*].state.terminated.reason}"
        ),
        "Completed Completed"
    );
    let order = eventually("the app to start", || {
        let text = c.ok(&["exec", "staged", "--", "cat", "/shared/order"]);
        text.contains("app").then_some(text)
    });
    assert_eq!(order, "first\nsecond\napp\n");
    // A failing init container fails a pod that never restarts, and its app never runs.
    c.apply(&pod(
        "blocked",
        "  restartPolicy: Never\n  initContainers:\n  - name: check\n    image: busybox\n    command: [sh, -c, 'exit 2']\n",
        "    image: busybox\n    command: [sleep, '600']\n",
    ));
    wait_for(&c, "blocked", "{.status.phase}", "Failed");
    let table = c.ok(&["get", "pod", "blocked"]);
    assert!(table.contains("Init:Error"), "{table}");
    assert_eq!(
        jsonpath(
            &c,
            "blocked",
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "PodInitializing"
    );
}
