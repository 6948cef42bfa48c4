//! Garbage collection by ownerReferences, as kube-controller-manager's garbage collector does
//! it: dependents whose owners are all gone are deleted; an owner deleted in the foreground
//! waits (finalizer `foregroundDeletion`) until its dependents are gone; an orphaning delete
//! (finalizer `orphan`) releases its dependents first. Pure planning; `sync::gc` acts.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

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
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    let mut actions = Vec::new();
    for n in nodes.iter().filter(|n| !n.owners.is_empty()) {
        let mut absent = Vec::new();
        let mut doomed = false;
        for o in &n.owners {
            referenced.insert(o.uid.as_str());
            match by_uid.get(o.uid.as_str()) {
                None => absent.push(o.clone()),
                Some(owner)
                    if owner.deleting && owner.finalizers.iter().any(|f| f == FOREGROUND) =>
                {
                    doomed = true
                }
                Some(owner) if owner.deleting && owner.finalizers.iter().any(|f| f == ORPHAN) => {
                    actions.push(Action::Release {
                        node: n.clone(),
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
                node: n.clone(),
                absent_owners: Vec::new(),
            });
        } else if absent.len() == n.owners.len() {
            actions.push(Action::Delete {
                node: n.clone(),
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
                    node: n.clone(),
                    finalizer: f,
                });
            }
        }
    }
    actions
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
}
