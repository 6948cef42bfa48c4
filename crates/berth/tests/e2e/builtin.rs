//! `berth workload ...`: the built-in programs an image name selects, run by the binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nX-Berth-Test: yes\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn workloads_answer_as_the_tutorials_expect() {
    for (name, path, want) in [
        ("whoami", "/", "X-Berth-Test: yes"),
        ("number-crunch", "/square-root/16", "\"SquareRoot\":4"),
    ] {
        let port = berth_testkit::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["workload", name, "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth workload");
        let got = berth_testkit::eventually(&format!("{name} to answer"), || get(port, path));
        let _ = child.kill();
        let _ = child.wait();
        assert!(got.contains(want), "{got}");
    }
}
