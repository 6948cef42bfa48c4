//! number-crunch, the service of the "What is a Service" tutorial (cloudqubes/number-crunch):
//! `/square-root/N` and `/cube-root/N` answer `{"InputNumber":N,"SquareRoot":R}` (or
//! `"CubeRoot"`) as JSON with numbers written as Go's encoding/json writes them.
//!
//! Where upstream panics (a number that does not parse) or sends an empty body (a result JSON
//! cannot hold: NaN, infinity), this answers 400 with the reason; other paths get Go's 404.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::server::{Body, text};

pub(crate) fn handle<B>(req: &Request<B>) -> Response<Body> {
    match route(req.uri().path()) {
        Ok(json) => {
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err((status, message)) => text(status, message),
    }
}

/// The JSON answer for a path, or the status and message of a refusal.
fn route(path: &str) -> Result<String, (StatusCode, String)> {
    if let Some(input) = path.strip_prefix("/square-root/") {
        answer(input, "SquareRoot", f64::sqrt)
    } else if let Some(input) = path.strip_prefix("/cube-root/") {
        answer(input, "CubeRoot", f64::cbrt)
    } else {
        Err((StatusCode::NOT_FOUND, "404 page not found\n".to_owned()))
    }
}

fn answer(input: &str, field: &str, root: fn(f64) -> f64) -> Result<String, (StatusCode, String)> {
    let bad = |message: String| Err((StatusCode::BAD_REQUEST, message));
    let number = match input.parse::<f64>() {
        Ok(n) if n.is_finite() => n,
        Ok(_) => return bad(format!("{input:?} is not a finite number\n")),
        Err(error) => return bad(format!("{input:?} is not a number: {error}\n")),
    };
    let result = root(number);
    if !result.is_finite() {
        return bad(format!(
            "{field} of {} is not a real number\n",
            go_float(number)
        ));
    }
    let (number, result) = (go_float(number), go_float(result));
    Ok(format!(
        "{{\"InputNumber\":{number},\"{field}\":{result}}}\n"
    ))
}

/// A finite f64 as Go's encoding/json writes it: shortest round-trip digits, plain notation
/// for 1e-6 <= |x| < 1e21, else exponent notation with a signed exponent (`1e-7`, `1e+21`).
/// Not serde_json, which writes `2.0` where Go writes `2`.
fn go_float(x: f64) -> String {
    let abs = x.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return x.to_string();
    }
    let s = format!("{x:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Builtin;
    use crate::server::tests::{Server, request};

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (x, expected) in [
            (4.0, "4"),
            (2.0, "2"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1.5, "1.5"),
            (std::f64::consts::SQRT_2, "1.4142135623730951"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (-2.5e300, "-2.5e+300"),
        ] {
            assert_eq!(go_float(x), expected, "{x}");
        }
    }

    fn check(path: &str, status: u16, body: &str) {
        let (got_status, got) = match route(path) {
            Ok(json) => (200, json),
            Err((status, message)) => (status.as_u16(), message),
        };
        assert_eq!(got_status, status, "{path}");
        assert!(
            got.starts_with(body),
            "{path}: {got:?} does not start with {body:?}"
        );
    }

    #[test]
    fn routes() {
        for (path, status, body) in [
            (
                "/square-root/16",
                200,
                "{\"InputNumber\":16,\"SquareRoot\":4}\n",
            ),
            (
                "/square-root/4",
                200,
                "{\"InputNumber\":4,\"SquareRoot\":2}\n",
            ),
            (
                "/square-root/2.25",
                200,
                "{\"InputNumber\":2.25,\"SquareRoot\":1.5}\n",
            ),
            (
                "/cube-root/-27",
                200,
                "{\"InputNumber\":-27,\"CubeRoot\":-3}\n",
            ),
            ("/square-root/abc", 400, "\"abc\" is not a number"),
            ("/square-root/", 400, "\"\" is not a number"),
            (
                "/square-root/-4",
                400,
                "SquareRoot of -4 is not a real number",
            ),
            ("/square-root/inf", 400, "\"inf\" is not a finite number"),
            ("/square-root/4/5", 400, "\"4/5\" is not a number"),
            ("/square-root", 404, "404 page not found"),
            ("/x", 404, "404 page not found"),
            ("/", 404, "404 page not found"),
        ] {
            check(path, status, body);
        }
    }

    #[tokio::test]
    async fn answers_over_http() {
        let server = Server::start(Builtin::NumberCrunch).await;
        for (path, status, body) in [
            (
                "/square-root/16",
                200,
                "{\"InputNumber\":16,\"SquareRoot\":4}\n",
            ),
            (
                "/square-root/abc",
                400,
                "\"abc\" is not a number: invalid float literal\n",
            ),
            ("/x", 404, "404 page not found\n"),
        ] {
            let raw = format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            let reply = request(server.addr, &raw).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (status, body),
                "{path}"
            );
        }
        server.stop().await;
    }
}
