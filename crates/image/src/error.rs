//! What can fail in the image store: one enum, variants named for the step that failed.

use std::path::PathBuf;

/// An image store error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the archive")]
    Archive(#[source] std::io::Error),
    #[error("{what} is not valid JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    #[error("image {0:?} is not in the store")]
    NotFound(String),
    #[error("blob {path} has digest {actual}, not the {expected} its name says")]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("the archive names {0}, which it does not hold")]
    MissingBlob(String),
    #[error("not an image archive: no manifest.json (docker save) or index.json (OCI layout)")]
    NotAnImage,
    #[error("the archive's {0} names no image for this platform")]
    NoImage(String),
    #[error("layer media type {0} is not supported")]
    UnsupportedLayer(String),
    #[error("{path}")]
    Sys {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("failed to pull and unpack image \"{reference}\": {message}")]
    Pull { reference: String, message: String },
    #[error("registry CA {path}: {why}")]
    RegistryCa { path: PathBuf, why: String },
    #[error("building an OCI document")]
    Spec(#[from] oci_spec::OciSpecError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` helper: an I/O error about `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
