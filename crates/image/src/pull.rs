//! `pull` and `push`: images to and from an OCI registry (the distribution API) through
//! `oci-client`, as containerd's pull does: resolve the reference to a manifest (an image
//! index or docker manifest list picks linux on this machine's architecture), fetch the
//! config and layers the store lacks (each verified against its digest while it streams),
//! then, under the store's lock, move them in and point the reference at the manifest.
//! HTTPS unless the registry is named in [`Options::insecure`] (plain HTTP, as containerd's
//! and docker's `insecure-registries`), trusting the system's roots and
//! [`Options::extra_roots`] (a private registry's CA); anonymous, basic or bearer auth, where `oci-client`
//! answers the registry's challenge (basic, or a token from its auth service).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_spec::image::{ImageIndex, ImageManifest};

pub use oci_client::secrets::RegistryAuth as Auth;

use crate::reference::Reference;
use crate::store::{Store, hex};
use crate::{Error, Result};

/// The manifest media types a pull accepts: OCI and docker schema 2, images and indexes.
const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Registries (`HOST:PORT`, as in the reference) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// The longest a connection attempt or a read may take; none: no limit.
    pub timeout: Option<Duration>,
    /// PEM certificates trusted for HTTPS registries besides the system's roots (a private
    /// registry's CA, as containerd's `certs.d/HOST/ca.crt`); see [`read_roots`].
    pub extra_roots: Vec<Vec<u8>>,
}

/// Reads CA files for [`Options::extra_roots`]; each must hold at least one PEM certificate.
pub fn read_roots(files: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    files
        .iter()
        .map(|file| {
            let bad = |why: String| Error::RegistryCa {
                path: file.clone(),
                why,
            };
            let pem = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
            Ok(pem)
        })
        .collect()
}

impl Options {
    /// A client for one pull: clients cache tokens per registry, so one is never shared
    /// between pulls with different credentials.
    fn client(&self) -> oci_client::Client {
        // reqwest (rustls without a provider) uses the process's default one: ring, as the
        // rest of berth. Installing it again is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if self.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.insecure.clone())
        };
        oci_client::Client::new(ClientConfig {
            protocol,
            connect_timeout: self.timeout,
            read_timeout: self.timeout,
            // Indexes are resolved here (platform::choose), never by the client.
            platform_resolver: None,
            extra_root_certificates: self
                .extra_roots
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..ClientConfig::default()
        })
    }
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The normalized reference now in the store.
    pub reference: String,
    /// The image manifest's digest (the platform's, for an index).
    pub digest: String,
    /// The config's digest: the image ID that `crictl` shows.
    pub config: String,
    /// Bytes of the layers as stored (the image's size, what `berth image ls` shows).
    pub size: u64,
    /// Blobs (config and layers) fetched; the others were in the store already.
    pub fetched: usize,
    /// Bytes fetched.
    pub fetched_bytes: u64,
    pub elapsed: Duration,
}

