//! ControllerRevisions: the history StatefulSets and DaemonSets keep of their Pod templates
//! (upstream `pkg/controller/history`). A revision holds a strategic merge patch that puts the
//! template back whole, so a StatefulSet rebuilds a Pod below its partition at the revision it
//! had, and `kubectl rollout history` / `rollout undo` list and restore templates.
//!
//! Revisions are named `<owner>-<template hash>`; two templates are the same revision when
//! their hashes are (upstream also compares the data and counts collisions; a 32-bit FNV
//! collision between two templates of one owner is not handled here).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};

use crate::deployment::pod_template_hash;
use crate::owners::{controller_of, controller_ref};

/// The label a StatefulSet's revisions carry their hash in (DaemonSets use
/// [`REVISION_LABEL`], as their Pods do).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The Pod label naming the revision a Pod was made from: the revision's name for a
/// StatefulSet's Pods, its hash for a DaemonSet's.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The hash of an owner's Pod template (`spec.template`; none hashes as an empty one): what
/// its revision is named and labelled by.
pub fn template_hash(template: Option<&PodTemplateSpec>) -> String {
    match template {
        Some(t) => pod_template_hash(t, None),
        None => pod_template_hash(&PodTemplateSpec::default(), None),
    }
}

/// What one sync does to an owner's history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryPlan {
    /// The revision of the current template, when none exists yet.
    pub create: Option<ControllerRevision>,
    /// An existing revision that becomes the newest again (the template went back to it):
    /// its name and new number.
    pub renumber: Option<(String, i64)>,
    /// Revisions past the history limit that no Pod uses, oldest first.
    pub delete: Vec<String>,
}

/// The owner whose template is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub kind: &'a str,
    pub meta: &'a ObjectMeta,
    pub template: &'a PodTemplateSpec,
    /// `spec.revisionHistoryLimit` (upstream's default is 10).
    pub limit: i32,
    /// The label that carries the hash on the revision, and its value.
    pub hash_label: &'a str,
    pub hash: &'a str,
}

/// The revision data: the template with `$patch: replace`, under `spec.template`.
pub fn data_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision holds, if its data is one.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The revisions `owner` controls, oldest first.
pub fn owned<'a>(
    owner: &ObjectMeta,
    revisions: impl IntoIterator<Item = &'a ControllerRevision>,
) -> Vec<&'a ControllerRevision> {
    let uid = owner.uid.as_deref().unwrap_or_default();
    let mut out: Vec<&ControllerRevision> = revisions
        .into_iter()
        .filter(|r| r.metadata.namespace == owner.namespace)
        .filter(|r| controller_of(&r.metadata).is_some_and(|c| c.uid == uid))
        .collect();
    out.sort_by(|a, b| {
        (a.revision, a.metadata.name.as_deref()).cmp(&(b.revision, b.metadata.name.as_deref()))
    });
    out
}

/// `<owner>-<hash>`, the name of the revision of a template with that hash.
pub fn revision_name(owner: &ObjectMeta, hash: &str) -> String {
    format!("{}-{hash}", owner.name.as_deref().unwrap_or_default())
}

/// One sync of the history: record the current template as the newest revision and drop the
/// oldest revisions nobody uses past the limit. `revisions` are the owner's (as from
/// [`owned`]); `in_use` names the revisions Pods or the status still refer to.
pub fn plan(
    owner: Owner<'_>,
    revisions: &[&ControllerRevision],
    in_use: &BTreeSet<String>,
) -> HistoryPlan {
    let name = revision_name(owner.meta, owner.hash);
    let newest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut out = HistoryPlan::default();
    match revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
    {
        Some(r) if r.revision < newest => out.renumber = Some((name.clone(), newest + 1)),
        Some(_) => {}
        None => out.create = Some(revision(owner, &name, newest + 1)),
    }
    let unused: Vec<&str> = revisions
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .filter(|n| *n != name && !in_use.contains(*n))
        .collect();
    let limit = usize::try_from(owner.limit).unwrap_or(0);
    let excess = unused.len().saturating_sub(limit);
    out.delete = unused.into_iter().take(excess).map(str::to_owned).collect();
    out
}

