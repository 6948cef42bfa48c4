//! The one error type of berth-store, shared by every backend, so the API server can map
//! storage outcomes (not found, conflict, compacted...) to Kubernetes statuses in one place.

use std::sync::Arc;

use crate::KeyValue;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`crate::Store`] operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist (update, delete).
    #[error("key {key:?} not found")]
    NotFound {
        /// The key that was asked for.
        key: String,
    },
    /// The key already exists (create).
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key that was asked for.
        key: String,
    },
    /// The key's mod revision is not the one the caller expected (optimistic concurrency).
    #[error("key {key:?} was modified: expected another mod revision than the current {}", current.mod_revision)]
    Conflict {
        /// The key that was asked for.
        key: String,
        /// The key's current value, so the caller can retry without another read.
        current: Box<KeyValue>,
    },
    /// The history needed to list or watch at `requested` is gone; clients re-list.
    #[error("revision {requested} has been compacted (compaction revision {compacted})")]
    Compacted {
        /// The revision the caller asked for.
        requested: i64,
        /// The backend's compaction revision; 0 when the backend does not report it
        /// (etcd's range errors do not carry it).
        compacted: i64,
    },
    /// The caller asked to list at a revision the store has not reached yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision the caller asked for.
        requested: i64,
        /// The store's current revision when the request was served.
        current: i64,
    },
    /// A watcher fell so far behind that its buffered events were dropped; the stream ends
    /// after this error and the client re-watches from `revision` (or re-lists).
    #[error("watcher fell behind; all events up to revision {revision} were delivered")]
    Lagged {
        /// All events up to this revision were delivered before the stream ended.
        revision: i64,
    },
    /// The key cannot be stored (for example it is empty).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The backend did not answer a health check in time.
    #[error("{backend} did not answer within {seconds} s")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// How long it was given.
        seconds: u64,
    },
    /// The store was shut down while the request was pending.
    #[error("store is closed")]
    Closed,
    /// Filesystem error of the embedded backend outside redb (creating its directory).
    #[error("embedded store I/O error")]
    Io(#[source] std::io::Error),
    /// redb error of the embedded backend. Shared because one failed group commit fails
    /// every write in the batch.
    #[error("embedded store (redb) error")]
    Embedded(#[source] Arc<redb::Error>),
    /// The embedded database holds a record this crate did not write.
    #[error("embedded store record for key {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key of the bad record.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Error talking to etcd (transport, gRPC status...).
    #[error("etcd error")]
    Etcd(#[source] Box<etcd_client::Error>),
    /// etcd answered something this crate cannot interpret.
    #[error("unexpected etcd response: {0}")]
    EtcdProtocol(String),
}

/// Every redb error type converts through `redb::Error`, so `?` works on all of them.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Embedded(Arc::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        Error::Etcd(Box::new(e))
    }
}
