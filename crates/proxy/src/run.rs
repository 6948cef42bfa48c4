//! The proxy's loop: a watcher per resource (Services, EndpointSlices) keeps a cache of the
//! proxy's compact views of the objects (`view`) and wakes a debounced sync that computes
//! the desired ruleset from the caches, diffs it against the last applied one and applies
//! the difference as one transaction on a blocking thread.
//! At start it reads the kernel instead of flushing, so a restart drops no traffic.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apply::{Apply, Netlink};
use crate::desired::desired_from;
use crate::error::{Error, Result};
use crate::external::{self, Exposure};
use crate::health::{self, Health};
use crate::metrics::{Metrics, trigger_time};
use crate::ruleset::{Op, Ruleset, affinity_touched, diff, removed_udp_endpoints};
use crate::tracker::{self, ServiceKey, Tracker};
use crate::view::{ServiceView, SliceView};

/// How the proxy runs on one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (for `internalTrafficPolicy: Local`).
    pub node_name: String,
    /// The packet mark bit that asks for masquerade, as kube-proxy's `--iptables-masquerade-bit`
    /// (default 14).
    pub masquerade_bit: u8,
    /// Bursts of watch events within this interval are applied as one sync.
    pub min_sync_interval: Duration,
    /// Set `net.bridge.bridge-nf-call-iptables=1` in the proxy's own network namespace
    /// (never in the root one).
    pub bridge_nf_call_iptables: bool,
    pub metrics: Metrics,
    /// Set once the first full sync is in the kernel; `berth server` prints "ready" and `/readyz` passes only
    /// after every part of the node has set its own.
    pub synced: std::sync::Arc<tokio::sync::SetOnce<()>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_name: String::new(),
            masquerade_bit: 14,
            min_sync_interval: Duration::from_millis(10),
            bridge_nf_call_iptables: true,
            metrics: Metrics::default(),
            synced: Default::default(),
        }
    }
}

impl Config {
    fn mark(&self) -> u32 {
        1u32 << (self.masquerade_bit % 32)
    }
}

/// Deletes everything the proxy made (the `ip berth` table) in the calling thread's network
/// namespace. Returns whether there was anything to delete.
pub fn cleanup() -> Result<bool> {
    Netlink::open(0)?.delete_table()
}

/// Deletes the proxy's local routes (LoadBalancer and external IPs) in the calling task's
/// network namespace. Returns how many there were.
pub async fn cleanup_routes() -> Result<usize> {
    external::remove_routes(&external::connect()?).await
}

/// What the blocking side owns between syncs.
struct Kernel<A> {
    nl: A,
    current: Ruleset,
    /// Per-Service parts matching `current`; `None` until a full sync (and after a failure).
    tracker: Option<Tracker>,
}

/// What changed since the last sync: some Services (by their own or their slices' events),
/// or possibly anything (a relist, a failure), and when the changes behind the slice events
/// were made (for `kubeproxy_network_programming_duration_seconds`).
#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    keys: BTreeSet<ServiceKey>,
    triggers: Vec<Timestamp>,
}

impl Dirty {
    /// Notes a change to an object of Service `key` (if any) made at `trigger`. As
    /// kube-proxy: only updates count for the latency (a deletion's trigger time is that of
    /// the slice's last update), and only changes made after `started` (the initial list
    /// holds old ones).
    fn note(&mut self, key: Option<ServiceKey>, trigger: Option<Timestamp>, started: Timestamp) {
        self.keys.extend(key);
        self.triggers.extend(trigger.filter(|t| *t > started));
    }
}

