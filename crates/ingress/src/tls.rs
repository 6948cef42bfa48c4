//! Certificates by server name (SNI) for the HTTPS listener: the Ingresses' TLS Secrets
//! (`*.example.com` entries cover one label), and a self-signed fallback for names no Secret
//! covers, as ingress controllers serve one.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates the HTTPS listener can present.
#[derive(Debug)]
pub struct Certs {
    by_host: RwLock<BTreeMap<String, Arc<CertifiedKey>>>,
    fallback: Option<Arc<CertifiedKey>>,
}

/// A certificate chain and key from PEM; `None` (and a log line) if they do not parse.
fn certified(cert_pem: &str, key_pem: &str) -> Option<Arc<CertifiedKey>> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).ok()??;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    (!chain.is_empty()).then(|| Arc::new(CertifiedKey::new(chain, signer)))
}

impl Certs {
    /// No Secrets yet; a fresh self-signed fallback certificate.
    pub fn new() -> Certs {
        let fallback = rcgen::generate_simple_self_signed(vec!["ingress.local".to_owned()])
            .ok()
            .and_then(|c| certified(&c.cert.pem(), &c.signing_key.serialize_pem()));
        Certs {
            by_host: RwLock::new(BTreeMap::new()),
            fallback,
        }
    }

    /// Replaces the certificates with `pem` (host -> certificate and key).
    pub fn set(&self, pem: &BTreeMap<String, (String, String)>) {
        let map = pem
            .iter()
            .filter_map(|(host, (cert, key))| {
                let ck = certified(cert, key);
                if ck.is_none() {
                    tracing::warn!(host, "the TLS Secret's certificate or key does not parse");
                }
                Some((host.clone(), ck?))
            })
            .collect();
        if let Ok(mut m) = self.by_host.write() {
            *m = map;
        }
    }

    /// The certificate for `name`: exact, then the wildcard one label up.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let m = self.by_host.read().ok()?;
        m.get(&name)
            .or_else(|| {
                let suffix = &name[name.find('.')?..];
                m.get(&format!("*{suffix}"))
            })
            .cloned()
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.lookup(n))
            .or_else(|| self.fallback.clone())
    }
}

/// The HTTPS listener's TLS settings, resolving through `certs`.
pub fn server_config(certs: Arc<Certs>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_found_by_exact_and_wildcard_name() {
        let make = |name: &str| {
            let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
            (c.cert.pem(), c.signing_key.serialize_pem())
        };
        let certs = Certs::new();
        certs.set(&BTreeMap::from([
            ("shop.example.com".to_owned(), make("shop.example.com")),
            ("*.example.org".to_owned(), make("*.example.org")),
            ("broken.test".to_owned(), ("x".to_owned(), "y".to_owned())),
        ]));
        assert!(certs.lookup("SHOP.example.com").is_some());
        assert!(certs.lookup("a.example.org").is_some());
        assert!(certs.lookup("a.b.example.org").is_none());
        assert!(certs.lookup("broken.test").is_none());
        assert!(certs.fallback.is_some());
    }
}
