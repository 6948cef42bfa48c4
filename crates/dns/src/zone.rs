//! The cluster zone: every name the watched Services and EndpointSlices make, with its records
//! already built. Updated per object (only the touched Service's names are recompiled); read by
//! `answer` without building anything but the response.

use std::collections::HashMap;

use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::answer::{self, Outcome};
use crate::error::{Error, Result};
use crate::fast::{self, FastTable, NameKind};
use crate::records::{self, ServiceKey, ServiceView, SliceView};

/// The schema version of the Kubernetes DNS specification answered at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The settings a zone is compiled with.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// TTL of positive answers, seconds.
    pub ttl: u32,
    /// TTL of negative answers and the SOA minimum, seconds.
    pub negative_ttl: u32,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            domain: "cluster.local".to_owned(),
            ttl: 30,
            negative_ttl: 5,
        }
    }
}

/// Who put an entry at a name: a Service (by its number) or the zone itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Owner(u32);

const STATIC: Owner = Owner(0);

/// A record without its owner name (the node's key already says it).
#[derive(Debug, PartialEq)]
struct Data {
    ttl: u32,
    rdata: Compact,
}

/// Record data, addresses inline (most records are A/AAAA) and the rest boxed: `RData` alone
/// is 184 bytes.
#[derive(Debug, PartialEq)]
enum Compact {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Other(Box<RData>),
}

impl Compact {
    fn new(rdata: RData) -> Self {
        match rdata {
            RData::A(a) => Self::A(a.0),
            RData::AAAA(a) => Self::Aaaa(a.0),
            other => Self::Other(Box::new(other)),
        }
    }

    fn record_type(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::AAAA,
            Self::Other(r) => r.record_type(),
        }
    }

    fn to_rdata(&self) -> RData {
        match self {
            Self::A(ip) => RData::A(hickory_proto::rr::rdata::A(*ip)),
            Self::Aaaa(ip) => RData::AAAA(hickory_proto::rr::rdata::AAAA(*ip)),
            Self::Other(r) => (**r).clone(),
        }
    }
}

/// One name of the zone: its records, and the owners that make it exist even without records.
#[derive(Debug, Default)]
pub(crate) struct Node {
    entries: Vec<(Owner, Option<Data>)>,
}

impl Node {
    fn data(&self, rtype: RecordType) -> impl Iterator<Item = &Data> {
        self.entries
            .iter()
            .filter_map(|(_, d)| d.as_ref())
            .filter(move |d| rtype == RecordType::ANY || d.rdata.record_type() == rtype)
    }

    /// The records of one type (every record for `ANY`), named `name` (this node's name).
    pub(crate) fn records<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> impl Iterator<Item = Record> + 'a {
        self.data(rtype)
            .map(|d| Record::from_rdata(name.clone(), d.ttl, d.rdata.to_rdata()))
    }

    /// Whether the node has records of a type.
    pub(crate) fn has(&self, rtype: RecordType) -> bool {
        self.data(rtype).next().is_some()
    }

    /// The CNAME target, if the name is an alias.
    pub(crate) fn cname(&self) -> Option<&Name> {
        self.data(RecordType::CNAME).find_map(|d| match &d.rdata {
            Compact::Other(r) => match &**r {
                RData::CNAME(c) => Some(&c.0),
                _ => None,
            },
            _ => None,
        })
    }
}

/// What the zone keeps of one EndpointSlice: its namespace and name, and its Service and
/// view (`None` when it names no Service).
#[derive(Debug, Clone)]
pub struct SliceEntry {
    pub key: (String, String),
    pub view: Option<(ServiceKey, SliceView)>,
}

impl SliceEntry {
    /// The entry of `slice`; `None` without a name.
    pub fn of(slice: &EndpointSlice) -> Option<SliceEntry> {
        let key = ServiceKey::of(&slice.metadata)?;
        Some(SliceEntry {
            key: (key.namespace, key.name),
            view: SliceView::from_slice(slice),
        })
    }
}

/// The slices of one Service by name, sorted: one or two is the common case, and a
/// `BTreeMap`'s first node alone takes ~800 bytes (10,000 Services have 10,000 of these).
#[derive(Debug, Default)]
struct Slices(Vec<(String, SliceView)>);

