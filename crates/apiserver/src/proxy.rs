//! The `proxy` subresources of Services, pods and Nodes: `…/services/[scheme:]name[:port]/proxy/PATH`
//! reaches a ready endpoint of the Service, `pods/…/proxy` the pod's IP, `nodes/…/proxy` the
//! node agent, with kube-apiserver's redirect and HTML link rewriting and upgrades spliced.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use berth_api::resources::{self, Subresource};
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;

use crate::error::ApiError;
use crate::request::Target;
use crate::{Server, node_proxy, rest};

mod html;
mod location;

use location::{clean_join, rewrite_url, split_scheme_name_port};

/// The largest HTML answer whose links are rewritten; larger ones are refused.
const HTML_LIMIT: usize = 16 * 1024 * 1024;

/// Whether `t` is a `proxy` subresource this module serves.
pub fn serves(t: &Target) -> bool {
    t.resource.group.is_empty()
        && matches!(t.resource.plural, "services" | "pods" | "nodes")
        && t.name.is_some()
        && t.subresource == Some(Subresource::Proxy)
}

/// Where a proxied request goes.
#[derive(Debug, Clone, PartialEq)]
enum Backend {
    /// Plain HTTP (or HTTPS without verification, as kube-apiserver's proxy transport) to a
    /// pod, an endpoint or an external name.
    Direct {
        https: bool,
        host: String,
        port: u16,
    },
    /// The node agent, over TLS with the kubelet client certificate.
    Kubelet(std::net::SocketAddr),
}

/// Proxies `req` as kube-apiserver's `Connect` on `services/proxy`, `pods/proxy` and
/// `nodes/proxy` does.
pub async fn handle(srv: Arc<Server>, t: Target, req: Request) -> Result<Response, ApiError> {
    let Some(raw_id) = t.name.as_deref() else {
        return Err(ApiError::NoRoute);
    };
    // The id's colons may come escaped.
    let id = &raw_id.replace("%3A", ":").replace("%3a", ":");
    let path = req.uri().path().to_owned();
    let marker = format!("/{}/{raw_id}/proxy", t.resource.plural);
    let (prefix, rest) = match path.find(&marker) {
        Some(i) => path.split_at(i + marker.len()),
        None => return Err(ApiError::NoRoute),
    };
    let backend_path = clean_join(rest);
    // kube-apiserver sends GETs of a bare `…/proxy` to `…/proxy/`; other methods go to `/`.
    if backend_path.is_empty() && matches!(*req.method(), Method::GET | Method::HEAD) {
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return redirect_to(&format!("{path}/{query}"));
    }
    let backend_path = if backend_path.is_empty() {
        "/".to_owned()
    } else {
        backend_path
    };
    let ns = t.namespace.as_deref().unwrap_or("default");
    let backend = match t.resource.plural {
        "services" => service_backend(&srv, ns, id).await?,
        "pods" => pod_backend(&srv, ns, id).await?,
        _ => node_backend(&srv, id).await?,
    };
    forward(&srv, backend, prefix, &backend_path, req).await
}

fn redirect_to(location: &str) -> Result<Response, ApiError> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    );
    Ok(r)
}

/// A random index below `n` (`n > 0`), as kube-apiserver picks subsets and addresses.
fn random_below(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n.max(1) as u128) as usize
}

