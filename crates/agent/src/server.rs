//! The agent's HTTPS server: the part of the kubelet's API the API server dials for
//! `kubectl logs` (`/containerLogs/...`) and `kubectl exec` (`/exec/...`, websocket). Only
//! clients with a certificate the cluster CA signed get in, as the kubelet requires.

mod attach;
mod exec;
mod logs;
mod portforward;
mod query;
mod spdy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::pods::Config;

/// The body every handler answers with: a whole text or a stream (logs).
type Body = BoxBody<Bytes, Infallible>;

/// What request handlers share.
struct State {
    client: Client,
    state_dir: PathBuf,
    consoles: Arc<crate::runtime::Consoles>,
}

/// A request path the server answers, as the kubelet lays them out.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Logs {
        ns: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    Exec {
        ns: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    Attach {
        ns: &'a str,
        pod: &'a str,
        container: &'a str,
    },
    PortForward {
        ns: &'a str,
        pod: &'a str,
    },
    /// The kubelet's health check (`nodes/NAME/proxy/healthz` reaches it).
    Healthz,
}

fn route(path: &str) -> Option<Route<'_>> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["healthz"] => Some(Route::Healthz),
        ["containerLogs", ns, pod, container] => Some(Route::Logs { ns, pod, container }),
        ["exec", ns, pod, container] => Some(Route::Exec { ns, pod, container }),
        ["attach", ns, pod, container] => Some(Route::Attach { ns, pod, container }),
        ["portForward", ns, pod] => Some(Route::PortForward { ns, pod }),
        _ => None,
    }
    .filter(|r| match r {
        Route::Logs { ns, pod, container }
        | Route::Exec { ns, pod, container }
        | Route::Attach { ns, pod, container } => {
            ![ns, pod, container].iter().any(|s| s.is_empty())
        }
        Route::PortForward { ns, pod } => !ns.is_empty() && !pod.is_empty(),
        Route::Healthz => true,
    })
}

/// Runs [`run`] as a task of its own; a failure (the port taken, say) is logged, and the
/// pods keep running without logs, exec and port-forward.
pub fn spawn(
    client: Client,
    config: Config,
    consoles: Arc<crate::runtime::Consoles>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        if let Err(e) = run(client, config, consoles, shutdown).await {
            tracing::error!(error = %e, "the agent's server stopped");
        }
    });
}

/// Serves until `shutdown` on `0.0.0.0:config.kubelet_port`.
pub async fn run(
    client: Client,
    config: Config,
    consoles: Arc<crate::runtime::Consoles>,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], config.kubelet_port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let state = Arc::new(State {
        client,
        state_dir: config.state_dir.clone(),
        consoles,
    });
    tracing::info!(%addr, "agent server listening");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// A self-signed serving certificate for the node's IP and name (the API server does not
/// verify it, as kube-apiserver without `--kubelet-certificate-authority` does not), and a
/// required client certificate chaining to the cluster CA.
fn tls_config(config: &Config) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(config.client_ca.as_bytes()) {
        roots
            .add(cert.map_err(|_| Error::ClientCa)?)
            .map_err(Error::Tls)?;
    }
    if roots.is_empty() {
        return Err(Error::ClientCa);
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(Error::Verifier)?;
    let names = vec![config.node_ip.to_string(), config.node_name.clone()];
    let key = rcgen::KeyPair::generate().map_err(Error::Certificate)?;
    let cert = rcgen::CertificateParams::new(names)
        .and_then(|p| p.self_signed(&key))
        .map_err(Error::Certificate)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(Error::Tls)?;
    // Websocket upgrades need HTTP/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let resp = match route(&path) {
        None => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
        Some(Route::Healthz) => text(StatusCode::OK, "ok".into()),
        Some(Route::Logs { ns, pod, container }) => {
            match find(&state, ns, pod, Some(container)).await {
                Ok(p) => logs::serve(&state.state_dir, &uid(&p), pod, container, &query).await,
                Err(resp) => resp,
            }
        }
        Some(Route::Exec { ns, pod, container }) => {
            match find(&state, ns, pod, Some(container)).await {
                Ok(p) => exec::serve(&state.state_dir, &uid(&p), container, &query, req),
                Err(resp) => resp,
            }
        }
        Some(Route::Attach { ns, pod, container }) => {
            match find(&state, ns, pod, Some(container)).await {
                Ok(p) => attach::serve(state.consoles.get(&uid(&p), container), container, req),
                Err(resp) => resp,
            }
        }
        Some(Route::PortForward { ns, pod }) => match find(&state, ns, pod, None).await {
            Ok(p) => portforward::serve(&uid(&p), pod, req),
            Err(resp) => resp,
        },
    };
    Ok(resp)
}

