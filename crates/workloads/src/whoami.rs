//! whoami, as traefik/whoami answers: `/health` is 200, `/api` is the same facts as JSON, and
//! every other path gets the host name, the host's addresses, the client's address and the
//! request itself back as text.
//!
//! Not implemented: `/data`, `/echo` (WebSocket), `/bench`, `?wait=`, `?env=`, `--name`, TLS.
//! berth's own addition: a request on any path with `Upgrade: echo` (and `Connection: upgrade`)
//! switches protocols and gets every byte it sends back, so tests can check that a proxy
//! splices upgraded connections (as a WebSocket would need) without a WebSocket library.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::host;
use crate::server::{Body, text};

/// Request bodies are echoed back; past this size the request is refused instead.
const MAX_BODY: usize = 1 << 20;

/// Headers the request line block writes itself (or, like Go's `Request.Write`, leaves out).
const WRITTEN_APART: [header::HeaderName; 5] = [
    header::HOST,
    header::USER_AGENT,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TRAILER,
];

pub(crate) async fn handle(mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if wants_echo(&req) {
        return echo(&mut req);
    }
    match req.uri().path() {
        // GET only: upstream's POST (which changes the status later GETs get) is not offered.
        "/health" => text(StatusCode::OK, ""),
        "/api" => api(&req, peer),
        _ => {
            let (parts, body) = req.into_parts();
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(body) => {
                    let req = Request::from_parts(parts, body.to_bytes());
                    text(
                        StatusCode::OK,
                        report(&host::hostname(), &host::addresses(), peer, &req),
                    )
                }
                Err(error) => text(StatusCode::PAYLOAD_TOO_LARGE, format!("{error}\n")),
            }
        }
    }
}

/// Whether `req` asks to switch to berth's `echo` protocol (RFC 9110 7.8 upgrade).
fn wants_echo<B>(req: &Request<B>) -> bool {
    let upgrade = req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let echo = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"echo"));
    upgrade && echo && req.version() == hyper::Version::HTTP_11
}

/// `101 Switching Protocols` to `echo`; once hyper hands over the connection, a task copies
/// what it reads back until the client closes.
fn echo(req: &mut Request<Incoming>) -> Response<Body> {
    let upgraded = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => {
                let (mut r, mut w) = tokio::io::split(hyper_util::rt::TokioIo::new(io));
                if let Err(error) = tokio::io::copy(&mut r, &mut w).await {
                    tracing::debug!(%error, "echo connection ended");
                }
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("echo"));
    response
}

