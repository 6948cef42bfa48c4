//! `/exec/{ns}/{pod}/{container}`: runs a command in the namespaces (network, UTS, mount) of
//! the container's process with its environment, over the Kubernetes websocket channel
//! protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`): binary messages whose first byte names
//! the stream. With `tty` the command gets a pseudo-terminal as its controlling terminal, and
//! stdout and stderr share channel 1, as the kubelet does.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::query::{BadParam, Query};
use super::{Body, container_pid, text, websocket_upgrade};

/// The channel protocols served, most preferred first. v5 adds the close channel, which
/// lets the client end stdin.
pub(super) const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: the client is done with the stream named by the next byte.
pub const CLOSE: u8 = 255;

/// What an exec request asks for.
#[derive(Debug, Default, PartialEq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Why an exec request is refused before the upgrade.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Param(#[from] BadParam),
    #[error("you must specify at least one command for the container")]
    NoCommand,
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
}

impl ExecOptions {
    pub fn parse(q: &Query) -> Result<Self, ExecError> {
        let o = Self {
            command: q.all("command"),
            // The kubelet's parameter names, which kube-apiserver sends (it renames the
            // pods/exec query's stdin/stdout/stderr); the API names are taken too.
            stdin: q.flag("input")? || q.flag("stdin")?,
            stdout: q.flag("output")? || q.flag("stdout")?,
            stderr: q.flag("error")? || q.flag("stderr")?,
            tty: q.flag("tty")?,
        };
        if o.command.is_empty() {
            return Err(ExecError::NoCommand);
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err(ExecError::NoStreams);
        }
        Ok(o)
    }
}

/// A text frame read as the same bytes in a binary one: kube-apiserver takes stdin in either
/// (the Python client's `write_stdin(str)` sends text).
pub(crate) fn text_as_binary(m: Message) -> Message {
    match m {
        Message::Text(t) => Message::Binary(t.into()),
        other => other,
    }
}

/// A message from the client, by its channel byte.
#[derive(Debug, PartialEq)]
pub enum ClientFrame<'a> {
    Stdin(&'a [u8]),
    Resize {
        width: u16,
        height: u16,
    },
    Close(u8),
    /// Empty, or a channel the client does not write.
    Ignored,
}

impl<'a> ClientFrame<'a> {
    pub fn parse(msg: &'a [u8]) -> Self {
        match msg.split_first() {
            Some((&STDIN, data)) => Self::Stdin(data),
            Some((&RESIZE, data)) => {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "PascalCase")]
                struct Size {
                    width: u16,
                    height: u16,
                }
                match serde_json::from_slice::<Size>(data) {
                    Ok(s) => Self::Resize {
                        width: s.width,
                        height: s.height,
                    },
                    Err(_) => Self::Ignored,
                }
            }
            Some((&CLOSE, [stream, ..])) => Self::Close(*stream),
            _ => Self::Ignored,
        }
    }
}

/// A message to the client on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Bytes::from(v)
}

/// The `metav1.Status` sent on the error channel when the command ends, as the kubelet
/// words it (kubectl reads the exit code from the cause).
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// Answers an exec request: checks it, then upgrades to a websocket and runs the session.
pub fn serve(
    state_dir: &Path,
    uid: &str,
    container: &str,
    query: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let opts = match ExecOptions::parse(&Query::parse(query)) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(pid) = container_pid(state_dir, uid, container) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running"),
        );
    };
    channel_session(req, move |ws| session(ws, pid, opts))
}

