//! The pod subresources a node agent answers (`log`, `exec`, `attach`, `portforward`): find
//! the pod's node and its agent's address, then proxy as kube-apiserver does to the kubelet.
//! Log bodies stream through; exec and port-forward are upgraded on both sides and the two
//! connections spliced, so the websocket protocol passes through untouched.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use berth_api::resources::{self, Subresource};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::ApiError;
use crate::request::Target;
use crate::{Server, rest};

/// How long dialing an agent may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an agent's error answer is read into the error message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Whether `t` is one of the subresources this module serves.
pub fn serves(t: &Target) -> bool {
    t.resource.group.is_empty()
        && t.resource.plural == "pods"
        && t.name.is_some()
        && matches!(
            t.subresource,
            Some(
                Subresource::Log
                    | Subresource::Exec
                    | Subresource::Attach
                    | Subresource::PortForward
            )
        )
}

/// Proxies `req` to the agent of the pod's node.
pub async fn handle(srv: Arc<Server>, t: Target, req: Request) -> Result<Response, ApiError> {
    let (Some(name), Some(sub)) = (t.name.as_deref(), t.subresource) else {
        return Err(ApiError::NoRoute);
    };
    let ns = t.namespace.as_deref().unwrap_or("default");
    let upgrade = sub != Subresource::Log;
    let allowed = if upgrade {
        matches!(*req.method(), Method::GET | Method::POST)
    } else {
        *req.method() == Method::GET
    };
    if !allowed {
        return Err(ApiError::MethodNotAllowed);
    }
    let pod = rest::get(&srv, t.resource, Some(ns), name).await?;
    let query = req.uri().query().unwrap_or("").to_owned();
    let requested = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned())
        .filter(|c| !c.is_empty());
    let path = match sub {
        Subresource::PortForward => format!("/portForward/{ns}/{name}"),
        _ => {
            let c = container(&pod, name, requested.as_deref())?;
            let verb = match sub {
                Subresource::Log => "containerLogs",
                Subresource::Exec => "exec",
                _ => "attach",
            };
            format!("/{verb}/{ns}/{name}/{c}")
        }
    };
    let addr = agent_address(&srv, &pod, name).await?;
    let query = match sub {
        Subresource::Exec | Subresource::Attach => kubelet_stream_query(&query),
        _ => query,
    };
    let path_and_query = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    if upgrade {
        spliced(&srv, addr, &path_and_query, req).await
    } else {
        logs(&srv, addr, &path_and_query).await
    }
}

/// The query the kubelet expects for exec and attach: pods/exec's `stdin`, `stdout` and
/// `stderr` become `input`, `output` and `error`, as kube-apiserver renames them.
fn kubelet_stream_query(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let k = match k.as_ref() {
            "stdin" => "input",
            "stdout" => "output",
            "stderr" => "error",
            other => other,
        };
        out.append_pair(k, &v);
    }
    out.finish()
}

/// Forwards an upgrade request (exec, attach, port-forward) and, once the agent has switched
/// protocols, splices the client's upgraded connection to the agent's.
async fn spliced(
    srv: &Server,
    addr: SocketAddr,
    path_and_query: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return Err(ApiError::BadRequest("Upgrade request required".into()));
    }
    let client_side = hyper::upgrade::on(&mut req);
    let mut out = axum::http::Request::builder()
        .method(req.method().clone())
        .uri(path_and_query);
    for (k, v) in req.headers() {
        // The agent authenticates the API server, not the user.
        if k != header::HOST && k != header::AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    let out = out
        .header(header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = send(srv, addr, out).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_error(resp).await);
    }
    splice(client_side, hyper::upgrade::on(&mut resp));
    let (parts, _) = resp.into_parts();
    let mut r = Response::new(Body::empty());
    *r.status_mut() = parts.status;
    *r.headers_mut() = parts.headers;
    Ok(r)
}

/// The container a request is for: the one named, or the only one; errors in kube-apiserver's
/// words.
fn container<'a>(pod: &'a Value, name: &str, requested: Option<&str>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<&'a str> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    match requested {
        Some(c) if containers.contains(&c) || init.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => match containers.as_slice() {
            [only] => Ok((*only).to_owned()),
            _ if init.is_empty() => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))),
            _ => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}] or one of the init containers: [{}]",
                containers.join(" "),
                init.join(" ")
            ))),
        },
    }
}

/// The pod's node's InternalIP and agent port (`status.daemonEndpoints.kubeletEndpoint`).
async fn agent_address(srv: &Server, pod: &Value, name: &str) -> Result<SocketAddr, ApiError> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    node_address(srv, node_name).await
}