/// The text answer: `Hostname:`, `IP:` lines and `RemoteAddr:` end in `\n`; the request is
/// then written as Go's `Request.Write` does (CRLF lines, `HTTP/1.1`, Host and User-Agent
/// first, other headers sorted by canonical name, a body length instead of chunking).
fn report(hostname: &str, ips: &[IpAddr], peer: SocketAddr, req: &Request<Bytes>) -> Vec<u8> {
    let mut out = format!("Hostname: {hostname}\n");
    for ip in ips {
        out.push_str(&format!("IP: {ip}\n"));
    }
    out.push_str(&format!("RemoteAddr: {}\n", remote_addr(peer)));
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.push_str(&format!("{} {target} HTTP/1.1\r\n", req.method()));
    let mut out = out.into_bytes();
    push_header(&mut out, "Host", host_of(req).as_bytes());
    for ua in req.headers().get_all(header::USER_AGENT) {
        push_header(&mut out, "User-Agent", ua.as_bytes());
    }
    if !req.body().is_empty() {
        push_header(
            &mut out,
            "Content-Length",
            req.body().len().to_string().as_bytes(),
        );
    }
    for (name, values) in sorted_headers(req.headers()) {
        for value in values {
            push_header(&mut out, &name, value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body());
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request's host as Go's `Request.Host` holds it: an absolute-form target's authority,
/// else the Host header (empty when there is none).
fn host_of<B>(req: &Request<B>) -> String {
    if let Some(authority) = req.uri().authority() {
        return authority.to_string();
    }
    let host = req.headers().get(header::HOST);
    host.map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Headers other than [`WRITTEN_APART`], keyed by canonical name (hyper keeps names lower
/// case; Go prints `X-Forwarded-For`), in sorted order as Go's `Header.Write` does.
fn sorted_headers(headers: &HeaderMap) -> BTreeMap<String, Vec<&HeaderValue>> {
    let mut sorted: BTreeMap<String, Vec<&HeaderValue>> = BTreeMap::new();
    for (name, value) in headers {
        if !WRITTEN_APART.contains(name) {
            sorted
                .entry(canonical(name.as_str()))
                .or_default()
                .push(value);
        }
    }
    sorted
}

/// Go's `CanonicalMIMEHeaderKey`: upper case at the start and after each `-`.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The peer as Go prints `RemoteAddr`: an IPv4 client of a dual-stack socket shows as IPv4.
fn remote_addr(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => peer,
        },
        SocketAddr::V4(_) => peer,
    }
}

/// `/api`: the same facts as JSON, with upstream's field names.
fn api<B>(req: &Request<B>, peer: SocketAddr) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (name, values) in sorted_headers(req.headers()) {
        let values = values
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into());
        headers.insert(name, serde_json::Value::Array(values.collect()));
    }
    let ips: Vec<String> = host::addresses().iter().map(ToString::to_string).collect();
    let data = serde_json::json!({
        "hostname": host::hostname(),
        "ip": ips,
        "headers": headers,
        "url": req.uri().path_and_query().map_or("/", |p| p.as_str()),
        "host": host_of(req),
        "method": req.method().as_str(),
        "remoteAddr": remote_addr(peer).to_string(),
    });
    let mut body = data.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Builtin;
    use crate::server::tests::{Server, request};

    #[test]
    fn canonical_names_match_go() {
        for (name, expected) in [
            ("x-custom", "X-Custom"),
            ("accept", "Accept"),
            ("dnt", "Dnt"),
            ("x-forwarded-for", "X-Forwarded-For"),
            ("www-authenticate", "Www-Authenticate"),
        ] {
            assert_eq!(canonical(name), expected);
        }
    }

    #[test]
    fn report_is_laid_out_like_traefik_whoami() {
        let req = Request::get("/a?b=c")
            .header("host", "svc:8080")
            .header("user-agent", "curl/8")
            .header("x-b", "2")
            .header("accept", "*/*")
            .header("x-b", "1")
            .body(Bytes::new())
            .expect("test request");
        let ips = ["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
        let peer = "[::ffff:10.0.0.9]:4000".parse().expect("peer");
        let out = report("pod-1", &ips, peer, &req);
        let expected = "Hostname: pod-1\nIP: 127.0.0.1\nIP: ::1\nRemoteAddr: 10.0.0.9:4000\n\
            GET /a?b=c HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\
            X-B: 2\r\nX-B: 1\r\n\r\n";
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }

    #[tokio::test]
    async fn echoes_after_an_upgrade_to_echo() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = Server::start(Builtin::Whoami).await;
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .expect("send");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.expect("read"), 1, "closed: {head:?}");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        for msg in [&b"hello"[..], b"\x00\xffbinary"] {
            s.write_all(msg).await.expect("send");
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got).await.expect("echo");
            assert_eq!(got, msg);
        }
        // Without the upgrade, the same path is the usual report.
        let reply = request(
            server.addr,
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: echo\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn answers_over_http() {
        let server = Server::start(Builtin::Whoami).await;
        let reply = request(
            server.addr,
            "GET /some/path?q=1 HTTP/1.1\r\nHost: example\r\nX-Custom-Thing: hello\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        for needle in [
            "Hostname: ",
            "IP: 127.0.0.1\n",
            "RemoteAddr: 127.0.0.1:",
            "GET /some/path?q=1 HTTP/1.1\r\n",
            "Host: example\r\n",
            "X-Custom-Thing: hello\r\n",
        ] {
            assert!(reply.body.contains(needle), "no {needle:?} in {reply:?}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn echoes_the_body_and_serves_health_and_api() {
        let server = Server::start(Builtin::Whoami).await;
        let reply = request(
            server.addr,
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(
            reply
                .body
                .ends_with("Content-Length: 5\r\nConnection: close\r\n\r\nhello")
        );

        let reply = request(
            server.addr,
            "GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!((reply.status, reply.body.as_str()), (200, ""));

        let reply = request(
            server.addr,
            "GET /api HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
        assert_eq!(json["host"], "h");
        assert_eq!(json["url"], "/api");
        assert!(
            json["ip"]
                .as_array()
                .is_some_and(|ips| ips.contains(&"127.0.0.1".into()))
        );
        server.stop().await;
    }
}