fn uid(pod: &Pod) -> String {
    pod.uid().unwrap_or_default()
}

/// Pod `ns/name` if it exists and has `container` (when one is named), or the error answer.
async fn find(
    state: &State,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> std::result::Result<Pod, Response<Body>> {
    let pod = match Api::<Pod>::namespaced(state.client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{name} not found"),
            ));
        }
        Err(e) => return Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let known = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .any(|c| Some(c.name.as_str()) == container);
    if let Some(container) = container.filter(|_| !known) {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!("container {container} is not valid for pod {name}"),
        ));
    }
    Ok(pod)
}

/// Checks a websocket upgrade request offering one of `protocols` (most preferred first)
/// and returns the pending upgrade with the 101 answer, or the refusal.
fn websocket_upgrade(
    mut req: Request<Incoming>,
    protocols: &[&'static str],
) -> std::result::Result<(hyper::upgrade::OnUpgrade, Response<Body>), Box<Response<Body>>> {
    use hyper::header::{self, HeaderValue};
    let h = req.headers();
    let is_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_ws) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "Upgrade request required".into(),
        )));
    };
    let offered: Vec<&str> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(protocol) = protocols.iter().find(|p| offered.contains(p)) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            format!(
                "none of the offered websocket subprotocols {offered:?} is served: {protocols:?}"
            ),
        )));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hs.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok((upgrade, r))
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The PID of container `container` of pod `uid` while it runs: the recorded process must
/// be alive and in the pod's network namespace, so a PID the kernel reused for another
/// process (after a restart of the agent, say) is never entered.
fn container_pid(state_dir: &std::path::Path, uid: &str, container: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let pid = running_pid(&crate::layout::pid_path(state_dir, uid, container))?;
    let netns = crate::sandbox::SandboxNames::for_uid(uid).ok()?.netns;
    let pod = std::fs::metadata(std::path::Path::new("/run/netns").join(netns)).ok()?;
    // An image pod's main process is `runc run`, in the node; its container's init is in the pod.
    let inside = crate::oci::container_init(pid).unwrap_or(pid);
    let its = std::fs::metadata(format!("/proc/{inside}/ns/net")).ok()?;
    (pod.dev() == its.dev() && pod.ino() == its.ino()).then_some(pid)
}

/// Whether the process whose PID `pid_file` holds is still running (not reaped, not a
/// zombie): the container's process, which the pod worker records when it starts it.
fn running_pid(pid_file: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    (state != "Z" && state != "X").then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/containerLogs/default/web/c"),
            Some(Route::Logs {
                ns: "default",
                pod: "web",
                container: "c"
            })
        );
        assert_eq!(
            route("/exec/ns/p/c"),
            Some(Route::Exec {
                ns: "ns",
                pod: "p",
                container: "c"
            })
        );
        for bad in [
            "/",
            "/exec/ns/p",
            "/exec/ns/p/c/d",
            "/containerLogs//p/c",
            "/other/a/b/c",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_missing_or_garbled_pid_file_is_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.pid");
        assert_eq!(running_pid(&f), None);
        std::fs::write(&f, "garbage").expect("write");
        assert_eq!(running_pid(&f), None);
        std::fs::write(&f, std::process::id().to_string()).expect("write");
        assert_eq!(running_pid(&f), Some(std::process::id()));
    }
}
