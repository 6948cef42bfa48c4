//! `import`: a docker-save tar (`manifest.json` with `RepoTags`, layers as tar or tar.gz) or
//! an OCI image layout archive (`oci-layout`, `index.json`, `blobs/`) becomes blobs, one OCI
//! manifest per image and references, as `ctr images import` does. The archive is read once,
//! as a stream (so stdin works): every file becomes a blob, then what the archive's index
//! names is kept and the rest collected.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use crate::reference::parse_digest;
use crate::store::Store;
use crate::{Error, Result};

/// One image the archive held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Normalized reference, or the manifest digest for an image without a name.
    pub reference: String,
    pub digest: String,
}

/// docker save's manifest.json entries.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The archive's files: path -> (digest, size), and symlinks path -> target path.
#[derive(Default)]
struct Files {
    blobs: HashMap<PathBuf, (String, u64)>,
    links: HashMap<PathBuf, PathBuf>,
}

impl Files {
    fn get(&self, name: &str) -> Option<(String, u64)> {
        let mut p = clean(Path::new(name));
        for _ in 0..8 {
            if let Some(b) = self.blobs.get(&p) {
                return Some(b.clone());
            }
            let target = self.links.get(&p)?;
            p = clean(&p.parent().unwrap_or(Path::new("")).join(target));
        }
        None
    }
}

/// Imports every image in the archive `from` into `store`.
pub fn import(store: &Store, from: impl Read) -> Result<Vec<Imported>> {
    let lock = store.lock()?;
    let files = read_archive(store, from)?;
    let read = |name: &str| -> Result<Vec<u8>> {
        let (d, _) = files
            .get(name)
            .ok_or_else(|| Error::MissingBlob(name.to_owned()))?;
        store.read_blob(&d)
    };
    let images = if files.get("manifest.json").is_some() {
        docker(store, &files, &read("manifest.json")?)?
    } else if files.get("index.json").is_some() {
        oci(store, &read("index.json")?)?
    } else {
        return Err(Error::NotAnImage);
    };
    let tags: Vec<(String, String)> = images
        .iter()
        .map(|i| (i.reference.clone(), i.digest.clone()))
        .collect();
    store.tag(&lock, &tags)?;
    store.gc(&lock)?;
    Ok(images)
}

fn read_archive(store: &Store, from: impl Read) -> Result<Files> {
    let mut files = Files::default();
    let mut archive = tar::Archive::new(from);
    for entry in archive.entries().map_err(Error::Archive)? {
        let entry = entry.map_err(Error::Archive)?;
        let path = clean(&entry.path().map_err(Error::Archive)?);
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let blob = store.put_blob(entry)?;
                // OCI layouts name blobs by digest: check it.
                if let Some(expected) = blob_name(&path)
                    && expected != blob.0
                {
                    return Err(Error::DigestMismatch {
                        path: path.display().to_string(),
                        expected,
                        actual: blob.0,
                    });
                }
                files.blobs.insert(path, blob);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = if entry.header().entry_type() == tar::EntryType::Link {
                        // Hard links name a path from the archive's root.
                        Path::new("/").join(target)
                    } else {
                        target.into_owned()
                    };
                    files.links.insert(path, target);
                }
            }
            _ => {}
        }
    }
    Ok(files)
}

/// `blobs/sha256/<hex>` -> `sha256:<hex>`.
fn blob_name(path: &Path) -> Option<String> {
    let rest = path.strip_prefix("blobs/sha256").ok()?;
    parse_digest(&format!("sha256:{}", rest.to_str()?))
}

/// A path inside the archive, lexically cleaned (`..` never climbs above the root).
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn docker(store: &Store, files: &Files, manifest: &[u8]) -> Result<Vec<Imported>> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest).map_err(|source| Error::Json {
            what: "manifest.json".into(),
            source,
        })?;
    let mut out = Vec::new();
    for e in entries {
        let (cd, csize) = files
            .get(&e.config)
            .ok_or_else(|| Error::MissingBlob(e.config.clone()))?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = files.get(l).ok_or_else(|| Error::MissingBlob(l.clone()))?;
            layers.push(Descriptor::new(layer_type(store, &d)?, size, digest(&d)?));
        }
        let m = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(MediaType::ImageConfig, csize, digest(&cd)?))
            .layers(layers)
            .build()?;
        let md = put_manifest(store, &m)?;
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push(Imported {
                reference: md.clone(),
                digest: md.clone(),
            });
        }
        for t in tags {
            out.push(Imported {
                reference: Store::key(&t)?,
                digest: md.clone(),
            });
        }
    }
    Ok(out)
}

