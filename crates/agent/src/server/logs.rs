//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's log file from its last
//! `tailLines` lines, at most `limitBytes`, and with `follow` the lines written later, until the
//! container's process is gone or the client leaves. `timestamps` and `sinceSeconds` are
//! accepted but not applied: the log files hold raw output without per-line times.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::query::{BadParam, Query};
use super::{Body, container_pid, text};
use crate::layout;

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(150);

/// The options of a log request that the agent honours.
#[derive(Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the kubelet's query parameters; negative counts are refused as kube-apiserver's
    /// validation refuses them.
    pub fn parse(q: &Query) -> Result<Self, BadParam> {
        let count = |name: &str, min: i64| -> Result<Option<u64>, BadParam> {
            match q.int(name)? {
                None => Ok(None),
                Some(n) if n >= min => Ok(u64::try_from(n).ok()),
                Some(n) => Err(BadParam {
                    name: name.to_owned(),
                    value: n.to_string(),
                }),
            }
        };
        // Checked only for validity; see the module docs.
        q.flag("timestamps")?;
        q.int("sinceSeconds")?;
        Ok(Self {
            follow: q.flag("follow")?,
            previous: q.flag("previous")?,
            tail_lines: count("tailLines", 0)?,
            limit_bytes: count("limitBytes", 1)?,
        })
    }
}

/// Answers a log request for container `container` of the pod with uid `uid`.
pub async fn serve(
    state_dir: &Path,
    uid: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Response<Body> {
    let opts = match LogOptions::parse(&Query::parse(query)) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let path = if opts.previous {
        layout::previous_log_path(state_dir, uid, container)
    } else {
        layout::log_path(state_dir, uid, container)
    };
    let start = match tail_start_of(path.clone(), opts.tail_lines).await {
        Ok(s) => s,
        // The kubelet's words for these two cases.
        Err(_) if opts.previous => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                ),
            );
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    // A previous run is over: there is nothing to follow.
    let follow = (opts.follow && !opts.previous).then(|| Running {
        state_dir: state_dir.to_owned(),
        uid: uid.to_owned(),
        container: container.to_owned(),
    });
    tokio::spawn(copy(path, start, opts.limit_bytes, follow, tx));
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn tail_start_of(path: PathBuf, lines: Option<u64>) -> std::io::Result<u64> {
    let task = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(path)?;
        match lines {
            Some(n) => tail_start(&mut f, n),
            None => Ok(0),
        }
    });
    task.await.map_err(std::io::Error::other)?
}

/// Where the last `n` lines of `r` start. A newline as the last byte ends the last line
/// rather than starting an empty one.
pub fn tail_start<R: Read + Seek>(r: &mut R, n: u64) -> std::io::Result<u64> {
    let len = r.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; 8192];
    let (mut pos, mut seen) = (len, 0u64);
    while pos > 0 {
        let take = pos.min(buf.len() as u64);
        pos -= take;
        let chunk = &mut buf[..take as usize];
        r.seek(SeekFrom::Start(pos))?;
        r.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            let at = pos + i as u64;
            if *b == b'\n' && at + 1 != len {
                seen += 1;
                if seen == n {
                    return Ok(at + 1);
                }
            }
        }
    }
    Ok(0)
}

/// The container a followed log belongs to, checked for still running.
struct Running {
    state_dir: PathBuf,
    uid: String,
    container: String,
}

/// Sends the file from `start` to `tx`; with `follow` keeps sending what is appended until
/// the container's process is gone, then drains once more.
async fn copy(
    path: PathBuf,
    start: u64,
    limit: Option<u64>,
    follow: Option<Running>,
    tx: mpsc::Sender<Bytes>,
) {
    let Ok(mut f) = tokio::fs::File::open(&path).await else {
        return;
    };
    if f.seek(SeekFrom::Start(start)).await.is_err() {
        return;
    }
    let mut left = limit.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; 32 * 1024];
    let mut last_pass = false;
    loop {
        let want = left.min(buf.len() as u64) as usize;
        if want == 0 {
            return;
        }
        let n = match f.read(&mut buf[..want]).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n > 0 {
            left -= n as u64;
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return;
            }
            continue;
        }
        let Some(c) = &follow else { return };
        if last_pass {
            return;
        }
        if container_pid(&c.state_dir, &c.uid, &c.container).is_none() {
            // Output written just before the process ended is still to be read.
            last_pass = true;
            continue;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn tail(text: &str, n: u64) -> String {
        let start = tail_start(&mut Cursor::new(text.as_bytes()), n).expect("in memory");
        text[start as usize..].to_owned()
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 1), "c");
        assert_eq!(tail("a\nb\nc\n", 9), "a\nb\nc\n");
        assert_eq!(tail("a\nb\n", 0), "");
        assert_eq!(tail("", 3), "");
        let long = "x".repeat(20000) + "\n" + &"y".repeat(9000) + "\n";
        assert_eq!(tail(&long, 1), "y".repeat(9000) + "\n");
    }

    #[test]
    fn options() {
        let check = |q: &str| LogOptions::parse(&Query::parse(q)).map_err(|e| e.to_string());
        assert_eq!(check(""), Ok(LogOptions::default()));
        assert_eq!(
            check(
                "follow=true&previous=1&tailLines=3&limitBytes=10&timestamps=true&sinceSeconds=5"
            ),
            Ok(LogOptions {
                follow: true,
                previous: true,
                tail_lines: Some(3),
                limit_bytes: Some(10)
            })
        );
        assert!(check("tailLines=-1").is_err());
        assert!(check("limitBytes=0").is_err());
        assert!(check("follow=maybe").is_err());
        assert!(check("sinceSeconds=x").is_err());
    }

    proptest! {
        /// The tail is a suffix of at most n lines, and the longest such suffix.
        #[test]
        fn tail_is_the_last_lines(lines in proptest::collection::vec("[a-z]{0,5}", 0..20), end in any::<bool>(), n in 0u64..25) {
            let mut text = lines.join("\n");
            if end && !text.is_empty() { text.push('\n'); }
            let got = tail(&text, n);
            prop_assert!(text.ends_with(&got));
            let body = got.strip_suffix('\n').unwrap_or(&got);
            let count = if got.is_empty() { 0 } else { body.split('\n').count() as u64 };
            prop_assert!(count <= n);
            if got.len() < text.len() { prop_assert_eq!(count, n); }
        }
    }
}
