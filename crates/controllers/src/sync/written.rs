//! The versions a controller wrote itself, so that the watch event of its own write queues no
//! second reconcile: what upstream's EndpointSlice controller does with its tracker.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The resourceVersion of each object's last write by one controller. Keyed by a hash of
/// namespace and name, the version as a number: 16 bytes an object. A version that is not a
/// number (another API server's) is never recorded, so those events always reconcile.
///
/// The event of a write often arrives before its reply, so a write in flight is marked
/// first ([`Written::writing`]) and any event of that object meanwhile counts as ours: the
/// write carries the version it read, so someone else's change in between fails it, and the
/// failed reconcile is retried anyway.
#[derive(Debug, Default)]
pub(crate) struct Written(Mutex<HashMap<u64, u64>>);

fn key(meta: &ObjectMeta) -> u64 {
    let mut h = DefaultHasher::new();
    meta.namespace.as_deref().unwrap_or_default().hash(&mut h);
    meta.name.as_deref().unwrap_or_default().hash(&mut h);
    h.finish()
}

fn version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// The mark of a write whose reply has not come yet.
const IN_FLIGHT: u64 = u64::MAX;

impl Written {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // The map holds plain numbers: a panic elsewhere cannot leave it half-updated.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a write of `meta`'s object as started; follow with `wrote` or `forget`.
    pub(crate) fn writing(&self, meta: &ObjectMeta) {
        self.map().insert(key(meta), IN_FLIGHT);
    }

    /// Records `meta` (from the API server's reply to our write) as this controller's own.
    pub(crate) fn wrote(&self, meta: &ObjectMeta) {
        match version(meta) {
            Some(v) => self.map().insert(key(meta), v),
            None => self.map().remove(&key(meta)),
        };
    }

    /// Forgets the object (deleted by this controller, or a write that failed).
    pub(crate) fn forget(&self, meta: &ObjectMeta) {
        self.map().remove(&key(meta));
    }

    /// Notes a write's outcome: the version written, or no mark if it failed.
    pub(crate) fn record<K: kube::Resource>(
        &self,
        sent: &ObjectMeta,
        done: kube::Result<K>,
    ) -> Result<(), crate::Error> {
        match done {
            Ok(done) => {
                self.wrote(done.meta());
                Ok(())
            }
            Err(e) => {
                self.forget(sent);
                Err(e.into())
            }
        }
    }

    /// Whether `meta` is exactly the version this controller last wrote: the event of its
    /// own write, which a reconcile would find already as desired.
    pub(crate) fn is_own(&self, meta: &ObjectMeta) -> bool {
        version(meta).is_some_and(|v| {
            self.map()
                .get(&key(meta))
                .is_some_and(|&w| w == v || w == IN_FLIGHT)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str, rv: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: rv.map(Into::into),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_version_written_is_own() {
        let w = Written::default();
        assert!(!w.is_own(&meta("a", "s", Some("5"))));
        w.wrote(&meta("a", "s", Some("5")));
        assert!(w.is_own(&meta("a", "s", Some("5"))));
        // Someone else's later write, another object, another namespace: not ours.
        assert!(!w.is_own(&meta("a", "s", Some("6"))));
        assert!(!w.is_own(&meta("a", "t", Some("5"))));
        assert!(!w.is_own(&meta("b", "s", Some("5"))));
        assert!(!w.is_own(&meta("a", "s", None)));
        // An opaque version replaces the record with none.
        w.wrote(&meta("a", "s", Some("x1")));
        assert!(!w.is_own(&meta("a", "s", Some("5"))));
        assert!(!w.is_own(&meta("a", "s", Some("x1"))));
        w.wrote(&meta("a", "s", Some("7")));
        w.forget(&meta("a", "s", None));
        assert!(!w.is_own(&meta("a", "s", Some("7"))));
        // While a write is in flight its event may come first: any version counts as ours.
        w.writing(&meta("a", "s", Some("7")));
        assert!(w.is_own(&meta("a", "s", Some("9"))));
        assert!(!w.is_own(&meta("a", "t", Some("9"))));
        w.wrote(&meta("a", "s", Some("9")));
        assert!(!w.is_own(&meta("a", "s", Some("10"))));
        w.writing(&meta("a", "s", None));
        w.forget(&meta("a", "s", None));
        assert!(!w.is_own(&meta("a", "s", Some("10"))));
    }
}
