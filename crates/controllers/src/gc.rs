//! Garbage collection by ownerReferences, as kube-controller-manager's garbage collector does
//! it: dependents whose owners are all gone are deleted; an owner deleted in the foreground
//! waits (finalizer `foregroundDeletion`) until its dependents are gone; an orphaning delete
//! (finalizer `orphan`) releases its dependents first. Pure planning; `sync::gc` acts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::index::Track;

/// Finalizer of an owner whose dependents must be deleted before it.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an owner whose dependents must be released before it is deleted.
pub const ORPHAN: &str = "orphan";

/// One object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    /// A node from any object's metadata.
    pub fn new(api_version: &str, kind: &str, meta: &ObjectMeta) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        }
    }
}

/// What the collector does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete this dependent. `absent_owners` must be confirmed gone with a live read first
    /// (caches of different kinds lag each other); empty when an owner is being deleted in
    /// the foreground.
    Delete {
        node: Node,
        absent_owners: Vec<OwnerReference>,
    },
    /// Remove the reference to `owner_uid` from this dependent.
    Release { node: Node, owner_uid: String },
    /// Remove `finalizer` from this owner: its dependents are dealt with.
    Finalize { node: Node, finalizer: &'static str },
}

/// Plans the collector's next steps over every object it can see.
pub fn plan(nodes: &[Node]) -> Vec<Action> {
    let by_uid: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.uid.as_str(), n)).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    plan_over(&refs, |uid| by_uid.get(uid).copied())
}

