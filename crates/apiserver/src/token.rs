//! ServiceAccount tokens: JWTs signed with the cluster's ServiceAccount key (`pki/sa.key`,
//! ECDSA P-256, ES256), with kube-apiserver's claims, issued by the `serviceaccounts/NAME/token`
//! subresource (TokenRequest) and accepted as `Authorization: Bearer` credentials, so that
//! in-cluster clients (kubectl, client-go, kube-rs, the Python client) work from a pod.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer and default audience, as kubeadm configures kube-apiserver.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The shortest token a TokenRequest may ask for (kube-apiserver's minimum).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// What the kubelet asks for a projected token; kube-apiserver then issues a token valid
/// for a year (`--service-account-extend-token-expiration`), warning after the hour.
pub const KUBELET_EXPIRATION_SECONDS: i64 = 3607;
const EXTENDED_SECONDS: i64 = 365 * 24 * 3600;

/// A name and uid, as the `kubernetes.io` claim holds its objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A ServiceAccount token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub nbf: i64,
    pub sub: String,
    #[serde(rename = "kubernetes.io")]
    pub kube: KubeClaims,
}

impl Claims {
    /// The claims of a token for ServiceAccount `sa` in `namespace`, bound to `pod` when
    /// given, valid `seconds` from `now` (a year for the kubelet's 3607, as upstream).
    pub fn new(
        namespace: &str,
        sa: Ref,
        pod: Option<Ref>,
        audiences: Vec<String>,
        seconds: i64,
        now: i64,
    ) -> Claims {
        let extended = pod.is_some() && seconds == KUBELET_EXPIRATION_SECONDS;
        let exp = now + if extended { EXTENDED_SECONDS } else { seconds };
        Claims {
            aud: audiences,
            exp,
            iat: now,
            iss: ISSUER.into(),
            nbf: now,
            sub: format!("system:serviceaccount:{namespace}:{}", sa.name),
            kube: KubeClaims {
                namespace: namespace.into(),
                serviceaccount: sa,
                pod,
                warnafter: extended.then_some(now + seconds),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the ServiceAccount key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("signing a token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs and checks ServiceAccount tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("kid", &self.kid).finish()
    }
}

impl Tokens {
    /// From the PEM (PKCS#8) of the ServiceAccount signing key.
    pub fn from_pem(pem: &str) -> Result<Tokens, TokenError> {
        let key = rcgen::KeyPair::from_pem(pem)?;
        let public = key.public_key_raw();
        // The key id is a digest of the public key, so tokens name the key that signed them.
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let kid = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Tokens {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(public),
            kid,
        })
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// The claims of a token this server issued for the API's audience, unexpired at `now`;
    /// `None` for anything else. Whether its ServiceAccount (and pod) still exist is the
    /// caller's to check.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[ISSUER]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked here against `now`, with no leeway.
        v.validate_exp = false;
        v.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()?
            .claims;
        (claims.exp > now && claims.nbf <= now + 60).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let key = rcgen::KeyPair::generate().expect("key");
        Tokens::from_pem(&key.serialize_pem()).expect("tokens")
    }

    fn sa() -> Ref {
        Ref {
            name: "default".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let t = tokens();
        let claims = Claims::new("ns", sa(), None, vec![ISSUER.into()], 600, 1_000);
        let jwt = t.issue(&claims).expect("issue");
        assert_eq!(t.verify(&jwt, 1_000), Some(claims.clone()));
        assert_eq!(t.verify(&jwt, 1_599).map(|c| c.sub), Some(claims.sub));
        assert_eq!(t.verify(&jwt, 1_600), None, "expired");
        assert_eq!(tokens().verify(&jwt, 1_000), None, "another key");
        let mut parts: Vec<&str> = jwt.split('.').collect();
        parts[1] = "eyJzdWIiOiJ4In0";
        assert_eq!(t.verify(&parts.join("."), 1_000), None, "tampered");
        assert_eq!(t.verify("not a token", 1_000), None);
        let other_aud = Claims::new("ns", sa(), None, vec!["vault".into()], 600, 1_000);
        assert_eq!(t.verify(&t.issue(&other_aud).expect("issue"), 1_000), None);
    }

    #[test]
    fn the_kubelets_pod_tokens_last_a_year_and_warn_after_the_hour() {
        let pod = Ref {
            name: "p".into(),
            uid: "u-2".into(),
        };
        let c = Claims::new("ns", sa(), Some(pod), vec![ISSUER.into()], 3607, 0);
        assert_eq!(c.exp, EXTENDED_SECONDS);
        assert_eq!(c.kube.warnafter, Some(3607));
        assert_eq!(c.sub, "system:serviceaccount:ns:default");
        let plain = Claims::new("ns", sa(), None, vec![ISSUER.into()], 3607, 0);
        assert_eq!(plain.exp, 3607);
    }
}
