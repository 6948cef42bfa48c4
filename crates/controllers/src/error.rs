//! What can go wrong while a controller reconciles.

/// A failed reconcile; the controller logs it and tries again later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {namespace}/{name} has no {field}")]
    Missing {
        kind: &'static str,
        namespace: String,
        name: String,
        field: &'static str,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
