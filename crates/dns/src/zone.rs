//! The cluster zone: every name the watched Services and EndpointSlices make, with its records
//! already built. Updated per object (only the touched Service's names are recompiled); read by
//! `answer` without building anything but the response.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::answer::{self, Outcome};
use crate::error::{Error, Result};
use crate::fast::{self, FastTable};
use crate::records::{self, ServiceKey, ServiceSpec, ServiceView, SliceView};

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

/// Who makes a name have records: a Service (its slot in `services`, plus one) or the zone
/// itself.
type Owner = u32;

const STATIC: Owner = 0;

/// A record at a name, as the slow path reads it.
#[derive(Debug)]
struct Data {
    ttl: u32,
    rdata: RData,
}

/// What the zone has at one name, gathered when the slow path asks (records are not kept per
/// name: each owner's are recompiled from its view, which costs far less memory).
#[derive(Debug, Default)]
pub(crate) struct Node {
    data: Vec<Data>,
}

impl Node {
    fn data(&self, rtype: RecordType) -> impl Iterator<Item = &Data> {
        self.data
            .iter()
            .filter(move |d| rtype == RecordType::ANY || d.rdata.record_type() == rtype)
    }

    /// The records of one type (every record for `ANY`), named `name` (this node's name).
    pub(crate) fn records<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> impl Iterator<Item = Record> + 'a {
        self.data(rtype)
            .map(|d| Record::from_rdata(name.clone(), d.ttl, d.rdata.clone()))
    }

    /// Whether the node has records of a type.
    pub(crate) fn has(&self, rtype: RecordType) -> bool {
        self.data(rtype).next().is_some()
    }

    /// The CNAME target, if the name is an alias.
    pub(crate) fn cname(&self) -> Option<&Name> {
        self.data(RecordType::CNAME).find_map(|d| match &d.rdata {
            RData::CNAME(c) => Some(&c.0),
            _ => None,
        })
    }
}

/// The owners with records at a name: almost always one. The rare list is boxed behind a
/// thin pointer so the enum takes 16 bytes, not 24 (one per name: 40,000 at 10,000 Services).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
enum Owners {
    #[default]
    None,
    One(Owner),
    Many(Box<Vec<Owner>>),
}

impl Owners {
    fn as_slice(&self) -> &[Owner] {
        match self {
            Self::None => &[],
            Self::One(o) => std::slice::from_ref(o),
            Self::Many(all) => all.as_slice(),
        }
    }

    fn add(&mut self, owner: Owner) {
        if self.as_slice().contains(&owner) {
            return;
        }
        *self = match std::mem::take(self) {
            Self::None => Self::One(owner),
            other => {
                let mut all = other.as_slice().to_vec();
                all.push(owner);
                Self::Many(Box::new(all))
            }
        };
    }

    fn remove(&mut self, owner: Owner) {
        if !self.as_slice().contains(&owner) {
            return;
        }
        let rest: Vec<Owner> = self
            .as_slice()
            .iter()
            .copied()
            .filter(|o| *o != owner)
            .collect();
        *self = match rest.as_slice() {
            [] => Self::None,
            [one] => Self::One(*one),
            _ => Self::Many(Box::new(rest)),
        };
    }
}

/// One name of the zone.
#[derive(Debug)]
struct NameEntry {
    /// The lower-case wire name, then its compiled answers (`fast::compile`): one allocation.
    bytes: Box<[u8]>,
    name_len: u8,
    /// A CNAME is here: the fast path leaves the name to the slow path.
    alias: bool,
    /// How many owners make the name exist without records here (empty non-terminals such as
    /// `_tcp.<svc>...`, namespaces' `<ns>.svc.<zone>`).
    refs: u32,
    /// The owners with records here.
    owners: Owners,
}

impl NameEntry {
    fn name(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.name_len))
            .unwrap_or_default()
    }

    fn answers(&self) -> &[u8] {
        self.bytes
            .get(usize::from(self.name_len)..)
            .unwrap_or_default()
    }

    fn unused(&self) -> bool {
        self.refs == 0 && self.owners.as_slice().is_empty()
    }
}

/// Records by lower-case wire name.
type Records = HashMap<Vec<u8>, Vec<Data>>;

/// One Service's state: its view (`None` while only its slices are known) and its slices.
#[derive(Debug)]
struct ServiceState {
    key: ServiceKey,
    spec: Option<ServiceSpec>,
    slices: Slices,
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
            key: (key.namespace.to_string(), key.name),
            view: SliceView::from_slice(slice),
        })
    }
}