/// A ready address of the Service's port (named, or given by number and mapped to its name)
/// picked at random from its Endpoints; an ExternalName Service's external name.
async fn service_backend(srv: &Server, ns: &str, id: &str) -> Result<Backend, ApiError> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid service request {id:?}")))?;
    let services = registered("Service")?;
    let svc = rest::get(srv, services, Some(ns), name).await?;
    let ports: Vec<&Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let port_of = |p: &Value| p.get("port").and_then(Value::as_u64).unwrap_or(0);
    let name_of = |p: &Value| {
        p.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut port_name = port.to_owned();
    let mut chosen = ports.iter().find(|p| name_of(p) == port);
    if let Ok(n) = port.parse::<u64>() {
        let Some(p) = ports.iter().find(|p| port_of(p) == n) else {
            return Err(ApiError::ServiceUnavailable(format!(
                "no service port {n} found for service {name:?}"
            )));
        };
        port_name = name_of(p);
        chosen = Some(p);
    }
    let https = scheme == "https";
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        let host = svc
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                ApiError::ServiceUnavailable(format!("service {name:?} has no external name"))
            })?;
        let port = chosen
            .or(ports.first())
            .map(|p| port_of(p))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(if https { 443 } else { 80 });
        return Ok(Backend::Direct {
            https,
            host: host.to_owned(),
            port,
        });
    }
    let eps = rest::get(srv, registered("Endpoints")?, Some(ns), name).await?;
    let (host, port) = pick_endpoint(&eps, &port_name).ok_or_else(|| {
        ApiError::ServiceUnavailable(format!("no endpoints available for service {name:?}"))
    })?;
    Ok(Backend::Direct { https, host, port })
}

/// A random ready address of a random subset that has the port named `port_name` (`""` for
/// an unnamed port).
fn pick_endpoint(eps: &Value, port_name: &str) -> Option<(String, u16)> {
    let subsets = eps.get("subsets").and_then(Value::as_array)?;
    let start = random_below(subsets.len());
    (0..subsets.len()).find_map(|i| {
        let ss = &subsets[(start + i) % subsets.len()];
        let addrs: Vec<&str> = ss
            .get("addresses")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(|a| a.get("ip")?.as_str())
            .collect();
        if addrs.is_empty() {
            return None;
        }
        let port = ss
            .get("ports")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)?
            .get("port")?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())?;
        Some((addrs[random_below(addrs.len())].to_owned(), port))
    })
}

/// The pod's IP and the port asked for, else its first container's first port, else 80.
async fn pod_backend(srv: &Server, ns: &str, id: &str) -> Result<Backend, ApiError> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid pod request {id:?}")))?;
    let pod = rest::get(srv, registered("Pod")?, Some(ns), name).await?;
    let https = scheme == "https";
    let port = if port.is_empty() {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|c| c.pointer("/ports/0/containerPort")?.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(if https { 443 } else { 80 })
    } else {
        port.parse::<u16>()
            .map_err(|_| ApiError::BadRequest(format!("invalid port {port:?} for pod {name}")))?
    };
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .filter(is_global_unicast)
        .ok_or_else(|| ApiError::BadRequest("address not allowed".into()))?;
    Ok(Backend::Direct {
        https,
        host: ip.to_string(),
        port,
    })
}

/// Go's `IP.IsGlobalUnicast`: private ranges count, loopback and link-local do not.
fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// The node agent (no port, or the agent's port) or another port on the node's InternalIP.
async fn node_backend(srv: &Server, id: &str) -> Result<Backend, ApiError> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid node request {id:?}")))?;
    let agent = node_proxy::node_address(srv, name).await?;
    if port.is_empty() || port == agent.port().to_string() {
        return Ok(Backend::Kubelet(agent));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| ApiError::BadRequest(format!("invalid port {port:?} for node {name}")))?;
    Ok(Backend::Direct {
        https: scheme == "https",
        host: agent.ip().to_string(),
        port,
    })
}

fn registered(kind: &str) -> Result<&'static resources::Resource, ApiError> {
    resources::by_kind("", kind).ok_or_else(|| ApiError::Internal(format!("{kind} not registered")))
}

async fn connect(srv: &Server, backend: &Backend) -> std::io::Result<SendRequest<Body>> {
    match backend {
        Backend::Kubelet(addr) => node_proxy::dial_kubelet(srv, *addr).await,
        Backend::Direct {
            https: false,
            host,
            port,
        } => node_proxy::handshake(node_proxy::dial_tcp(host, *port).await?).await,
        Backend::Direct {
            https: true,
            host,
            port,
        } => {
            let tcp = node_proxy::dial_tcp(host, *port).await?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(srv.insecure_tls.clone())
                .connect(name, tcp)
                .await?;
            node_proxy::handshake(tls).await
        }
    }
}

