//! The reverse proxy: HTTP and HTTPS listeners (TLS by SNI from the route table's
//! certificates, a self-signed fallback otherwise), each request routed through the current
//! table and sent to one of its backend's endpoints over pooled keep-alive connections
//! ([`crate::pool`]). The table is swapped whole on changes; requests in flight keep theirs.
//!
//! Workers as nginx's: [`run_workers`] starts one thread per worker, each with its own
//! single-threaded runtime, its own upstream connection pool and its own `SO_REUSEPORT`
//! listening sockets, so a connection, its upstream exchange and its
//! response stay on one thread with no cross-thread wake-ups. HTTP/1.1 upgrades (WebSocket)
//! are proxied: the upstream's `101 Switching Protocols` goes back to the client and the two
//! connections are spliced both ways.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::pool::{self, Pool};
use crate::routes::{Route, Table};
use crate::tls::Certs;

/// A response body: the upstream's (its connection back to the pool at its end) or a page of
/// our own. An enum rather than a box: no allocation per response.
enum Body {
    Upstream(pool::Pooled<Incoming>),
    Page(Full<Bytes>),
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Upstream(b) => std::pin::Pin::new(b).poll_frame(cx),
            Body::Page(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|n| match n {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(b) => b.is_end_stream(),
            Body::Page(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Upstream(b) => b.size_hint(),
            Body::Page(b) => b.size_hint(),
        }
    }
}

/// How long connections may take to finish after shutdown before they are cut.
const GRACE: Duration = Duration::from_secs(10);

/// What every worker shares: the current route table and the certificates.
pub struct Shared {
    table: RwLock<Arc<Table>>,
    /// Bumped after each new table, so workers notice it with one load.
    generation: AtomicU64,
    pub(crate) certs: Arc<Certs>,
}

thread_local! {
    /// A worker's copy of the table: (the `Shared` it came from, its generation, the table).
    /// Requests read it without touching any counter another thread writes.
    static LOCAL_TABLE: RefCell<(usize, u64, Arc<Table>)> = RefCell::default();
}

impl Shared {
    pub fn new(certs: Arc<Certs>) -> Shared {
        Shared {
            table: RwLock::new(Arc::new(Table::default())),
            generation: AtomicU64::new(1),
            certs,
        }
    }

    /// Swaps in a new table (and its certificates).
    pub fn set_table(&self, table: Table) {
        self.certs.set(&table.tls);
        if let Ok(mut t) = self.table.write() {
            *t = Arc::new(table);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Runs `f` on the current table through this thread's copy, refreshed when a newer
    /// table was set (a table read after the generation is at least that new).
    fn with_table<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let me = std::ptr::from_ref(self) as usize;
        LOCAL_TABLE.with(|local| {
            let mut local = local.borrow_mut();
            let generation = self.generation.load(Ordering::Acquire);
            if local.0 != me || local.1 != generation {
                *local = (me, generation, self.table());
            }
            f(&local.2)
        })
    }
}

thread_local! {
    /// A worker's idle upstream connections (its tasks all run on its thread).
    static UPSTREAM: Pool<Incoming> = Pool::default();
}

fn page(status: StatusCode, text: &str) -> Response<Body> {
    let body = format!(
        "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n<hr><center>{text}</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = Response::new(Body::Page(Full::new(Bytes::from(body))));
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
    // Headers the Connection header names are hop-by-hop too. Its usual tokens (`close`,
    // `keep-alive`, `upgrade`) are in the list already: only other names are collected, so
    // the common request allocates nothing here.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            !n.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, with `upgrade` among the
/// `Connection` tokens), as RFC 9110 7.8 has it; `None` for ordinary requests.
fn upgrade_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let asked = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| req.headers().get(header::UPGRADE).cloned())?
}

/// Sets `Connection: upgrade` and `Upgrade: proto` (after the hop-by-hop headers went).
fn keep_upgrade(headers: &mut http::HeaderMap, proto: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, proto);
}

/// The Host a request names: its Host header, else an absolute-form target's authority.
fn host_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(header::HOST) {
        return Some(h.clone());
    }
    HeaderValue::from_str(req.uri().authority()?.as_str()).ok()
}