/// How long a channel session waits after the upgrade before its first frame can go out
/// (see `channel_session`).
const CLIENT_STREAMS_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The websocket a channel-protocol session runs on.
pub(super) type ChannelSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers a request for a channel-protocol websocket (exec, attach): the 101 now, then
/// `session` on the upgraded connection.
pub(super) fn channel_session<F, Fut>(req: Request<Incoming>, session: F) -> Response<Body>
where
    F: FnOnce(ChannelSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (upgrade, resp) = match websocket_upgrade(req, PROTOCOLS) {
        Ok(u) => u,
        Err(resp) => return *resp,
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
                // client-go's websocket executor starts reading before it has registered its
                // streams, and drops a frame for a stream it does not know yet (then fails
                // with "closed all streams" if the close came too). A command that answers
                // within microseconds of the 101 (nsenter is that fast) loses its output on
                // a loaded machine; kubelet's exec through the CRI is never that quick. So
                // the session starts a moment after the upgrade: 25 ms still lost an `ls`'s
                // output once in a CI run on two busy cores (kubectl's goroutines not yet
                // scheduled), so 100 ms, about what a runc exec takes to start anyway.
                tokio::time::sleep(CLIENT_STREAMS_SETTLE).await;
                session(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    resp
}

/// A started command: where its input goes and its output comes from.
struct Proc {
    child: tokio::process::Child,
    stdin: Option<mpsc::UnboundedSender<Bytes>>,
    output: mpsc::Receiver<(u8, Bytes)>,
    /// The terminal's path, for resizes.
    tty: Option<PathBuf>,
}

async fn session<S>(ws: WebSocketStream<S>, pid: u32, opts: ExecOptions)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut proc = match start(pid, &opts) {
        Ok(p) => p,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("failed to exec in container: starting {:?}: {e}", opts.command)});
            let _ = sink
                .send(Message::Binary(frame(ERROR, status.to_string().as_bytes())))
                .await;
            close(&mut sink).await;
            return;
        }
    };
    loop {
        tokio::select! {
            msg = stream.next() => match msg.map(|m| m.map(text_as_binary)) {
                Some(Ok(Message::Binary(data))) => match ClientFrame::parse(&data) {
                    ClientFrame::Stdin(b) => {
                        if let Some(s) = &proc.stdin {
                            let _ = s.send(Bytes::copy_from_slice(b));
                        }
                    }
                    ClientFrame::Close(STDIN) => proc.stdin = None,
                    ClientFrame::Resize { width, height } => crate::runtime::resize_tty(proc.tty.as_deref(), width, height).await,
                    ClientFrame::Close(_) | ClientFrame::Ignored => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    // The client is gone: so is the command.
                    let _ = proc.child.start_kill();
                    let _ = proc.child.wait().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            out = proc.output.recv() => match out {
                Some((channel, data)) => {
                    if sink.send(Message::Binary(frame(channel, &data))).await.is_err() {
                        let _ = proc.child.start_kill();
                        let _ = proc.child.wait().await;
                        return;
                    }
                }
                None => break,
            },
        }
    }
    let code = match proc.child.wait().await {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    };
    let status = exit_status(&opts.command, code);
    let _ = sink
        .send(Message::Binary(frame(ERROR, status.to_string().as_bytes())))
        .await;
    close(&mut sink).await;
    // Let the client answer the close, within reason.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Ends the websocket with a normal closure, which client-go reads as the end of every
/// stream; a close without a code would be an error to it.
pub(super) async fn close<S>(sink: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(normal))).await;
    let _ = sink.close().await;
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|sig| 128 + sig))
        .unwrap_or(1)
}

