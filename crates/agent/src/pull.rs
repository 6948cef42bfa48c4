//! Image pulls as the kubelet's image manager decides them (pkg/kubelet/images): the pull
//! policy (`Always` for `:latest` or no tag, else `IfNotPresent`, unless the container names
//! one), credentials from the pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson`
//! and `kubernetes.io/dockercfg`) matched to the image's registry as the kubelet's docker
//! keyring matches them, and the back-off after a failed pull (10 s doubling to 5 min).
//! Built-in workload images and host images never reach a registry: they run as today.

use std::time::Duration;

use base64::Engine;
use berth_image::pull::{Auth, Options, Pulled};
use berth_image::{Reference, Store};
use k8s_openapi::api::core::v1::{Container, Secret};

/// The kubelet's image pull back-off (`backOffPeriod`, `MaxContainerBackOff`).
pub const BACKOFF_START: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    IfNotPresent,
    Never,
}

/// The container's policy, defaulted as the API server does when it is unset.
pub fn policy(c: &Container) -> Policy {
    match c.image_pull_policy.as_deref() {
        Some("Always") => Policy::Always,
        Some("Never") => Policy::Never,
        Some("IfNotPresent") => Policy::IfNotPresent,
        _ => {
            let image = c.image.as_deref().unwrap_or_default();
            let latest = Reference::parse(image).map_or(true, |r| {
                r.tag.as_deref() == Some("latest") || (r.tag.is_none() && r.digest.is_none())
            });
            if latest {
                Policy::Always
            } else {
                Policy::IfNotPresent
            }
        }
    }
}

/// Pulls images into the node's store.
#[derive(Debug)]
pub struct Puller {
    store: Store,
    options: Options,
}

impl Puller {
    /// A puller reaching registries as `options` say (a read or connect timeout of 10 s
    /// unless they set one).
    pub fn new(store: Store, mut options: Options) -> Puller {
        options.timeout.get_or_insert(Duration::from_secs(10));
        Puller { store, options }
    }

    /// The image to pull before `c` starts, if any: not for built-in or host images, not
    /// with `Never`, not with `IfNotPresent` when the store has it.
    pub fn wanted(&self, c: &Container) -> Option<String> {
        let image = c.image.as_deref().filter(|i| !i.is_empty())?;
        if crate::runtime::host_image(image) || Reference::parse(image).is_err() {
            return None;
        }
        match policy(c) {
            Policy::Never => None,
            Policy::IfNotPresent if matches!(self.store.resolve(image), Ok(Some(_))) => None,
            _ => Some(image.to_owned()),
        }
    }

    /// Pulls `image` with each of `auths` in turn (as the kubelet tries every matching
    /// credential), anonymously when there are none; the last error if all fail.
    pub async fn pull(&self, image: &str, auths: &[Auth]) -> Result<Pulled, String> {
        let anonymous = [Auth::Anonymous];
        let auths = if auths.is_empty() { &anonymous } else { auths };
        let mut last = String::new();
        for auth in auths {
            match berth_image::pull::pull(&self.store, image, auth, &self.options).await {
                Ok(p) => return Ok(p),
                Err(e) => last = crate::oci::chain(&e),
            }
        }
        Err(last)
    }
}

/// One registry credential from a pull secret, keyed as the kubelet's keyring keys it:
/// `host[:port][/path]`, the host possibly with `*` globs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key: String,
    pub username: String,
    pub password: String,
}

/// The credentials of a `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, `{"auths":
/// {...}}`) or `kubernetes.io/dockercfg` (`.dockercfg`, the entries alone) Secret.
pub fn credentials(secret: &Secret) -> Vec<Credential> {
    let data = secret.data.clone().unwrap_or_default();
    let entries = if let Some(b) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<serde_json::Value>(&b.0)
            .ok()
            .and_then(|v| v.get("auths").cloned())
    } else if let Some(b) = data.get(".dockercfg") {
        serde_json::from_slice::<serde_json::Value>(&b.0).ok()
    } else {
        None
    };
    let Some(serde_json::Value::Object(entries)) = entries else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (location, entry) in entries {
        let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (mut username, mut password) =
            (field("username").to_owned(), field("password").to_owned());
        if username.is_empty()
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(field("auth"))
            && let Ok(decoded) = String::from_utf8(decoded)
            && let Some((u, p)) = decoded.split_once(':')
        {
            (username, password) = (u.to_owned(), p.to_owned());
        }
        if let Some(key) = keyring_key(&location) {
            out.push(Credential {
                key,
                username,
                password,
            });
        }
    }
    out
}

/// A config entry's location as a keyring key: the scheme and a `/v1/` or `/v2/` API
/// prefix dropped, Docker Hub's names (`index.docker.io`, `registry-1.docker.io`) as the
/// `docker.io` references use.
fn keyring_key(location: &str) -> Option<String> {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return None;
    }
    let path = path
        .strip_prefix("v1/")
        .or_else(|| path.strip_prefix("v2/"))
        .or_else(|| (path == "v1" || path == "v2").then_some(""))
        .unwrap_or(path)
        .trim_matches('/');
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    Some(if path.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    })
}

