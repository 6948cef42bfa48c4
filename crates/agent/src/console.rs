//! Console containers (`stdin: true` or `tty: true`): their [`crate::shim`] holds the
//! terminal's master side or the stdin/stdout/stderr pipes, copies the output to the log and
//! serves the console on a unix socket beside its state file ([`Server`]); the agent's
//! [`Console`] (what `kubectl attach` and `run -it` join) is a client of that socket, so a
//! restarted agent attaches again. The framing on the socket is hand-written: no maintained
//! crate frames a handful of message kinds between two local processes.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Output streams, as exec's channel numbers: the terminal (stdout and stderr merged) or stdout.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// One message on a console socket: `kind` (1 byte), payload length (4 bytes, big endian),
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Shim to agent: the container wrote this on [`STDOUT`] or [`STDERR`].
    Output(u8, Bytes),
    /// Shim to agent: the container's output has ended (its stdout or terminal closed).
    End,
    /// Agent to shim: input for the container's stdin.
    Input(Bytes),
    /// Agent to shim: close the container's stdin (a terminal gets ^D).
    CloseStdin,
    /// Agent to shim: set the terminal's size.
    Resize { cols: u16, rows: u16 },
}

const OUT: u8 = 1;
const ERR: u8 = 2;
const END: u8 = 3;
const INPUT: u8 = 4;
const CLOSE_STDIN: u8 = 5;
const RESIZE: u8 = 6;

/// The largest payload accepted; a longer frame is a broken peer.
const MAX_PAYLOAD: usize = 1 << 20;

/// The frame's bytes on the socket.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let resize;
    let (kind, payload): (u8, &[u8]) = match frame {
        Frame::Output(STDERR, b) => (ERR, &b[..]),
        Frame::Output(_, b) => (OUT, &b[..]),
        Frame::End => (END, &[]),
        Frame::Input(b) => (INPUT, &b[..]),
        Frame::CloseStdin => (CLOSE_STDIN, &[]),
        Frame::Resize { cols, rows } => {
            resize = [cols.to_be_bytes(), rows.to_be_bytes()].concat();
            (RESIZE, resize.as_slice())
        }
    };
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    // Payloads are at most a read buffer or a client message; longer ones are cut to the limit.
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the next frame; `None` at the end of the stream between frames. A stream that ends
/// inside a frame, an unknown kind, an oversized or malformed payload is an `InvalidData`
/// (or `UnexpectedEof`) error; never a panic.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let [kind, l0, l1, l2, l3] = head;
    let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    if len > MAX_PAYLOAD {
        return Err(invalid(format!("a console frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    let frame = match (kind, payload.as_slice()) {
        (OUT, _) => Frame::Output(STDOUT, payload.into()),
        (ERR, _) => Frame::Output(STDERR, payload.into()),
        (END, []) => Frame::End,
        (INPUT, _) => Frame::Input(payload.into()),
        (CLOSE_STDIN, []) => Frame::CloseStdin,
        (RESIZE, [c0, c1, r0, r1]) => Frame::Resize {
            cols: u16::from_be_bytes([*c0, *c1]),
            rows: u16::from_be_bytes([*r0, *r1]),
        },
        _ => {
            return Err(invalid(format!(
                "a console frame of kind {kind} with {len} bytes"
            )));
        }
    };
    Ok(Some(frame))
}

/// `DIR/<name>.sock`: a console container's socket, beside its log.
pub fn socket_path(log: &Path) -> PathBuf {
    log.with_extension("sock")
}

/// Runs `f` (a bind or connect) on `socket`, through `/proc/self/fd/N/<name>` for the
/// directory when the path is longer than a socket address holds (108 bytes with its NUL:
/// a deep data directory and a 63-character container name).
fn reachable<T>(socket: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    const SUN_PATH: usize = 107;
    if socket.as_os_str().len() <= SUN_PATH {
        return f(socket);
    }
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return f(socket);
    };
    // Open while `f` runs, so the descriptor names this directory.
    let dir = std::fs::File::open(dir)?;
    f(&Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name))
}

