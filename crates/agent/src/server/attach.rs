//! `/attach/{ns}/{pod}/{container}`: joins a client to a running container's console (its
//! terminal, or its stdin and output pipes) over the same websocket channel protocol as exec.
//! Output from the moment of attaching is sent; input goes to the container; with
//! `stdinOnce`, the first client closing its stdin closes the container's.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;

use super::exec::{ClientFrame, ERROR, STDIN, channel_session, close, frame, text_as_binary};
use super::{Body, text};
use crate::runtime::Console;

/// Answers an attach request: upgrades to a websocket and runs the session.
pub fn serve(
    console: Option<Arc<Console>>,
    container: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(console) = console else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "container {container} is not running with stdin or a tty (set stdin: true or tty: true to attach)"
            ),
        );
    };
    channel_session(req, move |ws| session(ws, console))
}

async fn session(ws: super::exec::ChannelSocket, console: Arc<Console>) {
    let (mut sink, mut stream) = ws.split();
    let mut output = console.subscribe();
    let mut stdin_open = true;
    let end_stdin = |console: &Console| {
        if console.stdin_once {
            console.close_stdin();
        }
    };
    loop {
        tokio::select! {
            msg = stream.next() => match msg.map(|m| m.map(text_as_binary)) {
                Some(Ok(Message::Binary(data))) => match ClientFrame::parse(&data) {
                    ClientFrame::Stdin(b) if stdin_open => {
                        console.write(bytes::Bytes::copy_from_slice(b));
                    }
                    ClientFrame::Close(STDIN) => {
                        stdin_open = false;
                        end_stdin(&console);
                    }
                    ClientFrame::Resize { width, height } => console.resize(width, height),
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    // Detached: the container goes on, unless its stdin was for this client only.
                    end_stdin(&console);
                    return;
                }
                Some(Ok(_)) => {}
            },
            out = output.recv() => match out {
                Ok((channel, data)) => {
                    if sink.send(Message::Binary(frame(channel, &data))).await.is_err() {
                        end_stdin(&console);
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            () = console.done() => {
                // Whatever was written before the end is still queued.
                while let Ok((channel, data)) = output.try_recv() {
                    if sink.send(Message::Binary(frame(channel, &data))).await.is_err() {
                        return;
                    }
                }
                break;
            }
        }
    }
    let ok = json!({"metadata": {}, "status": "Success"});
    let _ = sink
        .send(Message::Binary(frame(ERROR, ok.to_string().as_bytes())))
        .await;
    close(&mut sink).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}
