//! Listening: TLS with optional client certificates, HTTP/1.1 and HTTP/2, the authentication
//! gate, routing of non-resource paths, and the objects every cluster starts with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_api::resources;
use berth_store::{ListOptions, Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::meta::collection_key;
use crate::request::{self, Params, Target};
use crate::{Allocations, Config, Server, alloc, discovery, openapi, pki, rest};

/// Where the server listens, once it does.
#[derive(Debug, Clone)]
pub struct Listening {
    pub addr: SocketAddr,
    /// `https://127.0.0.1:6443` (or `http://` with `insecure_http`).
    pub url: String,
    /// The admin kubeconfig written into the data directory.
    pub kubeconfig: PathBuf,
    /// The API for clients inside this process.
    pub loopback: Loopback,
}

/// The API served inside this process, for the parts of `berth server` that run beside it
/// (as kube-apiserver gives its own post-start hooks a loopback client): a request goes
/// straight to the handlers, with no TLS, socket or HTTP framing, authenticated as the
/// cluster admin. A `kube::Client` is built over it with `kube::Client::new`. At 10,000
/// Services, TLS on the controllers' own connections took 9 % of the server's CPU.
#[derive(Clone)]
pub struct Loopback {
    app: axum::Router,
    user_agent: Option<HeaderValue>,
}

impl std::fmt::Debug for Loopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loopback")
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl Loopback {
    /// Requests without a User-Agent get `agent`: the API server names field managers after
    /// it when no fieldManager is given, as it does for any client.
    pub fn with_user_agent(mut self, agent: &'static str) -> Self {
        self.user_agent = Some(HeaderValue::from_static(agent));
        self
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Loopback
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<axum::Router, Request>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        if let Some(agent) = &self.user_agent {
            req.headers_mut()
                .entry(header::USER_AGENT)
                .or_insert_with(|| agent.clone());
        }
        enter(&self.app, req, true)
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--insecure-http serves every object, Secrets included, without authentication: it only binds a loopback address, not {addr}"
    )]
    InsecureNotLoopback { addr: SocketAddr },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error("bootstrapping cluster objects: {0}")]
    Bootstrap(#[from] ApiError),
}

/// Whether the connection presented a client certificate the CA signed (rustls verified it).
#[derive(Debug, Clone, Copy)]
struct Authenticated(bool);

/// What the API server is given besides its configuration.
pub struct Inputs {
    pub store: Arc<dyn Store>,
    /// Registered in `registry` by the caller.
    pub metrics: crate::Metrics,
    /// Rendered at `/metrics`.
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// Receives the address once requests are served.
    pub ready: tokio::sync::oneshot::Sender<Listening>,
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    inputs: Inputs,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let Inputs {
        store,
        metrics,
        registry,
        ready,
    } = inputs;
    if config.insecure_http && !config.bind.ip().is_loopback() {
        // Without TLS there is no authentication: anyone who reaches the port reads every Secret.
        return Err(ServeError::InsecureNotLoopback { addr: config.bind });
    }
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.bind,
        source,
    })?;
    let scheme = if config.insecure_http {
        "http"
    } else {
        "https"
    };
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let url = format!("{scheme}://{host}:{}", addr.port());
    let mut extra = Vec::new();
    for ip in &config.also_listen {
        let at = SocketAddr::new(*ip, addr.port());
        extra.push(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|source| ServeError::Bind { addr: at, source })?,
        );
    }
    let advertised = config
        .advertise_address
        .map_or_else(|| host.clone(), |ip| ip.to_string());

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ];
    let first_ip =
        std::net::Ipv4Addr::from(u32::from(config.service_cluster_ip_range.network()) + 1);
    for name in [host.clone(), advertised.clone(), first_ip.to_string()] {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let pki = pki::ensure(&config.data_dir.join("pki"), &names)?;
    let kubeconfig = config.data_dir.join("kubeconfig");
    pki::ensure_kubeconfig(&kubeconfig, &pki, &url)?;

    let srv = Arc::new(Server {
        store,
        alloc: Mutex::new(Allocations {
            ips: alloc::ClusterIps::new(config.service_cluster_ip_range),
            ports: alloc::NodePorts::new(config.service_node_port_range.clone()),
        }),
        address: Mutex::new(url.clone()),
        config,
        metrics,
        registry,
        kubelet_tls: Arc::new(pki::kubelet_client_config(&pki)?),
        insecure_tls: Arc::new(pki::proxy_client_config()?),
        tokens: crate::token::Tokens::from_pem(&pki.sa_key)?,
    });
    restore_allocations(&srv).await?;
    bootstrap(&srv, &advertised, addr.port(), first_ip).await?;

    let app = axum::Router::new()
        .fallback(dispatch)
        .with_state(srv.clone());
    let tls = if srv.config.insecure_http {
        None
    } else {
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            pki::server_config(&pki)?,
        )))
    };
    let _ = ready.send(Listening {
        addr,
        url,
        kubeconfig,
        loopback: Loopback {
            app: app.clone(),
            user_agent: None,
        },
    });
    for listener in extra {
        tokio::spawn(accept_loop(
            listener,
            app.clone(),
            tls.clone(),
            shutdown.clone(),
        ));
    }
    accept_loop(listener, app, tls, shutdown).await;
    Ok(())
}

