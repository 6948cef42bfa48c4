//! A cache that keeps each object as its JSON, decoded when a controller reads it: for the
//! kinds the controllers read a few of at a time (Pods, Endpoints, EndpointSlices) and that
//! are no controller's primary (a kube-runtime `Controller` needs its own store for those).
//! A decoded Pod is 2,176 bytes inline however little it holds ([`super::slim_pod`]), plus
//! a 540-byte B-tree leaf per label map; its JSON is a few hundred bytes. At 10,000 Pods the
//! Pod cache was the largest part of `berth server`'s heap, while a readiness flip reads ten
//! Pods, one Endpoints and one slice. The JSON is LZ4-packed against the first object's
//! (as the embedded store packs its values).
//!
//! It stands in for kube-runtime's shared reflector ([`PackedWriter::reflect`] takes the
//! same watch events, with the same relist semantics) and its subscriber streams (the object
//! of every applied event, and every object once a list is in). Written here: kube-runtime's
//! store only holds the watched type itself.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{SetOnce, mpsc};

/// What the cache can hold.
pub(crate) trait Object:
    kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}
impl<K> Object for K where
    K: kube::Resource<DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// (namespace, name) -> the object.
type Map = BTreeMap<(Box<str>, Box<str>), Packed>;

/// An object as the cache holds it.
#[derive(Debug)]
struct Packed {
    /// The uid of its controller owner, if any: which Pods a ReplicaSet (or another
    /// workload) can own or adopt is decided before decoding.
    controller: Option<Box<str>>,
    /// The JSON, LZ4-packed against the cache's dictionary when `len` is not 0.
    data: Box<[u8]>,
    /// The JSON's length when packed.
    len: u32,
    /// Which version of the object this is, for [`PackedCache::recent`]: unique in the
    /// process. (A `Weak` to the decoded object would keep its allocation: 2 KB a Pod.)
    id: u64,
}

/// Objects decoded last, by [`Packed::id`], oldest first.
type Recent<K> = VecDeque<(u64, Arc<K>)>;

/// The next [`Packed::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The JSON of the first object a cache saw: objects of one kind repeat each other's field
/// names and values, so a slim Pod packs some 4 times smaller against another.
type Dictionary = OnceLock<Box<[u8]>>;

