//! Versioned key/value storage with watch for berth, with etcd v3 semantics as kube-apiserver
//! uses them: one cluster-wide revision, compare-and-swap on mod revision, watch from a revision.
//! Two backends implement [`Store`]: [`Embedded`] (redb on local disk) and [`Etcd`].

pub mod embedded;
mod error;
pub mod etcd;
mod pack;

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::{Embedded, EmbeddedOptions};
pub use error::{Error, Result};
pub use etcd::{Etcd, EtcdOptions};

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, without any backend prefix.
    pub key: String,
    /// The stored bytes (for berth, a serialized object).
    pub value: Bytes,
    /// Store revision of the write that created the key.
    pub create_revision: i64,
    /// Store revision of the last write to the key; the object's resourceVersion.
    pub mod_revision: i64,
}

/// One change seen by a watch, or a progress notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key was created (`prev` is `None`) or updated; `kv.mod_revision` is the event's revision.
    Put {
        /// The key as written.
        kv: KeyValue,
        /// The key before the write, if it existed.
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`.
    Delete {
        /// The key as it was before the delete.
        prev: KeyValue,
        /// Store revision of the delete.
        revision: i64,
    },
    /// Every event up to `revision` for the watched prefix has been delivered (a BOOKMARK).
    Progress {
        /// The revision the watcher is known to be up to date with.
        revision: i64,
    },
}

impl Event {
    /// The store revision this event happened at (or reports, for progress).
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
            Event::Progress { revision } => *revision,
        }
    }

    /// The key the event is about; `None` for progress notifications.
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::Put { kv, .. } => Some(&kv.key),
            Event::Delete { prev, .. } => Some(&prev.key),
            Event::Progress { .. } => None,
        }
    }
}

/// How to page and pin a [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Maximum number of items to return; 0 returns all.
    pub limit: usize,
    /// Return only keys strictly after this one (the `continue` position).
    pub start_after: Option<String>,
    /// List the state as of this revision (consistent paging). `None` (or 0) lists the latest
    /// state. Both backends honour it as long as the history reaches back that far, and return
    /// [`Error::Compacted`] otherwise (the embedded backend keeps a bounded event history and
    /// none from before its last restart).
    pub revision: Option<i64>,
}

/// One page of a [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The store revision the list reflects; the list's resourceVersion.
    pub revision: i64,
    /// Whether more items follow the last one returned.
    pub more: bool,
}

/// Stream of watch events, in revision order; it ends after an error.
pub type WatchStream = futures_util::stream::BoxStream<'static, Result<Event>>;

/// A versioned key/value store with watch: the storage contract of the berth API server.
///
/// Every successful write bumps one store-wide revision, strictly increasing across all keys;
/// a create has `create_revision == mod_revision`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, ordered by key, paged by `opts`.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Number of keys starting with `prefix`.
    async fn count(&self, prefix: &str) -> Result<usize>;

    /// Creates the key; [`Error::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces the key's value. [`Error::NotFound`] if it does not exist;
    /// [`Error::Conflict`] if `expected_mod_revision` is given and differs from the current one.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue>;

    /// Deletes the key and returns it as it was. [`Error::NotFound`] / [`Error::Conflict`] as
    /// for [`Store::update`].
    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue>;

    /// Streams every event for keys under `prefix` with revision > `from_revision`, in order,
    /// then live events, with [`Event::Progress`] at the backend's progress interval.
    /// `from_revision` 0 means "from now".
    ///
    /// If that history is gone the result is [`Error::Compacted`]: returned here, or (etcd, which
    /// learns it asynchronously) as the stream's first item. A watcher that cannot keep up gets
    /// [`Error::Lagged`] and its stream ends.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<i64>;

    /// Whether the store can take writes now: the last write failure of the embedded store
    /// (a full disk, say) until it recovers, or etcd not answering. What `/readyz` reports.
    async fn check(&self) -> Result<()>;
}

/// Rejects keys that no backend can store, so both backends agree.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: key.to_owned(),
            reason: "key must not be empty",
        });
    }
    Ok(())
}
