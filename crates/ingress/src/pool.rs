//! A worker's upstream connections: HTTP/1.1 keep-alive connections (hyper's low-level
//! `client::conn::http1`) cached idle per endpoint address, as nginx's upstream `keepalive`
//! cache per worker process. The cache lives in a thread local, since all of a worker's tasks
//! run on its own thread: no lock, no channel hop, and the key is the endpoint's address.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::LocalKey;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Idle connections kept per endpoint per worker (nginx's `keepalive 64` in our bench config
/// and ingress-nginx's default per-worker cache are of this order); more are closed.
pub const MAX_IDLE: usize = 64;
/// How often idle connections are swept, and after how many sweeps unused ones are closed
/// (about nginx's `keepalive_timeout 60s` for upstreams).
pub const SWEEP: Duration = Duration::from_secs(10);
const IDLE_SWEEPS: u64 = 6;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream exchange failed (the proxy answers 502).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("HTTP handshake with {addr}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("exchange with {addr}")]
    Send {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// An idle connection and the sweep it was last used in.
type Idle<B> = (SendRequest<B>, u64);

/// One worker's idle upstream connections, newest last per endpoint. Put it in a
/// `thread_local!` and pass the key to [`send`].
pub struct Pool<B> {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle<B>>>>,
    /// Sweeps so far: the age of an idle connection, without a clock read per request.
    epoch: Cell<u64>,
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Pool {
            idle: RefCell::default(),
            epoch: Cell::new(0),
        }
    }
}

impl<B> Pool<B> {
    /// The newest idle connection to `addr` that can take a request now; closed ones met on
    /// the way are dropped, busy ones (still finishing an exchange) stay.
    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<B>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            if list[i].0.is_closed() {
                list.remove(i);
            } else if list[i].0.is_ready() {
                return Some(list.remove(i).0);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to `addr`, unless [`MAX_IDLE`] are kept already.
    fn checkin(&self, addr: SocketAddr, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let epoch = self.epoch.get();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push((sender, epoch));
        }
    }

    /// Closes connections unused for [`IDLE_SWEEPS`] sweeps, and closed ones; forgets
    /// endpoints with none left. Call every [`SWEEP`].
    pub fn sweep(&self) {
        let epoch = self.epoch.get() + 1;
        self.epoch.set(epoch);
        self.idle.borrow_mut().retain(|_, list| {
            list.retain(|(s, since)| !s.is_closed() && epoch - since < IDLE_SWEEPS);
            !list.is_empty()
        });
    }

    /// Idle connections kept for `addr`.
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.borrow().get(&addr).map_or(0, Vec::len)
    }
}

/// Sends `req` (its URI in origin form, Host set) to `addr` on an idle connection from
/// `pool`, else a new one. The connection goes back to the pool when the response body has
/// been read to its end (not for `101 Switching Protocols`, whose connection is handed over).
///
/// A pooled connection that turns out closed before anything was written (hyper hands the
/// request back) is dropped and the request tried on the next one: safe for any method, since
/// the upstream saw nothing; nginx too retries a failed cached connection. Once any of the
/// request was written, an error is returned and nothing is retried (the request body is
/// streamed and not kept), which keeps non-idempotent requests from being repeated; that
/// includes a connection the upstream closed just before (its FIN not yet seen), where nginx
/// would retry an idempotent request.
///
/// Errors: connecting (5 s timeout), the handshake, or the exchange failed.
pub async fn send<B>(
    pool: &'static LocalKey<Pool<B>>,
    addr: SocketAddr,
    mut req: Request<B>,
) -> Result<Response<Pooled<B>>, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (mut sender, reused) = match pool.with(|p| p.checkout(addr)) {
            Some(s) => (s, true),
            None => (connect(addr).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let back = (parts.status != StatusCode::SWITCHING_PROTOCOLS).then_some(sender);
                let mut body = Pooled {
                    body,
                    back: back.map(|s| (addr, s)),
                    pool,
                };
                if body.body.is_end_stream() {
                    body.give_back();
                }
                return Ok(Response::from_parts(parts, body));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => {
                    tracing::debug!(%addr, error = %e.error(), "idle upstream connection gone; next one");
                    req = unsent;
                }
                _ => {
                    return Err(Error::Send {
                        addr,
                        source: e.into_error(),
                    });
                }
            },
        }
    }
}

/// A new HTTP/1.1 connection to `addr` (TCP_NODELAY), its connection task spawned on the
/// current runtime with upgrades enabled.
async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(Error::Connect { addr, source }),
            Err(_) => return Err(Error::ConnectTimeout { addr }),
        };
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|source| Error::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// An upstream response body that returns its connection to the pool once read to the end.
/// Dropped early (the client went away), it drops the connection instead: hyper closes a
/// connection whose response was not read.
pub struct Pooled<B: 'static> {
    body: Incoming,
    back: Option<(SocketAddr, SendRequest<B>)>,
    pool: &'static LocalKey<Pool<B>>,
}

impl<B> Pooled<B> {
    fn give_back(&mut self) {
        if let Some((addr, sender)) = self.back.take() {
            // At thread exit the pool may be gone already; the connection just closes then.
            let _ = self.pool.try_with(|p| p.checkin(addr, sender));
        }
    }
}

