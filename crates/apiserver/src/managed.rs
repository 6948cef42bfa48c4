//! `metadata.managedFields`: which field manager owns which fields, and server-side apply, with
//! the behaviour of kube-apiserver's `fieldmanager` and sigs.k8s.io/structured-merge-diff
//! (field sets, ownership moving on Update, pruning and conflicts on Apply). Written here
//! because no maintained Rust crate implements structured-merge-diff; list types come from
//! `patch::merge_key` instead of an OpenAPI schema.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value, json};

use crate::patch::merge_key;

/// Longest manager name kube-apiserver keeps (`validation.FieldManagerMaxLength`).
pub const MAX_MANAGER_LEN: usize = 128;

/// The manager a write is recorded under: `fieldManager`, else the User-Agent up to its first
/// `/` (`kubectl/v1.33.0 (linux/amd64) ...` is `kubectl`), printable characters only and at
/// most 128 bytes, as kube-apiserver derives it.
pub fn manager_or_user_agent(field_manager: Option<&str>, user_agent: &str) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// One step of a field path, ordered as structured-merge-diff orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ElementKind {
    Field,
    Key,
    Value,
    Index,
}

/// A path element: a field name, a keyed list item (`k:{"name":"x"}`), a set item
/// (`v:"x"`) or an index; `text` is the name or the canonical JSON of key or value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    kind: ElementKind,
    text: String,
}

impl Element {
    fn field(name: &str) -> Self {
        Self {
            kind: ElementKind::Field,
            text: name.to_owned(),
        }
    }

    /// The element of a keyed list item, or `None` when the item lacks its key.
    fn key(item: &Value, key: &str, also: Option<(&str, Option<&str>)>) -> Option<Self> {
        let id = item.get(key)?;
        let mut m = Map::new();
        m.insert(key.to_owned(), id.clone());
        if let Some((field, default)) = also {
            match (item.get(field), default) {
                (Some(v), _) => {
                    m.insert(field.to_owned(), v.clone());
                }
                (None, Some(d)) => {
                    m.insert(field.to_owned(), json!(d));
                }
                (None, None) => {}
            }
        }
        Some(Self {
            kind: ElementKind::Key,
            text: Value::Object(m).to_string(),
        })
    }

    fn value(v: &Value) -> Self {
        Self {
            kind: ElementKind::Value,
            text: v.to_string(),
        }
    }

    /// The element of an item of a list of type `lt`.
    fn item(v: &Value, lt: ListType) -> Option<Self> {
        match lt {
            ListType::Set => Some(Self::value(v)),
            ListType::Keyed { key, also } => Self::key(v, key, also),
        }
    }

    /// The `f:`/`k:`/`v:`/`i:` form used as a `fieldsV1` key.
    fn encode(&self) -> String {
        let prefix = match self.kind {
            ElementKind::Field => "f:",
            ElementKind::Key => "k:",
            ElementKind::Value => "v:",
            ElementKind::Index => "i:",
        };
        format!("{prefix}{}", self.text)
    }

    fn decode(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid path element {s:?}");
        let (prefix, rest) = s.split_at_checked(2).ok_or_else(bad)?;
        let canonical = |kind, must_be_object: bool| {
            let v: Value = serde_json::from_str(rest).map_err(|_| bad())?;
            if must_be_object && !v.is_object() {
                return Err(bad());
            }
            Ok(Self {
                kind,
                text: v.to_string(),
            })
        };
        match prefix {
            "f:" => Ok(Self::field(rest)),
            "k:" => canonical(ElementKind::Key, true),
            "v:" => canonical(ElementKind::Value, false),
            "i:" => rest
                .parse::<u64>()
                .map(|i| Self {
                    kind: ElementKind::Index,
                    text: i.to_string(),
                })
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// Whether `v` (an object field's name, or a list item) is what this element names.
    fn names_item(&self, item: &Value, lt: ListType) -> bool {
        Self::item(item, lt).is_some_and(|e| e == *self)
    }
}

/// How a path is printed in conflicts (`.spec.containers[name="web"].image`).
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ElementKind::Field => write!(f, ".{}", self.text),
            ElementKind::Key => {
                let parsed: Map<String, Value> =
                    serde_json::from_str(&self.text).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            ElementKind::Value => write!(f, "[={}]", self.text),
            ElementKind::Index => write!(f, "[{}]", self.text),
        }
    }
}

