//! Loopback-only harness for the built-ins' HTTP tests, and the server loop's own tests:
//! binding, graceful stop with idle and busy connections.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// How long a test waits for the server before calling it hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// A built-in serving on 127.0.0.1 on a free port until [`Server::stop`].
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl Server {
    pub(crate) async fn start(b: Builtin) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_listener(b, listener, shutdown));
        Server { addr, stop, task }
    }

    /// Signals shutdown and checks the server returns in time and without error.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(PATIENCE, self.task).await;
        let result = result.expect("server stops in time").expect("server task");
        result.expect("server returns Ok");
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

/// Sends `raw` (which should say `Connection: close`) and reads the response to EOF.
pub(crate) async fn request(addr: SocketAddr, raw: &str) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(raw.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("receive");
        buf
    };
    let buf = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("response in time");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let server = Server::start(Builtin::Whoami).await;
    // A keep-alive connection that has finished one request and now sits idle.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.expect("receive");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let addr = server.addr;
    server.stop().await;
    // The server closed the idle connection and no longer listens.
    let rest = tokio::time::timeout(PATIENCE, idle.read(&mut buf))
        .await
        .expect("closed in time");
    assert_eq!(rest.expect("read"), 0);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serve_binds_and_returns_on_shutdown() {
    let served = serve(
        Builtin::NumberCrunch,
        "127.0.0.1:0".parse().expect("addr"),
        async {},
    );
    let result = tokio::time::timeout(PATIENCE, served)
        .await
        .expect("returns in time");
    result.expect("serve returns Ok");
}

#[tokio::test]
async fn serve_reports_a_taken_address() {
    let taken = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = taken.local_addr().expect("local address");
    let result = serve(Builtin::Whoami, addr, std::future::pending()).await;
    assert!(
        matches!(result, Err(Error::Bind { addr: a, .. }) if a == addr),
        "{result:?}"
    );
}

#[tokio::test]
async fn responses_say_plain_text_or_json() {
    let server = Server::start(Builtin::NumberCrunch).await;
    let reply = request(
        server.addr,
        "GET /square-root/9 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{reply:?}"
    );
    let reply = request(
        server.addr,
        "GET /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{reply:?}"
    );
    server.stop().await;
}