/// The stdio of a running console container, through its shim: input goes to the process,
/// output to every attached client (the shim has logged it already).
#[derive(Debug)]
pub struct Console {
    pub tty: bool,
    /// `stdinOnce`: the first attached client closing its stdin closes the container's.
    pub stdin_once: bool,
    stdin_open: AtomicBool,
    requests: std::sync::mpsc::Sender<Frame>,
    output: broadcast::Sender<(u8, Bytes)>,
    /// Cancelled when the container's output ends (or its shim is gone).
    done: CancellationToken,
}

impl Console {
    /// Connects to the shim serving `socket`: a container with a terminal (`tty`) and/or an
    /// open stdin (`stdin`). Two threads carry the connection; both end when the console is
    /// dropped or the shim goes.
    pub fn connect(
        socket: &Path,
        tty: bool,
        stdin: bool,
        stdin_once: bool,
    ) -> std::io::Result<Console> {
        let stream = reachable(socket, |p| UnixStream::connect(p))?;
        let mut reader = stream.try_clone()?;
        let mut writer = stream;
        let (output, _) = broadcast::channel(256);
        let done = CancellationToken::new();
        let (requests, rx) = std::sync::mpsc::channel::<Frame>();
        let (out, end) = (output.clone(), done.clone());
        std::thread::spawn(move || {
            let _end = end.clone().drop_guard();
            while let Ok(Some(frame)) = read_frame(&mut reader) {
                match frame {
                    Frame::Output(stream, data) => {
                        let _ = out.send((stream, data));
                    }
                    Frame::End => end.cancel(),
                    _ => {}
                }
            }
        });
        std::thread::spawn(move || {
            for frame in rx {
                if writer.write_all(&encode(&frame)).is_err() {
                    break;
                }
            }
            // Ends the reading thread too.
            let _ = writer.shutdown(std::net::Shutdown::Both);
        });
        Ok(Console {
            tty,
            stdin_once,
            stdin_open: AtomicBool::new(stdin),
            requests,
            output,
            done,
        })
    }

    /// Output from now on, as (stream, bytes) with stream [`STDOUT`] or [`STDERR`].
    pub fn subscribe(&self) -> broadcast::Receiver<(u8, Bytes)> {
        self.output.subscribe()
    }

    /// Sends input to the container; false once its stdin is closed.
    pub fn write(&self, data: Bytes) -> bool {
        if !self.stdin_open.load(Ordering::SeqCst) {
            return false;
        }
        let mut at = 0;
        while at < data.len() {
            let end = data.len().min(at + MAX_PAYLOAD);
            if self
                .requests
                .send(Frame::Input(data.slice(at..end)))
                .is_err()
            {
                return false;
            }
            at = end;
        }
        true
    }

    /// Closes the container's stdin (a terminal gets end-of-file, ^D).
    pub fn close_stdin(&self) {
        if self.stdin_open.swap(false, Ordering::SeqCst) {
            let _ = self.requests.send(Frame::CloseStdin);
        }
    }

    /// Sets the terminal's size, as a client's resize message asks.
    pub fn resize(&self, cols: u16, rows: u16) {
        if self.tty {
            let _ = self.requests.send(Frame::Resize { cols, rows });
        }
    }

    /// Resolves once the container's output has ended.
    pub async fn done(&self) {
        self.done.cancelled().await;
    }
}

/// The console of container `c` (logging to `log`) when it has one: a connection to the
/// socket of the shim holding it. `None`, logged, when the shim cannot be reached.
pub fn reconnect(log: &Path, c: &k8s_openapi::api::core::v1::Container) -> Option<Arc<Console>> {
    let (tty, stdin) = (c.tty == Some(true), c.stdin == Some(true));
    if !tty && !stdin {
        return None;
    }
    let socket = socket_path(log);
    match Console::connect(&socket, tty, stdin, c.stdin_once == Some(true)) {
        Ok(console) => Some(Arc::new(console)),
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "connecting to a container's console");
            None
        }
    }
}

/// How long a stalled agent may block the container's output before it is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shim's side of a console: its socket, and the terminal's master side.
pub(crate) struct Server {
    listener: UnixListener,
    master: Option<std::fs::File>,
}