/// The slices of one Service by name, sorted: one or two is the common case, and a
/// `BTreeMap`'s first node alone takes ~800 bytes (10,000 Services have 10,000 of these).
#[derive(Debug, Default)]
struct Slices(Vec<(Box<str>, SliceView)>);

impl Slices {
    fn find(&self, name: &str) -> std::result::Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    fn get(&self, name: &str) -> Option<&SliceView> {
        self.find(name)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| v)
    }

    fn insert(&mut self, name: &str, view: SliceView) {
        match self.find(name) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = view;
                }
            }
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (name.into(), view));
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
    hasher: RandomState,
    /// Every name: its slot in `entries`, found by its lower-case wire form (what the fast
    /// path has in hand). Slots rather than entries in the table: a hash table's buckets are
    /// all touched however few are full, and a slot takes 4 bytes where an entry takes 40.
    names: HashTable<u32>,
    /// The names' entries, dense (a removed one's slot takes the last entry).
    entries: Vec<NameEntry>,
    /// The zone's own records (SOA, `dns-version` TXT) by lower-case wire name.
    statics: Vec<(Box<[u8]>, u32, RData)>,
    /// Services (and slices waiting for their Service) in slots; a slot's number plus one is
    /// its `Owner`. Found by key through `by_key`.
    services: Vec<Option<ServiceState>>,
    free: Vec<u32>,
    by_key: HashTable<u32>,
    /// Where each EndpointSlice is filed: (32 bits of the hash of its namespace and name,
    /// the slot of its Service). The slot's state holds the slice's name, so the index keeps
    /// no copy of the keys (10,000 slices took 0.7 MB as a map of strings).
    slice_index: HashTable<(u32, u32)>,
    /// Namespaces by name, each making its `<ns>.svc.<zone>` name exist.
    namespaces: HashSet<Box<str>>,
    /// One copy of each namespace and port name the Services and slices use (10,000 Services
    /// in a few namespaces with ports all called `http` would otherwise keep 30,000 copies);
    /// those no longer used are dropped after each (re)list.
    strings: HashSet<Arc<str>>,
    /// While one Service's names are recompiled: its records by wire name, so that answering
    /// each of its names does not compile the Service again.
    scratch: Option<(Owner, Records)>,
    fast: FastTable,
}