/// A Node's InternalIP and agent port (`status.daemonEndpoints.kubeletEndpoint`, 10250 when
/// unset), as kube-apiserver finds a kubelet.
pub(crate) async fn node_address(srv: &Server, node_name: &str) -> Result<SocketAddr, ApiError> {
    let nodes = resources::by_kind("", "Node")
        .ok_or_else(|| ApiError::Internal("nodes not registered".into()))?;
    let node = rest::get(srv, nodes, None, node_name).await?;
    let ip: IpAddr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .find_map(|a| a.get("address")?.as_str()?.parse().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "node {node_name} does not report an InternalIP address"
            ))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Ok(SocketAddr::new(ip, port))
}

/// Sends one request to the agent at `addr` over TLS with the kubelet client certificate.
async fn send(
    srv: &Server,
    addr: SocketAddr,
    req: axum::http::Request<Body>,
) -> Result<axum::http::Response<hyper::body::Incoming>, ApiError> {
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::Internal(format!("error dialing the node agent at {addr}: {e}"))
    };
    let mut sender = dial_kubelet(srv, addr).await.map_err(|e| failed(&e))?;
    sender.send_request(req).await.map_err(|e| failed(&e))
}

/// An HTTP/1.1 connection (upgrades allowed) to the agent at `addr`, over TLS with the kubelet
/// client certificate.
pub(crate) async fn dial_kubelet(
    srv: &Server,
    addr: SocketAddr,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Body>> {
    let tcp = dial_tcp(&addr.ip().to_string(), addr.port()).await?;
    let server_name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(srv.kubelet_tls.clone())
        .connect(server_name, tcp)
        .await?;
    handshake(tls).await
}

/// A TCP connection to `host:port` (a name is resolved), with the dial timeout and no delay.
pub(crate) async fn dial_tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Starts HTTP/1.1 on `io`, driving the connection (upgrades included) on its own task.
pub(crate) async fn handshake<I>(
    io: I,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Body>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxied connection ended");
        }
    });
    Ok(sender)
}

/// Joins two upgraded connections once both sides have switched protocols.
pub(crate) fn splice(
    client_side: hyper::upgrade::OnUpgrade,
    backend_side: hyper::upgrade::OnUpgrade,
) {
    tokio::spawn(async move {
        let (Ok(client), Ok(backend)) = (client_side.await, backend_side.await) else {
            tracing::debug!("an upgraded connection failed");
            return;
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    });
}

/// Streams the agent's log answer through.
async fn logs(srv: &Server, addr: SocketAddr, path_and_query: &str) -> Result<Response, ApiError> {
    let req = axum::http::Request::get(path_and_query)
        .header(header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = send(srv, addr, req).await?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    let mut r = Response::new(Body::new(resp.into_body()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// An agent's refusal as a 400 carrying its text, as kube-apiserver reports the kubelet's.
async fn agent_error(resp: axum::http::Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status();
    let limited = http_body_util::Limited::new(resp.into_body(), ERROR_BODY_LIMIT);
    let text = match limited.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    if text.is_empty() {
        ApiError::Internal(format!("the node agent answered {code}"))
    } else {
        ApiError::BadRequest(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(pod: Value, requested: Option<&str>, expected: Result<&str, &str>) {
        let got = container(&pod, "p", requested).map_err(|e| e.to_string());
        assert_eq!(
            got,
            expected.map(str::to_owned).map_err(str::to_owned),
            "{requested:?}"
        );
    }

    #[test]
    fn exec_streams_are_renamed_for_the_kubelet() {
        assert_eq!(
            kubelet_stream_query(
                "command=ls&command=-l&stdin=true&stdout=true&stderr=true&tty=true&container=c"
            ),
            "command=ls&command=-l&input=true&output=true&error=true&tty=true&container=c"
        );
    }

    #[test]
    fn containers() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let with_init = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        check(one.clone(), None, Ok("a"));
        check(one.clone(), Some("a"), Ok("a"));
        check(one, Some("x"), Err("container x is not valid for pod p"));
        check(two.clone(), Some("b"), Ok("b"));
        check(
            two,
            None,
            Err("a container name must be specified for pod p, choose one of: [a b]"),
        );
        check(with_init.clone(), Some("i"), Ok("i"));
        check(
            with_init,
            None,
            Err(
                "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]",
            ),
        );
        check(
            json!({}),
            None,
            Err("a container name must be specified for pod p, choose one of: []"),
        );
    }
}