/// [`plan`] over the objects that can need an action (those with owners or being deleted),
/// with `lookup` finding any object by uid: what [`Objects`] keeps.
pub(crate) fn plan_over<'a>(
    nodes: &[&'a Node],
    lookup: impl Fn(&str) -> Option<&'a Node>,
) -> Vec<Action> {
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    let mut actions = Vec::new();
    for n in nodes.iter().filter(|n| !n.owners.is_empty()) {
        let mut absent = Vec::new();
        let mut doomed = false;
        for o in &n.owners {
            referenced.insert(o.uid.as_str());
            match lookup(o.uid.as_str()) {
                None => absent.push(o.clone()),
                Some(owner)
                    if owner.deleting && owner.finalizers.iter().any(|f| f == FOREGROUND) =>
                {
                    doomed = true
                }
                Some(owner) if owner.deleting && owner.finalizers.iter().any(|f| f == ORPHAN) => {
                    actions.push(Action::Release {
                        node: (*n).clone(),
                        owner_uid: o.uid.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        if n.deleting {
            continue;
        }
        if doomed {
            actions.push(Action::Delete {
                node: (*n).clone(),
                absent_owners: Vec::new(),
            });
        } else if absent.len() == n.owners.len() {
            actions.push(Action::Delete {
                node: (*n).clone(),
                absent_owners: absent,
            });
        }
    }
    for n in nodes
        .iter()
        .filter(|n| n.deleting && !referenced.contains(n.uid.as_str()))
    {
        for f in [FOREGROUND, ORPHAN] {
            if n.finalizers.iter().any(|x| x == f) {
                actions.push(Action::Finalize {
                    node: (*n).clone(),
                    finalizer: f,
                });
            }
        }
    }
    actions
}

/// Stands for every object that has no owners and is not being deleted: all [`plan`] needs
/// to know of such an owner is that it exists.
static ALIVE: Node = Node {
    api_version: String::new(),
    kind: String::new(),
    namespace: None,
    name: String::new(),
    uid: String::new(),
    owners: Vec::new(),
    deleting: false,
    finalizers: Vec::new(),
};

/// The collector's view of one kind, kept from its watch events: every uid, with a [`Node`]
/// only for objects that can need an action (with owners, or being deleted), so a wake-up
/// plans over those alone instead of rebuilding a node per cached object.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    by_uid: HashMap<String, Option<Box<Node>>>,
    /// Bumped on every change that can change a plan; never goes back.
    changes: u64,
}

impl Objects {
    /// The changes so far (a relist counts as one).
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// The objects that can need an action.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = &Node> {
        self.by_uid.values().flatten().map(|n| &**n)
    }

    /// The object with this uid as [`plan`] sees an owner.
    pub(crate) fn get(&self, uid: &str) -> Option<&Node> {
        self.by_uid.get(uid).map(|n| n.as_deref().unwrap_or(&ALIVE))
    }
}

impl<K: kube::Resource<DynamicType = ()>> Track<K> for Objects {
    fn fresh(&self) -> Self {
        Self {
            by_uid: HashMap::new(),
            changes: self.changes + 1,
        }
    }

    fn apply(&mut self, obj: &K) {
        let meta = obj.meta();
        let uid = meta.uid.clone().unwrap_or_default();
        let matters = meta
            .owner_references
            .as_ref()
            .is_some_and(|o| !o.is_empty())
            || meta.deletion_timestamp.is_some();
        let node = matters.then(|| Box::new(Node::new(&K::api_version(&()), &K::kind(&()), meta)));
        if self.by_uid.get(&uid) != Some(&node) {
            self.by_uid.insert(uid, node);
            self.changes += 1;
        }
    }

    fn delete(&mut self, obj: &K) {
        if self
            .by_uid
            .remove(obj.meta().uid.as_deref().unwrap_or_default())
            .is_some()
        {
            self.changes += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: &str, name: &str, owners: &[&str], deleting: bool, finalizers: &[&str]) -> Node {
        Node {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: format!("uid-{name}"),
            owners: owners
                .iter()
                .map(|o| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: (*o).into(),
                    uid: format!("uid-{o}"),
                    ..Default::default()
                })
                .collect(),
            deleting,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn check(nodes: &[Node], expected: &[&str]) {
        let got: Vec<String> = plan(nodes)
            .iter()
            .map(|a| match a {
                Action::Delete { node, .. } => format!("delete {}", node.name),
                Action::Release { node, owner_uid } => {
                    format!("release {} from {owner_uid}", node.name)
                }
                Action::Finalize { node, finalizer } => {
                    format!("finalize {} {finalizer}", node.name)
                }
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn collection() {
        // Owner alive: nothing to do.
        check(
            &[
                node("ReplicaSet", "rs", &[], false, &[]),
                node("Pod", "p", &["rs"], false, &[]),
            ],
            &[],
        );
        // Owner gone: the dependent goes (after a live check).
        check(&[node("Pod", "p", &["rs"], false, &[])], &["delete p"]);
        // One of two owners alive keeps it.
        check(
            &[
                node("ReplicaSet", "a", &[], false, &[]),
                node("Pod", "p", &["a", "b"], false, &[]),
            ],
            &[],
        );
        // Foreground: dependents first, then the owner's finalizer.
        check(
            &[
                node("ReplicaSet", "rs", &[], true, &[FOREGROUND]),
                node("Pod", "p", &["rs"], false, &[]),
            ],
            &["delete p"],
        );
        check(
            &[node("ReplicaSet", "rs", &[], true, &[FOREGROUND])],
            &["finalize rs foregroundDeletion"],
        );
        // A dependent already being deleted is waited for.
        check(
            &[
                node("ReplicaSet", "rs", &[], true, &[FOREGROUND]),
                node("Pod", "p", &["rs"], true, &[]),
            ],
            &[],
        );
        // Orphan: release, then finalize.
        check(
            &[
                node("ReplicaSet", "rs", &[], true, &[ORPHAN]),
                node("Pod", "p", &["rs"], false, &[]),
            ],
            &["release p from uid-rs"],
        );
        check(
            &[node("ReplicaSet", "rs", &[], true, &[ORPHAN])],
            &["finalize rs orphan"],
        );
    }

    fn pod_meta(i: usize, owners: &[usize], deleting: bool, fins: &[&str]) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({
            "name": format!("o{i}"), "namespace": "default", "uid": format!("uid-{i}"),
            "ownerReferences": owners.iter().map(|o| serde_json::json!({"apiVersion": "v1",
                "kind": "Pod", "name": format!("o{o}"), "uid": format!("uid-{o}")})).collect::<Vec<_>>(),
            "deletionTimestamp": deleting.then_some("2025-01-01T00:00:00Z"),
            "finalizers": fins,
        }))
        .expect("meta")
    }

    fn sorted(actions: Vec<Action>) -> Vec<String> {
        let mut v: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
        v.sort();
        v
    }

    proptest::proptest! {
        /// The kept graph plans what a full rebuild plans, after any sequence of changes.
        #[test]
        fn kept_graph_plans_as_a_rebuild(
            steps in proptest::collection::vec((
                0..8usize,
                proptest::collection::vec(0..10usize, 0..3),
                proptest::bool::ANY,
                proptest::sample::subsequence(vec![FOREGROUND, ORPHAN, "other"], 0..=2),
                proptest::bool::weighted(0.2),
            ), 0..30)
        ) {
            use k8s_openapi::api::core::v1::Pod;
            let mut objects = Objects::default();
            let mut truth: BTreeMap<usize, Pod> = BTreeMap::new();
            for (i, owners, deleting, fins, delete) in steps {
                let pod = Pod { metadata: pod_meta(i, &owners, deleting, &fins), ..Default::default() };
                let before = objects.changes();
                if delete {
                    if let Some(old) = truth.remove(&i) {
                        Track::<Pod>::delete(&mut objects, &old);
                    }
                } else {
                    Track::<Pod>::apply(&mut objects, &pod);
                    truth.insert(i, pod);
                }
                proptest::prop_assert!(objects.changes() >= before);
            }
            let all: Vec<Node> = truth.values().map(|p| Node::new("v1", "Pod", &p.metadata)).collect();
            let candidates: Vec<&Node> = objects.candidates().collect();
            let kept = plan_over(&candidates, |uid| objects.get(uid));
            proptest::prop_assert_eq!(sorted(kept), sorted(plan(&all)));
        }
    }
}
