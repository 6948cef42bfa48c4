//! The proxy against a backend on 127.0.0.1 reached through an ExternalName Service: redirects
//! and HTML links come back under the `/proxy/` prefix, other answers pass through, upgraded
//! connections are spliced.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fuzz::{send, server_with_a_configmap};

/// Answers each connection once: `/go` redirects, `/page` is HTML, `Upgrade: echo` switches
/// to echoing bytes, anything else echoes the request head as text.
async fn backend() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                if head.to_ascii_lowercase().contains("upgrade: echo\r\n") {
                    let switched = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
                    let _ = s.write_all(switched.as_bytes()).await;
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                }
                let (ct, extra, body) = if head.starts_with("GET /go ") {
                    ("text/plain", "Location: /login?next=1\r\n", String::new())
                } else if head.starts_with("GET /page ") {
                    (
                        "text/html; charset=utf-8",
                        "",
                        r#"<a href="/x">x</a><img src="rel.png">"#.to_owned(),
                    )
                } else {
                    ("text/plain", "", head)
                };
                let status = if extra.is_empty() {
                    "200 OK"
                } else {
                    "302 Found"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\n{extra}Access-Control-Allow-Origin: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[test]
fn redirects_and_links_are_rewritten_under_the_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, srv) = server_with_a_configmap(dir.path());
    let port = rt.block_on(backend());
    let svc = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"ext"}},"spec":{{"type":"ExternalName","externalName":"localhost","ports":[{{"name":"web","port":{port}}}]}}}}"#
    );
    let created = rt.block_on(send(
        &srv,
        Method::POST,
        "/api/v1/namespaces/default/services",
        "application/json",
        svc.as_bytes(),
    ));
    assert_eq!(created, StatusCode::CREATED);
    let prefix = "/api/v1/namespaces/default/services/ext:web/proxy";
    let get = |path: &str| {
        let uri = format!("{prefix}{path}");
        let t = crate::request::parse(&uri)
            .expect("path")
            .expect("a resource path");
        let req = axum::http::Request::get(&uri)
            .header(header::HOST, "localhost:8001")
            .header(header::AUTHORIZATION, "Bearer secret")
            .body(Body::empty())
            .expect("request");
        rt.block_on(async {
            let resp = super::handle(srv.clone(), t, req).await.expect("proxied");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            (parts, String::from_utf8_lossy(&body).into_owned())
        })
    };

    let (parts, _) = get("/go");
    assert_eq!(parts.status, StatusCode::FOUND);
    assert_eq!(
        parts.headers[header::LOCATION],
        format!("{prefix}/login?next=1").as_str()
    );

    let (parts, body) = get("/page");
    assert_eq!(
        body,
        format!(r#"<a href="{prefix}/x">x</a><img src="rel.png">"#)
    );
    assert_eq!(
        parts.headers[header::CONTENT_LENGTH],
        body.len().to_string().as_str()
    );
    assert!(!parts.headers.contains_key("access-control-allow-origin"));

    let (_, head) = get("/echo/?q=1");
    assert!(head.starts_with("GET /echo/?q=1 HTTP/1.1\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("host: localhost:8001\r\n"), "{head}");
    assert!(
        lower.contains(&format!(
            "x-forwarded-uri: {}/echo/\r\n",
            prefix.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(!lower.contains("authorization"), "{head}");

    let (parts, _) = get("");
    assert_eq!(parts.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        parts.headers[header::LOCATION],
        format!("{prefix}/").as_str()
    );
}

#[test]
fn upgraded_connections_are_spliced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, srv) = server_with_a_configmap(dir.path());
    rt.block_on(async {
        let port = backend().await;
        let svc = format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"ext"}},"spec":{{"type":"ExternalName","externalName":"localhost","ports":[{{"port":{port}}}]}}}}"#
        );
        let created = send(
            &srv,
            Method::POST,
            "/api/v1/namespaces/default/services",
            "application/json",
            svc.as_bytes(),
        )
        .await;
        assert_eq!(created, StatusCode::CREATED);
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let srv = srv.clone();
            async move {
                use axum::response::IntoResponse;
                let t = crate::request::parse(req.uri().path())
                    .expect("path")
                    .expect("a resource path");
                match super::handle(srv, t, req).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                }
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(
            b"GET /api/v1/namespaces/default/services/ext/proxy/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        c.write_all(b"ping").await.expect("write");
        let mut echoed = [0u8; 4];
        c.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(&echoed, b"ping");
    });
}
