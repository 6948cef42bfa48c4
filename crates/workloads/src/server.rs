//! The HTTP/1.1 server loop every built-in shares: accept, one task per connection, and a
//! graceful stop (no new connections, in-flight requests finish, idle connections close).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Builtin, Error, Result, number_crunch, whoami};

/// How long connections may take to finish after shutdown before they are cut. Shorter than
/// Kubernetes' default 30 s termination grace period, so the process exits before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// Pause after a failed accept: the usual causes (EMFILE, ENFILE) clear only once other
/// connections close, so retrying at once would spin. Go's net/http backs off the same way.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A response body: every built-in answers with a small, fully built body.
pub(crate) type Body = Full<Bytes>;

/// Binds `listen` and serves `b` on it until `shutdown` resolves, then stops gracefully.
///
/// Errors: [`Error::Bind`] if the address cannot be bound. Failures of single connections or
/// accepts are logged, never returned.
pub async fn serve(
    b: Builtin,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    serve_listener(b, listener, shutdown).await
}

/// Serves `b` on an already bound listener (so callers can bind port 0 and learn the port)
/// until `shutdown` resolves; the listener is closed before in-flight requests finish.
pub async fn serve_listener(
    b: Builtin,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let local = listener.local_addr().map_err(Error::LocalAddr)?;
    tracing::info!(workload = %b, addr = %local, "listening");
    let (stop_tx, stop_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(serve_connection(b, stream, peer, stop_rx.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with every client.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(workload = %b, connections = conns.len(), "shutting down");
    // Sending marks the value changed for every receiver, including ones cloned for
    // connections accepted just before the stop.
    stop_tx.send_replace(());
    let drained =
        tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "grace period over; closing connections"
        );
        conns.abort_all();
    }
    Ok(())
}

/// Serves one connection until the client is done or the server stops.
async fn serve_connection(
    b: Builtin,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<()>,
) {
    let service =
        service_fn(move |req| async move { Ok::<_, Infallible>(handle(b, req, peer).await) });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // An error here means the server is gone, which also means stop.
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

async fn handle(b: Builtin, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    match b {
        Builtin::Whoami => whoami::handle(req, peer).await,
        Builtin::NumberCrunch => number_crunch::handle(&req),
    }
}

/// A response with a plain-text body, the way Go's `http.Error` writes one.
pub(crate) fn text(status: hyper::StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
pub(crate) mod tests;
