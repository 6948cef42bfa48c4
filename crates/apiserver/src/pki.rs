//! The cluster's certificates: a CA, the serving certificate, the admin client certificate and
//! the client certificate the API server shows node agents, created on first start in the data directory, plus the kubeconfig that lets kubectl use them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificates could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a PEM certificate or key")]
    Pem { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// PEM text of everything the server and its kubeconfig need.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// What the API server presents to node agents (kube-apiserver's
    /// `--kubelet-client-certificate`).
    pub kubelet_client_cert: String,
    pub kubelet_client_key: String,
    /// The key ServiceAccount tokens are signed with (kube-apiserver's
    /// `--service-account-signing-key-file`).
    pub sa_key: String,
}

/// The CA's subject; rebuilt identically on every start so that the stored CA key can sign a
/// fresh serving certificate when the served names change.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "berth-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    p.not_after = rcgen::date_time_ymd(2125, 1, 1);
    p
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The file's text when it holds something: a missing or empty file (a first start cut short
/// by a full disk) counts as absent, so it is made again.
fn read_present(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .filter(|t| !t.trim().is_empty())
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    crate::files::write_private(path, text.as_bytes()).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn made(path: &Path, why: &str) {
    tracing::info!(path = %path.display(), "{why}");
}

fn leaf(cn: &str, org: Option<&str>, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    p.not_after = rcgen::date_time_ymd(2125, 1, 1);
    p
}

/// Loads the certificates from `dir`, creating what is missing. The serving certificate is
/// re-issued when `names` (DNS names and IPs it must be valid for) differ from the stored ones.
pub fn ensure(dir: &Path, names: &[String]) -> Result<Pki, PkiError> {
    crate::files::private_dir(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca_key_path = dir.join("ca.key");
    let ca_cert_path = dir.join("ca.crt");
    let stored_ca_key = read_present(&ca_key_path).and_then(|pem| KeyPair::from_pem(&pem).ok());
    // A new CA invalidates every certificate it signed before.
    let new_ca = stored_ca_key.is_none();
    let ca_key = match stored_ca_key {
        Some(key) => key,
        None => {
            let key = KeyPair::generate()?;
            write(&ca_key_path, &key.serialize_pem())?;
            made(&ca_key_path, "generated a new cluster CA key");
            key
        }
    };
    if new_ca || read_present(&ca_cert_path).is_none() {
        write(&ca_cert_path, &ca_params().self_signed(&ca_key)?.pem())?;
        made(&ca_cert_path, "wrote the cluster CA certificate");
    }
    let issuer = Issuer::new(ca_params(), ca_key);

    let sans_path = dir.join("apiserver.names");
    let wanted = names.join("\n");
    let server_cert_path = dir.join("apiserver.crt");
    let server_key_path = dir.join("apiserver.key");
    if new_ca
        || read_present(&server_cert_path).is_none()
        || read_present(&server_key_path).is_none()
        || std::fs::read_to_string(&sans_path).ok().as_deref() != Some(wanted.as_str())
    {
        let mut params = leaf("berth-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        let key = KeyPair::generate()?;
        // The key first: a certificate is only ever written beside its own key.
        write(&server_key_path, &key.serialize_pem())?;
        write(&server_cert_path, &params.signed_by(&key, &issuer)?.pem())?;
        write(&sans_path, &wanted)?;
        made(&server_cert_path, "issued the serving certificate");
    }

    let client = |name: &str, cn: &str| -> Result<(String, String), PkiError> {
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        if let (false, Some(cert), Some(key)) =
            (new_ca, read_present(&cert_path), read_present(&key_path))
        {
            return Ok((cert, key));
        }
        let params = leaf(
            cn,
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let key = KeyPair::generate()?;
        let (cert, key) = (params.signed_by(&key, &issuer)?.pem(), key.serialize_pem());
        write(&key_path, &key)?;
        write(&cert_path, &cert)?;
        made(&cert_path, "issued a client certificate");
        Ok((cert, key))
    };
    let (admin_cert, admin_key) = client("admin", "kubernetes-admin")?;
    let (kubelet_client_cert, kubelet_client_key) =
        client("apiserver-kubelet-client", "kube-apiserver-kubelet-client")?;
    let sa_path = dir.join("sa.key");
    let sa_key = match read_present(&sa_path).filter(|pem| KeyPair::from_pem(pem).is_ok()) {
        Some(pem) => pem,
        None => {
            let pem = KeyPair::generate()?.serialize_pem();
            write(&sa_path, &pem)?;
            made(&sa_path, "generated the ServiceAccount token signing key");
            pem
        }
    };
    Ok(Pki {
        sa_key,
        ca_cert: read(&ca_cert_path)?,
        server_cert: read(&server_cert_path)?,
        server_key: read(&server_key_path)?,
        admin_cert,
        admin_key,
        kubelet_client_cert,
        kubelet_client_key,
    })
}

/// A rustls server configuration that asks for (but does not require) a client certificate
/// signed by the cluster CA; requests without one are answered 401 by the auth layer, which is
/// what kube-apiserver does, rather than failing the handshake.
pub fn server_config(pki: &Pki) -> Result<rustls::ServerConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem_err = |what: &str| PkiError::Pem {
        path: PathBuf::from(what),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        roots.add(cert.map_err(|_| pem_err("ca.crt"))?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let chain = CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| pem_err("apiserver.crt"))?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes())
        .map_err(|_| pem_err("apiserver.key"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The TLS client configuration for dialing node agents: presents the kubelet client
/// certificate and, like kube-apiserver without `--kubelet-certificate-authority`, does not
/// verify the agent's self-signed serving certificate (the handshake signature still is).
pub fn kubelet_client_config(pki: &Pki) -> Result<rustls::ClientConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem_err = |what: &str| PkiError::Pem {
        path: PathBuf::from(what),
    };
    let chain = CertificateDer::pem_slice_iter(pki.kubelet_client_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| pem_err("apiserver-kubelet-client.crt"))?;
    let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client_key.as_bytes())
        .map_err(|_| pem_err("apiserver-kubelet-client.key"))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyAgentCertificate(provider)))
        .with_client_auth_cert(chain, key)?;
    // Exec and port-forward upgrade the connection, which needs HTTP/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The client configuration for `https:` Service and pod proxying: no client certificate and
/// no verification of the backend, as kube-apiserver's proxy transport (`InsecureSkipVerify`).
pub fn proxy_client_config() -> Result<rustls::ClientConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyAgentCertificate(provider)))
        .with_no_client_auth();
    // Upgrades need HTTP/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts whatever certificate an agent serves, checking only the handshake signatures.
#[derive(Debug)]
struct AnyAgentCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyAgentCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A kubeconfig for the admin user, with the certificates inlined so it can be copied anywhere.
pub fn kubeconfig(pki: &Pki, server_url: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\n\
         users:\n- name: berth-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: berth\n  context:\n    cluster: berth\n    user: berth-admin\n    namespace: default\n\
         current-context: berth\npreferences: {{}}\n",
        b64(&pki.ca_cert),
        b64(&pki.admin_cert),
        b64(&pki.admin_key),
    )
}

