//! Container probes as the kubelet runs them: exec (a command inside the container's
//! namespaces), httpGet (a 2xx/3xx answer from the pod IP) and tcpSocket (a connection
//! accepted), each within `timeoutSeconds`, plus the threshold bookkeeping that turns single
//! results into a probe's verdict.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe: they differ in their initial verdict and in what a failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// How events and messages name it ("Liveness probe failed: ...").
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// The timings of a probe with the API's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(p: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min).unsigned_abs().into())
        };
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1).unsigned_abs();
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// Consecutive results against the thresholds: the verdict flips to success after
/// `successThreshold` successes in a row and to failure after `failureThreshold` failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    timing: Timing,
    successes: u32,
    failures: u32,
    pub ok: bool,
}

impl Verdict {
    /// Readiness and startup start failed (not ready, not started); liveness starts healthy.
    pub fn new(kind: Kind, timing: Timing) -> Verdict {
        Verdict {
            timing,
            successes: 0,
            failures: 0,
            ok: kind == Kind::Liveness,
        }
    }

    /// Whether the last `failureThreshold` results were all failures.
    pub fn failed(&self) -> bool {
        self.failures >= self.timing.failure_threshold
    }

    /// Records one result; returns whether the verdict changed.
    pub fn record(&mut self, success: bool) -> bool {
        let before = self.ok;
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.timing.success_threshold {
                self.ok = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.timing.failure_threshold {
                self.ok = false;
            }
        }
        before != self.ok
    }
}

/// Where a probe runs: the pod's IP and the container's main process (for exec).
#[derive(Debug, Clone)]
pub struct Target {
    pub pod_ip: IpAddr,
    pub pid: u32,
    pub container: Container,
}

/// Runs `probe` once; `Err` carries the reason it failed, as the Unhealthy event words it.
pub async fn run(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Timing::of(probe).timeout;
    let attempt = async {
        if let Some(exec) = &probe.exec {
            exec_probe(exec.command.as_deref().unwrap_or_default(), target).await
        } else if let Some(http) = &probe.http_get {
            let port = resolve_port(&http.port, &target.container)?;
            let host = http.host.as_deref().filter(|h| !h.is_empty());
            let ip = match host {
                Some(h) => h.parse().map_err(|_| format!("invalid host {h:?}"))?,
                None => target.pod_ip,
            };
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            http_probe(
                SocketAddr::new(ip, port),
                http.path.as_deref().unwrap_or("/"),
                &headers,
            )
            .await
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, &target.container)?;
            let addr = SocketAddr::new(target.pod_ip, port);
            tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"))
        } else {
            Err("probe has no handler berth supports (exec, httpGet, tcpSocket)".to_owned())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// A port by number, or by the name of one of the container's ports.
fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("no container port named {name:?}"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

async fn exec_probe(command: &[String], target: &Target) -> Result<(), String> {
    if command.is_empty() {
        return Err("exec probe has no command".to_owned());
    }
    let out = tokio::process::Command::from(crate::runtime::in_container(target.pid, command))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("starting nsenter: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(match out.status.code() {
        Some(code) if text.trim().is_empty() => format!("command {command:?} exited with {code}"),
        _ => text.trim().to_owned(),
    })
}

async fn http_probe(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"http://{addr}{path}\": dial tcp {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(path)
        .header("Host", addr.to_string())
        .header("User-Agent", "kube-probe/1.33")
        .header("Accept", "*/*");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let resp = sender.send_request(req).await;
    conn.abort();
    let resp = resp.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    let code = resp.status().as_u16();
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn thresholds_turn_results_into_verdicts() {
        let mut r = Verdict::new(Kind::Readiness, timing(2, 3));
        assert!(!r.ok);
        assert!(!r.record(true));
        assert!(r.record(true), "second success makes it ready");
        assert!(!r.record(false) && !r.record(false));
        assert!(r.ok, "two failures are below the threshold");
        assert!(r.record(false));
        assert!(!r.ok);
        let l = Verdict::new(Kind::Liveness, timing(1, 1));
        assert!(l.ok, "liveness starts healthy");
    }

    #[test]
    fn defaults_follow_the_api() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn ports_by_number_or_name() {
        let c = Container {
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let port = listener.local_addr().expect("test setup").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /ok") && req.contains("x-probe: yes") {
                    200
                } else {
                    500
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let target = Target {
            pod_ip: "127.0.0.1".parse().expect("test setup"),
            pid: std::process::id(),
            container: Container::default(),
        };
        let http = |path: &str| Probe {
            http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(port.into()),
                http_headers: Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                    name: "x-probe".into(),
                    value: "yes".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run(&http("/ok"), &target).await, Ok(()));
        let e = run(&http("/bad"), &target).await.expect_err("should fail");
        assert!(e.contains("statuscode: 500"), "{e}");
        let tcp = |port: u16| Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(port.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run(&tcp(port), &target).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("test setup")
            .local_addr()
            .expect("test setup")
            .port();
        assert!(run(&tcp(closed), &target).await.is_err());
    }
}