/// Accepts and serves connections on `listener` until `shutdown`.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let result = match tls {
                Some(_) if plain_http(&tcp).await => {
                    answer_plain_http(tcp).await;
                    return;
                }
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let authed = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        serve_connection(TokioIo::new(stream), app, authed, shutdown).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => serve_connection(TokioIo::new(tcp), app, true, shutdown).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Whether the client opened with plain text where a TLS handshake record (0x16) belongs.
async fn plain_http(tcp: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.peek(&mut first));
    matches!(peeked.await, Ok(Ok(1)) if first[0].is_ascii_uppercase())
}

/// What Go's net/http (and so kube-apiserver) answers an HTTP request on a TLS port.
async fn answer_plain_http(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tcp
        .write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .await;
    let _ = tcp.shutdown().await;
}

async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    authed: bool,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        enter(&app, req, authed)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Hands `req` to the router, marked with whether its client is authenticated: the one way
/// in for connections and the in-process [`Loopback`].
fn enter<B>(
    app: &axum::Router,
    req: axum::http::Request<B>,
    authed: bool,
) -> tower::util::Oneshot<axum::Router, Request>
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let mut req = req.map(Body::new);
    req.extensions_mut().insert(Authenticated(authed));
    app.clone().oneshot(req)
}

fn json_response(v: Value, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A body built once and shared (the OpenAPI documents), sent without copying.
fn bytes_response(body: bytes::Bytes, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `/openapi/v2` as kube-openapi's handler serves it: the protobuf form (gnostic's
/// `openapi.v2.Document`) to a client whose Accept prefers either of its two spellings (kubectl
/// sends `...spec.v2@v1.0+protobuf`), JSON otherwise; an ETag on each, and 304 Not Modified
/// when `If-None-Match` names the current one.
fn openapi_v2(accept: &str, if_none_match: &str) -> Response {
    let doc = openapi::v2();
    let (body, etag, content_type) = if prefers_protobuf(accept) {
        (
            doc.proto.clone(),
            &doc.proto_etag,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )
    } else {
        (doc.json.clone(), &doc.json_etag, "application/json")
    };
    let matches = if_none_match
        .split(',')
        .any(|t| t.trim() == etag || t.trim() == "*");
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        bytes_response(body, content_type)
    };
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// Whether the first of Accept's media types that names one of `/openapi/v2`'s forms (by
/// highest `q`, then order) is the protobuf one.
fn prefers_protobuf(accept: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for clause in accept.split(',') {
        let mut parts = clause.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let proto = match media.as_str() {
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            | "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" => true,
            "application/json" | "application/*" | "*/*" => false,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, proto));
        }
    }
    best.is_some_and(|(_, proto)| proto)
}

/// Most bytes read (and thrown away) from a body being refused, so that the refusal is seen
/// as a status; beyond it (or after 10 s) the connection's stream is reset.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;