/// Watches Services and EndpointSlices through `client` and keeps the kernel's table in step
/// until `shutdown`. Programs the network namespace the process runs in. The table stays
/// when the proxy stops (traffic keeps flowing); [`cleanup`] removes it.
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) -> Result<()> {
    if config.bridge_nf_call_iptables
        && let Err(e) = crate::sysctl::enable_bridge_netfilter()
    {
        tracing::warn!(error = %e, "pods reaching Services on their own bridge will fail");
    }
    let mark = config.mark();
    let kernel = blocking(move || {
        let mut nl = Netlink::open(mark)?;
        let current = nl.read()?;
        Ok(Kernel {
            nl,
            current,
            tracker: None,
        })
    })
    .await?;
    tracing::info!(
        chains = kernel.current.chains.len(),
        endpoints = kernel.current.endpoints.len(),
        "read the kernel's table"
    );

    let wake = Arc::new(Notify::new());
    let dirty = Arc::new(Mutex::new(Dirty {
        all: true,
        ..Dirty::default()
    }));
    let services = Cache::<ServiceView>::default();
    let slices = Cache::<SliceView>::default();
    let changes = Changes {
        wake: wake.clone(),
        dirty: dirty.clone(),
        started: Timestamp::now(),
    };
    let node = config.node_name.clone();
    let watches = [
        tokio::spawn(drive(
            Api::<Service>::all(client.clone()),
            services.clone(),
            changes.clone(),
            |svc: &Service| ServiceView::new(svc),
            |_| None,
        )),
        tokio::spawn(drive(
            Api::<EndpointSlice>::all(client),
            slices.clone(),
            changes,
            move |slice: &EndpointSlice| SliceView::new(slice, &node),
            trigger_time,
        )),
    ];
    let result = tokio::select! {
        r = sync_loop(&config, kernel, &services, &slices, &wake, &dirty) => r,
        () = shutdown.cancelled() => Ok(()),
    };
    for w in watches {
        w.abort();
    }
    result
}