/// The registry's name for `r` (`docker.io` resolves to Docker Hub's registry).
fn remote(r: &Reference) -> oci_client::Reference {
    match (&r.tag, &r.digest) {
        (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
            r.domain.clone(),
            r.path.clone(),
            t.clone(),
            d.clone(),
        ),
        (_, Some(d)) => {
            oci_client::Reference::with_digest(r.domain.clone(), r.path.clone(), d.clone())
        }
        (t, None) => oci_client::Reference::with_tag(
            r.domain.clone(),
            r.path.clone(),
            t.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

/// A registry error in containerd's words, for the pod's `Failed` event and waiting message.
fn registry_error(reference: &str, e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            format!("failed to resolve reference \"{reference}\": {reference}: not found")
        }
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => {
            format!("failed to resolve reference \"{reference}\": {reference}: not found")
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => format!(
            "pull access denied, repository does not exist or may require authorization: {}",
            chain(e)
        ),
        _ => chain(e),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        let m = e.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = e.source();
    }
    s
}

fn sha256(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
    )
}

/// Whether `body` is an image index or docker manifest list (by media type, else by shape).
fn is_index(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Head>(body).is_ok_and(|h| match h.media_type.as_deref() {
        Some(t) if t.contains("index") || t.contains("manifest.list") => true,
        Some(_) => false,
        None => h.manifests.is_some(),
    })
}

/// Pulls `image` (any reference form) into `store`.
pub async fn pull(store: &Store, image: &str, auth: &Auth, options: &Options) -> Result<Pulled> {
    let t0 = Instant::now();
    let reference = Reference::parse(image)?;
    let name = reference.to_string();
    let fail = |message: String| Error::Pull {
        reference: name.clone(),
        message,
    };
    let client = options.client();
    let mut target = remote(&reference);
    let (mut body, mut digest) = client
        .pull_manifest_raw(&target, auth, ACCEPTED)
        .await
        .map_err(|e| fail(registry_error(&name, &e)))?;
    if is_index(&body) {
        let index: ImageIndex = serde_json::from_slice(&body).map_err(|source| Error::Json {
            what: format!("index {digest}"),
            source,
        })?;
        let chosen = crate::platform::choose(&index, false).ok_or_else(|| {
            fail(format!(
                "no match for platform in manifest {digest}: linux/{} not found",
                crate::platform::arch()
            ))
        })?;
        target = oci_client::Reference::with_digest(
            reference.domain.clone(),
            reference.path.clone(),
            chosen.digest().to_string(),
        );
        (body, digest) = client
            .pull_manifest_raw(&target, auth, ACCEPTED)
            .await
            .map_err(|e| fail(registry_error(&name, &e)))?;
        if is_index(&body) {
            return Err(fail(format!(
                "manifest {digest} is an index inside an index"
            )));
        }
    }
    // oci-client checked the body against the digest the registry and the reference name;
    // the store names blobs by their own hash, so check that too.
    if sha256(&body) != digest {
        return Err(Error::DigestMismatch {
            path: name.clone(),
            expected: digest,
            actual: sha256(&body),
        });
    }
    let manifest: ImageManifest = serde_json::from_slice(&body).map_err(|source| Error::Json {
        what: format!("manifest {digest}"),
        source,
    })?;
    let mut fetched = Vec::new();
    let mut fetched_bytes = 0;
    for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let d = blob.digest().to_string();
        if store.blob_path(&d).exists() || fetched.iter().any(|(_, f)| *f == d) {
            continue;
        }
        let tmp = store.pull_path();
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(crate::error::io(&tmp))?;
        let got = client.pull_blob(&target, d.as_str(), file).await;
        if let Err(e) = got {
            let _ = tokio::fs::remove_file(&tmp).await;
            for (p, _) in &fetched {
                let _ = tokio::fs::remove_file(p).await;
            }
            return Err(fail(format!("failed to copy {d}: {}", chain(&e))));
        }
        fetched_bytes += blob.size();
        fetched.push((tmp, d));
    }
    let key = Store::key(image)?;
    let (s, b, d, f) = (
        store.clone(),
        body.to_vec(),
        digest.clone(),
        fetched.clone(),
    );
    tokio::task::spawn_blocking(move || s.commit_pull(&key, &b, &d, &f))
        .await
        .map_err(|e| fail(format!("storing the image: {e}")))??;
    Ok(Pulled {
        reference: name.clone(),
        digest,
        config: manifest.config().digest().to_string(),
        size: manifest.layers().iter().map(|l| l.size()).sum(),
        fetched: fetched.len(),
        fetched_bytes,
        elapsed: t0.elapsed(),
    })
}