/// The request body when it holds at most `limit` bytes; else 413, after reading on (up to
/// [`DRAIN_LIMIT`], for at most 10 s) so that an HTTP/2 client gets the status before the
/// stream ends.
async fn read_body(mut body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if kept.len() + data.len() > limit {
            let mut seen = kept.len() + data.len();
            let drain = async {
                while let Some(Ok(frame)) = body.frame().await {
                    seen = seen.saturating_add(frame.data_ref().map_or(0, bytes::Bytes::len));
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
            return Err(ApiError::TooLarge(limit));
        }
        kept.extend_from_slice(data);
    }
    Ok(kept.freeze())
}

/// Every request enters here.
async fn dispatch(State(srv): State<Arc<Server>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let watch = uri
        .query()
        .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
    let (verb, resource) = classify(&method, uri.path(), watch);
    let resp = route(srv.clone(), req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let elapsed = started.elapsed();
    srv.metrics.observe(
        verb,
        resource,
        resp.status().as_u16(),
        elapsed.as_secs_f64(),
    );
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed_us = elapsed.as_micros() as u64, "request");
    resp
}

/// The `verb` and `resource` labels of a request, as kube-apiserver's metrics name them.
fn classify(method: &Method, path: &str, watch: bool) -> (&'static str, &'static str) {
    let Ok(Some(t)) = request::parse(path) else {
        return (
            if *method == Method::GET {
                "GET"
            } else {
                "OTHER"
            },
            "",
        );
    };
    let verb = match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch || t.watch_path => "WATCH",
        ("GET", true) => "GET",
        ("GET", false) => "LIST",
        ("POST", _) => "POST",
        ("PUT", _) => "PUT",
        ("PATCH", _) => "PATCH",
        ("DELETE", true) => "DELETE",
        ("DELETE", false) => "DELETECOLLECTION",
        _ => "OTHER",
    };
    (verb, t.resource.plural)
}

async fn route(srv: Arc<Server>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_owned();
    let public = matches!(
        path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let authed = req.extensions().get::<Authenticated>().is_some_and(|a| a.0)
        || bearer_ok(&srv, req.headers()).await;
    if !authed && !public {
        // Read what the client is still sending first, so the 401 arrives as a status
        // rather than as a reset of an HTTP/2 stream mid-upload.
        let _ = read_body(req.into_body(), 0).await;
        return Err(ApiError::Unauthorized);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let method = req.method().clone();
    if method == Method::GET && matches!(path.as_str(), "/healthz" | "/readyz") {
        let verbose = req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "verbose" || p.starts_with("verbose="))
        });
        return Ok(health(&srv, &path[1..], verbose).await);
    }
    if method == Method::GET
        && let Some(resp) = non_resource(
            &srv,
            &path,
            &accept,
            req.headers()
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )?
    {
        return Ok(resp);
    }
    let target = match request::parse(&path) {
        Ok(Some(t)) => t,
        Ok(None) | Err(request::PathError::NotFound) => return Err(ApiError::NoRoute),
    };
    if crate::proxy::serves(&target) {
        return crate::proxy::handle(srv, target, req).await;
    }
    if crate::node_proxy::serves(&target) {
        return crate::node_proxy::handle(srv, target, req).await;
    }
    let params = Params::parse(req.uri().query()).map_err(ApiError::BadRequest)?;
    let (parts, body) = req.into_parts();
    let limit = srv.config.max_body_bytes;
    let body = read_body(body, limit).await?;
    rest::handle(srv, method, target, params, parts.headers, body).await
}

/// Whether the request carries a ServiceAccount token this server issued, unexpired, whose
/// ServiceAccount (and pod, for a pod-bound token) still exists with the same uid. Such a
/// client may do what any authenticated client may: berth has no RBAC yet.
async fn bearer_ok(srv: &Server, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let now = jiff::Timestamp::now().as_second();
    let Some(claims) = srv.tokens.verify(token.trim(), now) else {
        return false;
    };
    let k = &claims.kube;
    let exists = |kind: &str, name: &str, uid: &str| {
        let (kind, name, uid) = (kind.to_owned(), name.to_owned(), uid.to_owned());
        async move {
            let Some(r) = berth_api::resources::by_kind("", &kind) else {
                return false;
            };
            crate::rest::get(srv, r, Some(&k.namespace), &name)
                .await
                .is_ok_and(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(&uid))
        }
    };
    let sa = &k.serviceaccount;
    exists("ServiceAccount", &sa.name, &sa.uid).await
        && match &k.pod {
            Some(pod) => exists("Pod", &pod.name, &pod.uid).await,
            None => true,
        }
}

