//! The content-addressed store in `DATA_DIR/images`: blobs by sha256 digest, `refs.json`
//! mapping normalized references to manifest digests, and each image's unpacked root
//! filesystem under `rootfs/<hex>`. Writers (import, remove, unpack) hold an exclusive
//! `flock` on `lock`; every file appears by an atomic rename, so a reader (a running agent)
//! never sees half a blob or half an index. Files 0600, directories 0700.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::error::io;
use crate::reference::{Reference, parse_digest};
use crate::{Error, Result};

/// The image store of one data directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An image in the store: the reference it was found by, its manifest and configuration.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: String,
    /// The manifest's digest (`sha256:...`), the image's ID.
    pub digest: String,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    /// Bytes of the layers as stored (compressed or not), what `ls` shows as SIZE.
    pub fn size(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }
}

/// The exclusive lock writers hold.
pub(crate) struct Lock(#[allow(dead_code)] Flock<File>);

static TMP: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store in `DATA_DIR/images`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let root = data_dir.join("images");
        for dir in [
            root.join("blobs/sha256"),
            root.join("tmp"),
            root.join("rootfs"),
            root.join(crate::pull::PULLS),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(&dir))?;
        }
        Ok(Store { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self) -> Result<Lock> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, source)| Error::Sys {
                path: path.display().to_string(),
                source,
            })
    }

    /// A fresh path under `tmp/`, on the same file system as the blobs (so renames are atomic).
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}-{nanos}", std::process::id()))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    /// Writes a blob, hashing it on the way; returns its digest and size.
    pub(crate) fn put_blob(&self, mut from: impl Read) -> Result<(String, u64)> {
        let tmp = self.tmp_path("blob");
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(Error::Archive(e));
                }
            };
            ctx.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io(&tmp))?;
            size += n as u64;
        }
        file.sync_all().map_err(io(&tmp))?;
        let digest = format!("sha256:{}", hex(ctx.finish().as_ref()));
        let path = self.blob_path(&digest);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok((digest, size))
    }

    pub(crate) fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        self.put_blob(bytes).map(|(d, _)| d)
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingBlob(digest.to_owned()),
            _ => Error::Io { path, source: e },
        })
    }

    /// Reference -> manifest digest.
    pub(crate) fn refs(&self) -> Result<BTreeMap<String, String>> {
        let path = self.root.join("refs.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Json {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// Replaces `refs.json` atomically; the caller holds the lock.
    pub(crate) fn write_refs(&self, _lock: &Lock, refs: &BTreeMap<String, String>) -> Result<()> {
        let path = self.root.join("refs.json");
        let tmp = self.tmp_path("refs");
        let body = serde_json::to_vec_pretty(refs).map_err(|source| Error::Json {
            what: "refs".into(),
            source,
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// The key `image` is stored under: its normalized reference, or a bare digest.
    pub fn key(image: &str) -> Result<String> {
        if let Some(d) = parse_digest(image) {
            return Ok(d);
        }
        Reference::parse(image).map(|r| r.to_string())
    }

    /// Finds `image` (any reference form, or a manifest digest); `None` if absent.
    pub fn resolve(&self, image: &str) -> Result<Option<Image>> {
        let key = Store::key(image)?;
        let refs = self.refs()?;
        let digest = match refs.get(&key) {
            Some(d) => d.clone(),
            None => match Reference::parse(image).ok().and_then(|r| r.digest) {
                // By digest: any reference to that manifest.
                Some(d) if refs.values().any(|v| *v == d) => d,
                _ if refs.values().any(|v| *v == key) => key.clone(),
                _ => return Ok(None),
            },
        };
        self.load(&key, &digest).map(Some)
    }

    fn load(&self, reference: &str, digest: &str) -> Result<Image> {
        let json = |what: &str, b: Vec<u8>| -> Result<serde_json::Value> {
            serde_json::from_slice(&b).map_err(|source| Error::Json {
                what: what.to_owned(),
                source,
            })
        };
        let manifest: ImageManifest =
            serde_json::from_value(json(digest, self.read_blob(digest)?)?).map_err(|source| {
                Error::Json {
                    what: format!("manifest {digest}"),
                    source,
                }
            })?;
        let cd = manifest.config().digest().to_string();
        let config: ImageConfiguration = serde_json::from_value(json(&cd, self.read_blob(&cd)?)?)
            .map_err(|source| Error::Json {
            what: format!("config {cd}"),
            source,
        })?;
        Ok(Image {
            reference: reference.to_owned(),
            digest: digest.to_owned(),
            manifest,
            config,
        })
    }

    /// Every reference in the store with its image, sorted by reference.
    pub fn list(&self) -> Result<Vec<Image>> {
        self.refs()?.iter().map(|(r, d)| self.load(r, d)).collect()
    }

    /// Points `reference` at `digest`s (the caller holds the lock).
    pub(crate) fn tag(&self, lock: &Lock, tags: &[(String, String)]) -> Result<()> {
        let mut refs = self.refs()?;
        for (r, d) in tags {
            refs.insert(r.clone(), d.clone());
        }
        self.write_refs(lock, &refs)
    }

    /// Removes `image`'s reference (a digest removes every reference to it), then every
    /// blob and unpacked root no reference needs. Returns the references removed.
    pub fn remove(&self, image: &str) -> Result<Vec<String>> {
        let lock = self.lock()?;
        let key = Store::key(image)?;
        let mut refs = self.refs()?;
        let gone: Vec<String> = refs
            .iter()
            .filter(|(r, d)| **r == key || **d == key)
            .map(|(r, _)| r.clone())
            .collect();
        if gone.is_empty() {
            return Err(Error::NotFound(image.to_owned()));
        }
        for r in &gone {
            refs.remove(r);
        }
        self.write_refs(&lock, &refs)?;
        self.gc(&lock)?;
        Ok(gone)
    }

    /// Deletes blobs and unpacked roots no reference needs, and leftovers in `tmp/`.
    pub(crate) fn gc(&self, _lock: &Lock) -> Result<()> {
        let refs = self.refs()?;
        let mut keep = BTreeSet::new();
        let mut roots = BTreeSet::new();
        for d in refs.values() {
            keep.insert(hex_of(d));
            roots.insert(hex_of(d));
            if let Ok(img) = self.load(d, d) {
                keep.insert(hex_of(img.manifest.config().digest().as_ref()));
                for l in img.manifest.layers() {
                    keep.insert(hex_of(l.digest().as_ref()));
                }
            }
        }
        let sweep = |dir: PathBuf, keep: &BTreeSet<String>| -> Result<()> {
            for e in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let p = e.path();
                    let r = if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(io(&p))?;
                }
            }
            Ok(())
        };
        sweep(self.root.join("blobs/sha256"), &keep)?;
        sweep(self.root.join("rootfs"), &roots)?;
        sweep(self.root.join("tmp"), &BTreeSet::new())?;
        // Downloads run without the lock: only what an interrupted pull left goes.
        let pulls = self.root.join(crate::pull::PULLS);
        for e in std::fs::read_dir(&pulls).map_err(io(&pulls))?.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// The image's layers unpacked in order into one directory, made once per image and
    /// shared by its containers (as overlayfs's lower layer, or copied).
    pub fn rootfs(&self, image: &Image) -> Result<PathBuf> {
        let dir = self.root.join("rootfs").join(hex_of(&image.digest));
        if dir.is_dir() {
            return Ok(dir);
        }
        let _lock = self.lock()?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self
            .root
            .join("rootfs")
            .join(format!(".tmp-{}", hex_of(&image.digest)));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io(&tmp))?;
        for layer in image.manifest.layers() {
            let digest = layer.digest().to_string();
            let path = self.blob_path(&digest);
            let f = File::open(&path).map_err(|_| Error::MissingBlob(digest.clone()))?;
            crate::unpack::apply_layer(&tmp, f)?;
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Ok(dir)
    }
}

fn hex_of(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