/// Adds the X-Forwarded-* and X-Real-IP headers (and Host if the request had none).
fn add_forwarded(
    headers: &mut http::HeaderMap,
    host: Option<HeaderValue>,
    scheme: &'static str,
    client_ip: &HeaderValue,
) {
    let forwarded_for = match headers.get("x-forwarded-for").map(HeaderValue::as_bytes) {
        Some(prior) => {
            let mut v = Vec::with_capacity(prior.len() + 2 + client_ip.len());
            v.extend_from_slice(prior);
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
        }
        None => Some(client_ip.clone()),
    };
    if let Some(v) = forwarded_for {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(HeaderName::from_static("x-real-ip"), client_ip.clone());
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(scheme),
    );
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        headers.entry(header::HOST).or_insert(host);
    }
}

/// Routes and forwards one request.
async fn handle(
    worker: &Worker,
    mut req: Request<Incoming>,
    scheme: &'static str,
    client_ip: &HeaderValue,
) -> Response<Body> {
    let host = host_of(&req);
    let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let routed = worker
        .shared
        .with_table(|table| match table.route(host_str, req.uri().path()) {
            Route::NotFound => Err(StatusCode::NOT_FOUND),
            Route::To(b) if b.endpoints.is_empty() => Err(StatusCode::SERVICE_UNAVAILABLE),
            Route::To(b) => {
                let n = worker.next.fetch_add(1, Ordering::Relaxed);
                Ok(b.endpoints[n % b.endpoints.len()])
            }
        });
    let endpoint = match routed {
        Ok(endpoint) => endpoint,
        Err(status) => return page(status, "berth"),
    };
    // Origin form, as an HTTP/1.1 request to a server (not a proxy) is written.
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = http::Uri::from(path);
    let upgrade = upgrade_of(&req);
    let downstream = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // Room for the X-Forwarded-* headers added below (and Host, Connection): one growth of
    // the map instead of several.
    headers.reserve(6);
    if let Some(proto) = upgrade.clone() {
        keep_upgrade(headers, proto);
    }
    if host.is_none() {
        // No Host from the client (HTTP/1.0): the endpoint's, as hyper's pooled client set it.
        let authority = match endpoint {
            SocketAddr::V4(a) if a.port() == 80 => a.ip().to_string(),
            SocketAddr::V6(a) if a.port() == 80 => format!("[{}]", a.ip()),
            _ => endpoint.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&authority) {
            headers.insert(header::HOST, v);
        }
    }
    add_forwarded(headers, host, scheme, client_ip);
    let mut resp = match pool::send(&UPSTREAM, endpoint, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, "upstream failed");
            return page(StatusCode::BAD_GATEWAY, "berth");
        }
    };
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream = switched.then(|| hyper::upgrade::on(&mut resp));
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    match (downstream, upstream, upgrade) {
        (Some(down), Some(up), Some(asked)) => {
            let proto = parts.headers.get(header::UPGRADE).cloned();
            keep_upgrade(&mut parts.headers, proto.unwrap_or(asked));
            tokio::spawn(splice(down, up));
        }
        // A 101 nobody asked for cannot be passed on.
        (_, Some(_), _) => return page(StatusCode::BAD_GATEWAY, "berth"),
        _ => {}
    }
    Response::from_parts(parts, Body::Upstream(body))
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections until
/// both sides are done. A plain client connection is taken back from its [`Plain`] wrapper
/// (whose shutdown does nothing), so a half-close still reaches the client as a FIN.
async fn splice(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut up = TokioIo::new(up);
    let result = match down.downcast::<Plain>() {
        Ok(parts) => {
            let mut tcp = parts.io.0.into_inner();
            // What the client sent after its upgrade request, read with it.
            let early = tokio::io::AsyncWriteExt::write_all(&mut up, &parts.read_buf).await;
            match early {
                Ok(()) => tokio::io::copy_bidirectional(&mut tcp, &mut up).await,
                Err(e) => Err(e),
            }
        }
        Err(down) => tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut up).await,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

/// A plain client connection as hyper sees it: shutting it down does nothing, since closing it
/// right after (when hyper's connection ends) sends the same FIN without the extra `shutdown`
/// call per connection (nginx closes the same way). Upgraded connections are unwrapped first.
struct Plain(TokioIo<tokio::net::TcpStream>);

impl hyper::rt::Read for Plain {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        hyper::rt::Read::poll_read(std::pin::Pin::new(&mut self.0), cx, buf)
    }
}