/// The table hash of a slice's 32-bit hash: hashbrown takes its tag from the top bits and
/// the bucket from the low ones, so both halves carry it.
fn slice_table_hash(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
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
        let version = label("dns-version")?;
        let txt = RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()]));
        let statics = [
            origin.clone(),
            version.clone(),
            label("svc")?,
            label("pod")?,
        ];
        let mut zone = Self {
            fast: FastTable::new(&origin, &soa),
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            statics: vec![
                (fast::wire(&origin).into(), soa.ttl, soa.data.clone()),
                (fast::wire(&version).into(), config.ttl, txt),
            ],
            soa,
            hasher: RandomState::new(),
            names: HashTable::new(),
            entries: Vec::new(),
            services: Vec::new(),
            free: Vec::new(),
            by_key: HashTable::new(),
            slice_index: HashTable::new(),
            namespaces: HashSet::new(),
            strings: HashSet::new(),
            scratch: None,
            origin,
        };
        for (i, name) in statics.iter().enumerate() {
            zone.own(STATIC, &fast::wire(name), i < 2);
        }
        zone.compile_names(statics.iter());
        Ok(zone)
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
        self.entries.len()
    }

    /// Whether the zone holds no names (never: the apex is always there).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many answers are compiled for the fast path (a size figure for benchmarks).
    pub fn compiled_answers(&self) -> usize {
        self.entries.iter().map(|e| fast::count(e.answers())).sum()
    }

    /// The slot of the wire name `wire` in `entries`.
    fn slot_of(&self, wire: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.names
            .find(self.hasher.hash_one(wire), |&i| {
                entries.get(i as usize).is_some_and(|e| e.name() == wire)
            })
            .map(|&i| i as usize)
    }

    fn entry(&self, wire: &[u8]) -> Option<&NameEntry> {
        self.entries.get(self.slot_of(wire)?)
    }

    /// The records at `name`, gathered from its owners; `None` when the name does not exist.
    pub(crate) fn node(&self, name: &Name) -> Option<Node> {
        let wire = fast::wire(name);
        let entry = self.entry(&wire)?;
        let mut node = Node::default();
        for &owner in entry.owners.as_slice() {
            self.records_of(owner, &wire, &mut node.data);
        }
        Some(node)
    }

    /// What `owner` has at the wire name `wire`.
    fn records_of(&self, owner: Owner, wire: &[u8], out: &mut Vec<Data>) {
        if owner == STATIC {
            out.extend(self.statics.iter().filter(|(n, _, _)| **n == *wire).map(
                |(_, ttl, rdata)| Data {
                    ttl: *ttl,
                    rdata: rdata.clone(),
                },
            ));
            return;
        }
        if let Some((o, records)) = &self.scratch
            && *o == owner
        {
            out.extend(records.get(wire).into_iter().flatten().map(|d| Data {
                ttl: d.ttl,
                rdata: d.rdata.clone(),
            }));
            return;
        }
        let Some(slot) = owner.checked_sub(1) else {
            return;
        };
        for (name, rdata) in self.entries_of(slot) {
            if let Some(rdata) = rdata
                && fast::wire(&name) == wire
            {
                out.push(Data {
                    ttl: self.ttl,
                    rdata,
                });
            }
        }
    }

    /// The compiled answer to `req` (see [`FastTable::answer`]), or `None` for the slow path.
    pub fn fast_answer(&self, req: &[u8], ra: bool, tcp: bool, out: &mut Vec<u8>) -> Option<u16> {
        self.fast.answer(req, ra, tcp, out, |wire| {
            self.entry(wire).map(|e| fast::Known {
                alias: e.alias,
                answers: e.answers(),
            })
        })
    }

    /// Recompiles the wire answers of `names` from the records now in the zone.
    fn compile_names<'a>(&mut self, names: impl Iterator<Item = &'a Name>) {
        let respond =
            |zone: &Self, req: &hickory_proto::op::Message| match answer::respond(zone, req) {
                Outcome::Answer(resp) => Some(resp),
                _ => None,
            };
        // Built in one reused buffer, then copied into a block of the exact size: a `Vec`
        // grown and shrunk into a box would leave its spare tail behind it as a small hole
        // in the heap, one per name (a list compiles 40,000 names at 10,000 Services).
        let mut bytes = Vec::with_capacity(fast::MAX_COMPILED * 2);
        for name in names {
            let wire = fast::wire(name);
            let Some(node) = self.node(name) else {
                continue;
            };
            let alias = node.cname().is_some();
            bytes.clear();
            bytes.extend_from_slice(&wire);
            if !alias {
                fast::compile(name, |t| node.has(t), |req| respond(self, req), &mut bytes);
            }
            if let Some(entry) = self.slot_of(&wire).and_then(|i| self.entries.get_mut(i)) {
                entry.bytes = Box::from(bytes.as_slice());
                entry.alias = alias;
            }
        }
    }

    /// Makes `owner` a reason for the wire name `wire` to exist (`data`: with records there).
    fn own(&mut self, owner: Owner, wire: &[u8], data: bool) {
        let slot = match self.slot_of(wire) {
            Some(slot) => slot,
            None => {
                let slot = self.entries.len();
                self.entries.push(NameEntry {
                    bytes: wire.into(),
                    name_len: u8::try_from(wire.len()).unwrap_or(u8::MAX),
                    alias: false,
                    refs: 0,
                    owners: Owners::None,
                });
                let (hasher, entries) = (&self.hasher, &self.entries);
                self.names.insert_unique(
                    hasher.hash_one(wire),
                    u32::try_from(slot).unwrap_or(u32::MAX),
                    |&i| {
                        entries
                            .get(i as usize)
                            .map_or(0, |e| hasher.hash_one(e.name()))
                    },
                );
                slot
            }
        };
        if let Some(entry) = self.entries.get_mut(slot) {
            if data {
                entry.owners.add(owner);
            } else {
                entry.refs = entry.refs.saturating_add(1);
            }
        }
    }

    /// Undoes one [`Zone::own`]; the name goes when nothing makes it exist any more.
    fn disown(&mut self, owner: Owner, wire: &[u8], data: bool) {
        let Some(slot) = self.slot_of(wire) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        if data {
            entry.owners.remove(owner);
        } else {
            entry.refs = entry.refs.saturating_sub(1);
        }
        if entry.unused() {
            self.remove_entry(slot);
        }
    }

    /// Removes the name in `slot`; the last entry moves into its place.
    fn remove_entry(&mut self, slot: usize) {
        let Some(entry) = self.entries.get(slot) else {
            return;
        };
        let hash = self.hasher.hash_one(entry.name());
        let target = u32::try_from(slot).unwrap_or(u32::MAX);
        if let Ok(found) = self.names.find_entry(hash, |&i| i == target) {
            found.remove();
        }
        let last = self.entries.len() - 1;
        self.entries.swap_remove(slot);
        if let Some(moved) = self.entries.get(slot) {
            let hash = self.hasher.hash_one(moved.name());
            let from = u32::try_from(last).unwrap_or(u32::MAX);
            if let Some(i) = self.names.find_mut(hash, |&i| i == from) {
                *i = target;
            }
        }
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
        if let Some(name) = ns.metadata.name.as_deref() {
            self.put_namespace(name);
        }
    }

    fn put_namespace(&mut self, name: &str) {
        if self.namespaces.contains(name) {
            return;
        }
        let Some(dns_name) = self.namespace_name(name) else {
            return;
        };
        self.namespaces.insert(name.into());
        self.own(STATIC, &fast::wire(&dns_name), false);
        self.compile_names(std::iter::once(&dns_name));
    }

    /// Removes a Namespace (its Services keep their names until they are deleted).
    pub fn delete_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = ns.metadata.name.as_deref() {
            self.remove_namespace(name);
        }
    }

    fn remove_namespace(&mut self, name: &str) {
        if !self.namespaces.remove(name) {
            return;
        }
        let Some(dns_name) = self.namespace_name(name) else {
            return;
        };
        self.disown(STATIC, &fast::wire(&dns_name), false);
        self.compile_names(std::iter::once(&dns_name));
    }

    /// Makes the Namespaces exactly `all` (after a list or relist).
    pub fn replace_namespaces<'a>(&mut self, all: impl IntoIterator<Item = &'a Namespace>) {
        self.replace_namespace_names(all.into_iter().filter_map(|n| n.metadata.name.clone()));
    }

    /// [`Zone::replace_namespaces`] by name.
    pub fn replace_namespace_names(&mut self, all: impl IntoIterator<Item = String>) {
        let all: Vec<String> = all.into_iter().collect();
        let present: HashSet<&str> = all.iter().map(String::as_str).collect();
        let gone: Vec<Box<str>> = self
            .namespaces
            .iter()
            .filter(|k| !present.contains(&***k))
            .cloned()
            .collect();
        for name in gone {
            self.remove_namespace(&name);
        }
        for ns in &all {
            self.put_namespace(ns);
        }
    }

    /// The slot of the Service `key`, if it has one.
    fn slot(&self, key: &ServiceKey) -> Option<u32> {
        let services = &self.services;
        self.by_key
            .find(self.hasher.hash_one(key), |&i| {
                services
                    .get(i as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.key == *key)
            })
            .copied()
    }

    /// The slot of the Service `key`, made if it has none.
    fn slot_or_new(&mut self, key: &ServiceKey) -> u32 {
        if let Some(slot) = self.slot(key) {
            return slot;
        }
        let state = ServiceState {
            key: key.clone(),
            spec: None,
            slices: Slices::default(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.services.get_mut(slot as usize) {
                    *s = Some(state);
                }
                slot
            }
            None => {
                self.services.push(Some(state));
                u32::try_from(self.services.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let (hasher, services) = (&self.hasher, &self.services);
        self.by_key.insert_unique(hasher.hash_one(key), slot, |&i| {
            services
                .get(i as usize)
                .and_then(Option::as_ref)
                .map_or(0, |s| hasher.hash_one(&s.key))
        });
        slot
    }

    fn state(&self, slot: u32) -> Option<&ServiceState> {
        self.services.get(slot as usize).and_then(Option::as_ref)
    }

    fn state_mut(&mut self, slot: u32) -> Option<&mut ServiceState> {
        self.services
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
    }

    /// Frees the slot of a Service with neither a view nor slices.
    fn release_if_empty(&mut self, slot: u32) {
        let Some(state) = self.state(slot) else {
            return;
        };
        if state.spec.is_some() || !state.slices.is_empty() {
            return;
        }
        let hash = self.hasher.hash_one(&state.key);
        if let Ok(found) = self.by_key.find_entry(hash, |&i| i == slot) {
            found.remove();
        }
        if let Some(s) = self.services.get_mut(slot as usize) {
            *s = None;
        }
        self.free.push(slot);
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        if let Some(view) = ServiceView::from_service(svc) {
            self.put_service(view);
        }
    }

    /// Makes `s` the zone's shared copy of its text.
    fn intern(&mut self, s: &mut Arc<str>) {
        match self.strings.get(&**s) {
            Some(shared) => *s = shared.clone(),
            None => {
                self.strings.insert(s.clone());
            }
        }
    }

    fn intern_ports(&mut self, ports: &mut [records::PortView]) {
        for port in ports {
            self.intern(&mut port.name);
        }
    }

    /// Forgets shared strings nothing uses any more.
    fn prune_strings(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
    }

    fn put_service(&mut self, view: ServiceView) {
        let ServiceView { mut key, mut spec } = view;
        self.intern(&mut key.namespace);
        self.intern_ports(&mut spec.ports);
        let slot = self.slot_or_new(&key);
        if self.state(slot).and_then(|s| s.spec.as_ref()) == Some(&spec) {
            return;
        }
        self.update(slot, |state| state.spec = Some(spec));
    }

    /// Removes a Service and its names (its slices are kept until they are deleted).
    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = ServiceKey::of(&svc.metadata) {
            self.remove_service(&key);
        }
    }

    fn remove_service(&mut self, key: &ServiceKey) {
        if let Some(slot) = self.slot(key) {
            self.update(slot, |state| state.spec = None);
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
            key: (namespace, name),
            view,
        } = entry;
        let Some((mut service, mut view)) = view else {
            self.remove_slice(&namespace, &name);
            return;
        };
        self.intern(&mut service.namespace);
        self.intern_ports(&mut view.ports);
        let slot = self.slot_or_new(&service);
        let old = self.find_slice(&namespace, &name).map(|(_, slot)| slot);
        if let Some(old) = old
            && old != slot
        {
            self.remove_slice(&namespace, &name);
        }
        if self.state(slot).and_then(|s| s.slices.get(&name)) == Some(&view) {
            return;
        }
        if old != Some(slot) {
            let h = self.slice_hash(&namespace, &name);
            self.slice_index
                .insert_unique(slice_table_hash(h), (h, slot), |&(h, _)| {
                    slice_table_hash(h)
                });
        }
        self.update(slot, |state| state.slices.insert(&name, view));
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = ServiceKey::of(&slice.metadata) {
            self.remove_slice(&key.namespace, &key.name);
        }
    }

    fn slice_hash(&self, namespace: &str, name: &str) -> u32 {
        // The low 32 bits of a 64-bit hash: as good a hash on their own.
        self.hasher.hash_one((namespace, name)) as u32
    }

    /// Whether the Service in `slot` has the slice `namespace`/`name` filed under it.
    fn files(services: &[Option<ServiceState>], slot: u32, namespace: &str, name: &str) -> bool {
        services
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| *s.key.namespace == *namespace && s.slices.get(name).is_some())
    }

    /// The index entry of the slice `namespace`/`name`: its hash and its Service's slot.
    fn find_slice(&self, namespace: &str, name: &str) -> Option<(u32, u32)> {
        let h = self.slice_hash(namespace, name);
        let services = &self.services;
        self.slice_index
            .find(slice_table_hash(h), |&(eh, slot)| {
                eh == h && Self::files(services, slot, namespace, name)
            })
            .copied()
    }

    fn remove_slice(&mut self, namespace: &str, name: &str) {
        let Some(filed) = self.find_slice(namespace, name) else {
            return;
        };
        if let Ok(entry) = self
            .slice_index
            .find_entry(slice_table_hash(filed.0), |e| *e == filed)
        {
            entry.remove();
        }
        self.update(filed.1, |state| state.slices.remove(name));
    }

    /// Makes the Services exactly `all` (after a list or relist): those missing are deleted,
    /// changed ones recompiled, unchanged ones left alone.
    pub fn replace_services<'a>(&mut self, all: impl IntoIterator<Item = &'a Service>) {
        self.replace_service_views(all.into_iter().filter_map(ServiceView::from_service));
    }

    /// [`Zone::replace_services`] from views (what the watcher keeps while it lists, so the
    /// whole objects of a list are never held at once).
    pub fn replace_service_views(&mut self, all: impl IntoIterator<Item = ServiceView>) {
        let all: Vec<ServiceView> = all.into_iter().collect();
        let present: HashSet<&ServiceKey> = all.iter().map(|v| &v.key).collect();
        let gone: Vec<ServiceKey> = self
            .services
            .iter()
            .flatten()
            .filter(|s| s.spec.is_some() && !present.contains(&s.key))
            .map(|s| s.key.clone())
            .collect();
        for key in gone {
            self.remove_service(&key);
        }
        for view in all {
            self.put_service(view);
        }
        self.prune_strings();
    }

    /// Makes the EndpointSlices exactly `all` (after a list or relist).
    pub fn replace_slices<'a>(&mut self, all: impl IntoIterator<Item = &'a EndpointSlice>) {
        self.replace_slice_entries(all.into_iter().filter_map(SliceEntry::of));
    }

    /// [`Zone::replace_slices`] from entries.
    pub fn replace_slice_entries(&mut self, all: impl IntoIterator<Item = SliceEntry>) {
        let all: Vec<SliceEntry> = all.into_iter().collect();
        let present: HashSet<(&str, &str)> = all
            .iter()
            .map(|e| (e.key.0.as_str(), e.key.1.as_str()))
            .collect();
        let gone: Vec<(Arc<str>, Box<str>)> = self
            .services
            .iter()
            .flatten()
            .flat_map(|s| {
                s.slices
                    .0
                    .iter()
                    .map(|(name, _)| (s.key.namespace.clone(), name.clone()))
            })
            .filter(|(namespace, name)| !present.contains(&(&**namespace, &**name)))
            .collect();
        drop(present);
        for (namespace, name) in gone {
            self.remove_slice(&namespace, &name);
        }
        for entry in all {
            self.put_slice(entry);
        }
        self.prune_strings();
    }

    /// The records one Service makes in the current state.
    fn entries_of(&self, slot: u32) -> Vec<records::Entry> {
        let Some(state) = self.state(slot) else {
            return Vec::new();
        };
        let Some(spec) = &state.spec else {
            return Vec::new();
        };
        records::compile(&state.key, spec, state.slices.values(), &self.origin)
    }

    /// The names a Service's entries make, each with whether it has records there.
    fn names_of(entries: &[records::Entry]) -> BTreeMap<Vec<u8>, (Name, bool)> {
        let mut names: BTreeMap<Vec<u8>, (Name, bool)> = BTreeMap::new();
        for (name, rdata) in entries {
            let slot = names
                .entry(fast::wire(name))
                .or_insert_with(|| (name.clone(), false));
            slot.1 |= rdata.is_some();
        }
        names
    }

    /// Changes what a Service is made of (`change`), then replaces the names it had with the
    /// ones it has now. The old names are recompiled from the old state rather than stored:
    /// that costs a compile per update and saves a name list per Service.
    fn update(&mut self, slot: u32, change: impl FnOnce(&mut ServiceState)) {
        let owner = slot + 1;
        let old = Self::names_of(&self.entries_of(slot));
        if let Some(state) = self.state_mut(slot) {
            change(state);
        }
        let entries = self.entries_of(slot);
        let new = Self::names_of(&entries);
        // Own the new names before disowning the old, so a name in both never goes away.
        let same = |a: &BTreeMap<Vec<u8>, (Name, bool)>, wire: &Vec<u8>, data: bool| {
            a.get(wire).is_some_and(|(_, d)| *d == data)
        };
        for (wire, (_, data)) in &new {
            if !same(&old, wire, *data) {
                self.own(owner, wire, *data);
            }
        }
        for (wire, (_, data)) in &old {
            if !same(&new, wire, *data) {
                self.disown(owner, wire, *data);
            }
        }
        let mut scratch = Records::new();
        for (name, rdata) in entries {
            if let Some(rdata) = rdata {
                scratch.entry(fast::wire(&name)).or_default().push(Data {
                    ttl: self.ttl,
                    rdata,
                });
            }
        }
        self.scratch = Some((owner, scratch));
        let mut touched: BTreeMap<Vec<u8>, Name> = BTreeMap::new();
        for (wire, (name, _)) in old.into_iter().chain(new) {
            touched.insert(wire, name);
        }
        self.compile_names(touched.values());
        self.scratch = None;
        self.release_if_empty(slot);
    }
}

#[cfg(test)]
mod tests;