/// Pushes the store's `image` to the registry its reference names (every blob, then the
/// manifest by tag), as `ctr images push` does; returns the manifest's digest.
pub async fn push(store: &Store, image: &str, auth: &Auth, options: &Options) -> Result<String> {
    let reference = Reference::parse(image)?;
    let name = reference.to_string();
    let fail = |message: String| Error::Pull {
        reference: name.clone(),
        message,
    };
    let img = store
        .resolve(image)?
        .ok_or_else(|| Error::NotFound(image.to_owned()))?;
    let client = options.client();
    let target = remote(&reference);
    client
        .auth(&target, auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| fail(registry_error(&name, &e)))?;
    for blob in std::iter::once(img.manifest.config()).chain(img.manifest.layers()) {
        let d = blob.digest().to_string();
        let data = store.read_blob(&d)?;
        client
            .push_blob(&target, data, &d)
            .await
            .map_err(|e| fail(format!("pushing {d}: {}", chain(&e))))?;
    }
    let body = store.read_blob(&img.digest)?;
    let media_type = img.manifest.media_type().as_ref().map_or(
        "application/vnd.oci.image.manifest.v1+json".to_owned(),
        |m| m.to_string(),
    );
    let content_type = http::HeaderValue::from_str(&media_type)
        .map_err(|e| fail(format!("media type {media_type:?}: {e}")))?;
    client
        .push_manifest_raw(&target, body, content_type)
        .await
        .map_err(|e| fail(format!("pushing the manifest: {}", chain(&e))))?;
    Ok(img.digest)
}

/// Downloads in progress (and leftovers of interrupted ones).
pub(crate) const PULLS: &str = "pulls";

impl Store {
    /// A fresh path for a download, on the blobs' file system.
    fn pull_path(&self) -> PathBuf {
        let tmp = self.tmp_path("pull");
        self.root()
            .join(PULLS)
            .join(tmp.file_name().unwrap_or_default())
    }

    /// Moves fetched blobs in, stores the manifest and points `key` at it, under the lock.
    /// A blob found present before the download that a concurrent `rm` removed since fails
    /// the pull (the next one fetches it).
    fn commit_pull(
        &self,
        key: &str,
        manifest: &[u8],
        digest: &str,
        fetched: &[(PathBuf, String)],
    ) -> Result<()> {
        let lock = self.lock()?;
        for (tmp, d) in fetched {
            let to = self.blob_path(d);
            std::fs::rename(tmp, &to).map_err(crate::error::io(&to))?;
        }
        let stored = self.put_bytes(manifest)?;
        if stored != digest {
            return Err(Error::DigestMismatch {
                path: key.to_owned(),
                expected: digest.to_owned(),
                actual: stored,
            });
        }
        let m: ImageManifest = serde_json::from_slice(manifest).map_err(|source| Error::Json {
            what: format!("manifest {digest}"),
            source,
        })?;
        for blob in std::iter::once(m.config()).chain(m.layers()) {
            let d = blob.digest().to_string();
            if !self.blob_path(&d).exists() {
                return Err(Error::MissingBlob(d));
            }
        }
        self.tag(&lock, &[(key.to_owned(), digest.to_owned())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn telling_indexes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200), media in "\\PC{0,40}") {
            let _ = is_index(&body);
            let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media, "layers": []});
            let _ = is_index(doc.to_string().as_bytes());
        }
    }

    #[test]
    fn indexes_are_told_from_manifests() {
        assert!(is_index(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        ));
        assert!(is_index(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#
        ));
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}"#
        ));
        assert!(!is_index(b"not json"));
    }

    #[test]
    fn references_map_to_the_registry_s_names() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = remote(&Reference::parse("nginx").expect("ref"));
        assert_eq!(
            (r.resolve_registry(), r.repository(), r.tag()),
            ("index.docker.io", "library/nginx", Some("latest"))
        );
        let r = remote(&Reference::parse(&format!("127.0.0.1:5000/a/b@{d}")).expect("ref"));
        assert_eq!(
            (r.registry(), r.repository(), r.digest()),
            ("127.0.0.1:5000", "a/b", Some(d.as_str()))
        );
    }
}