/// Whether keyring key `key` covers `image`'s repository: hosts equal label by label (a
/// label may be a `*` glob), ports equal, and the key's path a prefix of the repository's.
pub fn matches(key: &str, image: &Reference) -> bool {
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    let (kh, kp) = key_host.split_once(':').unwrap_or((key_host, ""));
    let (ih, ip) = image.domain.split_once(':').unwrap_or((&image.domain, ""));
    let labels_k: Vec<&str> = kh.split('.').collect();
    let labels_i: Vec<&str> = ih.split('.').collect();
    if kp != ip || labels_k.len() != labels_i.len() {
        return false;
    }
    if !labels_k.iter().zip(&labels_i).all(|(k, i)| glob(k, i)) {
        return false;
    }
    key_path.is_empty()
        || image.path == key_path
        || image
            .path
            .strip_prefix(key_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

/// The credentials from `secrets` for `image`, most specific key first (the kubelet's
/// keyring sorts its keys in reverse).
pub fn auths_for(secrets: &[Secret], image: &str) -> Vec<Auth> {
    let Ok(reference) = Reference::parse(image) else {
        return Vec::new();
    };
    let mut creds: Vec<Credential> = secrets
        .iter()
        .flat_map(credentials)
        .filter(|c| matches(&c.key, &reference))
        .collect();
    creds.sort_by(|a, b| b.key.cmp(&a.key));
    creds
        .into_iter()
        .map(|c| Auth::Basic(c.username, c.password))
        .collect()
}

/// A duration as Go prints one truncated to milliseconds (`57ms`, `1.234s`, `1m5.1s`), for
/// the kubelet's `Pulled` message.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, ms) = (ms / 60_000, ms % 60_000);
    let seconds = format!("{}.{:03}", ms / 1000, ms % 1000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    if minutes == 0 {
        format!("{seconds}s")
    } else {
        format!("{minutes}m{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use proptest::prelude::*;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn policies_default_as_the_api_server_does() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (image, set, expected) in [
            ("nginx", None, Policy::Always),
            ("nginx:latest", None, Policy::Always),
            ("nginx:1.27", None, Policy::IfNotPresent),
            (&format!("nginx@{d}") as &str, None, Policy::IfNotPresent),
            ("nginx:1.27", Some("Always"), Policy::Always),
            ("nginx", Some("Never"), Policy::Never),
            ("nginx", Some("IfNotPresent"), Policy::IfNotPresent),
        ] {
            assert_eq!(policy(&container(image, set)), expected, "{image} {set:?}");
        }
    }

    fn secret(key: &str, body: &str) -> Secret {
        Secret {
            data: Some([(key.to_owned(), ByteString(body.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    fn check(secrets: &[Secret], image: &str, expected: &[(&str, &str)]) {
        let got: Vec<(String, String)> = auths_for(secrets, image)
            .into_iter()
            .map(|a| match a {
                Auth::Basic(u, p) => (u, p),
                other => panic!("{other:?}"),
            })
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(got, expected, "{image}");
    }

    #[test]
    fn pull_secrets_match_by_registry_as_the_kubelet_does() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:pw2");
        let json = secret(
            ".dockerconfigjson",
            &format!(
                r#"{{"auths": {{
                    "127.0.0.1:5000": {{"username": "alice", "password": "pw1"}},
                    "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                    "*.corp.example": {{"username": "glob", "password": "g"}},
                    "reg.example/team": {{"username": "team", "password": "t"}},
                    "reg.example": {{"username": "any", "password": "a"}}
                }}}}"#
            ),
        );
        let cfg = secret(
            ".dockercfg",
            r#"{"http://old.example:8080": {"username": "old", "password": "o"}}"#,
        );
        let both = [json, cfg];
        check(&both, "127.0.0.1:5000/berth/bb:v1", &[("alice", "pw1")]);
        check(&both, "127.0.0.1:5001/berth/bb:v1", &[]);
        check(&both, "nginx", &[("bob", "pw2")]);
        check(&both, "docker.io/library/nginx:1", &[("bob", "pw2")]);
        check(&both, "a.corp.example/x", &[("glob", "g")]);
        check(&both, "a.b.corp.example/x", &[]);
        check(
            &both,
            "reg.example/team/app",
            &[("team", "t"), ("any", "a")],
        );
        check(&both, "reg.example/teamx/app", &[("any", "a")]);
        check(&both, "old.example:8080/x", &[("old", "o")]);
        check(&both, "quay.io/x", &[]);
        check(&[secret(".dockerconfigjson", "not json")], "nginx", &[]);
    }

    #[test]
    fn durations_print_as_go_does() {
        for (ms, s) in [
            (57, "57ms"),
            (1000, "1s"),
            (1234, "1.234s"),
            (1500, "1.5s"),
            (65_100, "1m5.1s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), s);
        }
    }

    proptest! {
        #[test]
        fn secrets_and_globs_never_panic(body in "\\PC{0,80}", key in "[a-z*.:0-9/]{0,20}", host in "[a-z.]{0,12}") {
            let _ = auths_for(&[secret(".dockerconfigjson", &body), secret(".dockercfg", &body)], "nginx");
            if let Ok(r) = Reference::parse(&format!("{host}:1/x")) {
                let _ = matches(&key, &r);
            }
            let _ = glob(&key, &host);
        }
    }
}