/// Headers that belong to one hop, never forwarded (RFC 9110 7.6.1, as Go's reverse proxy).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// CORS headers of the backend, dropped as kube-apiserver drops them.
const CORS: &[&str] = &[
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, and those `Connection` names, from `headers`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

impl Backend {
    /// `host:port` as the backend is dialed.
    fn authority(&self) -> String {
        match self {
            Backend::Direct { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Backend::Direct { host, port, .. } => format!("{host}:{port}"),
            Backend::Kubelet(addr) => addr.to_string(),
        }
    }
}

/// Sends `req` to `backend` at `backend_path` (the query kept) and answers with what it
/// answers, rewritten; an upgrade the backend accepts is spliced to the client.
async fn forward(
    srv: &Server,
    backend: Backend,
    prefix: &str,
    backend_path: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upgrade = is_upgrade(req.headers());
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let target = match parts.uri.query() {
        Some(q) => format!("{backend_path}?{q}"),
        None => backend_path.to_owned(),
    };
    // The host the client asked for: `Host`, or the authority of an HTTP/2 request.
    let request_host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let backend_host = backend.authority();
    // As Go's reverse proxy, the backend sees the host the client asked for.
    let host = if request_host.is_empty() {
        &backend_host
    } else {
        &request_host
    };
    let forwarded_uri = clean_join(&format!("{prefix}{backend_path}"));
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(target.as_str())
        .body(if upgrade { Body::empty() } else { body })
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    *out.headers_mut() = outgoing_headers(&parts.headers, upgrade, &forwarded_uri, host);
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::ServiceUnavailable(format!("error trying to reach service: {e}"))
    };
    let mut sender = connect(srv, &backend).await.map_err(|e| unreachable(&e))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(&e))?;
    if let Some(client_side) = client_side
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        node_proxy::splice(client_side, hyper::upgrade::on(&mut resp));
        let (parts, _) = resp.into_parts();
        let mut r = Response::new(Body::empty());
        *r.status_mut() = parts.status;
        *r.headers_mut() = parts.headers;
        return Ok(r);
    }
    let rewrite = |url: &str| rewrite_url(url, &backend_host, &request_host, prefix);
    answer(resp, parts.method == Method::HEAD, &rewrite).await
}

/// The client's headers as the backend gets them: no credentials, no hop-by-hop headers
/// (unless upgrading), `Host` and `X-Forwarded-Uri` set.
fn outgoing_headers(from: &HeaderMap, upgrade: bool, forwarded_uri: &str, host: &str) -> HeaderMap {
    let mut headers = from.clone();
    // The backend trusts the API server, not the user's credentials.
    headers.remove(header::AUTHORIZATION);
    if !upgrade {
        strip_hop_by_hop(&mut headers);
    }
    if let Ok(v) = HeaderValue::from_str(forwarded_uri) {
        headers.insert("x-forwarded-uri", v);
    }
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(host)
    {
        headers.insert(header::HOST, v);
    }
    headers
}

/// The backend's answer for the client: hop-by-hop and CORS headers dropped, a redirect's
/// `Location` or an HTML body's links rewritten, anything else streamed through.
async fn answer(
    resp: axum::http::Response<hyper::body::Incoming>,
    head: bool,
    rewrite: &(dyn Fn(&str) -> String + Sync),
) -> Result<Response, ApiError> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    for h in CORS {
        parts.headers.remove(*h);
    }
    if let Some(loc) = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(v) = HeaderValue::from_str(&rewrite(loc)) {
            parts.headers.insert(header::LOCATION, v);
        }
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    if is_html(&parts.headers) && !head && has_body(parts.status) {
        return html::rewrite_response(parts, body, HTML_LIMIT, rewrite).await;
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
}

/// Whether an answer with this status carries a body.
fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

#[cfg(test)]
mod tests;