async fn sync_loop(
    config: &Config,
    mut kernel: Kernel<Netlink>,
    services: &Cache<ServiceView>,
    slices: &Cache<SliceView>,
    wake: &Notify,
    dirty: &Mutex<Dirty>,
) -> Result<()> {
    // As kube-proxy, nothing is programmed before both caches have listed once.
    services.listed.wait().await;
    slices.listed.wait().await;
    let route = external::connect()?;
    // What `lb-firewall` and the proxy's local routes hold; `None` until written once by this process.
    let mut exposed = Exposed::default();
    let mut health = Health::default();
    loop {
        let mut changed = std::mem::take(&mut *dirty.lock().map_err(|_| Error::Thread)?);
        let triggers = std::mem::take(&mut changed.triggers);
        let svcs = services.state()?;
        let sls = slices.state()?;
        let want = external::exposure(svcs.iter().map(AsRef::as_ref));
        let checks = health::checks(
            svcs.iter().map(AsRef::as_ref),
            sls.iter().map(AsRef::as_ref),
        );
        let firewall = (exposed.firewall.as_ref() != Some(&want.firewall))
            .then(|| external::firewall_rules(&want.firewall));
        let metrics = config.metrics.clone();
        let (k, outcome, fw) = blocking(move || {
            let (mut k, outcome) = sync_once(kernel, changed, &svcs, &sls, &metrics);
            let fw = match (&outcome, firewall) {
                (Ok(()), Some(rules)) => Some(k.nl.set_firewall(&rules)),
                _ => None,
            };
            Ok((k, outcome, fw))
        })
        .await?;
        kernel = k;
        if let Err(e) = outcome {
            tracing::error!(error = %e, "sync failed; re-reading the kernel and retrying");
            // Those changes are not in yet: their latency runs on to the sync that succeeds.
            dirty
                .lock()
                .map_err(|_| Error::Thread)?
                .triggers
                .extend(triggers);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let now = Timestamp::now();
        for t in triggers {
            config.metrics.programmed(t, now);
        }
        exposed.update(&route, want, fw).await;
        health.update(checks).await;
        let _ = config.synced.set(());
        wake.notified().await;
        // Coalesce a burst of events into one sync.
        tokio::time::sleep(config.min_sync_interval).await;
    }
}

/// What this process last wrote of an [`Exposure`].
#[derive(Default)]
struct Exposed {
    firewall: Option<std::collections::BTreeMap<crate::ruleset::IpKey, Vec<external::Prefix>>>,
    addresses: Option<BTreeSet<std::net::Ipv4Addr>>,
}

impl Exposed {
    /// Notes the firewall result `fw` (if it was written) and brings the proxy's local routes
    /// to `want`'s addresses. Failures are logged and retried at the next sync.
    async fn update(&mut self, route: &rtnetlink::Handle, want: Exposure, fw: Option<Result<()>>) {
        match fw {
            Some(Ok(())) => self.firewall = Some(want.firewall),
            Some(Err(e)) => tracing::warn!(error = %e, "writing loadBalancerSourceRanges failed"),
            None => {}
        }
        if self.addresses.as_ref() != Some(&want.addresses) {
            match external::sync_addresses(route, &want.addresses).await {
                Ok(()) => self.addresses = Some(want.addresses),
                Err(e) => tracing::warn!(error = %e, "updating the LoadBalancer IP routes failed"),
            }
        }
    }
}

fn sync_once<A: Apply>(
    mut k: Kernel<A>,
    changed: Dirty,
    services: &[Arc<ServiceView>],
    slices: &[Arc<SliceView>],
    metrics: &Metrics,
) -> (Kernel<A>, Result<()>) {
    let start = Instant::now();
    let services = || services.iter().map(AsRef::as_ref);
    let slices = || slices.iter().map(AsRef::as_ref);
    let (ops, full) = match &mut k.tracker {
        Some(t) if !changed.all => {
            if changed.keys.is_empty() {
                return (k, Ok(()));
            }
            let wanted: BTreeSet<(&str, &str)> = changed
                .keys
                .iter()
                .map(|(ns, name)| (ns.as_str(), name.as_str()))
                .collect();
            let by_key: HashMap<ServiceKey, &ServiceView> = services()
                .filter(|s| wanted.contains(&s.key()))
                .map(|s| (tracker::service_key(s), s))
                .collect();
            let ops = t.update(&changed.keys, |key| by_key.get(key).copied(), slices());
            (ops, None)
        }
        _ => {
            let want = desired_from(services(), slices(), &k.current);
            (diff(&k.current, &want), Some(want))
        }
    };
    let applied = if ops.is_empty() {
        Ok(())
    } else {
        k.nl.apply(&ops)
    };
    let was_full = full.is_some();
    match applied {
        Ok(()) => {
            match full {
                Some(want) => {
                    k.tracker = Some(Tracker::new(services(), slices(), &want));
                    k.current = want;
                }
                None => {
                    if let Err(e) = k.current.apply_all(&ops) {
                        // Our model disagrees with itself: start over from the kernel.
                        tracing::error!(error = %e, "incremental state diverged");
                        k.tracker = None;
                        if let Ok(current) = k.nl.read() {
                            k.current = current;
                        }
                    }
                }
            }
            if !ops.is_empty() {
                metrics.synced(start.elapsed());
                tracing::debug!(ops = ops.len(), full = was_full, took = ?start.elapsed(), "synced");
            }
            if was_full && ops.len() >= TRIM_AFTER_OPS {
                return_freed_memory();
            }
            forget_removed(&mut k, &ops);
            (k, Ok(()))
        }
        Err(e) => {
            metrics.failed();
            k.tracker = None;
            // The batch was rolled back; learn what the kernel really holds.
            if let Ok(current) = k.nl.read() {
                k.current = current;
            }
            (k, Err(e))
        }
    }
}

/// A full sync this large built a batch of tens of megabytes (the first sync at 10,000
/// Services: 110,000 elements); once it is in, its freed pages go back to the system.
const TRIM_AFTER_OPS: usize = 10_000;

/// Gives the heap's free pages back to the system (glibc keeps them in its arenas, so a
/// one-off burst would stay in the RSS). No crate wraps `malloc_trim`; `libc` declares it.
#[allow(unsafe_code)]
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers from us.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// After `ops` are in: ClientIP affinity entries and UDP flows that point at endpoints
/// which are gone. Failures are logged; the next change retries nothing (entries also
/// time out).
fn forget_removed<A: Apply>(k: &mut Kernel<A>, ops: &[Op]) {
    let sticky = affinity_touched(ops);
    if !sticky.is_empty()
        && let Err(e) = k.nl.prune_affinity(&sticky, &k.current)
    {
        tracing::warn!(error = %e, "pruning ClientIP affinity entries failed");
    }
    let gone = removed_udp_endpoints(ops);
    if !gone.is_empty() {
        match k.nl.delete_udp_flows(&gone) {
            Ok(n) => tracing::debug!(endpoints = gone.len(), flows = n, "UDP flows deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting UDP flows failed"),
        }
    }
}

/// Where watch events leave their mark for the sync loop.
#[derive(Clone)]
struct Changes {
    wake: Arc<Notify>,
    dirty: Arc<Mutex<Dirty>>,
    /// When the proxy started watching: older trigger times are not its latency.
    started: Timestamp,
}

/// Views by their object's namespace and name.
type Views<V> = HashMap<(String, String), Arc<V>>;

/// The views of one resource type, by namespace and name, and whether they have been
/// listed once. Shared between the watch task that writes and the sync that reads.
struct Cache<V> {
    views: Arc<Mutex<Views<V>>>,
    listed: Arc<tokio::sync::SetOnce<()>>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Cache {
            views: self.views.clone(),
            listed: self.listed.clone(),
        }
    }
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache {
            views: Default::default(),
            listed: Default::default(),
        }
    }
}