/// Writes the admin kubeconfig to `path` unless the one there still works: same server, CA
/// and credentials. So what a user changed in it (`kubectl config set-context --namespace`)
/// survives a restart. Returns whether it was written.
pub fn ensure_kubeconfig(path: &Path, pki: &Pki, server_url: &str) -> Result<bool, PkiError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    if let Some(old) = read_present(path) {
        let still_works = old.contains(&format!("server: {server_url}\n"))
            && [&pki.ca_cert, &pki.admin_cert, &pki.admin_key]
                .iter()
                .all(|pem| old.contains(&b64(pem)));
        if still_works {
            return Ok(false);
        }
    }
    write_private(path, &kubeconfig(pki, server_url))?;
    Ok(true)
}

/// Writes `text` to `path` readable only by its owner, atomically. A missing parent directory
/// is made private; an existing one (`/tmp`, `~/.kube`) is left as it is.
pub fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        crate::files::private_dir(parent).map_err(|source| PkiError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_is_kept_while_it_works() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure(&dir.path().join("pki"), &["127.0.0.1".into()]).expect("pki");
        let path = dir.path().join("kubeconfig");
        assert!(ensure_kubeconfig(&path, &pki, "https://127.0.0.1:6443").expect("write"));
        let edited = std::fs::read_to_string(&path)
            .expect("read")
            .replace("namespace: default", "namespace: kube-system");
        std::fs::write(&path, &edited).expect("edit");
        assert!(!ensure_kubeconfig(&path, &pki, "https://127.0.0.1:6443").expect("keep"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), edited);
        // Another address: the old file no longer reaches the server.
        assert!(ensure_kubeconfig(&path, &pki, "https://127.0.0.1:7443").expect("rewrite"));
        assert!(
            std::fs::read_to_string(&path)
                .expect("read")
                .contains(":7443")
        );
    }

    #[test]
    fn certificates_are_made_once_and_reissued_for_new_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ensure(dir.path(), &["localhost".into(), "127.0.0.1".into()]).expect("pki");
        let b = ensure(dir.path(), &["localhost".into(), "127.0.0.1".into()]).expect("pki");
        assert_eq!(a.server_cert, b.server_cert);
        let c = ensure(dir.path(), &["localhost".into(), "10.0.0.1".into()]).expect("pki");
        assert_ne!(a.server_cert, c.server_cert);
        assert_eq!(a.ca_cert, c.ca_cert);
        assert_eq!(a.admin_cert, c.admin_cert);
        server_config(&c).expect("rustls accepts the certificates");
        let before = ensure(dir.path(), &["localhost".into(), "10.0.0.1".into()]).expect("pki");
        assert_eq!(
            before.admin_key, c.admin_key,
            "nothing is remade when all is there"
        );
        kubelet_client_config(&c).expect("rustls accepts the kubelet client certificate");
        assert!(
            kubeconfig(&c, "https://127.0.0.1:6443").contains("server: https://127.0.0.1:6443")
        );
    }

    #[test]
    fn files_are_private_and_empty_ones_are_made_again() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("pki");
        let names = ["localhost".to_owned()];
        let first = ensure(&dir, &names).expect("pki");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        // A first start cut short by a full disk: a 0-byte certificate and a missing key.
        std::fs::write(dir.join("admin.crt"), "").expect("truncate");
        std::fs::remove_file(dir.join("apiserver.key")).expect("rm");
        let second = ensure(&dir, &names).expect("pki starts again");
        assert_eq!(first.ca_cert, second.ca_cert, "the CA is kept");
        assert!(second.admin_cert.contains("BEGIN CERTIFICATE"));
        assert_ne!(first.server_key, second.server_key);
        server_config(&second).expect("the new serving pair matches");
        // A lost CA key means a new CA and new certificates signed by it.
        std::fs::write(dir.join("ca.key"), "").expect("truncate");
        let third = ensure(&dir, &names).expect("pki");
        assert_ne!(third.ca_cert, second.ca_cert);
        assert_ne!(third.admin_cert, second.admin_cert);
    }
}