/// `/healthz` and `/readyz` as kube-apiserver answers them: `ok`, or with `?verbose` one line
/// per check; a failing check (the store cannot take writes: a full disk, etcd down) makes it
/// 500 with `[-]store failed: reason withheld`, the reason going to the log. `/readyz` also
/// waits for the parts in `Config::readiness` (controllers, the node's agent, proxy, DNS).
async fn health(srv: &Server, what: &str, verbose: bool) -> Response {
    let store = srv.store.check().await;
    if let Err(e) = &store {
        tracing::warn!(error = %e, check = what, "store check failed");
    }
    let mut checks = vec![("ping", true), ("store", store.is_ok())];
    if what == "readyz" {
        checks.extend(
            srv.config
                .readiness
                .iter()
                .map(|(name, ready)| (name.as_str(), ready.initialized())),
        );
    }
    let passed = checks.iter().all(|(_, ok)| *ok);
    let mut lines: String = checks
        .iter()
        .map(|(name, ok)| match ok {
            true => format!("[+]{name} ok\n"),
            false => format!("[-]{name} failed: reason withheld\n"),
        })
        .collect();
    lines.push_str(&format!(
        "{what} check {}\n",
        if passed { "passed" } else { "failed" }
    ));
    match passed {
        true if !verbose => (StatusCode::OK, "ok").into_response(),
        true => (StatusCode::OK, lines).into_response(),
        false => (StatusCode::INTERNAL_SERVER_ERROR, lines).into_response(),
    }
}

fn non_resource(
    srv: &Server,
    path: &str,
    accept: &str,
    if_none_match: &str,
) -> Result<Option<Response>, ApiError> {
    let ok = |v| Ok(Some(json_response(v, "application/json")));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => ok(discovery::version()),
        ["livez"] => Ok(Some((StatusCode::OK, "ok").into_response())),
        ["api"] if discovery::wants_aggregated(accept) => Ok(Some(json_response(
            discovery::aggregated(true),
            discovery::AGGREGATED,
        ))),
        ["apis"] if discovery::wants_aggregated(accept) => Ok(Some(json_response(
            discovery::aggregated(false),
            discovery::AGGREGATED,
        ))),
        ["api"] => {
            let addr = srv.address.lock().map(|a| a.clone()).unwrap_or_default();
            ok(discovery::core_versions(
                addr.split("://").nth(1).unwrap_or(&addr),
            ))
        }
        ["apis"] => ok(discovery::group_list()),
        ["api", v] => discovery::resource_list("", v)
            .map(|d| Some(json_response(d, "application/json")))
            .ok_or(ApiError::NoRoute),
        ["apis", g] => discovery::group(g)
            .map(|d| Some(json_response(d, "application/json")))
            .ok_or(ApiError::NoRoute),
        ["apis", g, v] => discovery::resource_list(g, v)
            .map(|d| Some(json_response(d, "application/json")))
            .ok_or(ApiError::NoRoute),
        ["metrics"] => {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &srv.registry)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            Ok(Some(r))
        }
        ["openapi", "v3"] => Ok(Some(bytes_response(
            openapi::v3_index(),
            "application/json",
        ))),
        ["openapi", "v3", rest @ ..] => openapi::v3_document(&rest.join("/"))
            .map(|d| Some(bytes_response(d, "application/json")))
            .ok_or(ApiError::NoRoute),
        ["openapi", "v2"] => Ok(Some(openapi_v2(accept, if_none_match))),
        // berth serves no CustomResourceDefinitions, so their list is empty. kubectl lists
        // them (without discovery) before validating a kind neither OpenAPI document
        // describes, to learn whether it is a custom resource; against kube-apiserver that
        // list answers "no", and the kind then fails as unknown (`no matches for kind`).
        [
            "apis",
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
        ] => ok(json!({
            "kind": "CustomResourceDefinitionList",
            "apiVersion": "apiextensions.k8s.io/v1",
            "metadata": {},
            "items": [],
        })),
        ["openapi", ..] => Err(ApiError::NoRoute),
        _ => Ok(None),
    }
}