/// `nsenter` into the container process's network, UTS, IPC and mount namespaces (the mount
/// namespace `ip netns exec` made, where the pod's resolv.conf and hosts are mounted), with
/// that process's environment.
fn command(pid: u32, opts: &ExecOptions) -> std::process::Command {
    let inner = crate::runtime::in_container(pid, &opts.command);
    if !opts.tty {
        return inner;
    }
    // A new session whose controlling terminal is the pty on stdin, made before entering the
    // container (an image may have no setsid); `-w` returns the command's exit status should
    // setsid have to fork.
    let mut cmd = std::process::Command::new("setsid");
    cmd.args(["-w", "-c"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    if !inner.get_envs().any(|(k, _)| k == "TERM") {
        cmd.env("TERM", "xterm");
    }
    cmd
}

fn start(pid: u32, opts: &ExecOptions) -> std::io::Result<Proc> {
    if opts.tty {
        return start_tty(pid, opts);
    }
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let mut cmd = tokio::process::Command::from(command(pid, opts));
    cmd.stdin(pipe(opts.stdin))
        .stdout(pipe(opts.stdout))
        .stderr(pipe(opts.stderr))
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (out_tx, output) = mpsc::channel(16);
    if let Some(o) = child.stdout.take() {
        tokio::spawn(pump(o, STDOUT, out_tx.clone()));
    }
    if let Some(e) = child.stderr.take() {
        tokio::spawn(pump(e, STDERR, out_tx.clone()));
    }
    let stdin = child.stdin.take().map(|mut w| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        tx
    });
    Ok(Proc {
        child,
        stdin,
        output,
        tty: None,
    })
}

async fn pump(mut r: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<(u8, Bytes)>) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0
            || tx
                .send((channel, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
        {
            break;
        }
    }
}

/// The command on a new pseudo-terminal. Its master is read and written on plain threads
/// (blocking I/O that ends when the command's side closes), not on the runtime.
fn start_tty(pid: u32, opts: &ExecOptions) -> std::io::Result<Proc> {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(std::io::Error::from)?;
    let tty = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))?;
    let mut cmd = tokio::process::Command::from(command(pid, opts));
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave))
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    // Our copies of the terminal's side must be closed, or reading the master never ends.
    drop(cmd);
    let mut reader = std::fs::File::from(pty.master);
    let mut writer = reader.try_clone()?;
    let (out_tx, output) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("exec-tty-out".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            // EIO once every holder of the terminal has closed it.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0
                    || out_tx
                        .blocking_send((STDOUT, Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                {
                    break;
                }
            }
        })?;
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Bytes>();
    std::thread::Builder::new()
        .name("exec-tty-in".into())
        .spawn(move || {
            while let Some(b) = in_rx.blocking_recv() {
                if writer.write_all(&b).is_err() {
                    break;
                }
            }
        })?;
    Ok(Proc {
        child,
        stdin: opts.stdin.then_some(in_tx),
        output,
        tty: Some(tty),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn options() {
        let check = |q: &str| ExecOptions::parse(&Query::parse(q));
        assert_eq!(
            check("command=sh&command=-c&command=exit+3&stdout=true&stderr=1&container=c"),
            Ok(ExecOptions {
                command: vec!["sh".into(), "-c".into(), "exit 3".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
        );
        // What kube-apiserver sends the kubelet.
        assert_eq!(
            check("command=sh&input=1&output=1&error=1&tty=1"),
            Ok(ExecOptions {
                command: vec!["sh".into()],
                stdin: true,
                stdout: true,
                stderr: true,
                tty: true,
            })
        );
        assert_eq!(check("stdout=1"), Err(ExecError::NoCommand));
        assert_eq!(check("command=ls"), Err(ExecError::NoStreams));
        assert!(matches!(
            check("command=ls&tty=yes"),
            Err(ExecError::Param(_))
        ));
    }

    #[test]
    fn client_frames() {
        assert_eq!(ClientFrame::parse(b"\x00hi"), ClientFrame::Stdin(b"hi"));
        assert_eq!(ClientFrame::parse(b"\x00"), ClientFrame::Stdin(b""));
        assert_eq!(
            ClientFrame::parse(b"\x04{\"Width\":120,\"Height\":40}"),
            ClientFrame::Resize {
                width: 120,
                height: 40
            }
        );
        assert_eq!(ClientFrame::parse(b"\x04{bad"), ClientFrame::Ignored);
        assert_eq!(ClientFrame::parse(b"\xff\x00"), ClientFrame::Close(STDIN));
        assert_eq!(ClientFrame::parse(b"\xff"), ClientFrame::Ignored);
        assert_eq!(ClientFrame::parse(b""), ClientFrame::Ignored);
        assert_eq!(ClientFrame::parse(b"\x01out"), ClientFrame::Ignored);
        assert_eq!(&frame(STDOUT, b"x")[..], b"\x01x");
    }

    #[test]
    fn statuses() {
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(
            exit_status(&cmd, 0).to_string(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let s = exit_status(&cmd, 3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        assert_eq!(
            s["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
    }

    proptest! {
        #[test]
        fn any_message_parses_without_panicking(msg in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ClientFrame::parse(&msg);
        }

        #[test]
        fn stdin_frames_carry_their_bytes(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let f = frame(STDIN, &data);
            prop_assert_eq!(ClientFrame::parse(&f), ClientFrame::Stdin(&data));
        }
    }
}