impl<V> Cache<V> {
    /// A snapshot of every view.
    fn state(&self) -> Result<Vec<Arc<V>>> {
        let views = self.views.lock().map_err(|_| Error::Thread)?;
        Ok(views.values().cloned().collect())
    }
}

/// The Service a view belongs to (for the dirty set).
trait ServiceOf {
    fn service(&self) -> Option<ServiceKey>;
}

impl ServiceOf for ServiceView {
    fn service(&self) -> Option<ServiceKey> {
        Some(tracker::service_key(self))
    }
}

impl ServiceOf for SliceView {
    fn service(&self) -> Option<ServiceKey> {
        tracker::slice_key(self)
    }
}

/// Runs a watcher until aborted, keeping `cache` as the `project`ions of the objects (the
/// whole objects are dropped as soon as they are projected), noting which Service each
/// event touches and when its change was made (`trigger`), and waking the sync. A relist
/// replaces the cache whole when it is done and may hide deletions, so it marks everything.
async fn drive<K, V>(
    api: Api<K>,
    cache: Cache<V>,
    changes: Changes,
    project: impl Fn(&K) -> Option<V> + Send + 'static,
    trigger: fn(&K) -> Option<Timestamp>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    V: ServiceOf + Send + Sync + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut state = Listing::default();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "watch failed; retrying");
                continue;
            }
        };
        let (Ok(mut views), Ok(mut d)) = (cache.views.lock(), changes.dirty.lock()) else {
            return;
        };
        let on = On {
            project: &project,
            trigger,
            started: changes.started,
        };
        if on.event(ev, &mut views, &mut state, &mut d) {
            let _ = cache.listed.set(());
        }
        drop(d);
        drop(views);
        changes.wake.notify_one();
    }
}

/// The views of a (re)list in progress.
type Listing<V> = Option<Views<V>>;

/// How [`drive`] turns watch events into views and dirty marks.
struct On<'a, K, V> {
    project: &'a dyn Fn(&K) -> Option<V>,
    trigger: fn(&K) -> Option<Timestamp>,
    started: Timestamp,
}

impl<K: kube::Resource, V: ServiceOf> On<'_, K, V> {
    /// Applies one event to `views` (a relist gathers into `listing` and replaces `views`
    /// whole when done) and notes the Services it touches in `d`. Returns true when a
    /// (re)list has just completed.
    fn event(
        &self,
        ev: watcher::Event<K>,
        views: &mut Views<V>,
        listing: &mut Listing<V>,
        d: &mut Dirty,
    ) -> bool {
        let key = |o: &K| {
            let m = o.meta();
            Some((m.namespace.clone().unwrap_or_default(), m.name.clone()?))
        };
        match ev {
            watcher::Event::Apply(o) => {
                let Some(k) = key(&o) else { return false };
                let old = match (self.project)(&o).map(Arc::new) {
                    Some(v) => {
                        d.note(v.service(), (self.trigger)(&o), self.started);
                        views.insert(k, v)
                    }
                    None => views.remove(&k),
                };
                // A slice moved to another Service: the old one changes too.
                d.note(old.and_then(|v| v.service()), None, self.started);
            }
            watcher::Event::Delete(o) => {
                let old = key(&o).and_then(|k| views.remove(&k));
                d.note(old.and_then(|v| v.service()), None, self.started);
            }
            watcher::Event::Init => {
                *listing = Some(HashMap::new());
                d.all = true;
            }
            watcher::Event::InitApply(o) => {
                if let (Some(l), Some(k), Some(v)) = (listing.as_mut(), key(&o), (self.project)(&o))
                {
                    l.insert(k, Arc::new(v));
                }
                d.all = true;
            }
            watcher::Event::InitDone => {
                *views = listing.take().unwrap_or_default();
                views.shrink_to_fit();
                d.all = true;
                return true;
            }
        }
        false
    }
}

