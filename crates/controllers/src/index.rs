//! Indexes over the shared caches, so that one event touches only the objects it concerns:
//! Services by namespace and selector, Pods (and EndpointSlices) by namespace and label,
//! Endpoints by the Pods they list. Each is kept from the same watch events as its reflector
//! ([`Mirror`]: a relist replaces it whole, as it replaces the reflector's store).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

/// Labels or a map selector.
pub(crate) type Labels = BTreeMap<String, String>;

/// Whether the map selector `sel` picks `labels`: every pair present, as
/// `berth_api::selector::Selector::from_map(sel).matches(labels)` decides it.
pub(crate) fn map_selects(sel: &Labels, labels: &Labels) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What an index keeps of one kind of object.
pub(crate) trait Track<K> {
    /// An empty index configured as this one (a relist fills it before it replaces this one).
    fn fresh(&self) -> Self;
    /// The object was added or changed.
    fn apply(&mut self, obj: &K);
    /// The object is gone.
    fn delete(&mut self, obj: &K);
}

/// An index kept from watch events with the reflector's relist semantics: `Init` starts a
/// buffer, `InitApply` fills it, `InitDone` swaps it in.
#[derive(Debug, Default)]
pub(crate) struct Mirror<T> {
    live: T,
    pending: Option<T>,
}

impl<T> Mirror<T> {
    pub(crate) fn new(live: T) -> Self {
        Self {
            live,
            pending: None,
        }
    }

    /// Applies one watch event.
    pub(crate) fn event<K>(&mut self, ev: &watcher::Event<K>)
    where
        T: Track<K>,
    {
        match ev {
            watcher::Event::Apply(o) => self.live.apply(o),
            watcher::Event::Delete(o) => self.live.delete(o),
            watcher::Event::Init => self.pending = Some(self.live.fresh()),
            watcher::Event::InitApply(o) => {
                let fresh = self.live.fresh();
                self.pending.get_or_insert(fresh).apply(o)
            }
            watcher::Event::InitDone => {
                if let Some(p) = self.pending.take() {
                    self.live = p;
                }
            }
        }
    }
}

/// A [`Mirror`] shared between the task that drives a watch and the readers.
#[derive(Debug)]
pub(crate) struct Indexed<T>(Arc<RwLock<Mirror<T>>>);

impl<T> Clone for Indexed<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Default for Indexed<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Indexed<T> {
    pub(crate) fn new(live: T) -> Self {
        Self(Arc::new(RwLock::new(Mirror::new(live))))
    }

    /// Applies one watch event (before the reflector does, so that whoever a dispatch wakes
    /// sees an index at least as new as the store).
    pub(crate) fn event<K>(&self, ev: &watcher::Event<K>)
    where
        T: Track<K>,
    {
        self.0.write().unwrap_or_else(|e| e.into_inner()).event(ev)
    }

    /// The current index.
    pub(crate) fn read(&self) -> IndexRef<'_, T> {
        IndexRef(self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A read lock on an index.
pub(crate) struct IndexRef<'a, T>(RwLockReadGuard<'a, Mirror<T>>);

impl<T> std::ops::Deref for IndexRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.live
    }
}

fn ns_name(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Up to this many names, a posting list is a sorted vector.
const SMALL: usize = 32;

/// A sorted set of names, compact when small: most posting lists hold one to a few dozen
/// names, where a `BTreeSet` takes a whole node (some 300 bytes) each; a large one (a label
/// on thousands of Pods) is a `BTreeSet` again, so an insertion never moves thousands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Names {
    Small(Vec<String>),
    Large(BTreeSet<String>),
}

impl Default for Names {
    fn default() -> Self {
        Names::Small(Vec::new())
    }
}

impl Names {
    fn insert(&mut self, name: &str) {
        match self {
            Names::Small(v) => {
                let Err(at) = v.binary_search_by(|n| n.as_str().cmp(name)) else {
                    return;
                };
                if v.len() < SMALL {
                    // Grown by one: these lists stay short, the spare room would outweigh them.
                    v.reserve_exact(1);
                    v.insert(at, name.to_owned());
                } else {
                    let mut set: BTreeSet<String> = std::mem::take(v).into_iter().collect();
                    set.insert(name.to_owned());
                    *self = Names::Large(set);
                }
            }
            Names::Large(set) => {
                set.insert(name.to_owned());
            }
        }
    }