/// Marks the cluster IPs and node ports of stored Services as taken.
async fn restore_allocations(srv: &Server) -> Result<(), ApiError> {
    let r = resources::by_kind("", "Service")
        .ok_or_else(|| ApiError::Internal("services not registered".into()))?;
    let listed = srv
        .store
        .list(
            &collection_key(r, None),
            ListOptions {
                limit: 0,
                start_after: None,
                revision: None,
            },
        )
        .await?;
    let mut a = srv.alloc.lock().unwrap_or_else(|p| p.into_inner());
    for kv in &listed.items {
        let obj = rest::decode_kv(kv)?;
        for ip in obj
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Ok(ip) = ip.parse() {
                let _ = a.ips.allocate(ip);
            }
        }
        for p in obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(port) = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
            {
                let _ = a.ports.allocate(port);
            }
        }
    }
    Ok(())
}

async fn ensure(
    srv: &Server,
    group: &str,
    kind: &str,
    ns: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    let r = resources::by_kind(group, kind)
        .ok_or_else(|| ApiError::Internal(format!("{kind} not registered")))?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if srv
        .store
        .get(&crate::meta::object_key(r, ns, name))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let t = Target {
        resource: r,
        namespace: ns.map(str::to_owned),
        name: None,
        subresource: None,
        watch_path: false,
    };
    match rest::create(srv, &t, &Params::default(), obj).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The namespaces and the `kubernetes` Service every cluster has.
async fn bootstrap(
    srv: &Server,
    ip: &str,
    port: u16,
    first_ip: std::net::Ipv4Addr,
) -> Result<(), ApiError> {
    // Each step's writes go out together, so a fresh store commits them in one group (a
    // first start waits for a handful of disk syncs instead of one per object).
    use futures_util::future::try_join_all;
    try_join_all(
        ["default", "kube-system", "kube-public", "kube-node-lease"].map(|ns| {
            ensure(
                srv,
                "",
                "Namespace",
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
        }),
    )
    .await?;
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let subsets = json!([{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    let endpoints = json!([{"addresses": [ip], "conditions": {"ready": true}}]);
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    try_join_all([
        ensure(srv, "", "Service", Some("default"), json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {"clusterIP": first_ip.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}], "sessionAffinity": "None"},
        })),
        ensure(srv, "", "Endpoints", Some("default"), json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": subsets.clone(),
        })),
        ensure(srv, "discovery.k8s.io", "EndpointSlice", Some("default"), json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4", "endpoints": endpoints.clone(), "ports": ports.clone(),
        })),
    ])
    .await?;
    // Like kube-apiserver's endpoint reconciler: the address may change between starts.
    try_join_all([
        reconcile(srv, "Endpoints", "/subsets", subsets),
        reconcile(srv, "EndpointSlice", "/endpoints", endpoints),
        reconcile(srv, "Service", "/spec/ports/0/targetPort", json!(port)),
    ])
    .await?;
    // The slice's ports after its endpoints: both rewrite the same object.
    reconcile(srv, "EndpointSlice", "/ports", ports).await
}

/// Sets `pointer` of `default/kubernetes` of `kind` to `value` if it differs.
async fn reconcile(srv: &Server, kind: &str, pointer: &str, value: Value) -> Result<(), ApiError> {
    let group = if kind == "EndpointSlice" {
        "discovery.k8s.io"
    } else {
        ""
    };
    let r = resources::by_kind(group, kind)
        .ok_or_else(|| ApiError::Internal(format!("{kind} not registered")))?;
    let key = crate::meta::object_key(r, Some("default"), "kubernetes");
    let Some(kv) = srv.store.get(&key).await? else {
        return Ok(());
    };
    let mut obj: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    match obj.pointer_mut(pointer) {
        Some(v) if *v == value => return Ok(()),
        Some(v) => *v = value,
        None => return Ok(()),
    }
    srv.store
        .update(
            &key,
            crate::rest::stored(berth_api::order::to_vec(&obj)),
            Some(kv.mod_revision),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefers_protobuf;

    #[test]
    fn openapi_v2_form_follows_accept() {
        for (accept, proto) in [
            (
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                true,
            ),
            (
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                true,
            ),
            (
                "application/json;q=0.5, application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                true,
            ),
            (
                "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf;q=0.9",
                false,
            ),
            (
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf;q=0, */*",
                false,
            ),
            ("", false),
            ("*/*", false),
            ("text/html", false),
        ] {
            assert_eq!(prefers_protobuf(accept), proto, "{accept}");
        }
    }
}