fn revision(owner: Owner<'_>, name: &str, number: i64) -> ControllerRevision {
    let mut labels: BTreeMap<String, String> = owner
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(owner.hash_label.to_owned(), owner.hash.to_owned());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: owner.meta.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref("apps/v1", owner.kind, owner.meta)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data_of(owner.template))),
        revision: number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        }
    }

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .expect("template")
    }

    fn owner<'a>(m: &'a ObjectMeta, t: &'a PodTemplateSpec, hash: &'a str) -> Owner<'a> {
        Owner {
            kind: "StatefulSet",
            meta: m,
            template: t,
            limit: 2,
            hash_label: HASH_LABEL,
            hash,
        }
    }

    fn made(m: &ObjectMeta, image: &str, hash: &str, number: i64) -> ControllerRevision {
        let t = template(image);
        let mut r = revision(owner(m, &t, hash), &revision_name(m, hash), number);
        r.metadata.uid = Some(format!("r-{number}"));
        r
    }

    #[test]
    fn the_data_round_trips_to_the_template() {
        let m = meta();
        let r = made(&m, "nginx:1", "h1", 1);
        assert_eq!(template_of(&r), Some(template("nginx:1")));
        let data = &r.data.as_ref().expect("data").0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let labels = r.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[HASH_LABEL], "h1");
        assert_eq!(r.metadata.name.as_deref(), Some("web-h1"));
        let owner = &r.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("StatefulSet", Some(true))
        );
    }

    #[test]
    fn a_new_template_is_the_next_revision_and_an_old_one_comes_back_renumbered() {
        let m = meta();
        let t2 = template("nginx:2");
        let r1 = made(&m, "nginx:1", "h1", 1);
        assert_eq!(
            plan(owner(&m, &t2, "h2"), &[], &BTreeSet::new())
                .create
                .map(|r| r.revision),
            Some(1)
        );
        let p = plan(owner(&m, &t2, "h2"), &[&r1], &BTreeSet::new());
        assert_eq!(p.create.as_ref().map(|r| r.revision), Some(2));
        let r2 = made(&m, "nginx:2", "h2", 2);
        let t1 = template("nginx:1");
        let p = plan(owner(&m, &t1, "h1"), &[&r1, &r2], &BTreeSet::new());
        assert_eq!(p.create, None);
        assert_eq!(p.renumber, Some(("web-h1".into(), 3)));
        // The newest already: nothing to do.
        assert_eq!(
            plan(owner(&m, &t2, "h2"), &[&r1, &r2], &BTreeSet::new()),
            HistoryPlan::default()
        );
    }

    #[test]
    fn the_oldest_unused_revisions_past_the_limit_go() {
        let m = meta();
        let revs: Vec<ControllerRevision> = (1..=5)
            .map(|i| made(&m, &format!("nginx:{i}"), &format!("h{i}"), i))
            .collect();
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let t5 = template("nginx:5");
        // Limit 2: of web-h1..h4 (h5 is current), h1 is in use, so h2 goes.
        let in_use: BTreeSet<String> = ["web-h1".to_owned()].into();
        let p = plan(owner(&m, &t5, "h5"), &refs, &in_use);
        assert_eq!(p.delete, ["web-h2"]);
        let p = plan(owner(&m, &t5, "h5"), &refs, &BTreeSet::new());
        assert_eq!(p.delete, ["web-h1", "web-h2"]);
    }

    #[test]
    fn only_revisions_it_controls_are_its_own_in_order() {
        let m = meta();
        let a = made(&m, "nginx:1", "h1", 2);
        let b = made(&m, "nginx:2", "h2", 1);
        let mut other = made(&m, "nginx:3", "h3", 3);
        other.metadata.owner_references = None;
        let names: Vec<_> = owned(&m, [&a, &b, &other])
            .iter()
            .map(|r| r.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["web-h2", "web-h1"]);
    }
}