    fn remove(&mut self, name: &str) {
        match self {
            Names::Small(v) => {
                if let Ok(at) = v.binary_search_by(|n| n.as_str().cmp(name)) {
                    v.remove(at);
                    v.shrink_to_fit();
                }
            }
            Names::Large(set) => {
                set.remove(name);
                if set.len() < SMALL / 2 {
                    *self = Names::Small(std::mem::take(set).into_iter().collect());
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Names::Small(v) => v.len(),
            Names::Large(set) => set.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names in order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        match self {
            Names::Small(v) => Box::new(v.iter()),
            Names::Large(set) => Box::new(set.iter()),
        }
    }
}

/// An object's labels (or a selector) as the indexes keep them: pairs sorted by key, with no
/// spare room (a one-label `BTreeMap` is a whole node).
type Pairs = Box<[(String, String)]>;

fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> Pairs {
    map.into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether `labels` (sorted pairs) has every pair of the map selector `sel`.
fn pairs_selected(sel: &Labels, labels: &[(String, String)]) -> bool {
    sel.iter().all(|(k, v)| {
        labels
            .binary_search_by(|(l, _)| l.as_str().cmp(k))
            .is_ok_and(|i| labels[i].1 == *v)
    })
}

/// Names by namespace and a key: the posting lists the indexes share.
#[derive(Debug, Default)]
struct Postings<K: std::hash::Hash + Eq>(HashMap<String, HashMap<K, Names>>);

impl<K: std::hash::Hash + Eq> Postings<K> {
    fn add(&mut self, ns: &str, key: K, name: &str) {
        self.0
            .entry(ns.to_owned())
            .or_default()
            .entry(key)
            .or_default()
            .insert(name);
    }

    fn remove<Q>(&mut self, ns: &str, key: &Q, name: &str)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let Some(by_key) = self.0.get_mut(ns) else {
            return;
        };
        if let Some(names) = by_key.get_mut(key) {
            names.remove(name);
            if names.is_empty() {
                by_key.remove(key);
            }
        }
        if by_key.is_empty() {
            self.0.remove(ns);
        }
    }

    fn get<Q>(&self, ns: &str, key: &Q) -> Option<&Names>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.get(ns)?.get(key)
    }
}

/// Objects by namespace and label (`key=value`), with each object's labels as indexed; with
/// `only` set, just that label key is kept (EndpointSlices by their Service's name).
#[derive(Debug, Default)]
pub(crate) struct LabelIndex {
    only: Option<&'static str>,
    labels: HashMap<String, HashMap<String, Pairs>>,
    by_label: Postings<(String, String)>,
}

impl LabelIndex {
    /// An index of just the label `key`.
    pub(crate) fn only(key: &'static str) -> Self {
        Self {
            only: Some(key),
            ..Self::default()
        }
    }

    fn insert(&mut self, meta: &ObjectMeta) {
        self.remove(meta);
        let (ns, name) = ns_name(meta);
        let labels = pairs(
            meta.labels
                .iter()
                .flatten()
                .filter(|(k, _)| self.only.is_none_or(|o| o == k.as_str())),
        );
        for (k, v) in &labels {
            self.by_label.add(ns, (k.clone(), v.clone()), name);
        }
        self.labels
            .entry(ns.to_owned())
            .or_default()
            .insert(name.to_owned(), labels);
    }

    fn remove(&mut self, meta: &ObjectMeta) {
        let (ns, name) = ns_name(meta);
        let Some(names) = self.labels.get_mut(ns) else {
            return;
        };
        let Some(old) = names.remove(name) else {
            return;
        };
        if names.is_empty() {
            self.labels.remove(ns);
        }
        for (k, v) in old {
            self.by_label.remove(ns, &(k, v), name);
        }
    }

    /// The names in `ns` whose labels include every pair of `sel` (a non-empty map selector;
    /// an empty one gives every name in `ns`), sorted.
    pub(crate) fn selected(&self, ns: &str, sel: &Labels) -> Vec<String> {
        let Some(names) = self.labels.get(ns) else {
            return Vec::new();
        };
        let mut smallest: Option<&Names> = None;
        for (k, v) in sel {
            // Looked up by an owned pair: a tuple of Strings cannot be borrowed as (&str, &str).
            match self.by_label.get(ns, &(k.clone(), v.clone())) {
                None => return Vec::new(),
                Some(s) if smallest.is_none_or(|m| s.len() < m.len()) => smallest = Some(s),
                Some(_) => {}
            }
        }
        match smallest {
            None => {
                let mut all: Vec<String> = names.keys().cloned().collect();
                all.sort();
                all
            }
            Some(candidates) => candidates
                .iter()
                .filter(|n| names.get(*n).is_some_and(|l| pairs_selected(sel, l)))
                .cloned()
                .collect(),
        }
    }
}

impl<K: kube::Resource> Track<K> for LabelIndex {
    fn fresh(&self) -> Self {
        Self {
            only: self.only,
            ..Self::default()
        }
    }
    fn apply(&mut self, obj: &K) {
        self.insert(obj.meta())
    }
    fn delete(&mut self, obj: &K) {
        self.remove(obj.meta())
    }
}

/// Services with a selector, by namespace and the first pair of their selector (every Pod a
/// Service selects carries that pair), with the selectors themselves.
#[derive(Debug, Default)]
pub(crate) struct ServiceIndex {
    selectors: HashMap<String, HashMap<String, Pairs>>,
    by_first: Postings<(String, String)>,
}

impl ServiceIndex {
    fn remove(&mut self, ns: &str, name: &str) {
        let Some(names) = self.selectors.get_mut(ns) else {
            return;
        };
        let Some(old) = names.remove(name) else {
            return;
        };
        if names.is_empty() {
            self.selectors.remove(ns);
        }
        if let Some((k, v)) = old.first() {
            self.by_first.remove(ns, &(k.clone(), v.clone()), name);
        }
    }

    /// The Services of `ns` whose (non-empty) selector picks a Pod with `labels`, sorted.
    pub(crate) fn selecting(&self, ns: &str, labels: &Labels) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(selectors) = self.selectors.get(ns) else {
            return out;
        };
        for (k, v) in labels {
            let Some(names) = self.by_first.get(ns, &(k.clone(), v.clone())) else {
                continue;
            };
            out.extend(
                names
                    .iter()
                    .filter(|n| {
                        selectors
                            .get(*n)
                            .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
                    })
                    .cloned(),
            );
        }
        out
    }
}

impl Track<Service> for ServiceIndex {
    fn fresh(&self) -> Self {
        Self::default()
    }
    fn apply(&mut self, svc: &Service) {
        let (ns, name) = ns_name(&svc.metadata);
        self.remove(ns, name);
        let Some(sel) = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        if let Some((k, v)) = sel.iter().next() {
            self.by_first.add(ns, (k.clone(), v.clone()), name);
        }
        self.selectors
            .entry(ns.to_owned())
            .or_default()
            .insert(name.to_owned(), pairs(sel));
    }
    fn delete(&mut self, svc: &Service) {
        let (ns, name) = ns_name(&svc.metadata);
        self.remove(ns, name);
    }
}

/// Endpoints by the names of the Pods their addresses (ready or not) point at.
#[derive(Debug, Default)]
pub(crate) struct TargetIndex {
    targets: HashMap<String, HashMap<String, Box<[String]>>>,
    by_pod: Postings<String>,
}

impl TargetIndex {
    fn remove(&mut self, ns: &str, name: &str) {
        let Some(names) = self.targets.get_mut(ns) else {
            return;
        };
        let Some(old) = names.remove(name) else {
            return;
        };
        if names.is_empty() {
            self.targets.remove(ns);
        }
        for pod in old {
            self.by_pod.remove(ns, pod.as_str(), name);
        }
    }

    /// The Endpoints of `ns` that list the Pod `pod`.
    pub(crate) fn listing(&self, ns: &str, pod: &str) -> Option<&Names> {
        self.by_pod.get(ns, pod)
    }
}

impl Track<Endpoints> for TargetIndex {
    fn fresh(&self) -> Self {
        Self::default()
    }
    fn apply(&mut self, ep: &Endpoints) {
        let (ns, name) = ns_name(&ep.metadata);
        self.remove(ns, name);
        let pods: BTreeSet<String> = ep
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                s.addresses
                    .iter()
                    .flatten()
                    .chain(s.not_ready_addresses.iter().flatten())
            })
            .filter_map(|a| a.target_ref.as_ref()?.name.clone())
            .collect();
        if pods.is_empty() {
            return;
        }
        for pod in &pods {
            self.by_pod.add(ns, pod.clone(), name);
        }
        self.targets
            .entry(ns.to_owned())
            .or_default()
            .insert(name.to_owned(), pods.into_iter().collect());
    }
    fn delete(&mut self, ep: &Endpoints) {
        let (ns, name) = ns_name(&ep.metadata);
        self.remove(ns, name);
    }
}

#[cfg(test)]
mod tests;