/// A set of field paths as a tree: `member` says the path to this node is in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<Element, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn insert(&mut self, path: &[Element]) {
        let mut node = self;
        for e in path {
            node = node.children.entry(e.clone()).or_default();
        }
        node.member = true;
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (e, c) in &other.children {
            self.children.entry(e.clone()).or_default().union(c);
        }
    }

    /// Removes the members of `other` (members only: paths below them stay).
    pub fn difference(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (e, c) in &other.children {
            if let Some(mine) = self.children.get_mut(e) {
                mine.difference(c);
                if mine.is_empty() {
                    self.children.remove(e);
                }
            }
        }
    }

    /// Removes every member of `other` together with everything below it.
    pub fn remove_subtrees(&mut self, other: &FieldSet) {
        for (e, c) in &other.children {
            if c.member {
                self.children.remove(e);
            } else if let Some(mine) = self.children.get_mut(e) {
                mine.remove_subtrees(c);
                if mine.is_empty() {
                    self.children.remove(e);
                }
            }
        }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (e, c) in &self.children {
            if let Some(o) = other.children.get(e) {
                let both = c.intersection(o);
                if !both.is_empty() {
                    out.children.insert(e.clone(), both);
                }
            }
        }
        out
    }

    /// The member paths, each before the paths below it, in element order.
    pub fn paths(&self) -> Vec<Vec<Element>> {
        fn walk(node: &FieldSet, path: &mut Vec<Element>, out: &mut Vec<Vec<Element>>) {
            if node.member && !path.is_empty() {
                out.push(path.clone());
            }
            for (e, c) in &node.children {
                path.push(e.clone());
                walk(c, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `fieldsV1` encoding: `{}` for a leaf, `.` for a member that has children.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (e, c) in &self.children {
            m.insert(e.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Reads a `fieldsV1` document; anything that is not one is an error, never a panic.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut root = Self::read_node(v)?;
        // The empty path names the object itself, which no entry owns.
        root.member = false;
        Ok(root)
    }

    fn read_node(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut node = FieldSet::default();
        for (k, child) in m {
            if k == "." {
                node.member = true;
                continue;
            }
            let e = Element::decode(k)?;
            let mut c = FieldSet::read_node(child)?;
            if child.as_object().is_some_and(Map::is_empty) {
                c.member = true;
            }
            node.children.insert(e, c);
        }
        Ok(node)
    }

    /// Drops fields no manager owns: type and object identity, and what the server sets.
    fn strip(&mut self, keep_status_only: bool, drop_status: bool) {
        for f in ["apiVersion", "kind"] {
            self.children.remove(&Element::field(f));
        }
        if keep_status_only {
            self.children.retain(|e, _| *e == Element::field("status"));
        }
        if drop_status {
            self.children.remove(&Element::field("status"));
        }
        let meta = Element::field("metadata");
        if let Some(m) = self.children.get_mut(&meta) {
            m.member = false;
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                m.children.remove(&Element::field(f));
            }
            if m.is_empty() {
                self.children.remove(&meta);
            }
        }
    }
}

/// Prints a path as structured-merge-diff does (`.spec.replicas`).
pub fn path_string(path: &[Element]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// How the items of a non-atomic list are told apart.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListType {
    /// By value (`v:"x"`).
    Set,
    /// By the value of `key` and, where structured-merge-diff keys the list by two fields,
    /// of `also` (its field and the schema's default for an item without it).
    Keyed {
        key: &'static str,
        also: Option<(&'static str, Option<&'static str>)>,
    },
}

/// The list type at `names` (`None`: atomic), from the strategic merge key, widened to the
/// list-map keys the built-in types declare for server-side apply (ports by number and
/// protocol, so TCP and UDP 53 are two items).
fn list_key(obj_kind: &str, names: &[String]) -> Option<ListType> {
    let key = merge_key(obj_kind, names)?;
    let also = match key {
        "" => return Some(ListType::Set),
        "port" | "containerPort" => Some(("protocol", Some("TCP"))),
        "topologyKey" => Some(("whenUnsatisfiable", None)),
        _ => None,
    };
    Some(ListType::Keyed { key, also })
}

/// Every field an applied configuration sets (structured-merge-diff's `ToFieldSet`): leaves,
/// atomic lists, empty maps, and keyed or set list items themselves.
pub fn field_set(v: &Value, obj_kind: &str) -> FieldSet {
    let mut out = FieldSet::default();
    collect(v, obj_kind, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

fn collect(
    v: &Value,
    obj_kind: &str,
    path: &mut Vec<Element>,
    names: &mut Vec<String>,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(Element::field(k));
                names.push(k.clone());
                collect(child, obj_kind, path, names, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => match list_key(obj_kind, names) {
            Some(key) if items.iter().all(|i| Element::item(i, key).is_some()) => {
                for item in items {
                    let Some(e) = Element::item(item, key) else {
                        continue;
                    };
                    path.push(e);
                    out.insert(path);
                    if key != ListType::Set {
                        collect(item, obj_kind, path, names, out);
                    }
                    path.pop();
                }
            }
            _ => out.insert(path),
        },
        _ if !path.is_empty() => out.insert(path),
        _ => {}
    }
}

/// What changed between two versions of an object: fields added or modified, and fields
/// removed (each removed path stands for everything below it).
#[derive(Debug, Default)]
pub struct Comparison {
    pub changed: FieldSet,
    pub removed: FieldSet,
}

/// Compares `old` with `new` as structured-merge-diff's `Compare` does: a map or list absent
/// before is itself a member (`.`), a map present on both sides only through its children.
pub fn compare(old: &Value, new: &Value, obj_kind: &str) -> Comparison {
    let mut c = Comparison::default();
    diff(
        Some(old),
        Some(new),
        obj_kind,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut c,
    );
    c
}

fn diff(
    old: Option<&Value>,
    new: Option<&Value>,
    obj_kind: &str,
    path: &mut Vec<Element>,
    names: &mut Vec<String>,
    c: &mut Comparison,
) {
    match (old, new) {
        (None, None) => {}
        (Some(a), Some(b)) if a == b => {}
        (Some(_), None) => c.removed.insert(path),
        (None, Some(b)) => added(b, obj_kind, path, names, c),
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                if is_bookkeeping(path, k) {
                    continue;
                }
                path.push(Element::field(k));
                names.push(k.clone());
                diff(a.get(k), b.get(k), obj_kind, path, names, c);
                names.pop();
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => match list_key(obj_kind, names) {
            Some(key)
                if a.iter()
                    .chain(b.iter())
                    .all(|i| Element::item(i, key).is_some()) =>
            {
                let index = |items: &[Value]| -> BTreeMap<Element, usize> {
                    items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| Element::item(v, key).map(|e| (e, i)))
                        .collect()
                };
                let (ia, ib) = (index(a), index(b));
                let elements: std::collections::BTreeSet<&Element> =
                    ia.keys().chain(ib.keys()).collect();
                for e in elements {
                    path.push(e.clone());
                    let (x, y) = (
                        ia.get(e).and_then(|i| a.get(*i)),
                        ib.get(e).and_then(|i| b.get(*i)),
                    );
                    if key == ListType::Set {
                        match (x, y) {
                            (Some(_), None) => c.removed.insert(path),
                            (None, Some(_)) => c.changed.insert(path),
                            _ => {}
                        }
                    } else {
                        diff(x, y, obj_kind, path, names, c);
                    }
                    path.pop();
                }
            }
            _ => c.changed.insert(path),
        },
        (Some(a), Some(_)) => {
            // A scalar or atomic value changed, or the type did: what was below is gone.
            if a.is_object() || a.is_array() {
                c.removed.insert(path);
            }
            c.changed.insert(path);
        }
    }
}

/// `metadata.managedFields` and `metadata.resourceVersion`, which no comparison looks at.
fn is_bookkeeping(path: &[Element], key: &str) -> bool {
    matches!(path, [e] if e.kind == ElementKind::Field && e.text == "metadata")
        && matches!(key, "managedFields" | "resourceVersion")
}

/// A value new at `path`: the path itself, and for non-empty maps and keyed lists what is
/// below it.
fn added(
    v: &Value,
    obj_kind: &str,
    path: &mut Vec<Element>,
    names: &mut Vec<String>,
    c: &mut Comparison,
) {
    c.changed.insert(path);
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                path.push(Element::field(k));
                names.push(k.clone());
                added(child, obj_kind, path, names, c);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(key) = list_key(obj_kind, names) {
                for item in items {
                    let Some(e) = Element::item(item, key) else {
                        continue;
                    };
                    path.push(e);
                    if key == ListType::Set {
                        c.changed.insert(path);
                    } else {
                        added(item, obj_kind, path, names, c);
                    }
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// What Go's zero value of the kind holds before a create: the structs that are not
/// pointers (`metadata`, `spec`, `status`, a template's `metadata` and `spec`, `strategy`)
/// exist, empty, and a pod spec's `containers` is an empty list. Comparing against it gives
/// the `.` members kube-apiserver records on create.
fn zero_of(new: &Value) -> Value {
    let mut z = json!({});
    let has = |p: &str| new.pointer(p).is_some_and(Value::is_object);
    for top in ["metadata", "spec", "status"] {
        if has(&format!("/{top}")) {
            z[top] = json!({});
        }
    }
    if has("/spec/template") {
        z["spec"]["template"] = json!({"metadata": {}, "spec": {"containers": []}});
    }
    for s in ["strategy", "updateStrategy"] {
        if has(&format!("/spec/{s}")) {
            z["spec"][s] = json!({});
        }
    }
    if new.get("kind").and_then(Value::as_str) == Some("Pod") && has("/spec") {
        z["spec"]["containers"] = json!([]);
    }
    z
}

/// `Apply` or `Update`, the operations an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    /// Entries are one per manager, operation and subresource; Update entries also per
    /// apiVersion (kube-apiserver's manager identifier).
    fn same_owner(&self, manager: &str, op: Operation, api_version: &str, sub: &str) -> bool {
        self.manager == manager
            && self.operation == op
            && self.subresource == sub
            && (op == Operation::Apply || self.api_version == api_version)
    }

    /// How a conflict names the owner: `"kubectl" with subresource "scale" using apps/v1`.
    fn describe(&self) -> String {
        let mut s = berth_api::error::go_quote(&self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(
                " with subresource {}",
                berth_api::error::go_quote(&self.subresource)
            ));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn read(v: &Value) -> Option<Entry> {
        let s = |f: &str| v.get(f).and_then(Value::as_str);
        if s("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        let operation = match s("operation")? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f).ok()?,
            None => FieldSet::default(),
        };
        Some(Entry {
            manager: s("manager").unwrap_or("").to_owned(),
            operation,
            api_version: s("apiVersion").unwrap_or("").to_owned(),
            time: s("time").map(str::to_owned),
            subresource: s("subresource").unwrap_or("").to_owned(),
            set,
        })
    }

    fn write(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// The entries of an object, read from and written back to `metadata.managedFields`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed(pub Vec<Entry>);

impl Managed {
    /// The object's entries; ones that cannot be read are dropped (kube-apiserver resets
    /// managedFields it cannot decode).
    pub fn read(obj: &Value) -> Managed {
        Managed(
            obj.pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Entry::read).collect())
                .unwrap_or_default(),
        )
    }

    /// Writes the entries in kube-apiserver's order (Apply first, then by time, manager,
    /// apiVersion, subresource); none at all removes the field.
    pub fn write(mut self, obj: &mut Value) {
        self.0.retain(|e| !e.set.is_empty());
        self.0.sort_by(|p, q| {
            (
                p.operation,
                &p.time,
                &p.manager,
                &p.api_version,
                &p.subresource,
            )
                .cmp(&(
                    q.operation,
                    &q.time,
                    &q.manager,
                    &q.api_version,
                    &q.subresource,
                ))
        });
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if self.0.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert(
                "managedFields".into(),
                Value::Array(self.0.iter().map(Entry::write).collect()),
            );
        }
    }
}

/// How many Update entries an object keeps; older ones are merged per apiVersion into one
/// `ancient-changes` entry, as kube-apiserver caps them.
const MAX_UPDATE_ENTRIES: usize = 10;

impl Managed {
    fn cap_updates(&mut self) {
        let mut updates: Vec<usize> = (0..self.0.len())
            .filter(|i| self.0[*i].operation == Operation::Update)
            .collect();
        if updates.len() <= MAX_UPDATE_ENTRIES {
            return;
        }
        updates.sort_by(|a, b| self.0[*a].time.cmp(&self.0[*b].time));
        let mut excess = updates.len() - MAX_UPDATE_ENTRIES;
        let mut first_of_version: BTreeMap<String, usize> = BTreeMap::new();
        let mut merged_away = Vec::new();
        for i in updates {
            if excess == 0 {
                break;
            }
            let version = self.0[i].api_version.clone();
            match first_of_version.get(&version) {
                Some(&bucket) => {
                    let (set, time) = (self.0[i].set.clone(), self.0[i].time.clone());
                    let b = &mut self.0[bucket];
                    b.manager = "ancient-changes".into();
                    b.subresource.clear();
                    b.set.union(&set);
                    b.time = time;
                    merged_away.push(i);
                    excess -= 1;
                }
                None => {
                    first_of_version.insert(version, i);
                }
            }
        }
        merged_away.sort_unstable();
        for i in merged_away.into_iter().rev() {
            self.0.remove(i);
        }
    }
}

/// Who writes: the manager, the subresource written (`""` for the object itself) and the
/// apiVersion of the endpoint.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: String,
    pub obj_kind: &'a str,
    /// The resource has a status subresource, whose fields the object's writers never own.
    pub has_status: bool,
    pub now: &'a str,
}

impl Writer<'_> {
    fn strip(&self, set: &mut FieldSet) {
        let status_only = self.subresource == "status";
        set.strip(status_only, !status_only && self.has_status);
    }
}

/// Whether the body asks for its managedFields to be reset (`[{}]`, as upstream takes it).
fn asks_reset(new: &Value) -> bool {
    new.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
}

/// Records an Update (create, update, patch) by `w` that turned `old` into `new` (`None`:
/// a create): the fields it changed move to its entry, removed fields leave every entry.
/// `new`'s own `managedFields` are replaced (taken from `old`, or reset by `[{}]`).
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut managed = match old {
        Some(o) if !asks_reset(new) => Managed::read(o),
        _ => Managed::default(),
    };
    // Compared in place (no copies: this runs on every write, large objects included);
    // `diff` passes over managedFields and resourceVersion.
    let zero;
    let before = match old {
        Some(o) => o,
        None => {
            zero = zero_of(new);
            &zero
        }
    };
    let mut cmp = compare(before, new, w.obj_kind);
    w.strip(&mut cmp.changed);
    w.strip(&mut cmp.removed);
    let me = |e: &Entry| e.same_owner(w.manager, Operation::Update, &w.api_version, w.subresource);
    for e in managed.0.iter_mut() {
        e.set.remove_subtrees(&cmp.removed);
        if !me(e) {
            e.set.difference(&cmp.changed);
        }
    }
    if !cmp.changed.is_empty() {
        match managed.0.iter_mut().find(|e| me(e)) {
            Some(e) => {
                e.set.union(&cmp.changed);
                e.time = Some(w.now.to_owned());
            }
            None => managed.0.push(Entry {
                manager: w.manager.to_owned(),
                operation: Operation::Update,
                api_version: w.api_version.clone(),
                time: Some(w.now.to_owned()),
                subresource: w.subresource.to_owned(),
                set: cmp.changed,
            }),
        }
    }
    managed.cap_updates();
    managed.write(new);
}

/// One field another manager owns and the applied configuration would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// `"kubectl" with subresource "scale" using apps/v1`
    pub owner: String,
    /// `.spec.replicas`
    pub path: String,
}

/// The 409 message kube-apiserver gives for these conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.owner, one.path
        );
    }
    let mut by_owner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_owner.entry(&c.owner).or_default().push(&c.path);
    }
    let mut lines = Vec::new();
    for (owner, paths) in by_owner {
        lines.push(format!("conflicts with {owner}:"));
        lines.extend(paths.iter().map(|p| format!("- {p}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Server-side apply of `config` by `w` to `live` (`{}` when the object does not exist yet):
/// merges the configuration, removes what this manager applied before and no longer does
/// (unless another manager owns it too), and records the entry. Fields another manager owns
/// and the configuration changes are conflicts, taken over only when `force` is set.
pub fn apply(
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut managed = Managed::read(live);
    let mut base = live.clone();
    if let Some(m) = base.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    let mut merged = base.clone();
    crate::patch::merge_applied(&mut merged, config, w.obj_kind);
    let mut set = field_set(config, w.obj_kind);
    w.strip(&mut set);
    let mine = |e: &Entry| e.same_owner(w.manager, Operation::Apply, &w.api_version, w.subresource);
    let last = managed.0.iter().position(mine).map(|i| managed.0.remove(i));
    if let Some(last) = &last {
        let mut owned = set.clone();
        for e in &managed.0 {
            owned.union(&e.set);
        }
        let mut gone = last.set.clone();
        gone.difference(&owned);
        prune(
            &mut merged,
            &gone,
            Some(&owned),
            w.obj_kind,
            &mut Vec::new(),
        );
    }
    let mut cmp = compare(&base, &merged, w.obj_kind);
    w.strip(&mut cmp.changed);
    w.strip(&mut cmp.removed);
    let mut conflicts = Vec::new();
    for e in &managed.0 {
        for p in e.set.intersection(&cmp.changed).paths() {
            conflicts.push(Conflict {
                owner: e.describe(),
                path: path_string(&p),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in managed.0.iter_mut() {
        e.set.difference(&cmp.changed);
        e.set.remove_subtrees(&cmp.removed);
    }
    let unchanged = base == merged && last.as_ref().is_some_and(|l| l.set == set);
    managed.0.push(Entry {
        manager: w.manager.to_owned(),
        operation: Operation::Apply,
        api_version: w.api_version.clone(),
        time: match (&last, unchanged) {
            (Some(l), true) => l.time.clone(),
            _ => Some(w.now.to_owned()),
        },
        subresource: w.subresource.to_owned(),
        set,
    });
    managed.write(&mut merged);
    Ok(merged)
}

/// `.spec.replicas`: where each kind with a scale subresource keeps its replica count, and
/// where its `autoscaling/v1` Scale keeps it too.
fn replicas_path() -> FieldSet {
    let mut s = FieldSet::default();
    s.insert(&[Element::field("spec"), Element::field("replicas")]);
    s
}

/// The parent's entries that own `.spec.replicas`, as owners of the Scale's: each keeps its
/// identity (manager, operation, subresource, apiVersion) and owns `.spec.replicas` alone.
fn scale_owners(parent: &Managed) -> Managed {
    let replicas = replicas_path();
    Managed(
        parent
            .0
            .iter()
            .filter(|e| !e.set.intersection(&replicas).is_empty())
            .map(|e| Entry {
                set: replicas.clone(),
                ..e.clone()
            })
            .collect(),
    )
}

/// The `managedFields` of `parent`'s Scale as kube-apiserver shows them: the owners of
/// `.spec.replicas`, each with the Scale's apiVersion. Removes the field when there are none.
pub fn write_scale_view(parent: &Value, scale: &mut Value) {
    let mut view = scale_owners(&Managed::read(parent));
    for e in &mut view.0 {
        e.api_version = "autoscaling/v1".into();
    }
    view.write(scale);
}

/// Server-side apply of a Scale `config` to the scale subresource, as kube-apiserver's scale
/// handler does it: the parent's entries that own `.spec.replicas` are seen as owners of the
/// Scale's `.spec.replicas` (the rest of the parent is out of the Scale's view), the Scale
/// `live` is applied to by `w` (conflicts and `force` as for any apply), and the outcome is
/// mapped back: a parent entry that lost the field to this apply loses it in the parent, and
/// a new owner gets an entry of the parent's apiVersion owning `.spec.replicas`. Returns the
/// merged Scale and the parent's new entries.
pub fn apply_scale(
    parent: &Value,
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<(Value, Managed), Vec<Conflict>> {
    let replicas = replicas_path();
    let owns = |e: &Entry| !e.set.intersection(&replicas).is_empty();
    let parent_entries = Managed::read(parent);
    let mut view = live.clone();
    scale_owners(&parent_entries).write(&mut view);
    let scale_writer = Writer {
        api_version: "autoscaling/v1".into(),
        obj_kind: "Scale",
        has_status: true,
        ..w.clone()
    };
    let merged = apply(&view, config, &scale_writer, force)?;
    let mut after = Managed::read(&merged).0;
    let mut out = Vec::new();
    for mut p in parent_entries.0 {
        if !owns(&p) {
            out.push(p);
            continue;
        }
        let kept = after
            .iter()
            .position(|s| s.same_owner(&p.manager, p.operation, &p.api_version, &p.subresource));
        match kept {
            Some(i) => {
                p.time = after.remove(i).time;
                out.push(p);
            }
            None => {
                p.set.difference(&replicas);
                out.push(p);
            }
        }
    }
    out.extend(after.into_iter().filter(|s| owns(s)).map(|s| Entry {
        api_version: w.api_version.clone(),
        set: replicas.clone(),
        ..s
    }));
    Ok((merged, Managed(out)))
}

/// Removes from `v` the members of `gone` that nobody in `owned` claims at or below them,
/// and maps left empty by that (structured-merge-diff removes a named field whose children
/// are all gone).
fn prune(
    v: &mut Value,
    gone: &FieldSet,
    owned: Option<&FieldSet>,
    obj_kind: &str,
    names: &mut Vec<String>,
) {
    for (e, g) in &gone.children {
        let o = owned.and_then(|o| o.children.get(e));
        let remove_whole = g.member && o.is_none();
        match (e.kind, &mut *v) {
            (ElementKind::Field, Value::Object(m)) => {
                if remove_whole {
                    m.remove(&e.text);
                    continue;
                }
                let Some(child) = m.get_mut(&e.text) else {
                    continue;
                };
                names.push(e.text.clone());
                prune(child, g, o, obj_kind, names);
                names.pop();
                if o.is_none() && berth_api::object::is_empty_container(child) {
                    m.remove(&e.text);
                }
            }
            (ElementKind::Key | ElementKind::Value, Value::Array(items)) => {
                let Some(key) = list_key(obj_kind, names) else {
                    continue;
                };
                if remove_whole {
                    items.retain(|i| !e.names_item(i, key));
                    continue;
                }
                if let Some(item) = items.iter_mut().find(|i| e.names_item(i, key)) {
                    // An item that stays keeps its key fields, whoever owned them.
                    let ids: Vec<(&str, Value)> = match key {
                        ListType::Keyed { key, also } => [Some(key), also.map(|a| a.0)]
                            .into_iter()
                            .flatten()
                            .filter_map(|f| item.get(f).map(|v| (f, v.clone())))
                            .collect(),
                        ListType::Set => Vec::new(),
                    };
                    prune(item, g, o, obj_kind, names);
                    if let Value::Object(m) = item {
                        for (f, v) in ids {
                            m.entry(f).or_insert(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
