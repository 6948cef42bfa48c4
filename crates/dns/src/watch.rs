//! Keeping the `Zone` in step with the API: one kube-runtime watcher per resource type
//! (Services, EndpointSlices, Namespaces). A (re)list replaces the whole type, so an event missed during a
//! watch gap cannot leave a stale name behind.

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::records::ServiceView;
use crate::server::SharedZone;
use crate::slim::{Slim, SlimDecode};
use crate::zone::{SliceEntry, Zone};

/// A resource type the zone is built from.
pub trait Indexed:
    kube::Resource<DynamicType = ()> + SlimDecode + Clone + Debug + Send + Sync + 'static
{
    /// The resource's plural name, for logs.
    const PLURAL: &'static str;
    /// What a (re)list keeps of each object until it is complete: never the whole objects,
    /// which would hold every one of them at once (tens of MB at 10,000 Services).
    type View: Send;
    /// The view of one object (`None`: it has nothing for the zone).
    fn view(obj: &Self) -> Option<Self::View>;
    /// Adds or replaces one object.
    fn apply(zone: &mut Zone, obj: &Self);
    /// Removes one object.
    fn delete(zone: &mut Zone, obj: &Self);
    /// Makes the objects of this type exactly those `all` are the views of.
    fn replace(zone: &mut Zone, all: Vec<Self::View>);
}

impl Indexed for Service {
    const PLURAL: &'static str = "services";
    type View = ServiceView;
    fn view(obj: &Self) -> Option<ServiceView> {
        ServiceView::from_service(obj)
    }
    fn apply(zone: &mut Zone, obj: &Self) {
        zone.apply_service(obj);
    }
    fn delete(zone: &mut Zone, obj: &Self) {
        zone.delete_service(obj);
    }
    fn replace(zone: &mut Zone, all: Vec<ServiceView>) {
        zone.replace_service_views(all);
    }
}

impl Indexed for Namespace {
    const PLURAL: &'static str = "namespaces";
    type View = String;
    fn view(obj: &Self) -> Option<String> {
        obj.metadata.name.clone()
    }
    fn apply(zone: &mut Zone, obj: &Self) {
        zone.apply_namespace(obj);
    }
    fn delete(zone: &mut Zone, obj: &Self) {
        zone.delete_namespace(obj);
    }
    fn replace(zone: &mut Zone, all: Vec<String>) {
        zone.replace_namespace_names(all);
    }
}

impl Indexed for EndpointSlice {
    const PLURAL: &'static str = "endpointslices";
    type View = SliceEntry;
    fn view(obj: &Self) -> Option<SliceEntry> {
        SliceEntry::of(obj)
    }
    fn apply(zone: &mut Zone, obj: &Self) {
        zone.apply_slice(obj);
    }
    fn delete(zone: &mut Zone, obj: &Self) {
        zone.delete_slice(obj);
    }
    fn replace(zone: &mut Zone, all: Vec<SliceEntry>) {
        zone.replace_slice_entries(all);
    }
}

/// A (re)list this large decoded tens of megabytes of objects page by page; once its views
/// are in the zone, the freed pages go back to the system.
const TRIM_AFTER_OBJECTS: usize = 1_000;

/// Applies one watcher event; `listing` gathers the views of a (re)list's objects until it
/// is done. Returns true when a (re)list has just been applied.
pub fn apply_event<K: Indexed>(
    zone: &SharedZone,
    listing: &mut Vec<K::View>,
    event: watcher::Event<K>,
) -> bool {
    let write = || zone.write().unwrap_or_else(|e| e.into_inner());
    match event {
        watcher::Event::Init => listing.clear(),
        watcher::Event::InitApply(obj) => listing.extend(K::view(&obj)),
        watcher::Event::InitDone => {
            let all = std::mem::take(listing);
            let objects = all.len();
            tracing::debug!(resource = K::PLURAL, objects, "listed");
            K::replace(&mut write(), all);
            if objects >= TRIM_AFTER_OBJECTS {
                crate::memory::return_freed_memory();
            }
            return true;
        }
        watcher::Event::Apply(obj) => K::apply(&mut write(), &obj),
        watcher::Event::Delete(obj) => K::delete(&mut write(), &obj),
    }
    false
}

/// Watches every object of type `K` into `zone`, decoded slim; `synced` turns true after the
/// first list. Returns only when the watch stream ends.
pub async fn follow<K: Indexed>(api: Api<Slim<K>>, zone: SharedZone, synced: watch::Sender<bool>) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if apply_event(&zone, &mut listing, whole(event)) {
                    synced.send_replace(true);
                }
            }
            Err(e) => tracing::warn!(resource = K::PLURAL, error = %e, "watch failed; retrying"),
        }
    }
}

/// The event of the object a slim one stands for.
fn whole<K>(event: watcher::Event<Slim<K>>) -> watcher::Event<K> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.0),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(o) => watcher::Event::Apply(o.0),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.0),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::answer::{Outcome, respond};
    use crate::fixtures;
    use crate::zone::ZoneConfig;

    fn resolves(zone: &SharedZone, name: &str) -> bool {
        let mut req = Message::query();
        req.add_query(Query::query(
            Name::from_ascii(name).expect("name"),
            RecordType::A,
        ));
        let zone = zone.read().expect("lock");
        matches!(respond(&zone, &req), Outcome::Answer(r) if !r.answers.is_empty())
    }

    #[test]
    fn events_and_relists() {
        let zone: SharedZone = Arc::new(RwLock::new(
            Zone::new(&ZoneConfig::default()).expect("zone"),
        ));
        let a = fixtures::cluster_ip("default", "a", &["10.96.0.1"], &[]);
        let b = fixtures::cluster_ip("default", "b", &["10.96.0.2"], &[]);
        let mut listing = Vec::new();
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(a.clone()),
            watcher::Event::InitApply(b.clone()),
        ] {
            assert!(!apply_event(&zone, &mut listing, ev));
        }
        // Nothing is visible until the list is complete.
        assert!(!resolves(&zone, "a.default.svc.cluster.local."));
        assert!(apply_event(
            &zone,
            &mut listing,
            watcher::Event::<Service>::InitDone
        ));
        assert!(resolves(&zone, "a.default.svc.cluster.local."));
        assert!(resolves(&zone, "b.default.svc.cluster.local."));
        apply_event(&zone, &mut listing, watcher::Event::Delete(a.clone()));
        assert!(!resolves(&zone, "a.default.svc.cluster.local."));
        apply_event(&zone, &mut listing, watcher::Event::Apply(a.clone()));
        assert!(resolves(&zone, "a.default.svc.cluster.local."));
        // A relist after a watch gap in which b was deleted: b goes, a stays.
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(a),
            watcher::Event::InitDone,
        ] {
            apply_event(&zone, &mut listing, ev);
        }
        assert!(resolves(&zone, "a.default.svc.cluster.local."));
        assert!(!resolves(&zone, "b.default.svc.cluster.local."));
    }
}
