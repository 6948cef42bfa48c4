//! `kubectl get -w`: changes arrive as they happen.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::on_both_stores;
use berth_testkit::Cluster;

on_both_stores!(get_watch_sees_changes, |c: &Cluster| {
    let mut child = Command::new("kubectl")
        .args(["get", "svc", "-w", "--output-watch-events"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir().join("kubecache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |want: &str| -> String {
        let deadline = std::time::Instant::now() + berth_testkit::patience();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(want) => return l,
                Ok(_) => continue,
                Err(_) => panic!("no watch line containing {want:?}"),
            }
        }
    };
    assert!(next("kubernetes").starts_with("ADDED"));
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: watched\nspec:\n  ports:\n  - port: 80\n");
    assert!(next("watched").starts_with("ADDED"));
    c.ok(&["label", "svc", "watched", "a=b"]);
    assert!(next("watched").starts_with("MODIFIED"));
    c.ok(&["delete", "svc", "watched"]);
    assert!(next("watched").starts_with("DELETED"));
    let _ = child.kill();
    let _ = child.wait();
});
