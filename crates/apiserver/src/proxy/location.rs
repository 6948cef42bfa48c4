//! Where a proxied request goes and how answers point back: the `[scheme:]name[:port]` id,
//! the joined backend path, and redirect or link targets rewritten under the `/proxy/` prefix.

/// Splits `name`, `name:port` or `scheme:name:port` (scheme `http`, `https` or empty), as
/// kube-apiserver's `SplitSchemeNamePort`; `None` when malformed or the name is empty.
pub(crate) fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// `p` cleaned as Go's `path.Join` cleans it (`.` and `..` resolved, repeated slashes
/// collapsed), keeping a trailing slash; `""` stays `""`.
pub(crate) fn clean_join(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    let mut segs: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let rooted = p.starts_with('/');
    let mut out = if rooted {
        format!("/{}", segs.join("/"))
    } else {
        segs.join("/")
    };
    if out.is_empty() {
        out.push('.');
    }
    if p.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// A URL split into its parts, as far as rewriting needs them.
struct Url<'a> {
    /// `"https:"`, or empty.
    scheme: &'a str,
    /// `Some(host)` when the URL has an authority (`//host`).
    host: Option<&'a str>,
    path: &'a str,
    /// `?query` and `#fragment`, as written.
    rest: &'a str,
}

fn parse(url: &str) -> Url<'_> {
    let scheme_len = url
        .find(':')
        .filter(|&i| {
            i > 0
                && url[..i].starts_with(|c: char| c.is_ascii_alphabetic())
                && url[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .map_or(0, |i| i + 1);
    let (scheme, after) = url.split_at(scheme_len);
    let (host, after) = match after.strip_prefix("//") {
        Some(a) => {
            let end = a.find(['/', '?', '#']).unwrap_or(a.len());
            (Some(&a[..end]), &a[end..])
        }
        None => (None, after),
    };
    let end = after.find(['?', '#']).unwrap_or(after.len());
    Url {
        scheme,
        host,
        path: &after[..end],
        rest: &after[end..],
    }
}

/// A backend's redirect or link target as the client must follow it, as kube-apiserver's
/// proxy transport rewrites them: relative targets and other hosts are left alone; absolute
/// paths on the backend (or on the host the client asked for) move under `prefix`.
pub(crate) fn rewrite_url(
    target: &str,
    backend_host: &str,
    request_host: &str,
    prefix: &str,
) -> String {
    let u = parse(target);
    let host = u.host.unwrap_or("");
    let other_host = !host.is_empty() && host != backend_host && host != request_host;
    if other_host || !u.path.starts_with('/') {
        return target.to_owned();
    }
    // The API server does not know its own scheme and host as the client sees them, so the
    // rewritten target is a path; one already on the client's host keeps them.
    let origin = if u.host.is_some() && host == request_host {
        format!("{}//{host}", u.scheme)
    } else {
        String::new()
    };
    let path = if u.path.starts_with(prefix) {
        u.path.to_owned()
    } else {
        let mut p = clean_join(&format!("{prefix}/{}", u.path));
        if u.path.ends_with('/') && !p.ends_with('/') {
            p.push('/');
        }
        p
    };
    format!("{origin}{path}{}", u.rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for (id, expected) in [
            ("web", Some(("", "web", ""))),
            ("web:http", Some(("", "web", "http"))),
            ("web:80", Some(("", "web", "80"))),
            ("https:web:443", Some(("https", "web", "443"))),
            ("http:web:", Some(("http", "web", ""))),
            ("ftp:web:21", None),
            (":80", None),
            ("a:b:c:d", None),
        ] {
            assert_eq!(split_scheme_name_port(id), expected, "{id}");
        }
    }

    #[test]
    fn paths() {
        for (p, expected) in [
            ("", ""),
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a//b//", "/a/b/"),
            ("/a/./b/../c", "/a/c"),
            ("/../..", "/"),
            ("/a/..", "/"),
        ] {
            assert_eq!(clean_join(p), expected, "{p:?}");
        }
    }

    #[test]
    fn rewrites() {
        let prefix = "/api/v1/namespaces/default/services/web/proxy";
        let check = |target: &str, expected: &str| {
            assert_eq!(
                rewrite_url(target, "10.244.0.5:8080", "localhost:8001", prefix),
                expected,
                "{target}"
            );
        };
        check("/login", &format!("{prefix}/login"));
        check(
            "/login/?next=/x#top",
            &format!("{prefix}/login/?next=/x#top"),
        );
        check("/", &format!("{prefix}/"));
        check("http://10.244.0.5:8080/a", &format!("{prefix}/a"));
        check(
            "http://localhost:8001/a",
            &format!("http://localhost:8001{prefix}/a"),
        );
        check(&format!("{prefix}/already"), &format!("{prefix}/already"));
        check("relative/path", "relative/path");
        check("https://example.com/x", "https://example.com/x");
        check("mailto:someone@example.com", "mailto:someone@example.com");
        check("#anchor", "#anchor");
    }
}
