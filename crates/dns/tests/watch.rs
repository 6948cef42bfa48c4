//! `berth_dns::run_on` against a fake Kubernetes API (a tower service answering the list and
//! watch requests kube-runtime makes): listed Services and Namespaces resolve, then names
//! appear and disappear with watch events. Loopback only.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_dns::{Config, Server, fixtures};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Events = Arc<Mutex<Option<mpsc::UnboundedReceiver<serde_json::Value>>>>;

type BoxBody = StreamBody<
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>,
>;

fn body(chunks: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> BoxBody {
    StreamBody::new(Box::pin(chunks.map(|b| Ok(Frame::data(b)))))
}

/// Lists return the given items; the first Service watch streams what the test sends, every
/// other watch stays open and silent.
fn api(services: serde_json::Value, slices: serde_json::Value, events: Events) -> kube::Client {
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (services, slices, events) = (services.clone(), slices.clone(), events.clone());
        async move {
            let uri = req.uri().to_string();
            let watch = uri.contains("watch=true");
            let is_services = uri.starts_with("/api/v1/services");
            let b = if !watch {
                let (kind, items) = if is_services {
                    ("ServiceList", services)
                } else if uri.starts_with("/api/v1/namespaces") {
                    ("NamespaceList", json!([{"metadata": {"name": "quiet"}}]))
                } else {
                    ("EndpointSliceList", slices)
                };
                let list = json!({"kind": kind, "apiVersion": "v1",
                    "metadata": {"resourceVersion": "10"}, "items": items});
                body(stream::iter([Bytes::from(list.to_string())]))
            } else if let Some(rx) = is_services
                .then(|| events.lock().expect("lock").take())
                .flatten()
            {
                let lines = tokio_stream_from(rx).map(|ev| Bytes::from(format!("{ev}\n")));
                body(lines)
            } else {
                body(stream::pending())
            };
            Ok::<_, Infallible>(http::Response::new(b))
        }
    });
    kube::Client::new(service, "default")
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<serde_json::Value>,
) -> impl futures_util::Stream<Item = serde_json::Value> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn ask(port: u16, name: &str) -> Option<ResponseCode> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut req = Message::query();
    req.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    socket
        .send_to(&req.to_vec().expect("encode"), ("127.0.0.1", port))
        .await
        .expect("send");
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(Message::from_vec(&buf[..n]).ok()?.metadata.response_code)
}

/// Polls until `name` has the response code `want` (bounded: 10 s).
async fn eventually(port: u16, name: &str, want: ResponseCode) {
    for _ in 0..200 {
        if ask(port, name).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never answered {want}");
}

#[tokio::test]
async fn follows_the_api() {
    let web = fixtures::cluster_ip("default", "web", &["10.96.0.20"], &[("http", "TCP", 80)]);
    let late = fixtures::cluster_ip("default", "late", &["10.96.0.30"], &[]);
    let (tx, rx) = mpsc::unbounded_channel();
    let client = api(json!([web]), json!([]), Arc::new(Mutex::new(Some(rx))));
    let server = Server::bind(&["127.0.0.1:0".parse().expect("addr")], 2).expect("bind");
    let port = server.local_addrs()[0].port();
    let shutdown = CancellationToken::new();
    let config = Config {
        upstream: vec![],
        ..Config::default()
    };
    let task = tokio::spawn(berth_dns::run_on(server, config, client, shutdown.clone()));
    eventually(
        port,
        "web.default.svc.cluster.local.",
        ResponseCode::NoError,
    )
    .await;
    // A listed Namespace without Services exists.
    let quiet = ask(port, "quiet.svc.cluster.local.").await;
    assert_eq!(quiet, Some(ResponseCode::NoError));
    assert_eq!(
        ask(port, "late.default.svc.cluster.local.").await,
        Some(ResponseCode::NXDomain)
    );
    let mut added = serde_json::to_value(&late).expect("json");
    added["apiVersion"] = json!("v1");
    added["kind"] = json!("Service");
    added["metadata"]["resourceVersion"] = json!("11");
    tx.send(json!({"type": "ADDED", "object": added.clone()}))
        .expect("send");
    eventually(
        port,
        "late.default.svc.cluster.local.",
        ResponseCode::NoError,
    )
    .await;
    added["metadata"]["resourceVersion"] = json!("12");
    tx.send(json!({"type": "DELETED", "object": added}))
        .expect("send");
    eventually(
        port,
        "late.default.svc.cluster.local.",
        ResponseCode::NXDomain,
    )
    .await;
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run stops on shutdown")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}