fn oci(store: &Store, index: &[u8]) -> Result<Vec<Imported>> {
    let index: ImageIndex = serde_json::from_slice(index).map_err(|source| Error::Json {
        what: "index.json".into(),
        source,
    })?;
    let mut out = Vec::new();
    for d in index.manifests() {
        let annotations = d.annotations().clone().unwrap_or_default();
        let name = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name"))
            .and_then(|n| Store::key(n).ok());
        let md = match d.media_type() {
            MediaType::ImageIndex => pick_platform(store, d.digest().as_ref())?,
            _ => d.digest().to_string(),
        };
        // The manifest must be whole: its config and layers present.
        let m = manifest(store, &md)?;
        for blob in std::iter::once(m.config()).chain(m.layers()) {
            let bd = blob.digest().to_string();
            if !store.blob_path(&bd).exists() {
                return Err(Error::MissingBlob(bd));
            }
        }
        out.push(Imported {
            reference: name.unwrap_or_else(|| md.clone()),
            digest: md,
        });
    }
    Ok(out)
}

/// A manifest list's entry for this machine (linux and this architecture), else its first.
fn pick_platform(store: &Store, digest: &str) -> Result<String> {
    let index: ImageIndex =
        serde_json::from_slice(&store.read_blob(digest)?).map_err(|source| Error::Json {
            what: format!("index {digest}"),
            source,
        })?;
    let chosen =
        crate::platform::choose(&index, true).ok_or_else(|| Error::NoImage(digest.to_owned()))?;
    match chosen.media_type() {
        MediaType::ImageIndex => Err(Error::NoImage(digest.to_owned())),
        _ => Ok(chosen.digest().to_string()),
    }
}

fn manifest(store: &Store, digest: &str) -> Result<ImageManifest> {
    serde_json::from_slice(&store.read_blob(digest)?).map_err(|source| Error::Json {
        what: format!("manifest {digest}"),
        source,
    })
}

fn put_manifest(store: &Store, m: &ImageManifest) -> Result<String> {
    let body = serde_json::to_vec(m).map_err(|source| Error::Json {
        what: "manifest".into(),
        source,
    })?;
    store.put_bytes(&body)
}

fn digest(d: &str) -> Result<oci_spec::image::Digest> {
    d.parse().map_err(Error::Spec)
}

