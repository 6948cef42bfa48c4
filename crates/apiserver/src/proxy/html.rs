//! Links in proxied HTML pages rewritten under the `/proxy/` prefix, for the tags and
//! attributes kube-apiserver's proxy transport rewrites; gzip and deflate bodies are decoded
//! and encoded again, other encodings pass through untouched.

use std::io::{Read, Write};

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use http_body_util::BodyExt;

use crate::error::ApiError;

/// The attributes holding URLs, per tag (lower case), that are rewritten.
fn url_attributes(tag: &str) -> &'static [&'static str] {
    match tag {
        "a" | "area" | "base" | "link" => &["href"],
        "applet" => &["codebase"],
        "audio" | "embed" | "script" | "source" | "track" => &["src"],
        "blockquote" | "del" | "ins" | "q" => &["cite"],
        "body" => &["background"],
        "button" => &["formaction"],
        "command" => &["icon"],
        "form" => &["action"],
        "frame" | "iframe" => &["longdesc", "src"],
        "head" => &["profile"],
        "html" => &["manifest"],
        "img" => &["longdesc", "src", "usemap"],
        "input" => &["src", "usemap", "formaction"],
        "object" => &["classid", "codebase", "data", "usemap"],
        "video" => &["poster", "src"],
        _ => &[],
    }
}

/// Reads the HTML answer (at most `limit` bytes), rewrites its links with `rewrite` and
/// answers with the new body and length.
pub(crate) async fn rewrite_response(
    mut parts: axum::http::response::Parts,
    body: hyper::body::Incoming,
    limit: usize,
    rewrite: &(dyn Fn(&str) -> String + Sync),
) -> Result<Response, ApiError> {
    let raw = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("error trying to reach service: {e}")))?
        .to_bytes();
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let out = match encoding.as_str() {
        "" | "identity" => Some(rewrite_html(&raw, rewrite)),
        "gzip" => decode(flate2::read::GzDecoder::new(&raw[..]))
            .map(|html| rewrite_html(&html, rewrite))
            .and_then(|html| {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&html).ok()?;
                e.finish().ok()
            }),
        "deflate" => decode(flate2::read::DeflateDecoder::new(&raw[..]))
            .map(|html| rewrite_html(&html, rewrite))
            .and_then(|html| {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&html).ok()?;
                e.finish().ok()
            }),
        _ => None,
    };
    let out = out.unwrap_or_else(|| raw.to_vec());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, Body::from(out)))
}

fn decode(mut r: impl Read) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).ok()?;
    Some(out)
}