impl Slices {
    fn find(&self, name: &str) -> std::result::Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&SliceView> {
        self.find(name)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| v)
    }

    fn insert(&mut self, name: String, view: SliceView) {
        match self.find(&name) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = view;
                }
            }
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (name, view));
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &SliceView> {
        self.0.iter().map(|(_, v)| v)
    }
}

/// The in-memory cluster zone, built from Services and EndpointSlices.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    ttl: u32,
    negative_ttl: u32,
    soa: Record,
    /// Names by their lower-case wire form (what the fast path has in hand).
    names: HashMap<Box<[u8]>, Node>,
    services: HashMap<ServiceKey, ServiceView>,
    /// Slices by their Service, then by slice name (slices may arrive before their Service).
    slices: HashMap<ServiceKey, Slices>,
    /// (namespace, slice name) -> the Service the slice was filed under.
    slice_service: HashMap<(String, String), ServiceKey>,
    /// Each Service's owner number (its names are recomputed from its view, not stored).
    owned: HashMap<ServiceKey, Owner>,
    next_owner: u32,
    /// Namespaces by name, each owning its `<ns>.svc.<zone>` name.
    namespaces: HashMap<String, Owner>,
    /// The same answers as wire bytes, for the fast path.
    fast: FastTable,
}

impl Zone {
    /// An empty zone for `config.domain`: only the SOA, `dns-version`, `svc` and `pod` names.
    pub fn new(config: &ZoneConfig) -> Result<Self> {
        let mut origin = Name::from_ascii(&config.domain)
            .map_err(|source| Error::Domain {
                domain: config.domain.clone(),
                source,
            })?
            .to_lowercase();
        origin.set_fqdn(true);
        let label = |l: &str| {
            Name::from_ascii(l)
                .and_then(|n| n.append_domain(&origin))
                .map_err(|source| Error::Domain {
                    domain: config.domain.clone(),
                    source,
                })
        };
        // CoreDNS's SOA shape for the cluster zone: ns.dns.<zone>, hostmaster.<zone>.
        let soa = SOA::new(
            label("ns.dns")?,
            label("hostmaster")?,
            1,
            7200,
            1800,
            86400,
            config.negative_ttl,
        );
        let soa = Record::from_rdata(origin.clone(), config.negative_ttl, RData::SOA(soa));
        let mut zone = Self::empty(origin.clone(), config, soa.clone());
        zone.insert(STATIC, origin.clone(), Some((soa.ttl, soa.data)));
        let version = label("dns-version")?;
        let txt = RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()]));
        zone.insert(STATIC, version, Some((config.ttl, txt)));
        zone.insert(STATIC, label("svc")?, None);
        zone.insert(STATIC, label("pod")?, None);
        let statics = [
            zone.origin.clone(),
            label("dns-version")?,
            label("svc")?,
            label("pod")?,
        ];
        zone.compile_fast(statics.iter());
        Ok(zone)
    }

    fn empty(origin: Name, config: &ZoneConfig, soa: Record) -> Self {
        Self {
            fast: FastTable::new(&origin, &soa),
            origin,
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            soa,
            names: HashMap::new(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_service: HashMap::new(),
            owned: HashMap::new(),
            next_owner: 1,
            namespaces: HashMap::new(),
        }
    }

    /// The cluster domain as a lower-case FQDN.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The SOA record put in the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// TTL of positive answers.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// TTL of negative answers.
    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// How many names the zone holds (a size figure for logs and benchmarks).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no names (never: the apex is always there).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub(crate) fn node(&self, name: &Name) -> Option<&Node> {
        self.names.get(fast::wire(name).as_slice())
    }

    /// The compiled answer to `req` (see [`FastTable::answer`]), or `None` for the slow path.
    pub fn fast_answer(&self, req: &[u8], ra: bool, tcp: bool, out: &mut Vec<u8>) -> Option<u16> {
        let kind = |wire: &[u8]| {
            self.names.get(wire).map(|n| {
                if n.cname().is_some() {
                    NameKind::Slow
                } else {
                    NameKind::Exists
                }
            })
        };
        self.fast.answer(req, ra, tcp, out, kind)
    }

    /// The compiled wire answers.
    pub fn fast(&self) -> &FastTable {
        &self.fast
    }

    /// Recompiles the wire answers of `names` from the records now in the zone.
    fn compile_fast<'a>(&mut self, names: impl Iterator<Item = &'a Name>) {
        let mut fast = std::mem::take(&mut self.fast);
        let respond = |req: &hickory_proto::op::Message| match answer::respond(self, req) {
            Outcome::Answer(resp) => Some(resp),
            _ => None,
        };
        for name in names {
            let node = self.names.get(fast::wire(name).as_slice());
            let exists = node.map(|n| n.cname().is_some());
            let present = |t| node.is_some_and(|n| n.has(t));
            fast.compile(name, exists, present, respond);
        }
        self.fast = fast;
    }

    fn insert(&mut self, owner: Owner, name: Name, record: Option<(u32, RData)>) {
        let node = self.names.entry(fast::wire(&name).into()).or_default();
        let data = record.map(|(ttl, rdata)| Data {
            ttl,
            rdata: Compact::new(rdata),
        });
        let entry = (owner, data);
        if !node.entries.contains(&entry) {
            node.entries.reserve_exact(1);
            node.entries.push(entry);
        }
    }

    /// Drops what `owner` put at `name`; the name goes when nobody has anything there.
    fn disown(&mut self, owner: Owner, name: &Name) {
        let key = fast::wire(name);
        if let Some(node) = self.names.get_mut(key.as_slice()) {
            node.entries.retain(|(o, _)| *o != owner);
            if node.entries.is_empty() {
                self.names.remove(key.as_slice());
            }
        }
    }

    fn new_owner(&mut self) -> Owner {
        self.next_owner = self.next_owner.wrapping_add(1).max(1);
        Owner(self.next_owner)
    }

    fn namespace_name(&self, ns: &str) -> Option<Name> {
        let labels = [ns.to_ascii_lowercase(), "svc".to_owned()];
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))
            .ok()?
            .append_domain(&self.origin)
            .ok()
    }

    /// Adds a Namespace: `<ns>.svc.<zone>` exists (NOERROR, no data) even without Services.
    pub fn apply_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = ns.metadata.name.clone() {
            self.put_namespace(name);
        }
    }

    fn put_namespace(&mut self, name: String) {
        if self.namespaces.contains_key(&name) {
            return;
        }
        let Some(dns_name) = self.namespace_name(&name) else {
            return;
        };
        let owner = self.new_owner();
        self.namespaces.insert(name, owner);
        self.insert(owner, dns_name.clone(), None);
        self.compile_fast(std::iter::once(&dns_name));
    }

    /// Removes a Namespace (its Services keep their names until they are deleted).
    pub fn delete_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = ns.metadata.name.as_deref() {
            self.remove_namespace(name);
        }
    }

    fn remove_namespace(&mut self, name: &str) {
        let Some(owner) = self.namespaces.remove(name) else {
            return;
        };
        let Some(dns_name) = self.namespace_name(name) else {
            return;
        };
        self.disown(owner, &dns_name);
        self.compile_fast(std::iter::once(&dns_name));
    }

    /// Makes the Namespaces exactly `all` (after a list or relist).
    pub fn replace_namespaces<'a>(&mut self, all: impl IntoIterator<Item = &'a Namespace>) {
        self.replace_namespace_names(all.into_iter().filter_map(|n| n.metadata.name.clone()));
    }

    /// [`Zone::replace_namespaces`] by name.
    pub fn replace_namespace_names(&mut self, all: impl IntoIterator<Item = String>) {
        let all: Vec<String> = all.into_iter().collect();
        let present: std::collections::HashSet<&str> = all.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .namespaces
            .keys()
            .filter(|k| !present.contains(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.remove_namespace(&name);
        }
        for ns in all {
            self.put_namespace(ns);
        }
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        if let Some(view) = ServiceView::from_service(svc) {
            self.put_service(view);
        }
    }

    fn put_service(&mut self, view: ServiceView) {
        if self.services.get(&view.key) == Some(&view) {
            return;
        }
        let key = view.key.clone();
        self.update(&key, |zone| {
            zone.services.insert(view.key.clone(), view);
        });
    }

    /// Removes a Service and its names (its slices are kept until they are deleted).
    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = ServiceKey::of(&svc.metadata) {
            self.update(&key, |zone| {
                zone.services.remove(&key);
            });
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        if let Some(entry) = SliceEntry::of(slice) {
            self.put_slice(entry);
        }
    }

    fn put_slice(&mut self, entry: SliceEntry) {
        let SliceEntry {
            key: slice_key,
            view,
        } = entry;
        let Some((service, view)) = view else {
            self.remove_slice(&slice_key);
            return;
        };
        if let Some(old) = self.slice_service.get(&slice_key)
            && *old != service
        {
            self.remove_slice(&slice_key);
        }
        let slices = self.slices.entry(service.clone()).or_default();
        if slices.get(&slice_key.1) == Some(&view) {
            return;
        }
        self.update(&service, |zone| {
            let slices = zone.slices.entry(service.clone()).or_default();
            slices.insert(slice_key.1.clone(), view);
            zone.slice_service.insert(slice_key, service.clone());
        });
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = ServiceKey::of(&slice.metadata) {
            self.remove_slice(&(key.namespace, key.name));
        }
    }

    fn remove_slice(&mut self, slice_key: &(String, String)) {
        let Some(service) = self.slice_service.get(slice_key).cloned() else {
            return;
        };
        self.update(&service, |zone| {
            zone.slice_service.remove(slice_key);
            if let Some(slices) = zone.slices.get_mut(&service) {
                slices.remove(&slice_key.1);
                if slices.is_empty() {
                    zone.slices.remove(&service);
                }
            }
        });
    }

    /// Makes the Services exactly `all` (after a list or relist): those missing are deleted,
    /// changed ones recompiled, unchanged ones left alone.
    pub fn replace_services<'a>(&mut self, all: impl IntoIterator<Item = &'a Service>) {
        self.replace_service_views(all.into_iter().filter_map(ServiceView::from_service));
    }

    /// [`Zone::replace_services`] from views (what the watcher keeps while it lists, so the
    /// whole objects of a list are never held at once).
    pub fn replace_service_views(&mut self, all: impl IntoIterator<Item = ServiceView>) {
        let views: HashMap<ServiceKey, ServiceView> =
            all.into_iter().map(|v| (v.key.clone(), v)).collect();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !views.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.update(&key, |zone| {
                zone.services.remove(&key);
            });
        }
        for view in views.into_values() {
            self.put_service(view);
        }
    }

    /// Makes the EndpointSlices exactly `all` (after a list or relist).
    pub fn replace_slices<'a>(&mut self, all: impl IntoIterator<Item = &'a EndpointSlice>) {
        self.replace_slice_entries(all.into_iter().filter_map(SliceEntry::of));
    }

    /// [`Zone::replace_slices`] from entries.
    pub fn replace_slice_entries(&mut self, all: impl IntoIterator<Item = SliceEntry>) {
        let all: Vec<SliceEntry> = all.into_iter().collect();
        let present: std::collections::HashSet<(String, String)> =
            all.iter().map(|e| e.key.clone()).collect();
        let gone: Vec<(String, String)> = self
            .slice_service
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_slice(&key);
        }
        for entry in all {
            self.put_slice(entry);
        }
    }

    /// The records one Service makes in the current state.
    fn entries_of(&self, key: &ServiceKey) -> Vec<records::Entry> {
        let Some(view) = self.services.get(key) else {
            return Vec::new();
        };
        let slices = self.slices.get(key).into_iter().flat_map(Slices::values);
        records::compile(view, slices, &self.origin)
    }

    /// Changes what a Service is made of (`change`), then replaces the names it had with the
    /// ones it has now. The old names are recompiled from the old state rather than stored:
    /// that costs a compile per update and saves a name list per Service.
    fn update(&mut self, key: &ServiceKey, change: impl FnOnce(&mut Self)) {
        let mut touched: Vec<Name> = self.entries_of(key).into_iter().map(|(n, _)| n).collect();
        change(self);
        let owner = match self.owned.get(key) {
            Some(owner) => *owner,
            None => self.new_owner(),
        };
        for name in &touched {
            self.disown(owner, name);
        }
        let entries = self.entries_of(key);
        if self.services.contains_key(key) {
            self.owned.insert(key.clone(), owner);
        } else {
            self.owned.remove(key);
        }
        for (name, rdata) in entries {
            touched.push(name.clone());
            self.insert(owner, name, rdata.map(|d| (self.ttl, d)));
        }
        touched.sort();
        touched.dedup();
        self.compile_fast(touched.iter());
    }
}

#[cfg(test)]
mod tests;
