//! This machine's platform in the OCI's terms (Go's `GOOS`/`GOARCH` names, as containerd's
//! `platforms.Default()`), and the entry of an image index that matches it.

use oci_spec::image::{Descriptor, ImageIndex};

/// This machine's architecture as Go names it (`amd64` for x86_64, `arm64` for aarch64).
pub fn arch() -> &'static str {
    go_arch(std::env::consts::ARCH)
}

/// Rust's name of an architecture -> Go's.
pub fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The index's entry for linux on this architecture; with `or_first`, its first entry when
/// none matches (what `import` does for archives that name no platforms).
pub fn choose(index: &ImageIndex, or_first: bool) -> Option<&Descriptor> {
    let fits = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == arch()
        })
    };
    let found = index.manifests().iter().find(fits);
    match (found, or_first) {
        (Some(d), _) => Some(d),
        (None, true) => index.manifests().first(),
        (None, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 1,
                    "digest": format!("sha256:{}", i.to_string().repeat(64)),
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .expect("an index")
    }

    fn check(platforms: &[(&str, &str)], or_first: bool, expected: Option<usize>) {
        let idx = index(platforms);
        let got = choose(&idx, or_first).and_then(|d| {
            idx.manifests()
                .iter()
                .position(|m| m.digest() == d.digest())
        });
        assert_eq!(got, expected, "{platforms:?}");
    }

    #[test]
    fn picks_linux_on_this_architecture() {
        let here = arch();
        check(&[("linux", "s390x"), ("linux", here)], false, Some(1));
        check(&[("windows", here), ("linux", here)], false, Some(1));
        check(&[("linux", "s390x")], false, None);
        check(&[("linux", "s390x")], true, Some(0));
        check(&[], true, None);
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }
}
