//! Image references normalized as containerd and the kubelet do (docker's
//! `ParseNormalizedNamed`): `nginx` is `docker.io/library/nginx:latest`, a first component
//! with a `.` or `:` (or `localhost`) is a registry, `index.docker.io` is `docker.io`.

use crate::{Error, Result};

/// A normalized reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `s`; a reference with neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |reason| Error::InvalidReference {
            reference: s.to_owned(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d).ok_or_else(|| bad("bad digest"))?)),
            None => (s, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("bad tag"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((d, p)) if d.contains(['.', ':']) || d == "localhost" => {
                (d.to_owned(), p.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), name.to_owned()),
            None => ("docker.io".to_owned(), format!("library/{name}")),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            domain
        };
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-_".contains(c))
        {
            return Err(bad("bad registry host"));
        }
        if !path.split('/').all(valid_component) {
            return Err(bad(
                "name components must be lowercase letters, digits and separators . _ __ -",
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (t, _) => t.map(str::to_owned),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, the repository.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `sha256:<64 lowercase hex>`, the only algorithm the store keeps.
pub fn parse_digest(d: &str) -> Option<String> {
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| d.to_owned())
}

fn valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    let bytes: Vec<char> = c.chars().collect();
    if bytes.first().is_none_or(|c| !alnum(*c)) || bytes.last().is_none_or(|c| !alnum(*c)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep: String = bytes[start..i].iter().collect();
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Option<&str>) {
        let got = Reference::parse(input).ok().map(|r| r.to_string());
        assert_eq!(got.as_deref(), expected, "{input}");
    }

    #[test]
    fn references_normalize_as_containerd() {
        let d = "sha256:".to_owned() + &"a".repeat(64);
        check("nginx", Some("docker.io/library/nginx:latest"));
        check("nginx:1.27", Some("docker.io/library/nginx:1.27"));
        check(
            "docker.io/library/nginx:1.27",
            Some("docker.io/library/nginx:1.27"),
        );
        check(
            "index.docker.io/library/nginx",
            Some("docker.io/library/nginx:latest"),
        );
        check(
            "number-crunch:local",
            Some("docker.io/library/number-crunch:local"),
        );
        check("traefik/whoami", Some("docker.io/traefik/whoami:latest"));
        check("localhost/x", Some("localhost/x:latest"));
        check("127.0.0.1:5000/a/b:v1", Some("127.0.0.1:5000/a/b:v1"));
        check(
            "r.deso.tech/library/netshoot",
            Some("r.deso.tech/library/netshoot:latest"),
        );
        check(
            &format!("busybox@{d}"),
            Some(&format!("docker.io/library/busybox@{d}")),
        );
        check(
            &format!("busybox:1@{d}"),
            Some(&format!("docker.io/library/busybox:1@{d}")),
        );
        check("Nginx", None);
        check("nginx:", None);
        check("", None);
        check("a//b", None);
        check("busybox@sha256:abc", None);
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_is_idempotent(s in "\\PC{0,40}") {
            if let Ok(r) = Reference::parse(&s) {
                let again = Reference::parse(&r.to_string()).expect("a normalized reference parses");
                prop_assert_eq!(again, r);
            }
        }

        #[test]
        fn plausible_references_round_trip(s in "([a-z0-9]{1,5}\\.)?[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}(:[a-z0-9]{1,5})?") {
            if let Ok(r) = Reference::parse(&s) {
                prop_assert_eq!(Reference::parse(&r.to_string()).ok(), Some(r));
            }
        }
    }
}