impl hyper::rt::Write for Plain {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        hyper::rt::Write::poll_write(std::pin::Pin::new(&mut self.0), cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(std::pin::Pin::new(&mut self.0), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.0)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        hyper::rt::Write::poll_flush(std::pin::Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// An address as a header value, written on the stack and copied once (`to_string` grows a
/// String twice, and the header value copies it again).
fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write;
    // The longest address text (an IPv4-mapped IPv6 address) is 45 bytes.
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    let written = write!(w, "{ip}").map(|()| 48 - w.len());
    written
        .ok()
        .and_then(|len| HeaderValue::from_bytes(&buf[..len]).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

/// The service for one connection: each request routed and forwarded by [`handle`].
fn service(
    worker: Arc<Worker>,
    scheme: &'static str,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
> + Send
+ 'static {
    // The client's address as a header value, once per connection.
    let client_ip = ip_header(peer.ip());
    hyper::service::service_fn(move |req| {
        let (worker, client_ip) = (worker.clone(), client_ip.clone());
        async move {
            let resp = handle(&worker, req, scheme, &client_ip).await;
            Ok::<_, std::convert::Infallible>(resp)
        }
    })
}

/// Serves one plain connection (HTTP/1.x with upgrades; the plain listener speaks no HTTP/2,
/// as nginx's default one, so no read is spent sniffing for a preface) until it ends or
/// `shutdown`. Kept apart from the TLS path so the task spawned per connection is small.
async fn serve_plain(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    worker: Arc<Worker>,
    shutdown: CancellationToken,
    _live: Live,
) {
    let svc = service(worker.clone(), "http", peer);
    let conn = worker
        .http1
        .serve_connection(Plain(TokioIo::new(tcp)), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Serves one TLS connection after its handshake: HTTP/2 when ALPN chose `h2`, else HTTP/1.1
/// with upgrades, until it ends or `shutdown`.
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    worker: Arc<Worker>,
    shutdown: CancellationToken,
    _live: Live,
) {
    let stream = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(stream);
    let svc = service(worker.clone(), "https", peer);
    let result = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            biased;
            r = conn.as_mut() => r,
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let conn = worker.http1.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            biased;
            r = conn.as_mut() => r,
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// What one worker's connections share.
struct Worker {
    shared: Arc<Shared>,
    /// Round-robin over a backend's endpoints (per worker: no shared cache line).
    next: AtomicUsize,
    /// HTTP/1 server settings, made once: no header read timer (nginx's 60 s
    /// `client_header_timeout` aside, a timer per connection is a heap entry each).
    http1: hyper::server::conn::http1::Builder,
}

/// One address the proxy serves; `tls` makes its connections TLS first.
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// A socket [`bind`] made already on `addr`: the first worker's (the others bind beside
    /// it, on its port if `addr` asked for port 0).
    pub socket: Option<std::net::TcpListener>,
}

/// A listening socket on `addr` with `SO_REUSEPORT`, so every worker has its own and the
/// kernel spreads new connections over them (no worker woken for a connection another takes).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Accepts on `listener` until `shutdown`, each connection a task on this worker's runtime;
/// then waits for them to finish, at most [`GRACE`] (the runtime drops the rest).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    worker: Arc<Worker>,
    shutdown: CancellationToken,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut cancelled => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // EMFILE and the like clear only as connections close: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let guard = Live::enter(&live);
        match &tls {
            None => {
                tokio::spawn(serve_plain(
                    tcp,
                    peer,
                    worker.clone(),
                    shutdown.clone(),
                    guard,
                ));
            }
            // Boxed: a TLS connection's future is large, and spawning moves it.
            Some(acceptor) => {
                let (acceptor, worker, shutdown) =
                    (acceptor.clone(), worker.clone(), shutdown.clone());
                tokio::spawn(Box::pin(serve_tls(
                    tcp, peer, acceptor, worker, shutdown, guard,
                )));
            }
        }
    }
    drop(listener);
    let drained = async {
        while live.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(GRACE, drained).await;
}

/// Counts a connection as live until dropped (cheaper per connection than a `JoinSet`).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn enter(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::AcqRel);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts `workers` threads (at least one), each with a single-threaded runtime and its own
/// `SO_REUSEPORT` socket on every listener's address, accepting until `shutdown`. The threads inherit the caller's network namespace.
/// Resolves once every worker has stopped (connections drained, or cut after a grace period).
///
/// Errors: a worker thread or its runtime could not be started (the others are stopped).
pub async fn run_workers(
    mut listeners: Vec<Listener>,
    shared: Arc<Shared>,
    workers: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Every socket first, so a failed bind starts no thread.
    let mut sockets = Vec::new();
    for _ in 0..workers.max(1) {
        let mut own = Vec::new();
        for l in &mut listeners {
            let socket = match l.socket.take() {
                Some(s) => {
                    l.addr = s.local_addr()?;
                    s
                }
                None => bind(l.addr)?,
            };
            own.push((socket, l.tls.clone()));
        }
        sockets.push(own);
    }
    let stop = shutdown.child_token();
    let mut done = Vec::new();
    for (n, own) in sockets.into_iter().enumerate() {
        let (shared, stop_worker) = (shared.clone(), stop.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let spawned = std::thread::Builder::new()
            .name(format!("berth-ingress-{n}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(worker(own, shared, stop_worker)));
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => done.push(rx),
            Err(e) => {
                stop.cancel();
                for rx in done {
                    let _ = rx.await;
                }
                return Err(e);
            }
        }
    }
    let mut first_error = Ok(());
    for rx in done {
        if let Err(e) = rx.await.unwrap_or(Ok(())) {
            stop.cancel();
            if first_error.is_ok() {
                first_error = Err(e);
            }
        }
    }
    first_error
}

/// One worker: its upstream client and an accept loop per listener, until `shutdown`.
async fn worker(
    listeners: Vec<(std::net::TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let worker = Arc::new(Worker {
        shared,
        next: AtomicUsize::new(0),
        http1: {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.header_read_timeout(None);
            b
        },
    });
    // This worker's own token: its connections register with it, not with one all share.
    let shutdown = shutdown.child_token();
    let mut loops = JoinSet::new();
    for (socket, tls) in listeners {
        socket.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(socket)?;
        loops.spawn(accept_loop(listener, tls, worker.clone(), shutdown.clone()));
    }
    // Idle upstream connections unused for a minute are closed.
    let sweep = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(pool::SWEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = sweep.cancelled() => break,
                _ = every.tick() => UPSTREAM.with(Pool::sweep),
            }
        }
    });
    while loops.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper ends a `Connection: close` exchange on a [`Plain`] connection with the whole
    /// response and then EOF, though its shutdown does nothing: dropping the socket closes it.
    #[tokio::test]
    async fn a_plain_connection_is_closed_after_a_close_request() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let svc = hyper::service::service_fn(|_req| async {
                let body = Full::new(Bytes::from_static(b"hello"));
                Ok::<_, std::convert::Infallible>(Response::new(body))
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(Plain(TokioIo::new(tcp)), svc)
                .with_upgrades()
                .await
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .expect("EOF in time")
            .expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
        server.await.expect("server task").expect("connection");
    }

    fn check(version: http::Version, headers: &[(&str, &str)], expected: Option<&str>) {
        let mut req = Request::builder().version(version).uri("/");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(()).expect("test request");
        assert_eq!(
            upgrade_of(&req).as_ref().map(|v| v.to_str().unwrap_or("?")),
            expected,
            "{headers:?}"
        );
    }

    #[test]
    fn upgrades_are_recognised_as_rfc_9110_has_them() {
        use http::Version;
        let ws = Some("websocket");
        check(
            Version::HTTP_11,
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            ws,
        );
        check(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "websocket"),
            ],
            ws,
        );
        check(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive"),
                ("connection", "UPGRADE"),
                ("upgrade", "websocket"),
            ],
            ws,
        );
        // Upgrade without the Connection token, or the token without a protocol: ordinary.
        check(Version::HTTP_11, &[("upgrade", "websocket")], None);
        check(Version::HTTP_11, &[("connection", "upgrade")], None);
        check(
            Version::HTTP_11,
            &[("connection", "upgraded"), ("upgrade", "websocket")],
            None,
        );
        // HTTP/1.0 and HTTP/2 have no Upgrade.
        check(
            Version::HTTP_10,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            None,
        );
        check(
            Version::HTTP_2,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            None,
        );
    }

    #[test]
    fn addresses_become_header_values() {
        for ip in [
            "10.244.0.7",
            "255.255.255.255",
            "::1",
            "fd00:10:244::1:7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let parsed: std::net::IpAddr = ip.parse().expect("address");
            assert_eq!(ip_header(parsed), parsed.to_string().as_str(), "{ip}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_upgrade_is_put_back() {
        let mut h = http::HeaderMap::new();
        for (n, v) in [
            ("connection", "upgrade, x-private"),
            ("upgrade", "websocket"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "2"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
        keep_upgrade(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(
            h.get(header::CONNECTION),
            Some(&HeaderValue::from_static("upgrade"))
        );
        assert_eq!(
            h.get(header::UPGRADE),
            Some(&HeaderValue::from_static("websocket"))
        );
    }
}
