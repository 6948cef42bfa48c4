//! The reverse proxy: HTTP and HTTPS listeners (TLS by SNI from the route table's
//! certificates, a self-signed fallback otherwise), each request routed through the current
//! table and sent to one of its backend's endpoints over pooled keep-alive connections
//! (hyper's client). The table is swapped whole on changes; requests in flight keep theirs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use crate::routes::{Route, Table};
use crate::tls::Certs;

type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection shares: the current table, the certificates, the upstream client.
pub struct Shared {
    table: RwLock<Arc<Table>>,
    pub(crate) certs: Arc<Certs>,
    client: Client<HttpConnector, Incoming>,
    next: AtomicUsize,
}

impl Shared {
    pub fn new(certs: Arc<Certs>) -> Shared {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        Shared {
            table: RwLock::new(Arc::new(Table::default())),
            certs,
            client: Client::builder(TokioExecutor::new()).build(connector),
            next: AtomicUsize::new(0),
        }
    }

    /// Swaps in a new table (and its certificates).
    pub fn set_table(&self, table: Table) {
        self.certs.set(&table.tls);
        if let Ok(mut t) = self.table.write() {
            *t = Arc::new(table);
        }
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }
}

fn page(status: StatusCode, text: &str) -> Response<Body> {
    let body = format!(
        "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n<hr><center>{text}</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// Headers that concern one connection, not the request (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Routes and forwards one request.
async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    scheme: &'static str,
    peer: SocketAddr,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let table = shared.table();
    let backend = match table.route(&host, req.uri().path()) {
        Route::NotFound => return page(StatusCode::NOT_FOUND, "berth"),
        Route::To(b) => b,
    };
    if backend.endpoints.is_empty() {
        return page(StatusCode::SERVICE_UNAVAILABLE, "berth");
    }
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let endpoint = backend.endpoints[n % backend.endpoints.len()];
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let Ok(uri) = format!("http://{endpoint}{path}").parse::<http::Uri>() else {
        return page(StatusCode::BAD_REQUEST, "berth");
    };
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    let client_ip = peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client_ip}"),
        None => client_ip.clone(),
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for),
        ("x-real-ip", client_ip),
        ("x-forwarded-host", host.clone()),
        ("x-forwarded-proto", scheme.to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&host)
    {
        headers.insert(header::HOST, v);
    }
    match shared.client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            tracing::debug!(backend = %backend.name, %endpoint, error = %e, "upstream failed");
            page(StatusCode::BAD_GATEWAY, "berth")
        }
    }
}

/// Serves one accepted connection (HTTP/1.1 or HTTP/2) until it ends or `shutdown`.
async fn serve_connection<I>(
    io: I,
    shared: Arc<Shared>,
    scheme: &'static str,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(shared, req, scheme, peer).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Accepts on `listener` until `shutdown`; with `tls`, connections are TLS first.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
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
        let (shared, tls, shutdown) = (shared.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(tcp), shared, "http", peer, shutdown).await,
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        serve_connection(TokioIo::new(stream), shared, "https", peer, shutdown)
                            .await;
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
            }
        });
    }
}