impl Packed {
    fn new<K: Object>(o: &K, dictionary: &Dictionary) -> Option<Packed> {
        let json = serde_json::to_vec(o)
            .inspect_err(|e| tracing::warn!(kind = %K::kind(&()), error = %e, "an object could not be cached"))
            .ok()?;
        let packed = match (dictionary.get(), u32::try_from(json.len())) {
            (Some(d), Ok(len)) => {
                let mut out = vec![0; lz4_flex::block::get_maximum_output_size(json.len())];
                match lz4_flex::block::compress_into_with_dict(&json, &mut out, d) {
                    Ok(n) if n < json.len() => {
                        out.truncate(n);
                        Some((out, len))
                    }
                    _ => None,
                }
            }
            _ => {
                let _ = dictionary.set(json.clone().into_boxed_slice());
                None
            }
        };
        let (data, len) = packed.unwrap_or((json, 0));
        Some(Packed {
            controller: controller_uid(o.meta()).map(Box::from),
            data: data.into_boxed_slice(),
            len,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn unpack<K: Object>(&self, dictionary: &Dictionary) -> Option<Arc<K>> {
        let unpacked;
        let json = if self.len == 0 {
            &self.data[..]
        } else {
            let mut out = vec![0; self.len as usize];
            let d = dictionary.get().map_or(&[][..], |d| &d[..]);
            match lz4_flex::block::decompress_into_with_dict(&self.data, &mut out, d) {
                Ok(n) if n == out.len() => {}
                _ => {
                    tracing::warn!(kind = %K::kind(&()), "a cached object could not be unpacked");
                    return None;
                }
            }
            unpacked = out;
            &unpacked[..]
        };
        serde_json::from_slice(json)
            .inspect_err(|e| tracing::warn!(kind = %K::kind(&()), error = %e, "a cached object could not be read"))
            .ok()
            .map(Arc::new)
    }
}

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn key(meta: &ObjectMeta) -> (Box<str>, Box<str>) {
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

/// `o` as the cache gives it back, packed alone and against `o` itself as the dictionary.
#[cfg(test)]
pub(super) fn round_trip<K: Object>(o: &K) -> Option<(K, K)> {
    let d = Dictionary::new();
    let alone = Packed::new(o, &d)?.unpack(&d).map(Arc::unwrap_or_clone)?;
    let packed = Packed::new(o, &d)?;
    assert_ne!(packed.len, 0, "packed against itself");
    Some((alone, packed.unpack(&d).map(Arc::unwrap_or_clone)?))
}

/// The read side, shared by every reconcile.
pub(crate) struct PackedCache<K> {
    objects: Arc<RwLock<Map>>,
    dictionary: Arc<Dictionary>,
    /// The objects decoded last, kept decoded: the reconciles one event wakes read the same
    /// few (the two Service controllers each read a Service's Pods).
    recent: Arc<Mutex<Recent<K>>>,
    ready: Arc<SetOnce<()>>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for PackedCache<K> {
    fn clone(&self) -> Self {
        PackedCache {
            objects: self.objects.clone(),
            dictionary: self.dictionary.clone(),
            recent: self.recent.clone(),
            ready: self.ready.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Object> PackedCache<K> {
    /// Waits until the first list is in.
    pub async fn wait_until_ready(&self) {
        self.ready.wait().await;
    }

    /// The object `ns/name`.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        self.read(objects.get(&(Box::from(ns), Box::from(name)))?)
    }

    /// The objects of namespace `ns` that the owner with uid `owner` controls, and the
    /// orphans it might adopt: every Pod a workload's claim can see as its own (Pods of
    /// other controllers it ignores).
    pub fn claimable(&self, ns: &str, owner: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        let from = (Box::from(ns), Box::from(""));
        objects
            .range(from..)
            .take_while(|((n, _), _)| &**n == ns)
            .filter(|(_, p)| p.controller.as_deref().is_none_or(|c| c == owner))
            .filter_map(|(_, p)| self.read(p))
            .collect()
    }

    /// `p` decoded: one of the [`RECENT`] decoded last, or decoded anew and kept among them.
    fn read(&self, p: &Packed) -> Option<Arc<K>> {
        let recent = || self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, o)) = recent().iter().find(|(id, _)| *id == p.id) {
            return Some(o.clone());
        }
        let o = p.unpack::<K>(&self.dictionary)?;
        let mut recent = recent();
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back((p.id, o.clone()));
        Some(o)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The write side: applies watch events and tells subscribers.
pub(crate) struct PackedWriter<K> {
    cache: PackedCache<K>,
    /// The objects of a relist in progress, swapped in when it is done.
    buffer: Option<Map>,
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
}

/// How many decoded objects a cache keeps (a few hundred KB of Pods).
const RECENT: usize = 128;

/// How many objects a subscriber may fall behind before the watch waits for it.
const BUFFER: usize = 1024;

impl<K: Object> PackedWriter<K> {
    pub fn new() -> PackedWriter<K> {
        PackedWriter {
            cache: PackedCache {
                objects: Arc::default(),
                dictionary: Arc::default(),
                recent: Arc::default(),
                ready: Arc::default(),
                kind: PhantomData,
            },
            buffer: None,
            subscribers: Vec::new(),
        }
    }

    pub fn reader(&self) -> PackedCache<K> {
        self.cache.clone()
    }

    /// A stream of the object of every applied event, and of every object when a list is
    /// in (as kube-runtime's shared reflector streams them). Ends when the writer goes.
    pub fn subscribe(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, mut rx) = mpsc::channel(BUFFER);
        self.subscribers.push(tx);
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// Applies one watch event to the cache.
    fn apply(&mut self, event: &watcher::Event<K>) {
        let objects = || {
            self.cache
                .objects
                .write()
                .unwrap_or_else(PoisonError::into_inner)
        };
        match event {
            watcher::Event::Apply(o) => {
                if let Some(p) = Packed::new(o, &self.cache.dictionary) {
                    objects().insert(key(o.meta()), p);
                }
            }
            watcher::Event::Delete(o) => {
                objects().remove(&key(o.meta()));
            }
            watcher::Event::Init => self.buffer = Some(Map::new()),
            watcher::Event::InitApply(o) => {
                if let Some(p) = Packed::new(o, &self.cache.dictionary) {
                    self.buffer.get_or_insert_default().insert(key(o.meta()), p);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.buffer.take().unwrap_or_default();
                *objects() = fresh;
                let _ = self.cache.ready.set(());
            }
        }
    }

    /// Tells every subscriber of what `event` applied.
    async fn dispatch(&self, event: &watcher::Event<K>) {
        let objects: Vec<Arc<K>> = match event {
            watcher::Event::Apply(o) => vec![Arc::new(o.clone())],
            watcher::Event::InitDone => {
                let objects = self
                    .cache
                    .objects
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                let d = &self.cache.dictionary;
                objects.values().filter_map(|p| p.unpack(d)).collect()
            }
            _ => return,
        };
        for o in objects {
            for s in &self.subscribers {
                let _ = s.send(o.clone()).await;
            }
        }
    }

    /// The watch stream, applied to the cache and dispatched as it passes.
    pub fn reflect(
        self,
        events: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    ) -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
        futures_util::stream::unfold((self, events), |(mut w, mut events)| async move {
            let ev = events.next().await?;
            if let Ok(ev) = &ev {
                w.apply(ev);
                w.dispatch(ev).await;
            }
            Some((ev, (w, events)))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, pods};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn owned(name: &str, owner: &str) -> Pod {
        pods(vec![pod(
            name,
            "10.0.0.1",
            true,
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": owner, "uid": owner, "controller": true}]}}),
        )])
        .remove(0)
    }

    fn apply_all(w: &mut PackedWriter<Pod>, events: Vec<watcher::Event<Pod>>) {
        for e in &events {
            w.apply(e);
        }
    }

    #[test]
    fn pods_read_back_as_applied() {
        let mut w = PackedWriter::<Pod>::new();
        let r = w.reader();
        let a = owned("a", "rs-1");
        apply_all(
            &mut w,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(a.clone()),
                watcher::Event::InitDone,
            ],
        );
        assert_eq!(r.get("ns", "a").as_deref(), Some(&a));
        assert_eq!(r.get("ns", "b"), None);
        assert_eq!(r.get("other", "a"), None);
        let mut b = a.clone();
        b.metadata.labels = Some([("app".to_owned(), "db".to_owned())].into());
        apply_all(&mut w, vec![watcher::Event::Apply(b.clone())]);
        assert_eq!(r.get("ns", "a").as_deref(), Some(&b));
        apply_all(&mut w, vec![watcher::Event::Delete(b)]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn objects_after_the_first_are_packed_against_it() {
        let mut w = PackedWriter::<Pod>::new();
        let r = w.reader();
        apply_all(
            &mut w,
            vec![
                watcher::Event::Apply(owned("a", "rs-1")),
                watcher::Event::Apply(owned("b", "rs-1")),
            ],
        );
        let objects = r.objects.read().expect("lock");
        let held = |name: &str| &objects[&(Box::from("ns"), Box::from(name))];
        assert_eq!(held("a").len, 0, "the dictionary's own object stays plain");
        let b = held("b");
        assert!(
            b.data.len() * 3 < b.len as usize,
            "{} of {}",
            b.data.len(),
            b.len
        );
        drop(objects);
        assert_eq!(r.get("ns", "b").as_deref(), Some(&owned("b", "rs-1")));
    }

    #[test]
    fn objects_read_again_are_not_decoded_again_until_they_change() {
        let mut w = PackedWriter::<Pod>::new();
        let r = w.reader();
        apply_all(&mut w, vec![watcher::Event::Apply(owned("a", "rs-1"))]);
        let first = r.get("ns", "a").expect("a");
        let again = r.get("ns", "a").expect("a");
        assert!(Arc::ptr_eq(&first, &again), "decoded once");
        let mut changed = owned("a", "rs-1");
        changed.metadata.labels = Some([("app".to_owned(), "db".to_owned())].into());
        apply_all(&mut w, vec![watcher::Event::Apply(changed.clone())]);
        assert_eq!(
            r.get("ns", "a").as_deref(),
            Some(&changed),
            "never the old one"
        );
        // Past the recent ones, an object is decoded anew.
        for i in 0..RECENT {
            apply_all(
                &mut w,
                vec![watcher::Event::Apply(owned(&format!("p{i}"), "rs-1"))],
            );
            r.get("ns", &format!("p{i}"));
        }
        drop((first, again));
        let later = r.get("ns", "a").expect("a");
        assert_eq!(*later, changed);
    }

    #[test]
    fn a_relist_replaces_the_cache_once_it_is_done() {
        let mut w = PackedWriter::<Pod>::new();
        let r = w.reader();
        apply_all(
            &mut w,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(owned("a", "rs-1")),
                watcher::Event::InitDone,
                watcher::Event::Init,
                watcher::Event::InitApply(owned("b", "rs-1")),
            ],
        );
        assert!(
            r.get("ns", "a").is_some(),
            "the old list stays until the new one is in"
        );
        apply_all(&mut w, vec![watcher::Event::InitDone]);
        assert!(r.get("ns", "a").is_none());
        assert!(r.get("ns", "b").is_some());
    }

    #[test]
    fn claimable_pods_are_the_owners_and_the_orphans_of_its_namespace() {
        let mut w = PackedWriter::<Pod>::new();
        let r = w.reader();
        let mut elsewhere = owned("x", "rs-1");
        elsewhere.metadata.namespace = Some("nt".into());
        let orphan = pods(vec![pod("orphan", "10.0.0.2", true, json!({}))]).remove(0);
        apply_all(
            &mut w,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(owned("mine", "rs-1")),
                watcher::Event::InitApply(owned("theirs", "rs-2")),
                watcher::Event::InitApply(orphan),
                watcher::Event::InitApply(elsewhere),
                watcher::Event::InitDone,
            ],
        );
        let mut names: Vec<String> = r
            .claimable("ns", "rs-1")
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["mine", "orphan"]);
    }

    #[tokio::test]
    async fn subscribers_see_applied_pods_and_every_pod_of_a_list() {
        let mut w = PackedWriter::<Pod>::new();
        let r = w.reader();
        let mut sub = Box::pin(w.subscribe());
        let events = futures_util::stream::iter(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(owned("a", "rs-1"))),
            Ok(watcher::Event::InitApply(owned("b", "rs-1"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(owned("c", "rs-1"))),
            Ok(watcher::Event::Delete(owned("a", "rs-1"))),
        ])
        .boxed();
        let passed: Vec<_> = w.reflect(events).collect().await;
        assert_eq!(passed.len(), 6, "every event passes on");
        r.wait_until_ready().await;
        let mut seen = Vec::new();
        while let Some(p) = sub.next().await {
            seen.push(p.metadata.name.clone().unwrap_or_default());
        }
        assert_eq!(seen, ["a", "b", "c"]);
        assert!(r.get("ns", "a").is_none());
    }
}