/// The connected agent, if any, and whether the output has ended.
#[derive(Default)]
struct Client {
    stream: Option<UnixStream>,
    /// Which connection `stream` is, so a stale reader does not drop a newer one.
    serial: u64,
    ended: bool,
}

struct Shared {
    client: Mutex<Client>,
    /// The container's stdin: the pipe, or the terminal's master; `None` once closed.
    input: Mutex<Option<std::fs::File>>,
    tty: bool,
}

impl Server {
    /// Binds `socket` (mode 0600) and gives `cmd` its stdio: the slave side of a new terminal
    /// (`tty`), or pipes.
    pub(crate) fn bind(socket: &Path, tty: bool, cmd: &mut Command) -> Result<Server, String> {
        let _ = std::fs::remove_file(socket);
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener = reachable(socket, |p| UnixListener::bind(p));
        nix::sys::stat::umask(old);
        let listener = listener.map_err(|e| format!("binding {}: {e}", socket.display()))?;
        if !tty {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            return Ok(Server {
                listener,
                master: None,
            });
        }
        let pty =
            nix::pty::openpty(None, None).map_err(|e| format!("allocating a terminal: {e}"))?;
        // Neither side is for the container's other descriptors (stdio gets dups of the slave).
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("setting up the terminal: {e}"))?;
        }
        let slave = std::fs::File::from(pty.slave);
        let dup = |f: &std::fs::File| {
            f.try_clone()
                .map_err(|e| format!("duplicating the terminal: {e}"))
        };
        cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(slave);
        Ok(Server {
            listener,
            master: Some(std::fs::File::from(pty.master)),
        })
    }

    /// Once `child` runs (and the command holding the slave side is dropped): copies its
    /// output to `log` and to the connected agent, serves the socket. Returns what to wait
    /// on for the output's end.
    pub(crate) fn serve(self, child: &mut Child, log: &std::fs::File) -> Result<Drained, String> {
        let dup = |f: &dyn AsFd| {
            f.as_fd()
                .try_clone_to_owned()
                .map(std::fs::File::from)
                .map_err(|e| format!("duplicating the container's stdio: {e}"))
        };
        let (input, outputs) = match &self.master {
            Some(master) => (Some(dup(master)?), vec![(STDOUT, dup(master)?)]),
            None => {
                let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
                let (Some(i), Some(o), Some(e)) = pipes else {
                    return Err("the container's pipes are missing".into());
                };
                let file = |fd: OwnedFd| std::fs::File::from(fd);
                (
                    Some(file(i.into())),
                    vec![(STDOUT, file(o.into())), (STDERR, file(e.into()))],
                )
            }
        };
        let shared = Arc::new(Shared {
            client: Mutex::new(Client::default()),
            input: Mutex::new(input),
            tty: self.master.is_some(),
        });
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        for (stream, from) in outputs {
            let (shared, log, tx) = (shared.clone(), dup(log)?, tx.clone());
            std::thread::spawn(move || {
                pump(from, stream, log, &shared);
                drop(tx);
            });
        }
        let master = self.master;
        let listener = self.listener;
        std::thread::spawn(move || accept(&listener, &shared, master.as_ref()));
        Ok(Drained(rx))
    }
}

/// Resolves when every output of a console container has been copied.
pub(crate) struct Drained(std::sync::mpsc::Receiver<()>);