/// `html` with the URL attributes of its start tags passed through `rewrite`. Text, comments,
/// and the raw text of `script` and `style` elements are copied as they are.
pub(crate) fn rewrite_html(html: &[u8], rewrite: &dyn Fn(&str) -> String) -> Vec<u8> {
    let mut out = Vec::with_capacity(html.len());
    let mut i = 0;
    while i < html.len() {
        let Some(lt) = find(html, i, b"<") else {
            out.extend_from_slice(&html[i..]);
            break;
        };
        out.extend_from_slice(&html[i..lt]);
        i = lt;
        if html[i..].starts_with(b"<!--") {
            let end = find(html, i + 4, b"-->").map_or(html.len(), |e| e + 3);
            out.extend_from_slice(&html[i..end]);
            i = end;
            continue;
        }
        let name_len = html[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        if name_len == 0 || !html[i + 1].is_ascii_alphabetic() {
            // An end tag, a doctype or a stray `<`: copied up to its `>`.
            let end = find(html, i + 1, b">").map_or(html.len(), |e| e + 1);
            let end = if name_len == 0 && !matches!(html.get(i + 1), Some(b'/' | b'!' | b'?')) {
                i + 1
            } else {
                end
            };
            out.extend_from_slice(&html[i..end]);
            i = end;
            continue;
        }
        let tag = String::from_utf8_lossy(&html[i + 1..i + 1 + name_len]).to_ascii_lowercase();
        out.extend_from_slice(&html[i..i + 1 + name_len]);
        i = start_tag(
            html,
            i + 1 + name_len,
            url_attributes(&tag),
            rewrite,
            &mut out,
        );
        if matches!(tag.as_str(), "script" | "style") {
            let close = format!("</{tag}");
            let end = find_ignore_case(html, i, close.as_bytes()).unwrap_or(html.len());
            out.extend_from_slice(&html[i..end]);
            i = end;
        }
    }
    out
}

/// Copies a start tag's attributes from `i` through its `>`, rewriting the values of `attrs`;
/// returns the index after the tag.
fn start_tag(
    html: &[u8],
    mut i: usize,
    attrs: &[&str],
    rewrite: &dyn Fn(&str) -> String,
    out: &mut Vec<u8>,
) -> usize {
    loop {
        let ws = html[i..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        out.extend_from_slice(&html[i..i + ws]);
        i += ws;
        match html.get(i) {
            None => return i,
            Some(b'>') => {
                out.push(b'>');
                return i + 1;
            }
            Some(b'/') => {
                out.push(b'/');
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        let name_len = html[i..]
            .iter()
            .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b'=' | b'>' | b'/'))
            .count()
            .max(1);
        let name = String::from_utf8_lossy(&html[i..i + name_len]).to_ascii_lowercase();
        out.extend_from_slice(&html[i..i + name_len]);
        i += name_len;
        let ws = html[i..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        if html.get(i + ws) != Some(&b'=') {
            continue;
        }
        let after_eq = i + ws + 1;
        let ws2 = html[after_eq..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        let start = after_eq + ws2;
        let (value, end) = match html.get(start) {
            Some(q @ (b'"' | b'\'')) => {
                let close = find(html, start + 1, &[*q]).unwrap_or(html.len());
                (&html[start + 1..close], (close + 1).min(html.len()))
            }
            _ => {
                let len = html[start..]
                    .iter()
                    .take_while(|c| !c.is_ascii_whitespace() && **c != b'>')
                    .count();
                (&html[start..start + len], start + len)
            }
        };
        let rewritten = attrs
            .contains(&name.as_str())
            .then(|| std::str::from_utf8(value).ok())
            .flatten()
            .map(|v| (v, rewrite(&unescape(v))))
            .filter(|(v, new)| unescape(v) != *new);
        match rewritten {
            Some((_, new)) => {
                out.push(b'=');
                out.push(b'"');
                out.extend_from_slice(escape(&new).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(&html[i..end]),
        }
        i = end;
    }
}

/// The entities a URL attribute commonly carries.
fn unescape(v: &str) -> String {
    v.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn escape(v: &str) -> String {
    v.replace('&', "&amp;").replace('"', "&#34;")
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn find_ignore_case(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(html: &str, expected: &str) {
        let rewrite = |u: &str| {
            if u.starts_with('/') {
                format!("/p{u}")
            } else {
                u.to_owned()
            }
        };
        let got = rewrite_html(html.as_bytes(), &rewrite);
        assert_eq!(String::from_utf8_lossy(&got), expected, "{html}");
    }

    #[test]
    fn links() {
        check(r#"<a href="/x">x</a>"#, r#"<a href="/p/x">x</a>"#);
        check(r#"<A HREF='/x'>x</A>"#, r#"<A HREF="/p/x">x</A>"#);
        check(r#"<img alt=a src=/i.png>"#, r#"<img alt=a src="/p/i.png">"#);
        check(r#"<a href="rel">r</a>"#, r#"<a href="rel">r</a>"#);
        check(r#"<div href="/x">"#, r#"<div href="/x">"#);
        check(
            r#"<a href="/x?a=1&amp;b=2">"#,
            r#"<a href="/p/x?a=1&amp;b=2">"#,
        );
        check(
            r#"<!-- <a href="/x"> --><br/>"#,
            r#"<!-- <a href="/x"> --><br/>"#,
        );
        check(
            r#"<script src="/s.js">var a = '<a href="/x">';</script>"#,
            r#"<script src="/p/s.js">var a = '<a href="/x">';</script>"#,
        );
        check("1 < 2 <!DOCTYPE html>", "1 < 2 <!DOCTYPE html>");
        check(
            r#"<form action="/go" method=post>"#,
            r#"<form action="/p/go" method=post>"#,
        );
        check("<a href", "<a href");
        check("<a href=", "<a href=");
        check("<", "<");
    }
}