/// A docker layer's media type from its first bytes: gzip, zstd or a plain tar.
fn layer_type(store: &Store, digest: &str) -> Result<MediaType> {
    let path = store.blob_path(digest);
    let mut head = [0u8; 4];
    let n = std::fs::File::open(&path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(crate::error::io(&path))?;
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => MediaType::ImageLayerGzip,
        [0x28, 0xb5, 0x2f, 0xfd] => MediaType::ImageLayerZstd,
        _ => MediaType::ImageLayer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{ImageSpec, LayerBuilder};

    fn spec() -> ImageSpec {
        ImageSpec {
            layers: vec![
                LayerBuilder::default()
                    .dir("bin")
                    .file("bin/x", b"1", 0o755)
                    .file("gone", b"g", 0o644)
                    .build(),
                LayerBuilder::default()
                    .file(".wh.gone", b"", 0o644)
                    .file("etc/only-here", b"2", 0o644)
                    .build(),
            ],
            cmd: Some(vec!["/bin/x".into()]),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        }
    }

    #[test]
    fn docker_save_and_oci_archives_import_resolve_unpack_and_remove() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("store");
        let docker = spec()
            .docker_save(&["number-crunch:local", "busybox"])
            .expect("archive");
        let got = import(&store, docker.as_slice()).expect("import");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].reference, "docker.io/library/number-crunch:local");
        let img = store
            .resolve("docker.io/library/busybox:latest")
            .expect("resolve")
            .expect("present");
        assert_eq!(
            img.config.config().as_ref().and_then(|c| c.cmd().clone()),
            Some(vec!["/bin/x".to_owned()])
        );
        assert!(store.resolve("nginx").expect("resolve").is_none());
        assert!(store.resolve(&img.digest).expect("by digest").is_some());
        let rootfs = store.rootfs(&img).expect("unpack");
        assert_eq!(
            std::fs::read(rootfs.join("etc/only-here")).expect("file"),
            b"2"
        );
        assert!(!rootfs.join("gone").exists());

        let oci = spec()
            .oci_archive("docker.io/library/bb:oci")
            .expect("archive");
        let got = import(&store, oci.as_slice()).expect("import");
        assert_eq!(got[0].reference, "docker.io/library/bb:oci");
        assert_eq!(store.list().expect("ls").len(), 3);

        assert_eq!(
            store.remove("busybox").expect("rm"),
            ["docker.io/library/busybox:latest"]
        );
        assert!(store.remove("busybox").is_err());
        let blobs = || {
            std::fs::read_dir(store.root().join("blobs/sha256"))
                .expect("ls")
                .count()
        };
        store.remove("number-crunch:local").expect("rm");
        assert!(blobs() > 0, "bb:oci still needs its blobs");
        store.remove("bb:oci").expect("rm");
        assert_eq!(blobs(), 0);
        assert_eq!(
            std::fs::read_dir(store.root().join("rootfs"))
                .expect("ls")
                .count(),
            0
        );
    }

    #[test]
    fn a_tampered_oci_blob_or_a_non_image_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("store");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            format!("blobs/sha256/{}", "a".repeat(64)),
            &b"x"[..],
        )
        .expect("tar");
        let tar = b.into_inner().expect("tar");
        assert!(matches!(
            import(&store, tar.as_slice()),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(matches!(
            import(&store, &[0u8; 1024][..]),
            Err(Error::NotAnImage)
        ));
    }

    /// An OCI archive whose index.json names a manifest list: this machine's platform is
    /// picked, whatever the order.
    #[test]
    fn a_manifest_list_picks_this_platform() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store::open(t.path()).expect("store");
        let single = spec().oci_archive("x").expect("archive");
        // Take the single-platform archive apart: its files by name.
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut a = tar::Archive::new(single.as_slice());
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            files.push((name, data));
        }
        let index: serde_json::Value = serde_json::from_slice(
            &files
                .iter()
                .find(|(n, _)| n == "index.json")
                .expect("index")
                .1,
        )
        .expect("json");
        let ours = index["manifests"][0].clone();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let mut theirs = ours.clone();
        theirs["digest"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
        theirs["platform"] = serde_json::json!({"os": "linux", "architecture": other});
        let mut mine = ours.clone();
        mine["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [theirs, mine],
        });
        let list = serde_json::to_vec(&list).expect("json");
        let digest = format!(
            "sha256:{}",
            crate::store::hex(ring::digest::digest(&ring::digest::SHA256, &list).as_ref())
        );
        files.retain(|(n, _)| n != "index.json");
        files.push((format!("blobs/sha256/{}", &digest[7..]), list.clone()));
        let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "size": list.len(),
            "digest": digest,
            "annotations": {"io.containerd.image.name": "docker.io/library/multi:1"},
        }]});
        files.push(("index.json".into(), serde_json::to_vec(&top).expect("json")));
        let got = import(&store, tar_raw(&files).as_slice()).expect("import");
        assert_eq!(got[0].reference, "docker.io/library/multi:1");
        assert_eq!(got[0].digest, ours["digest"].as_str().expect("digest"));
        assert!(store.resolve("multi:1").expect("resolve").is_some());
    }

    fn entry(name: &str, data: &[u8]) -> (String, Vec<u8>) {
        (name.to_owned(), data.to_vec())
    }

    fn tar_raw(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            let old = h.as_old_mut();
            let n = name.len().min(old.name.len());
            old.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            h.set_cksum();
            b.append(&h, data.as_slice()).expect("tar");
        }
        b.into_inner().expect("tar")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Arbitrary bytes, or tars of hostile names and arbitrary JSON, never panic and
        /// never write outside the store.
        #[test]
        fn arbitrary_archives_fail_cleanly(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            names in proptest::collection::vec("(\\.\\./|/)?(manifest\\.json|index\\.json|blobs/sha256/[a-f0-9]{2}|x/\\.\\./\\.\\./y)", 1..5),
            json in "(\\[\\{\"Config\":\"[a-z./]{0,8}\",\"Layers\":\\[\"[a-z./]{0,8}\"\\]\\}\\]|\\{\"manifests\":\\[\\]\\}|[\\[\\]{}\":,a-z0-9]{0,40})",
        ) {
            let t = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&t.path().join("data")).expect("store");
            let _ = import(&store, bytes.as_slice());
            let files: Vec<_> = names.iter().map(|n| entry(n, json.as_bytes())).collect();
            let _ = import(&store, tar_raw(&files).as_slice());
            let top: Vec<_> = std::fs::read_dir(t.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
            proptest::prop_assert_eq!(top, [std::ffi::OsString::from("data")]);
        }
    }
}