impl Drained {
    /// Waits until the output has ended, at most `limit` (a process the container left
    /// may hold its terminal open).
    pub(crate) fn wait(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = self.0.recv_timeout(left)
            {
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies one output of the container to the log and the connected agent until it closes
/// (EIO is how a terminal says its last writer is gone); the end of stdout (or the
/// terminal) is the end of the output.
fn pump(mut from: std::fs::File, stream: u8, mut log: std::fs::File, shared: &Shared) {
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = log.write_all(&buf[..n]);
        send(
            shared,
            &Frame::Output(stream, Bytes::copy_from_slice(&buf[..n])),
        );
    }
    if stream == STDOUT {
        lock(&shared.client).ended = true;
        send(shared, &Frame::End);
    }
}

/// Sends a frame to the connected agent, if any; one that cannot take it is disconnected.
fn send(shared: &Shared, frame: &Frame) {
    let mut client = lock(&shared.client);
    let failed = client
        .stream
        .as_mut()
        .is_some_and(|s| s.write_all(&encode(frame)).is_err());
    if failed && let Some(s) = client.stream.take() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

/// Takes agents' connections, one at a time: a new one replaces the previous (a restarted
/// agent's, while the old one's end may not have been noticed yet).
fn accept(listener: &UnixListener, shared: &Arc<Shared>, master: Option<&std::fs::File>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else {
            // Out of descriptors, say: not a busy loop meanwhile.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
        let Ok(reader) = conn.try_clone() else {
            continue;
        };
        let serial = {
            let mut client = lock(&shared.client);
            if let Some(old) = client.stream.take() {
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
            if client.ended {
                let _ = conn.write_all(&encode(&Frame::End));
            }
            client.serial += 1;
            client.stream = Some(conn);
            client.serial
        };
        let master = master.and_then(|m| m.try_clone().ok());
        let shared = shared.clone();
        std::thread::spawn(move || serve_requests(reader, &shared, master.as_ref(), serial));
    }
}

/// Applies one agent's requests until it disconnects.
fn serve_requests(
    mut conn: UnixStream,
    shared: &Shared,
    master: Option<&std::fs::File>,
    serial: u64,
) {
    while let Ok(Some(frame)) = read_frame(&mut conn) {
        match frame {
            Frame::Input(data) => {
                let mut input = lock(&shared.input);
                let failed = input
                    .as_mut()
                    .is_some_and(|i| i.write_all(&data).and_then(|()| i.flush()).is_err());
                if failed {
                    *input = None;
                }
            }
            Frame::CloseStdin => {
                let mut input = lock(&shared.input);
                if shared.tty
                    && let Some(i) = input.as_mut()
                {
                    let _ = i.write_all(b"\x04");
                }
                // A pipe's write end closes here; a terminal's master stays open for output.
                *input = None;
            }
            Frame::Resize { cols, rows } => {
                if let Some(m) = master {
                    // TIOCSWINSZ: the kernel signals SIGWINCH to the terminal's foreground group.
                    let size = rustix::termios::Winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(m, size);
                }
            }
            Frame::Output(..) | Frame::End => {}
        }
    }
    let mut client = lock(&shared.client);
    if client.serial == serial {
        client.stream = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> (Vec<Frame>, bool) {
        let mut r = std::io::Cursor::new(bytes);
        let mut frames = Vec::new();
        loop {
            match read_frame(&mut r) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, true),
                Err(_) => return (frames, false),
            }
        }
    }

    fn check(bytes: &[u8], expected: &[Frame], clean: bool) {
        assert_eq!(decode_all(bytes), (expected.to_vec(), clean), "{bytes:?}");
    }

    #[test]
    fn frames_decode_or_fail_cleanly() {
        check(b"", &[], true);
        check(
            b"\x01\0\0\0\x02hi\x03\0\0\0\0",
            &[Frame::Output(STDOUT, "hi".into()), Frame::End],
            true,
        );
        check(
            b"\x06\0\0\0\x04\0\x50\0\x18",
            &[Frame::Resize { cols: 80, rows: 24 }],
            true,
        );
        // Cut in the header, cut in the payload, unknown kind, a resize of 3 bytes, an End
        // with a payload, a length over the limit.
        check(b"\x01\0\0", &[], false);
        check(b"\x04\0\0\0\x05abc", &[], false);
        check(b"\x09\0\0\0\0", &[], false);
        check(b"\x06\0\0\0\x03abc", &[], false);
        check(b"\x03\0\0\0\x01x", &[], false);
        check(b"\x01\xff\xff\xff\xff", &[], false);
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
        prop_oneof![
            bytes().prop_map(|b| Frame::Output(STDOUT, b)),
            bytes().prop_map(|b| Frame::Output(STDERR, b)),
            Just(Frame::End),
            bytes().prop_map(Frame::Input),
            Just(Frame::CloseStdin),
            (any::<u16>(), any::<u16>()).prop_map(|(cols, rows)| Frame::Resize { cols, rows }),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(frame(), 0..8)) {
            let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
            prop_assert_eq!(decode_all(&bytes), (frames, true));
        }
    }

    #[test]
    fn a_console_serves_a_shim_s_pipes_across_reconnects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("c.sock");
        let log_path = dir.path().join("c.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done",
        ]);
        let server = Server::bind(&socket, false, &mut cmd).expect("bind");
        let mut child = cmd.spawn().expect("sh");
        drop(cmd);
        let drained = server.serve(&mut child, &log).expect("serve");
        let mode = std::fs::metadata(&socket).expect("socket").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let first = Console::connect(&socket, false, true, false).expect("connect");
        let mut rx = first.subscribe();
        assert!(first.write("one\n".into()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = String::new();
        while !seen.contains("got one") && Instant::now() < deadline {
            match rx.try_recv() {
                Ok((_, b)) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(seen.contains("got one\n"), "{seen:?}");
        // A second agent takes over; the first one's end changes nothing.
        let second = Console::connect(&socket, false, true, true).expect("connect");
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        let mut rx = second.subscribe();
        assert!(second.write("two\n".into()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < 2 && Instant::now() < deadline {
            match rx.try_recv() {
                Ok(m) => got.push(m),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        got.sort();
        assert_eq!(
            got,
            [(STDOUT, "got two\n".into()), (STDERR, "err two\n".into())]
        );
        second.close_stdin();
        assert!(!second.write("three\n".into()), "stdin is closed");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), second.done())
                .await
                .expect("the output ends with stdin closed");
        });
        drained.wait(Duration::from_secs(5));
        assert!(child.wait().expect("sh").success());
        let logged = std::fs::read_to_string(&log_path).expect("log");
        assert!(
            logged.contains("got one\n") && logged.contains("got two\n"),
            "{logged}"
        );
        assert!(logged.contains("err one\n"), "{logged}");
    }

    #[test]
    fn a_socket_deeper_than_an_address_holds_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        let socket = deep.join("c.sock");
        assert!(socket.as_os_str().len() > 108);
        let mut cmd = Command::new("cat");
        let server = Server::bind(&socket, false, &mut cmd).expect("bind");
        assert!(socket.exists(), "bound where it was asked");
        let mut child = cmd.spawn().expect("cat");
        drop(cmd);
        let log = std::fs::File::create(deep.join("c.log")).expect("log");
        let drained = server.serve(&mut child, &log).expect("serve");
        let console = Console::connect(&socket, false, true, false).expect("connect");
        // More than one frame's worth of input, in one write.
        let big = Bytes::from(vec![b'x'; MAX_PAYLOAD + 10]);
        assert!(console.write(big));
        console.close_stdin();
        drained.wait(Duration::from_secs(10));
        assert!(child.wait().expect("cat").success());
        let logged = std::fs::metadata(deep.join("c.log")).expect("log").len();
        assert_eq!(logged, u64::try_from(MAX_PAYLOAD + 10).unwrap_or(0));
    }

    #[test]
    fn a_console_resizes_and_ends_with_its_terminal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("t.sock");
        let log_path = dir.path().join("t.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut cmd = Command::new("sh");
        // The size the terminal has after the resize, then the typed line's end.
        cmd.args(["-c", "read l; stty size; read l; echo bye"]);
        let server = Server::bind(&socket, true, &mut cmd).expect("bind");
        let mut child = cmd.spawn().expect("sh");
        drop(cmd);
        let drained = server.serve(&mut child, &log).expect("serve");
        let console = Console::connect(&socket, true, true, false).expect("connect");
        console.resize(100, 33);
        std::thread::sleep(Duration::from_millis(50));
        assert!(console.write("\n".into()));
        console.close_stdin();
        drained.wait(Duration::from_secs(5));
        let status = child.wait().expect("sh");
        let logged = std::fs::read_to_string(&log_path).expect("log");
        assert!(logged.contains("33 100"), "{logged:?}");
        // ^D ended the second read: no line, so sh goes on to echo.
        assert!(logged.contains("bye"), "{logged:?} {status}");
    }
}
