//! Turning a request line into what it addresses: a resource collection, one object, one of its
//! subresources, or a non-resource path, following kube-apiserver's URL layout.

use berth_api::resources::{self, Resource, Subresource};
use serde::Deserialize;

/// A request for a resource, decoded from the URL path.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub resource: &'static Resource,
    /// `None` for cluster-scoped resources and for all-namespace lists and watches.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
    /// The legacy `/api/v1/watch/...` form, which means `?watch=true`.
    pub watch_path: bool,
}

/// What a path names, when it names a resource. `Ok(None)`: not a resource path at all.
#[derive(Debug, PartialEq)]
pub enum PathError {
    /// A well-formed path to something berth does not serve.
    NotFound,
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` resource paths.
pub fn parse(path: &str) -> Result<Option<Target>, PathError> {
    // Segments are percent-decoded, as Go's router sees them (`kube%2dsystem` is kube-system).
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(None),
    };
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        // `namespaces/{name}/status|finalize` addresses the namespace object itself.
        ["namespaces", name, sub] if matches!(*sub, "status" | "finalize") => {
            return target(
                group,
                version,
                "namespaces",
                None,
                Some(name),
                Some(sub),
                watch_path,
            );
        }
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    match rest {
        [plural] => target(group, version, plural, namespace, None, None, watch_path),
        [plural, name] => target(
            group,
            version,
            plural,
            namespace,
            Some(name),
            None,
            watch_path,
        ),
        [plural, name, sub] => target(
            group,
            version,
            plural,
            namespace,
            Some(name),
            Some(sub),
            watch_path,
        ),
        // pods/{name}/proxy/{path...}: the rest is the proxied path.
        [plural, name, "proxy", ..] => target(
            group,
            version,
            plural,
            namespace,
            Some(name),
            Some("proxy"),
            watch_path,
        ),
        _ => Err(PathError::NotFound),
    }
}

fn target(
    group: &str,
    version: &str,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
    watch_path: bool,
) -> Result<Option<Target>, PathError> {
    let resource = resources::by_plural(group, version, plural).ok_or(PathError::NotFound)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(PathError::NotFound);
    }
    let subresource = match sub {
        None => None,
        Some(s) => Some(
            Subresource::parse(s)
                .filter(|s| resource.has_subresource(*s))
                .ok_or(PathError::NotFound)?,
        ),
    };
    if name.is_some_and(str::is_empty) {
        return Err(PathError::NotFound);
    }
    Ok(Some(Target {
        resource,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource,
        watch_path,
    }))
}

/// Query parameters kube-apiserver accepts on resource requests (those berth acts on).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// Zero or less means no limit, as upstream takes it.
    pub limit: Option<i64>,
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
    pub watch: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: Option<String>,
    pub send_initial_events: Option<String>,
    pub dry_run: Option<String>,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub force: Option<String>,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub include_object: Option<String>,
    pub orphan_dependents: Option<String>,
}

/// Kubernetes accepts `true`, `1` and friends for boolean query parameters.
pub fn flag(v: &Option<String>) -> bool {
    matches!(
        v.as_deref(),
        Some("true" | "1" | "True" | "TRUE" | "t" | "T")
    )
}

impl Params {
    /// Parses and checks the query as kube-apiserver does before acting on it: an empty
    /// `continue` is no continue; malformed resourceVersions and unknown
    /// `resourceVersionMatch` or `fieldValidation` values are refused.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut p = serde_urlencoded_from(query.unwrap_or(""))?;
        if p.continue_.as_deref() == Some("") {
            p.continue_ = None;
        }
        let rv = p.resource_version.as_deref().unwrap_or("");
        if !rv.is_empty() && rv.parse::<u64>().is_err() {
            return Err(format!(
                "invalid resource version: {}",
                berth_api::error::go_quote(rv)
            ));
        }
        match p.resource_version_match.as_deref() {
            None | Some("") => {}
            Some("Exact" | "NotOlderThan") if rv.is_empty() => {
                return Err(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                );
            }
            Some("Exact" | "NotOlderThan") => {}
            Some(other) => {
                return Err(format!(
                    "resourceVersionMatch: Unsupported value: {}: supported values: \"Exact\", \"NotOlderThan\", \"\"",
                    berth_api::error::go_quote(other)
                ));
            }
        }
        match p.field_validation.as_deref() {
            None | Some("" | "Ignore" | "Warn" | "Strict") => {}
            Some(other) => {
                return Err(format!(
                    "fieldValidation: Unsupported value: {}: supported values: \"Ignore\", \"Strict\", \"Warn\"",
                    berth_api::error::go_quote(other)
                ));
            }
        }
        Ok(p)
    }

    /// The page size asked for; 0 for all.
    pub fn limit(&self) -> usize {
        self.limit
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(0)
    }

    pub fn is_watch(&self) -> bool {
        flag(&self.watch)
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run.as_deref() == Some("All")
    }
}

fn serde_urlencoded_from(q: &str) -> Result<Params, String> {
    let uri: axum::http::Uri = format!("/?{q}")
        .parse()
        .map_err(|e| format!("invalid query: {e}"))?;
    axum::extract::Query::<Params>::try_from_uri(&uri)
        .map(|axum::extract::Query(p)| p)
        .map_err(|e| e.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (plural, namespace, name, subresource)
    type Parsed<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn check(path: &str, expected: Option<Parsed<'_>>) {
        let got = parse(path).expect("parses").map(|t| {
            (
                t.resource.plural,
                t.namespace,
                t.name,
                t.subresource.map(|s| s.name()),
            )
        });
        let expected =
            expected.map(|(p, ns, n, s)| (p, ns.map(str::to_owned), n.map(str::to_owned), s));
        assert_eq!(got, expected, "{path}");
    }

    #[test]
    fn paths() {
        check("/api/v1/services", Some(("services", None, None, None)));
        check(
            "/api/v1/namespaces/default/services",
            Some(("services", Some("default"), None, None)),
        );
        check(
            "/api/v1/namespaces/default/services/web",
            Some(("services", Some("default"), Some("web"), None)),
        );
        check(
            "/api/v1/namespaces/default/pods/p/log",
            Some(("pods", Some("default"), Some("p"), Some("log"))),
        );
        check("/api/v1/namespaces", Some(("namespaces", None, None, None)));
        check(
            "/api/v1/namespaces/kube-system",
            Some(("namespaces", None, Some("kube-system"), None)),
        );
        check(
            "/api/v1/namespaces/x/status",
            Some(("namespaces", None, Some("x"), Some("status"))),
        );
        check(
            "/apis/apps/v1/namespaces/d/deployments/w/scale",
            Some(("deployments", Some("d"), Some("w"), Some("scale"))),
        );
        check(
            "/api/v1/watch/namespaces/default/pods",
            Some(("pods", Some("default"), None, None)),
        );
        check("/version", None);
        check("/api/v1", None);
        assert_eq!(parse("/api/v1/bogus"), Err(PathError::NotFound));
        assert_eq!(
            parse("/api/v1/namespaces/default/nodes"),
            Err(PathError::NotFound)
        );
        assert_eq!(
            parse("/api/v1/namespaces/default/services/web/scale"),
            Err(PathError::NotFound)
        );
    }

    #[test]
    fn params() {
        let p = Params::parse(Some("labelSelector=app%3Dweb&limit=5&watch=1&continue=abc"))
            .expect("parses");
        assert_eq!(p.label_selector.as_deref(), Some("app=web"));
        assert_eq!(p.limit, Some(5));
        assert!(p.is_watch());
        assert_eq!(p.continue_.as_deref(), Some("abc"));
        assert!(Params::parse(Some("limit=x")).is_err());
        let p = Params::parse(Some("limit=-1&continue=")).expect("parses");
        assert_eq!((p.limit(), p.continue_), (0, None));
        for bad in [
            "resourceVersion=abc",
            "resourceVersionMatch=Exact",
            "resourceVersion=5&resourceVersionMatch=Newest",
            "fieldValidation=strict",
        ] {
            assert!(Params::parse(Some(bad)).is_err(), "{bad}");
        }
        assert!(Params::parse(Some("resourceVersion=5&resourceVersionMatch=Exact")).is_ok());
        check(
            "/api/v1/namespaces/kube%2dsystem/services/web",
            Some(("services", Some("kube-system"), Some("web"), None)),
        );
    }
}