impl<B> Body for Pooled<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type TestBody = Full<Bytes>;

    thread_local! {
        static POOL: Pool<TestBody> = Pool::default();
    }

    /// A real upstream on 127.0.0.1: answers each request with its connection's number
    /// (counted from 1) and the request's method and path, and closes a connection after
    /// `close_after` requests on it (0: never). Returns its address and the connection count.
    async fn upstream(close_after: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let served = Arc::new(AtomicUsize::new(0));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let k = served.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let text = format!("conn {n} {} {}", req.method(), req.uri());
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        if close_after > 0 && k >= close_after {
                            resp.headers_mut()
                                .insert(http::header::CONNECTION, "close".parse().expect("value"));
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        (addr, conns)
    }

    fn get(path: &str) -> Request<TestBody> {
        Request::builder()
            .uri(path)
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .expect("request")
    }

    async fn text(resp: Response<Pooled<TestBody>>) -> String {
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Settles the connection tasks (the pool's connections become ready, closed ones close).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_was_read() {
        let (addr, conns) = upstream(0).await;
        for i in 0..5 {
            let resp = send(&POOL, addr, get(&format!("/{i}")))
                .await
                .expect("send");
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(text(resp).await, format!("conn 1 GET /{i}"));
            settle().await;
            assert_eq!(POOL.with(|p| p.idle(addr)), 1);
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_being_read_keeps_its_connection_out_of_the_pool() {
        let (addr, conns) = upstream(0).await;
        let first = send(&POOL, addr, get("/a")).await.expect("send");
        let second = send(&POOL, addr, get("/b")).await.expect("send");
        assert_eq!(POOL.with(|p| p.idle(addr)), 0);
        assert_eq!(text(second).await, "conn 2 GET /b");
        assert_eq!(text(first).await, "conn 1 GET /a");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        settle().await;
        assert_eq!(POOL.with(|p| p.idle(addr)), 2);
        // An unread body dropped: its connection is not kept.
        let third = send(&POOL, addr, get("/c")).await.expect("send");
        drop(third);
        settle().await;
        assert_eq!(POOL.with(|p| p.idle(addr)), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_dropped_and_a_new_one_used() {
        // Each connection answers one request and says close.
        let (addr, conns) = upstream(1).await;
        for i in 1..=3 {
            let resp = send(&POOL, addr, get("/")).await.expect("send");
            assert_eq!(text(resp).await, format!("conn {i} GET /"));
            settle().await;
            assert_eq!(POOL.with(|p| p.idle(addr)), 0, "closed connection kept");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_unseen_fails_once_and_is_not_reused() {
        // A raw upstream on a thread of its own: it answers one request per connection with
        // keep-alive, then closes that socket when told. This test's runtime is blocked
        // meanwhile, so the pooled connection's task has not seen the close (the keep-alive
        // race): hyper writes the request into the dead socket, so it counts as sent and is
        // not retried (as hyper-util's pooled client did; nginx would retry a GET here).
        // The dead connection is dropped: the next request gets a new one.
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for n in 1..=2 {
                let Ok((mut tcp, _)) = listener.accept() else {
                    return;
                };
                let mut buf = [0u8; 1024];
                if tcp.read(&mut buf).unwrap_or(0) > 0 {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let body = format!("conn {n}");
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = tcp.write_all((head + &body).as_bytes());
                if n == 1 {
                    let _ = close_rx.recv();
                    drop(tcp);
                    let _ = closed_tx.send(());
                } else {
                    let _ = tcp.read(&mut buf);
                }
            }
        });
        let resp = send(&POOL, addr, get("/")).await.expect("send");
        assert_eq!(text(resp).await, "conn 1");
        settle().await;
        assert_eq!(POOL.with(|p| p.idle(addr)), 1);
        // Blocking on purpose: no task of this runtime runs until the send below.
        close_tx.send(()).expect("upstream thread");
        closed_rx.recv().expect("upstream thread");
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(
            send(&POOL, addr, get("/")).await,
            Err(Error::Send { .. })
        ));
        assert_eq!(POOL.with(|p| p.idle(addr)), 0);
        let resp = send(&POOL, addr, get("/")).await.expect("new connection");
        assert_eq!(text(resp).await, "conn 2");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_that_was_sent_is_not_retried() {
        // The upstream reads the request and closes without an answer: the request went out,
        // so the error is the caller's (a 502), not a second try (a POST must not repeat).
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                if tcp.read(&mut buf).await.unwrap_or(0) > 0 {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let post = Request::post("/")
            .header("host", "test")
            .body(Full::new(Bytes::from_static(b"once")))
            .expect("request");
        assert!(matches!(
            send(&POOL, addr, post).await,
            Err(Error::Send { .. })
        ));
        settle().await;
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        assert!(matches!(
            send(&POOL, addr, get("/")).await,
            Err(Error::Connect { .. })
        ));
    }

    #[tokio::test]
    async fn idle_connections_are_swept_after_a_minute_and_capped() {
        let (addr, _) = upstream(0).await;
        let mut open = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            open.push(send(&POOL, addr, get("/")).await.expect("send"));
        }
        for resp in open {
            let _ = text(resp).await;
        }
        settle().await;
        assert_eq!(POOL.with(|p| p.idle(addr)), MAX_IDLE);
        for _ in 1..IDLE_SWEEPS {
            POOL.with(Pool::sweep);
        }
        assert_eq!(POOL.with(|p| p.idle(addr)), MAX_IDLE);
        // A connection used since stays; the rest go at the sixth sweep.
        let resp = send(&POOL, addr, get("/")).await.expect("send");
        let _ = text(resp).await;
        settle().await;
        POOL.with(Pool::sweep);
        assert_eq!(POOL.with(|p| p.idle(addr)), 1);
    }
}