/// Runs netlink work on the blocking pool (the socket is synchronous).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Thread)?
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apply::Fake;

    fn objects(eps: &[&str]) -> (Vec<Arc<ServiceView>>, Vec<Arc<SliceView>>) {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80}]},
        }))
        .expect("service");
        let endpoints: Vec<_> = eps.iter().map(|ip| json!({"addresses": [ip]})).collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web-1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080}],
            "endpoints": endpoints,
        }))
        .expect("slice");
        let svc = ServiceView::new(&svc).expect("a view");
        let slice = SliceView::new(&slice, "").expect("a view");
        (vec![Arc::new(svc)], vec![Arc::new(slice)])
    }

    #[test]
    fn each_sync_applies_only_the_change() {
        let metrics = Metrics::default();
        let mut k = Kernel {
            nl: Fake::default(),
            current: Ruleset::default(),
            tracker: None,
        };
        let web = || Dirty {
            keys: BTreeSet::from([("ns".to_owned(), "web".to_owned())]),
            ..Dirty::default()
        };
        for eps in [
            &["10.244.0.2", "10.244.0.3"][..],
            &["10.244.0.2", "10.244.0.3"][..],
            &["10.244.0.2"][..],
        ] {
            let (svcs, slices) = objects(eps);
            // The first sync is a full one (no tracker yet), the others incremental.
            let (next, r) = sync_once(k, web(), &svcs, &slices, &metrics);
            r.expect("sync");
            k = next;
        }
        // The first added the ClusterIP, its two endpoints and their hairpin elements; the
        // unchanged second sent nothing; the third moved the ClusterIP and its endpoints from
        // the 2-endpoint map to the 1-endpoint map and removed a hairpin element.
        let sizes: Vec<usize> = k.nl.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![5, 6]);
        assert_eq!(k.nl.state, k.current);
        assert!(k.tracker.is_some());
    }

    #[test]
    fn slice_updates_made_after_the_start_carry_their_trigger_time() {
        let at = |s: &str| s.parse::<Timestamp>().expect("a timestamp");
        let started = at("2025-01-01T00:00:10Z");
        let slice = |trigger: &str| {
            let mut s: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": "web-1",
                             "labels": {"kubernetes.io/service-name": "web"},
                             "annotations": {crate::metrics::TRIGGER_TIME_ANNOTATION: trigger}},
                "addressType": "IPv4",
                "endpoints": [],
            }))
            .expect("slice");
            s.metadata.resource_version = Some("1".into());
            s
        };
        let mut d = Dirty::default();
        let project = |s: &EndpointSlice| SliceView::new(s, "");
        let on = On {
            project: &project,
            trigger: trigger_time,
            started,
        };
        let mut views = HashMap::new();
        let mut listing = None;
        let mut note = |d: &mut Dirty, ev| on.event(ev, &mut views, &mut listing, d);
        note(&mut d, watcher::Event::Apply(slice("2025-01-01T00:00:11Z")));
        // Before the start (the initial list's), a deletion's, a relist's: no latency.
        note(&mut d, watcher::Event::Apply(slice("2025-01-01T00:00:09Z")));
        note(
            &mut d,
            watcher::Event::Delete(slice("2025-01-01T00:00:12Z")),
        );
        note(&mut d, watcher::Event::Init);
        note(
            &mut d,
            watcher::Event::InitApply(slice("2025-01-01T00:00:13Z")),
        );
        assert!(note(&mut d, watcher::Event::InitDone));
        assert_eq!(views.len(), 1);
        assert_eq!(d.triggers, vec![at("2025-01-01T00:00:11Z")]);
        assert_eq!(
            d.keys,
            BTreeSet::from([("ns".to_owned(), "web".to_owned())])
        );
        assert!(d.all);
    }
}
