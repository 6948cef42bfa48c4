//! `/portForward/{ns}/{pod}`: `kubectl port-forward` as kubectl 1.30+ speaks it, SPDY/3.1
//! tunnelled in websocket binary messages (`SPDY/3.1+portforward.k8s.io`). Each forwarded
//! connection is a pair of streams sharing a `requestID`, `error` and `data`; the agent joins
//! the pair to a TCP connection to `localhost:port` inside the pod's network namespace, as the
//! kubelet does.

use std::collections::HashMap;
use std::ops::ControlFlow;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::spdy::{self, Frame};
use super::{Body, text, websocket_upgrade};
use crate::error::Error;

/// The only protocol served: SPDY inside a websocket.
const PROTOCOLS: &[&str] = &["SPDY/3.1+portforward.k8s.io"];

/// What the frame writer sends.
enum Out {
    Reply(u32),
    Data { stream: u32, data: Bytes, fin: bool },
    Ping(u32),
}

/// One forwarded connection's streams, filled in as their SYN_STREAMs arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
}

/// The pod whose ports are forwarded.
#[derive(Clone)]
struct Target {
    netns: String,
    name: String,
    uid: String,
}

/// Answers a port-forward request for pod `name` with uid `uid`.
pub fn serve(uid: &str, name: &str, req: Request<Incoming>) -> Response<Body> {
    let Ok(names) = crate::sandbox::SandboxNames::for_uid(uid) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("pod {name} has no sandbox"),
        );
    };
    let target = Target {
        netns: names.netns,
        name: name.to_owned(),
        uid: uid.to_owned(),
    };
    match websocket_upgrade(req, PROTOCOLS) {
        Ok((upgrade, resp)) => {
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(io) => {
                        let ws =
                            WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None)
                                .await;
                        session(ws, target).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
                }
            });
            resp
        }
        Err(resp) => *resp,
    }
}

async fn session<S>(ws: WebSocketStream<S>, target: Target)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    tokio::spawn(async move {
        let mut w = spdy::Writer::default();
        while let Some(o) = out_rx.recv().await {
            let frame = match o {
                Out::Reply(s) => w.syn_reply(s),
                Out::Data { stream, data, fin } => spdy::Writer::data(stream, fin, &data),
                Out::Ping(id) => spdy::Writer::ping(id),
            };
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut session = Session {
        target,
        out: out_tx,
        done: CancellationToken::new(),
        pairs: HashMap::new(),
        to_pod: HashMap::new(),
    };
    // Ends every forwarded connection of this session when it ends, however it ends.
    let _guard = session.done.clone().drop_guard();
    let mut reader = spdy::Reader::default();
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Binary(d) => d,
            Message::Close(_) => break,
            _ => continue,
        };
        reader.push(&data);
        loop {
            match reader.next() {
                Ok(Some(frame)) => {
                    if session.on_frame(frame).await.is_break() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward stream is not SPDY");
                    return;
                }
            }
        }
    }
}

/// One port-forward connection's state: the stream pairs being set up and the forwarded
/// connections' inputs by data stream.
struct Session {
    target: Target,
    out: mpsc::Sender<Out>,
    done: CancellationToken,
    pairs: HashMap<String, Pair>,
    to_pod: HashMap<u32, mpsc::UnboundedSender<Bytes>>,
}

impl Session {
    async fn on_frame(&mut self, frame: Frame) -> ControlFlow<()> {
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                // client-go waits for the reply before it opens the next stream.
                if self.out.send(Out::Reply(stream)).await.is_err() {
                    return ControlFlow::Break(());
                }
                self.on_stream(stream, &headers);
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = self.to_pod.get(&stream) {
                    if !data.is_empty() {
                        let _ = tx.send(data);
                    }
                    if fin {
                        // Dropping the sender half-closes the pod connection.
                        self.to_pod.remove(&stream);
                    }
                }
            }
            Frame::RstStream { stream } => {
                self.to_pod.remove(&stream);
            }
            Frame::Ping { id } => {
                let _ = self.out.send(Out::Ping(id)).await;
            }
            Frame::GoAway => return ControlFlow::Break(()),
            Frame::Other => {}
        }
        ControlFlow::Continue(())
    }

    /// Records a new stream; once both of a request's streams are there, forwards.
    fn on_stream(&mut self, stream: u32, headers: &HashMap<String, String>) {
        let request = headers.get("requestid").cloned().unwrap_or_default();
        let pair = self.pairs.entry(request.clone()).or_default();
        match headers.get("streamtype").map(String::as_str) {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            _ => return,
        }
        let Pair {
            error: Some(error),
            data: Some(data),
        } = *pair
        else {
            return;
        };
        self.pairs.remove(&request);
        let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
        let (tx, rx) = mpsc::unbounded_channel();
        self.to_pod.insert(data, tx);
        tokio::spawn(forward(
            self.target.clone(),
            port,
            Streams { error, data },
            rx,
            self.out.clone(),
            self.done.clone(),
        ));
    }
}

#[derive(Clone, Copy)]
struct Streams {
    error: u32,
    data: u32,
}

/// Joins one stream pair to a connection to `ip:port`: a failure is reported on the error
/// stream, as the kubelet reports it; both streams end when the pod side does.
async fn forward(
    target: Target,
    port: Option<u16>,
    s: Streams,
    mut from_client: mpsc::UnboundedReceiver<Bytes>,
    out: mpsc::Sender<Out>,
    done: CancellationToken,
) {
    let end = |stream: u32, data: Bytes| Out::Data {
        stream,
        data,
        fin: true,
    };
    let tcp = match port {
        None => Err("invalid port".to_owned()),
        Some(p) => crate::sandbox::connect_loopback(&target.netns, p)
            .await
            .and_then(|t| {
                tokio::net::TcpStream::from_std(t).map_err(|source| Error::Connect {
                    netns: target.netns.clone(),
                    port: p,
                    source,
                })
            })
            .map_err(|e| {
                // The kubelet's wording, with the cause's chain.
                let mut msg = format!(
                    "error forwarding port {p} to pod {}, uid {}: {e}",
                    target.name, target.uid
                );
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    msg.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                msg
            }),
    };
    let tcp = match tcp {
        Ok(t) => t,
        Err(msg) => {
            let _ = out.send(end(s.error, Bytes::from(msg))).await;
            let _ = out.send(end(s.data, Bytes::new())).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let writer_done = done.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = writer_done.cancelled() => return,
                b = from_client.recv() => match b {
                    Some(b) => if wr.write_all(&b).await.is_err() { return },
                    None => break,
                },
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            _ = done.cancelled() => return,
            n = rd.read(&mut buf) => n,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = Out::Data {
                    stream: s.data,
                    data: Bytes::copy_from_slice(&buf[..n]),
                    fin: false,
                };
                if out.send(data).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.send(end(s.data, Bytes::new())).await;
    let _ = out.send(end(s.error, Bytes::new())).await;
}
