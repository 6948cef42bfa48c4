//! What kube-controller-manager's Deployment controller decides for one Deployment: the
//! ReplicaSet of its current template, how far to scale each ReplicaSet (RollingUpdate or
//! Recreate), which old ones to delete, and the status (upstream `pkg/controller/deployment`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use berth_api::selector::Selector;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::owners::{Claim, claim, controller_ref, nonzero};
use crate::pods::name;

/// Label (and selector term) telling the ReplicaSets of one Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a ReplicaSet, and on the Deployment the revision of its current ReplicaSet.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas` + maxSurge of the Deployment when it last scaled this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Condition reasons and messages upstream writes (`deploymentutil`).
pub mod reason {
    /// Progressing: the ReplicaSet of the current template was just created.
    pub const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
    /// Progressing: the ReplicaSet of the current template existed already.
    pub const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
    /// Progressing: the rollout made progress.
    pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
    /// Progressing: the rollout completed.
    pub const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// Progressing (False): no progress within `progressDeadlineSeconds`.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Progressing (Unknown): the Deployment is paused.
    pub const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";
    /// Progressing (Unknown): the Deployment was resumed.
    pub const DEPLOYMENT_RESUMED: &str = "DeploymentResumed";
    /// Available (True).
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Available (False).
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Annotations of the Deployment that are not copied onto its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Longest revision-history annotation upstream keeps.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Upstream's alphabet for names derived from numbers (`rand.SafeEncodeString`): no vowels,
/// so no words, and no look-alike characters.
const SAFE_ALPHABET: &[u8] = b"bcdfghjkmnpqrstvwxz2456789";

/// A stable hash of `template` for the `pod-template-hash` label and the ReplicaSet name
/// suffix: FNV-1a (32 bit) over the template's canonical JSON (sorted keys, empty and null
/// fields dropped), then the collision count as 8 little-endian bytes, printed in decimal
/// and mapped through upstream's safe alphabet.
///
/// Upstream hashes Go's deep print of the template instead, so the value differs from what
/// kube-controller-manager would compute; it is the same in every run and process.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let canonical = serde_json::to_value(template)
        .map(normalized)
        .unwrap_or(Value::Null);
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(canonical.to_string().as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        feed(&bytes);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// Drops nulls, empty objects and empty arrays, recursively: upstream's semantic equality
/// does not tell a nil map or slice from an empty one.
fn normalized(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalized(v)))
                .filter(|(_, v)| !is_empty_value(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        other => other,
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Upstream `EqualIgnoreHash`: the templates are equal once the pod-template-hash label is
/// removed from both.
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        serde_json::to_value(t).map(normalized).ok()
    };
    strip(a) == strip(b)
}

/// The ReplicaSet for `d`'s current template: named `<deployment>-<hash>`, labelled and
/// selecting like the template plus `pod-template-hash`, controlled by the Deployment,
/// annotated as upstream does (the Deployment's own annotations except the ones it manages,
/// revision, desired-replicas, max-replicas), with 0 replicas. The revision written here is
/// the Deployment's revision + 1; [`plan`] uses upstream's rule (newest ReplicaSet + 1).
pub fn new_replicaset(d: &Deployment, hash: &str) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.to_owned(), hash.to_owned());
    let labels = template_meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.to_owned(), hash.to_owned());
    let mut rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", name(&d.metadata))),
            namespace: d.metadata.namespace.clone(),
            labels,
            owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    let revision = annotation(&d.metadata, REVISION)
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0)
        + 1;
    let settings = Settings::of(d);
    set_new_rs_annotations(d, &settings, &mut rs, revision, false);
    rs
}

/// The ReplicaSets of one Deployment, as upstream's `ClaimReplicaSets` sorts them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OwnedReplicaSets<'a> {
    /// ReplicaSets the Deployment controls and still selects: the input of [`plan`].
    pub owned: Vec<&'a ReplicaSet>,
    /// Orphans it selects: make the Deployment their controller, then treat them as owned.
    pub adopt: Vec<&'a ReplicaSet>,
    /// ReplicaSets it controls that it no longer selects: remove the owner reference.
    pub release: Vec<&'a ReplicaSet>,
}

/// Sorts the ReplicaSets of `d`'s namespace into those it owns, should adopt and should release.
pub fn owned_replicasets<'a>(
    d: &Deployment,
    rss: impl IntoIterator<Item = &'a ReplicaSet>,
) -> OwnedReplicaSets<'a> {
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| Selector::from_label_selector(&s.selector).ok());
    let mut out = OwnedReplicaSets::default();
    for rs in rss {
        if rs.metadata.namespace != d.metadata.namespace {
            continue;
        }
        match claim(&d.metadata, selector.as_ref(), &rs.metadata) {
            Claim::Owned => out.owned.push(rs),
            Claim::Adopt => out.adopt.push(rs),
            Claim::Release => out.release.push(rs),
            Claim::Ignore => {}
        }
    }
    out
}

/// What one sync of a Deployment should do, in this order: create, update ReplicaSets,
/// delete, then write the Deployment's revision annotation and status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentPlan {
    /// The ReplicaSet of the current template, to create (with its starting replicas). If the
    /// API answers AlreadyExists, increment `status.collisionCount` and sync again.
    pub create_rs: Option<ReplicaSet>,
    /// New `spec.replicas` of existing ReplicaSets, by name.
    pub scale: Vec<(String, i32)>,
    /// Annotations to set (added or changed; none are removed) on existing ReplicaSets.
    pub annotate: Vec<(String, BTreeMap<String, String>)>,
    /// New `spec.minReadySeconds` of existing ReplicaSets (the current one follows the
    /// Deployment's).
    pub min_ready_seconds: Vec<(String, i32)>,
    /// Old ReplicaSets to delete: beyond `revisionHistoryLimit`, scaled to 0 and drained.
    pub delete_rs: Vec<String>,
    /// New value of the Deployment's `deployment.kubernetes.io/revision` annotation.
    pub revision: Option<String>,
    /// The Deployment status (write it when it differs from the current one).
    pub status: DeploymentStatus,
    /// When the rollout could pass its progress deadline: sync again after this long.
    pub requeue_after: Option<Duration>,
}

impl DeploymentPlan {
    /// `scale`, `annotate` and `min_ready_seconds` as one JSON merge patch per ReplicaSet.
    pub fn rs_patches(&self) -> Vec<(String, Value)> {
        let mut patches: BTreeMap<String, Value> = BTreeMap::new();
        let mut at = |name: &str, path: [&str; 2], value: Value| {
            let patch = patches
                .entry(name.to_owned())
                .or_insert_with(|| Value::Object(Default::default()));
            let outer = &mut patch[path[0]];
            if !outer.is_object() {
                *outer = Value::Object(Default::default());
            }
            outer[path[1]] = value;
        };
        for (name, replicas) in &self.scale {
            at(name, ["spec", "replicas"], Value::from(*replicas));
        }
        for (name, seconds) in &self.min_ready_seconds {
            at(name, ["spec", "minReadySeconds"], Value::from(*seconds));
        }
        for (name, annotations) in &self.annotate {
            let map = annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            at(name, ["metadata", "annotations"], Value::Object(map));
        }
        patches.into_iter().collect()
    }
}

/// One sync of Deployment `d` whose ReplicaSets (owned, see [`owned_replicasets`]) are `rss`,
/// at `now`, following upstream's `syncDeployment`: a Deployment being deleted or selecting
/// everything only gets status; a paused Deployment or a change of `spec.replicas` scales the
/// existing ReplicaSets (proportionally while a rollout is under way) without rolling out;
/// otherwise the rollout advances one step with its strategy.
pub fn plan(d: &Deployment, rss: &[ReplicaSet], now: Timestamp) -> DeploymentPlan {
    let mut sorted = rss.to_vec();
    sorted.sort_by(by_creation);
    let mut p = Planner {
        d,
        s: Settings::of(d),
        now,
        original: sorted.clone(),
        rss: sorted,
        created: None,
        status: d.status.clone().unwrap_or_default(),
        revision: annotation(&d.metadata, REVISION).map(str::to_owned),
        delete: Vec::new(),
        requeue_after: None,
    };
    let status = p.run();
    p.finish(status)
}

/// Deployment spec fields, defaulted as the API server defaults apps/v1 Deployments.
struct Settings {
    replicas: i32,
    recreate: bool,
    max_surge: i32,
    max_unavailable: i32,
    min_ready: i32,
    paused: bool,
    history_limit: Option<i32>,
    progress_deadline: Option<i32>,
}

impl Settings {
    fn of(d: &Deployment) -> Self {
        let spec = d.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let strategy = spec.strategy.clone().unwrap_or_default();
        let recreate = strategy.type_.as_deref() == Some("Recreate");
        let quarter = IntOrString::String("25%".to_owned());
        let rolling = strategy.rolling_update.unwrap_or_default();
        let (max_surge, max_unavailable) = if recreate {
            (0, 0)
        } else {
            let surge = scaled(
                rolling.max_surge.as_ref().unwrap_or(&quarter),
                replicas,
                true,
            );
            let unavailable = scaled(
                rolling.max_unavailable.as_ref().unwrap_or(&quarter),
                replicas,
                false,
            );
            // Both resolving to zero would block the rollout; upstream then allows one
            // unavailable Pod (surge may be impossible, e.g. under quota).
            let unavailable = if surge == 0 && unavailable == 0 {
                1
            } else {
                unavailable
            };
            let unavailable = if replicas == 0 {
                0
            } else {
                unavailable.min(replicas)
            };
            (surge, unavailable)
        };
        // MaxInt32 is upstream's way of saying "no limit" for both fields.
        let limit =
            |v: Option<i32>, default: i32| Some(v.unwrap_or(default)).filter(|v| *v != i32::MAX);
        Self {
            replicas,
            recreate,
            max_surge,
            max_unavailable,
            min_ready: spec.min_ready_seconds.unwrap_or(0),
            paused: spec.paused.unwrap_or(false),
            history_limit: limit(spec.revision_history_limit, 10),
            progress_deadline: limit(spec.progress_deadline_seconds, 600),
        }
    }
}

/// Upstream `GetScaledValueFromIntOrPercent`: an integer as is, a percentage of `total`
/// rounded up or down. Anything else (refused by validation) counts as 0.
fn scaled(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let Some(Ok(percent)) = s.strip_suffix('%').map(str::parse::<i64>) else {
                return 0;
            };
            let exact = percent as f64 * f64::from(total) / 100.0;
            let rounded = if round_up {
                exact.ceil()
            } else {
                exact.floor()
            };
            rounded as i32
        }
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn set_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(ReplicaSetSpec::default).replicas = Some(n);
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Upstream `ReplicaSetsByCreationTimestamp`: oldest first, then by name.
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| name(&a.metadata).cmp(name(&b.metadata)))
}

/// Upstream `SetReplicasAnnotations`; true when something changed.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_owned(), value);
            changed = true;
        }
    }
    changed
}

/// Upstream `SetNewReplicaSetAnnotations`: copy the Deployment's annotations, raise the
/// revision to `revision` (keeping the replaced one in the history when rolling back to an
/// older ReplicaSet), and for a ReplicaSet about to be created the replica annotations.
fn set_new_rs_annotations(
    d: &Deployment,
    s: &Settings,
    rs: &mut ReplicaSet,
    revision: i64,
    exists: bool,
) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_number = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        // Upstream leaves a ReplicaSet with an unreadable revision alone.
        Some(Err(_)) => return changed,
    };
    if old_number < revision {
        annotations.insert(REVISION.to_owned(), revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let value = if history.is_empty() {
                Some(old)
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                (total <= MAX_REVISION_HISTORY_CHARS).then(|| {
                    parts = parts.split_off(start);
                    parts.push(&old);
                    parts.join(",")
                })
            };
            if let Some(value) = value {
                annotations.insert(REVISION_HISTORY.to_owned(), value);
            }
        }
    }
    if !exists && set_replicas_annotations(rs, s.replicas, s.replicas + s.max_surge) {
        changed = true;
    }
    changed
}

fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// Upstream `SetDeploymentCondition`: nothing changes when status and reason are the same;
/// the transition time survives when only the reason changes; the condition moves last.
fn set_condition(status: &mut DeploymentStatus, mut new: DeploymentCondition) {
    if let Some(current) = condition(status, &new.type_) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &new.type_);
    status.conditions.get_or_insert_with(Vec::new).push(new);
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn count(status: &DeploymentStatus) -> [i32; 4] {
    [
        status.replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    ]
}

/// The working state of one sync: ReplicaSets as the actions so far left them.
struct Planner<'a> {
    d: &'a Deployment,
    s: Settings,
    now: Timestamp,
    /// The input ReplicaSets, oldest first, to tell what changed.
    original: Vec<ReplicaSet>,
    /// The same ReplicaSets with the planned changes, plus the created one last.
    rss: Vec<ReplicaSet>,
    created: Option<usize>,
    /// The Deployment's status with the conditions set so far (its counts stay the input's).
    status: DeploymentStatus,
    revision: Option<String>,
    delete: Vec<String>,
    requeue_after: Option<Duration>,
}

impl Planner<'_> {
    fn template(&self) -> PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    fn has_deadline(&self) -> bool {
        self.s.progress_deadline.is_some()
    }

    fn run(&mut self) -> DeploymentStatus {
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if selects_everything(&selector) {
            // Upstream refuses to manage Pods with such a selector; it only records that it
            // has seen this generation.
            let mut status = self.d.status.clone().unwrap_or_default();
            let generation = self.d.metadata.generation.unwrap_or(0);
            if status.observed_generation.unwrap_or(0) < generation {
                status.observed_generation = Some(generation);
            }
            return status;
        }
        if self.d.metadata.deletion_timestamp.is_some() {
            let (new, _) = self.get_all(false);
            return self.calculate_status(new);
        }
        self.check_paused_conditions();
        if self.s.paused || self.is_scaling_event() {
            return self.sync();
        }
        if self.s.recreate {
            self.rollout_recreate()
        } else {
            self.rollout_rolling()
        }
    }

    /// Upstream `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if !self.has_deadline() {
            return;
        }
        let reason = condition(&self.status, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(reason::PROGRESS_DEADLINE_EXCEEDED) {
            return;
        }
        let paused_recorded = reason.as_deref() == Some(reason::DEPLOYMENT_PAUSED);
        let (why, message) = match (self.s.paused, paused_recorded) {
            (true, false) => (reason::DEPLOYMENT_PAUSED, "Deployment is paused"),
            (false, true) => (reason::DEPLOYMENT_RESUMED, "Deployment is resumed"),
            _ => return,
        };
        let cond = new_condition("Progressing", "Unknown", why, message.to_owned(), self.now);
        set_condition(&mut self.status, cond);
    }

    /// The index of the current ReplicaSet (the oldest with the Deployment's template).
    fn find_new(&self) -> Option<usize> {
        let template = self.template();
        self.rss.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        })
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision`: the current ReplicaSet (updating its
    /// annotations, or creating it when `create`), and the indexes of all others.
    fn get_all(&mut self, create: bool) -> (Option<usize>, Vec<usize>) {
        let mut new = self.find_new();
        let olds: Vec<usize> = (0..self.rss.len()).filter(|i| Some(*i) != new).collect();
        let next_revision = olds
            .iter()
            .map(|i| revision_of(&self.rss[*i]))
            .max()
            .unwrap_or(0)
            + 1;
        if let Some(i) = new {
            let rs = &mut self.rss[i];
            set_new_rs_annotations(self.d, &self.s, rs, next_revision, true);
            let spec = rs.spec.get_or_insert_with(ReplicaSetSpec::default);
            if spec.min_ready_seconds.unwrap_or(0) != self.s.min_ready {
                spec.min_ready_seconds = nonzero(self.s.min_ready);
            }
            // Upstream syncs the Deployment's revision one sync after updating the
            // ReplicaSet's; both land here at once, with the same values.
            let revision = annotation(&rs.metadata, REVISION)
                .unwrap_or_default()
                .to_owned();
            let rs_name = name(&rs.metadata).to_owned();
            self.revision = Some(revision);
            if self.has_deadline() && condition(&self.status, "Progressing").is_none() {
                let message = format!("Found new replica set \"{rs_name}\"");
                let cond = new_condition(
                    "Progressing",
                    "True",
                    reason::FOUND_NEW_REPLICA_SET,
                    message,
                    self.now,
                );
                set_condition(&mut self.status, cond);
            }
        } else if create {
            new = Some(self.create_new(next_revision));
        }
        (new, olds)
    }

    fn create_new(&mut self, revision: i64) -> usize {
        let template = self.template();
        let mut collisions = self.status.collision_count;
        let mut hash = pod_template_hash(&template, collisions);
        // A ReplicaSet of that name with another template is a hash collision: upstream bumps
        // the collision count and tries again on the next sync; this tries again right away.
        let prefix = name(&self.d.metadata);
        while self
            .rss
            .iter()
            .any(|rs| name(&rs.metadata) == format!("{prefix}-{hash}"))
        {
            collisions = Some(collisions.unwrap_or(0).saturating_add(1));
            hash = pod_template_hash(&template, collisions);
        }
        self.status.collision_count = collisions;
        let mut rs = new_replicaset(self.d, &hash);
        if let Some(annotations) = rs.metadata.annotations.as_mut() {
            annotations.insert(REVISION.to_owned(), revision.to_string());
        }
        self.rss.push(rs);
        let index = self.rss.len() - 1;
        let all: Vec<usize> = (0..self.rss.len()).collect();
        let start = self.new_rs_new_replicas(&all, index);
        set_replicas(&mut self.rss[index], start);
        self.created = Some(index);
        self.revision = Some(revision.to_string());
        if self.has_deadline() {
            let message = format!(
                "Created new replica set \"{}\"",
                name(&self.rss[index].metadata)
            );
            let cond = new_condition(
                "Progressing",
                "True",
                reason::NEW_REPLICA_SET_CREATED,
                message,
                self.now,
            );
            set_condition(&mut self.status, cond);
        }
        index
    }

    fn total(&self, indexes: &[usize]) -> i32 {
        indexes.iter().map(|i| replicas(&self.rss[*i])).sum()
    }

    /// Upstream `NewRSNewReplicas`: how far the current ReplicaSet may grow now.
    fn new_rs_new_replicas(&self, all: &[usize], new: usize) -> i32 {
        if self.s.recreate {
            return self.s.replicas;
        }
        let current = self.total(all);
        let max_total = self.s.replicas + self.s.max_surge;
        let new_replicas = replicas(&self.rss[new]);
        if current >= max_total {
            return new_replicas;
        }
        let up = (max_total - current).min(self.s.replicas - new_replicas);
        new_replicas + up
    }

    /// Upstream `scaleReplicaSet` (and, with `skip_same`, `scaleReplicaSetAndRecordEvent`,
    /// which does nothing when the size is right): sets the size and the replica
    /// annotations; true when the size changed.
    fn scale_rs(&mut self, i: usize, to: i32, skip_same: bool) -> bool {
        let rs = &mut self.rss[i];
        let size_changes = replicas(rs) != to;
        if skip_same && !size_changes {
            return false;
        }
        set_replicas_annotations(rs, self.s.replicas, self.s.replicas + self.s.max_surge);
        set_replicas(rs, to);
        size_changes
    }

    fn active(&self, indexes: &[usize]) -> Vec<usize> {
        indexes
            .iter()
            .copied()
            .filter(|i| replicas(&self.rss[*i]) > 0)
            .collect()
    }

    /// Upstream `isScalingEvent`: an active ReplicaSet was last scaled for another
    /// `spec.replicas`.
    fn is_scaling_event(&mut self) -> bool {
        let (new, olds) = self.get_all(false);
        let all: Vec<usize> = olds.into_iter().chain(new).collect();
        self.active(&all).iter().any(|i| {
            annotation(&self.rss[*i].metadata, DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|desired| desired != self.s.replicas)
        })
    }

    /// Upstream `sync`: scale without rolling out, clean up when paused, report status.
    fn sync(&mut self) -> DeploymentStatus {
        let (new, olds) = self.get_all(false);
        self.scale(new, &olds);
        if self.s.paused {
            self.cleanup(&olds);
        }
        self.calculate_status(new)
    }

    /// Upstream `scale`.
    fn scale(&mut self, new: Option<usize>, olds: &[usize]) {
        let want = self.s.replicas;
        let all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let active = self.active(&all);
        // One active ReplicaSet (or none: then the newest) simply takes the whole size.
        let single = match active.as_slice() {
            [] => new.or_else(|| {
                olds.iter()
                    .copied()
                    .max_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]))
            }),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = single {
            if replicas(&self.rss[i]) != want {
                self.scale_rs(i, want, true);
            }
            return;
        }
        if let Some(n) = new.filter(|n| self.is_saturated(*n)) {
            for i in self.active(olds) {
                if i != n {
                    self.scale_rs(i, 0, true);
                }
            }
            return;
        }
        if self.s.recreate {
            return;
        }
        // Proportional scaling: spread the change over the active ReplicaSets by their share
        // of the size the Deployment had when they were last scaled.
        let allowed = if want > 0 { want + self.s.max_surge } else { 0 };
        let to_add = allowed - self.total(&active);
        let mut order = active;
        order.sort_by(|a, b| {
            let (ra, rb) = (&self.rss[*a], &self.rss[*b]);
            let by_age = if to_add > 0 {
                by_creation(rb, ra)
            } else {
                by_creation(ra, rb)
            };
            replicas(rb).cmp(&replicas(ra)).then(by_age)
        });
        let mut added = 0;
        let mut sizes = Vec::with_capacity(order.len());
        for i in &order {
            let rs = &self.rss[*i];
            let proportion = if to_add != 0 {
                self.proportion(rs, to_add, added)
            } else {
                0
            };
            sizes.push(replicas(rs) + proportion);
            added += proportion;
        }
        // The rounding leftover goes to the largest ReplicaSet.
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            *first = (*first + to_add - added).max(0);
        }
        for (i, size) in order.into_iter().zip(sizes) {
            self.scale_rs(i, size, false);
        }
    }

    /// Upstream `IsSaturated`: fully scaled for this size and fully available.
    fn is_saturated(&self, i: usize) -> bool {
        let rs = &self.rss[i];
        let desired =
            annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok());
        replicas(rs) == self.s.replicas
            && desired == Some(self.s.replicas)
            && available(rs) == self.s.replicas
    }

    /// Upstream `GetReplicaSetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        let size = replicas(rs);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.s.replicas == 0 {
            -size
        } else {
            let max_now = self.s.replicas + self.s.max_surge;
            let before = annotation(&rs.metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|v| *v != 0)
                .unwrap_or_else(|| self.status.replicas.unwrap_or(0));
            if before == 0 {
                0
            } else {
                let exact = f64::from(size) * f64::from(max_now) / f64::from(before);
                exact.round() as i32 - size
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream `rolloutRolling`: grow the current ReplicaSet within maxSurge, else shrink
    /// old ones within maxUnavailable, else clean up a finished rollout.
    fn rollout_rolling(&mut self) -> DeploymentStatus {
        let (new, olds) = self.get_all(true);
        let Some(new) = new else {
            return self.sync_rollout_status(None);
        };
        let all: Vec<usize> = olds.iter().copied().chain([new]).collect();
        if self.reconcile_new(&all, new) {
            return self.sync_rollout_status(Some(new));
        }
        let active_olds = self.active(&olds);
        if self.reconcile_olds(&all, &active_olds, new) {
            return self.sync_rollout_status(Some(new));
        }
        if self.complete(&self.status) {
            self.cleanup(&olds);
        }
        self.sync_rollout_status(Some(new))
    }

    fn reconcile_new(&mut self, all: &[usize], new: usize) -> bool {
        let have = replicas(&self.rss[new]);
        match have.cmp(&self.s.replicas) {
            Ordering::Equal => false,
            Ordering::Greater => self.scale_rs(new, self.s.replicas, true),
            Ordering::Less => {
                let to = self.new_rs_new_replicas(all, new);
                self.scale_rs(new, to, true)
            }
        }
    }

    /// Upstream `reconcileOldReplicaSets`.
    fn reconcile_olds(&mut self, all: &[usize], olds: &[usize], new: usize) -> bool {
        if self.total(olds) == 0 {
            return false;
        }
        let min_available = self.s.replicas - self.s.max_unavailable;
        let new_unavailable = replicas(&self.rss[new]) - available(&self.rss[new]);
        let max_scaled_down = self.total(all) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // Unavailable old Pods go first: removing them costs no availability.
        let mut cleaned = 0;
        for &i in olds {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = &self.rss[i];
            let (size, ready) = (replicas(rs), available(rs));
            if size == 0 || size == ready {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - ready);
            self.scale_rs(i, size - down, true);
            cleaned += down;
        }
        // Then available ones, as far as maxUnavailable allows.
        let available_now: i32 = all.iter().map(|i| available(&self.rss[*i])).sum();
        let mut scaled = 0;
        if available_now > min_available {
            let budget = available_now - min_available;
            for &i in olds {
                if scaled >= budget {
                    break;
                }
                let size = replicas(&self.rss[i]);
                if size == 0 {
                    continue;
                }
                let down = size.min(budget - scaled);
                self.scale_rs(i, size - down, true);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    /// Upstream `rolloutRecreate`: old ReplicaSets to zero, wait for their Pods to go, then
    /// the current ReplicaSet (created only now) to full size.
    fn rollout_recreate(&mut self) -> DeploymentStatus {
        let (mut new, mut olds) = self.get_all(false);
        let mut scaled_down = false;
        for i in self.active(&olds) {
            scaled_down |= self.scale_rs(i, 0, true);
        }
        if scaled_down {
            return self.sync_rollout_status(new);
        }
        // Without the Pods at hand, old Pods still running are those the old ReplicaSets
        // still count (including the terminating ones, when reported).
        let old_pods = olds.iter().any(|i| {
            let status = self.rss[*i].status.as_ref();
            status.is_some_and(|s| s.replicas > 0 || s.terminating_replicas.unwrap_or(0) > 0)
        });
        if old_pods {
            return self.sync_rollout_status(new);
        }
        if new.is_none() {
            (new, olds) = self.get_all(true);
        }
        if let Some(n) = new {
            self.scale_rs(n, self.s.replicas, true);
        }
        if self.complete(&self.status) {
            self.cleanup(&olds);
        }
        self.sync_rollout_status(new)
    }

    /// Upstream `cleanupDeployment`: delete the oldest revisions beyond the history limit,
    /// skipping any that still have Pods or a size.
    fn cleanup(&mut self, olds: &[usize]) {
        let Some(limit) = self.s.history_limit else {
            return;
        };
        let mut candidates: Vec<usize> = olds
            .iter()
            .copied()
            .filter(|i| self.rss[*i].metadata.deletion_timestamp.is_none())
            .collect();
        let excess = candidates.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return;
        }
        candidates.sort_by(|a, b| {
            let (ra, rb) = (&self.rss[*a], &self.rss[*b]);
            revision_of(ra)
                .cmp(&revision_of(rb))
                .then_with(|| by_creation(ra, rb))
        });
        for &i in candidates.iter().take(usize::try_from(excess).unwrap_or(0)) {
            let rs = &self.rss[i];
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_replicas(rs) != 0
                || replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            self.delete.push(name(&rs.metadata).to_owned());
        }
    }

    /// Upstream `DeploymentComplete`.
    fn complete(&self, status: &DeploymentStatus) -> bool {
        let want = self.s.replicas;
        let [total, updated, _, available] = count(status);
        updated == want
            && total == want
            && available == want
            && status.observed_generation.unwrap_or(0) >= self.d.metadata.generation.unwrap_or(0)
    }

    /// Upstream `calculateStatus`: counts from the ReplicaSets' statuses, and Available.
    fn calculate_status(&self, new: Option<usize>) -> DeploymentStatus {
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| -> i32 { self.rss.iter().map(f).sum() };
        let available_now = sum(&available);
        let total = sum(&replicas);
        let mut status = DeploymentStatus {
            observed_generation: nonzero(self.d.metadata.generation.unwrap_or(0)),
            replicas: nonzero(sum(&status_replicas)),
            updated_replicas: nonzero(new.map_or(0, |n| status_replicas(&self.rss[n]))),
            ready_replicas: nonzero(sum(&|rs| {
                rs.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
            })),
            available_replicas: nonzero(available_now),
            unavailable_replicas: nonzero((total - available_now).max(0)),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            terminating_replicas: self.status.terminating_replicas,
        };
        let cond = if available_now >= self.s.replicas - self.s.max_unavailable {
            new_condition(
                "Available",
                "True",
                reason::MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.".to_owned(),
                self.now,
            )
        } else {
            new_condition(
                "Available",
                "False",
                reason::MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.".to_owned(),
                self.now,
            )
        };
        set_condition(&mut status, cond);
        status
    }

    /// Upstream `syncRolloutStatus`: the status plus the Progressing condition and the
    /// ReplicaSets' failures.
    fn sync_rollout_status(&mut self, new: Option<usize>) -> DeploymentStatus {
        let mut status = self.calculate_status(new);
        if !self.has_deadline() {
            remove_condition(&mut status, "Progressing");
        }
        let current = condition(&self.status, "Progressing").cloned();
        let [total, updated, _, _] = count(&status);
        let rollout_done = total == updated
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_REPLICA_SET_AVAILABLE));
        let subject = match new {
            Some(n) => format!("ReplicaSet \"{}\"", name(&self.rss[n].metadata)),
            None => format!("Deployment \"{}\"", name(&self.d.metadata)),
        };
        if self.has_deadline() && !rollout_done {
            if self.complete(&status) {
                let cond = new_condition(
                    "Progressing",
                    "True",
                    reason::NEW_REPLICA_SET_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                    self.now,
                );
                set_condition(&mut status, cond);
            } else if self.progressing(&status) {
                let mut cond = new_condition(
                    "Progressing",
                    "True",
                    reason::REPLICA_SET_UPDATED,
                    format!("{subject} is progressing."),
                    self.now,
                );
                // Progress refreshes lastUpdateTime even when the reason stays the same.
                if let Some(current) = &current {
                    if current.status == "True" {
                        cond.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, cond);
            } else if self.timed_out(&status) {
                let cond = new_condition(
                    "Progressing",
                    "False",
                    reason::PROGRESS_DEADLINE_EXCEEDED,
                    format!("{subject} has timed out progressing."),
                    self.now,
                );
                set_condition(&mut status, cond);
            }
        }
        match self.replica_failure(new) {
            Some(failure) => set_condition(&mut status, failure),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        self.requeue_after = self.stuck_requeue(&status);
        status
    }

    /// Upstream `DeploymentProgressing`: more updated, ready or available Pods, or fewer old.
    fn progressing(&self, new: &DeploymentStatus) -> bool {
        let [old_total, old_updated, old_ready, old_available] = count(&self.status);
        let [total, updated, ready, available] = count(new);
        updated > old_updated
            || total - updated < old_total - old_updated
            || ready > old_ready
            || available > old_available
    }

    /// Upstream `DeploymentTimedOut`.
    fn timed_out(&self, status: &DeploymentStatus) -> bool {
        let (Some(deadline), Some(cond)) =
            (self.s.progress_deadline, condition(status, "Progressing"))
        else {
            return false;
        };
        match cond.reason.as_deref() {
            Some(reason::NEW_REPLICA_SET_AVAILABLE) => false,
            Some(reason::PROGRESS_DEADLINE_EXCEEDED) => true,
            _ => cond.last_update_time.as_ref().is_some_and(|t| {
                self.now.duration_since(t.0) > SignedDuration::from_secs(i64::from(deadline))
            }),
        }
    }

    /// Upstream `requeueStuckDeployment`: when to look again for a timed-out rollout.
    fn stuck_requeue(&self, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = self.s.progress_deadline?;
        let cond = condition(&self.status, "Progressing")?;
        if self.complete(status)
            || cond.reason.as_deref() == Some(reason::PROGRESS_DEADLINE_EXCEEDED)
        {
            return None;
        }
        let since = cond.last_update_time.as_ref()?.0;
        let left = SignedDuration::from_secs(i64::from(deadline)) - self.now.duration_since(since);
        if left < SignedDuration::from_secs(1) {
            return Some(Duration::ZERO);
        }
        Some((left + SignedDuration::from_secs(1)).unsigned_abs())
    }

    /// Upstream `getReplicaFailures`: the current ReplicaSet's ReplicaFailure condition, else
    /// the first of any other's.
    fn replica_failure(&self, new: Option<usize>) -> Option<DeploymentCondition> {
        let failure = |rs: &ReplicaSet| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure")
                .map(|c| DeploymentCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
        };
        new.and_then(|n| failure(&self.rss[n]))
            .or_else(|| self.rss.iter().find_map(failure))
    }

    /// Turns the working state into actions.
    fn finish(self, status: DeploymentStatus) -> DeploymentPlan {
        let mut plan = DeploymentPlan {
            create_rs: self.created.and_then(|i| self.rss.get(i).cloned()),
            delete_rs: self.delete,
            status,
            requeue_after: self.requeue_after,
            ..DeploymentPlan::default()
        };
        if self.revision.as_deref() != annotation(&self.d.metadata, REVISION) {
            plan.revision = self.revision;
        }
        for (before, after) in self.original.iter().zip(&self.rss) {
            let rs_name = name(&after.metadata).to_owned();
            if replicas(before) != replicas(after) {
                plan.scale.push((rs_name.clone(), replicas(after)));
            }
            let min_ready = |rs: &ReplicaSet| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.min_ready_seconds)
                    .unwrap_or(0)
            };
            if min_ready(before) != min_ready(after) {
                plan.min_ready_seconds
                    .push((rs_name.clone(), min_ready(after)));
            }
            let old = before.metadata.annotations.clone().unwrap_or_default();
            let changed: BTreeMap<String, String> = after
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !changed.is_empty() {
                plan.annotate.push((rs_name, changed));
            }
        }
        plan
    }
}

/// Whether a label selector selects every object (no terms at all).
fn selects_everything(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::merge;
    use serde_json::json;

    const NOW: &str = "2024-01-01T01:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("test time")
    }

    /// Deployment ns/web (generation 2) of 4 replicas, RollingUpdate maxSurge 1 maxUnavailable 0,
    /// image v2, `extra` overlaid.
    fn deploy(extra: Value) -> Deployment {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 2},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "v2"}]}}}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("test Deployment")
    }

    /// A ReplicaSet of `d` for `image`, with `size` replicas all available, at `revision`.
    fn rs(d: &Deployment, image: &str, size: i32, revision: i64, extra: Value) -> ReplicaSet {
        let mut template = d.spec.clone().unwrap_or_default().template;
        if let Some(spec) = template.spec.as_mut() {
            spec.containers[0].image = Some(image.to_owned());
        }
        let hash = pod_template_hash(&template, None);
        let mut with_image = d.clone();
        if let Some(spec) = with_image.spec.as_mut() {
            spec.template = template;
        }
        let mut rs = new_replicaset(&with_image, &hash);
        let mut v = serde_json::to_value(&mut rs).expect("json");
        merge(
            &mut v,
            json!({
                "metadata": {"uid": format!("uid-{image}"), "generation": 1,
                             "creationTimestamp": format!("2024-01-01T00:0{revision}:00Z"),
                             "annotations": {REVISION: revision.to_string(),
                                             DESIRED_REPLICAS: "4", MAX_REPLICAS: "5"}},
                "spec": {"replicas": size},
                "status": {"replicas": size, "readyReplicas": size, "availableReplicas": size,
                           "observedGeneration": 1}
            }),
        );
        merge(&mut v, extra);
        serde_json::from_value(v).expect("test ReplicaSet")
    }

    /// The plan in compact JSON: actions by name, status counts, conditions without times.
    fn summary(p: &DeploymentPlan) -> Value {
        let conditions: Vec<Value> = p
            .status
            .conditions
            .iter()
            .flatten()
            .map(|c| json!([c.type_, c.status, c.reason, c.message]))
            .collect();
        json!({
            "create": p.create_rs.as_ref().map(|rs| json!([
                name(&rs.metadata), replicas(rs), annotation(&rs.metadata, REVISION)])),
            "scale": p.scale,
            "delete": p.delete_rs,
            "revision": p.revision,
            "status": count(&p.status),
            "conditions": conditions,
        })
    }

    /// Plans one sync and compares [`summary`] with `want`.
    fn check(case: &str, d: Deployment, rss: Vec<ReplicaSet>, want: Value) -> DeploymentPlan {
        let p = plan(&d, &rss, now());
        assert_eq!(summary(&p), want, "case {case}");
        p
    }

    fn hashed(d: &Deployment) -> String {
        format!(
            "web-{}",
            pod_template_hash(&d.spec.clone().unwrap_or_default().template, None)
        )
    }

    #[test]
    fn hash_is_stable_and_uses_the_safe_alphabet() {
        let d = deploy(json!({}));
        let template = d.spec.clone().unwrap_or_default().template;
        let hash = pod_template_hash(&template, None);
        assert_eq!(hash, pod_template_hash(&template.clone(), None));
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
        assert_ne!(hash, pod_template_hash(&template, Some(1)));
        let other = deploy(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v3"}]}}}}),
        );
        assert_ne!(
            hash,
            pod_template_hash(&other.spec.unwrap_or_default().template, None)
        );
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        let settings = |strategy: Value, replicas: i32| {
            let s = Settings::of(&deploy(
                json!({"spec": {"replicas": replicas, "strategy": strategy}}),
            ));
            (s.max_surge, s.max_unavailable)
        };
        let rolling = |surge: Value, unavailable: Value| json!({"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}});
        assert_eq!(settings(rolling(json!("25%"), json!("25%")), 10), (3, 2));
        assert_eq!(settings(rolling(json!("0%"), json!("10%")), 5), (0, 1));
        assert_eq!(settings(rolling(json!(0), json!(9)), 5), (0, 5));
        assert_eq!(
            settings(json!({"type": "RollingUpdate", "rollingUpdate": null}), 3),
            (1, 0)
        );
        assert_eq!(settings(json!({"type": "Recreate"}), 3), (0, 0));
        assert_eq!(settings(rolling(json!(1), json!(1)), 0), (1, 0));
    }

    #[test]
    fn plan_cases() {
        let d = deploy(json!({"spec": {"replicas": 3, "strategy": null}}));
        check(
            "first sync creates the ReplicaSet at full size (25% surge of 3 rounds up to 1)",
            d.clone(),
            vec![],
            json!({"create": [hashed(&d), 3, "1"], "scale": [], "delete": [], "revision": "1",
                   "status": [0, 0, 0, 0], "conditions": [
                ["Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{}\"", hashed(&d))],
                ["Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."]]}),
        );

        let d = deploy(json!({"spec": {"replicas": 6},
            "metadata": {"annotations": {REVISION: "1"}},
            "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4,
                       "readyReplicas": 4, "availableReplicas": 4}}));
        let current = rs(&d, "v2", 4, 1, json!({}));
        check(
            "a scale-up (desired-replicas differs) scales the only active ReplicaSet",
            d.clone(),
            vec![current.clone()],
            json!({"create": null, "scale": [[hashed(&d), 6]], "delete": [], "revision": null,
                   "status": [4, 4, 4, 4], "conditions": [
                ["Progressing", "True", "FoundNewReplicaSet", format!("Found new replica set \"{}\"", hashed(&d))],
                ["Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."]]}),
        );

        let d = deploy(
            json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}},
            "metadata": {"annotations": {REVISION: "1"}}}),
        );
        let old = rs(&d, "v1", 4, 1, json!({}));
        check(
            "Recreate scales old ReplicaSets to zero before creating the new one",
            d.clone(),
            vec![old.clone()],
            json!({"create": null, "scale": [[old.metadata.name, 0]], "delete": [], "revision": null,
                   "status": [4, 0, 4, 4], "conditions": [
                ["Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."],
                ["Progressing", "True", "ReplicaSetUpdated", "Deployment \"web\" is progressing."]]}),
        );
        let drained = rs(&d, "v1", 0, 1, json!({}));
        check(
            "Recreate creates the new ReplicaSet at full size once old Pods are gone",
            d.clone(),
            vec![drained.clone()],
            json!({"create": [hashed(&d), 4, "2"], "scale": [], "delete": [], "revision": "2",
                   "status": [0, 0, 0, 0], "conditions": [
                ["Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{}\"", hashed(&d))],
                ["Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."]]}),
        );
        let still_running = rs(&d, "v1", 0, 1, json!({"status": {"replicas": 2}}));
        check(
            "Recreate waits while old Pods are still counted",
            d.clone(),
            vec![still_running],
            json!({"create": null, "scale": [], "delete": [], "revision": null,
                   "status": [2, 0, 0, 0], "conditions": [
                ["Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."]]}),
        );

        let d = deploy(json!({"metadata": {"annotations": {REVISION: "2", "team": "a"}}}));
        // Built without the "team" annotation, which the plan then copies over.
        let plain = deploy(json!({}));
        let back = rs(&plain, "v2", 4, 1, json!({}));
        let newer = rs(&plain, "v1", 0, 2, json!({}));
        let p = check(
            "rolling back to an old template gives its ReplicaSet the next revision",
            d.clone(),
            vec![back.clone(), newer],
            json!({"create": null, "scale": [], "delete": [], "revision": "3",
                   "status": [4, 4, 4, 4], "conditions": [
                ["Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."],
                ["Progressing", "True", "NewReplicaSetAvailable", format!("ReplicaSet \"{}\" has successfully progressed.", hashed(&d))]]}),
        );
        assert_eq!(
            p.annotate,
            [(
                hashed(&d),
                BTreeMap::from([
                    (REVISION.to_owned(), "3".to_owned()),
                    (REVISION_HISTORY.to_owned(), "1".to_owned()),
                    ("team".to_owned(), "a".to_owned()),
                ])
            )]
        );

        let d = deploy(json!({"spec": {"revisionHistoryLimit": 1},
            "metadata": {"annotations": {REVISION: "4"}},
            "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4,
                       "readyReplicas": 4, "availableReplicas": 4, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}}));
        let rss = vec![
            rs(&d, "v0", 0, 1, json!({})),
            rs(&d, "v1", 0, 2, json!({"status": {"replicas": 1}})),
            rs(&d, "v3", 0, 3, json!({})),
            rs(&d, "v2", 4, 4, json!({})),
        ];
        check(
            "a finished rollout deletes drained revisions beyond the history limit",
            d.clone(),
            rss.clone(),
            json!({"create": null, "scale": [], "delete": [rss[0].metadata.name], "revision": null,
                   "status": [5, 4, 4, 4], "conditions": [
                ["Progressing", "True", "NewReplicaSetAvailable", null],
                ["Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."]]}),
        );

        let d =
            deploy(json!({"spec": {"paused": true}, "metadata": {"annotations": {REVISION: "1"}}}));
        let old = rs(&d, "v1", 4, 1, json!({}));
        check(
            "a paused Deployment does not roll out a new template",
            d.clone(),
            vec![old],
            json!({"create": null, "scale": [], "delete": [], "revision": null,
                   "status": [4, 0, 4, 4], "conditions": [
                ["Progressing", "Unknown", "DeploymentPaused", "Deployment is paused"],
                ["Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."]]}),
        );

        let d = deploy(json!({"spec": {"replicas": 20, "strategy": null},
            "metadata": {"annotations": {REVISION: "2"}}}));
        let annotated =
            json!({"metadata": {"annotations": {DESIRED_REPLICAS: "10", MAX_REPLICAS: "13"}}});
        let old = rs(&d, "v1", 6, 1, annotated.clone());
        let current = rs(&d, "v2", 4, 2, annotated);
        let p = plan(&d, &[old, current], now());
        let total: i32 = p.scale.iter().map(|(_, n)| n).sum();
        assert_eq!(
            total, 25,
            "proportional scaling fills replicas + surge: {:?}",
            p.scale
        );
        assert_eq!(p.scale.len(), 2, "both ReplicaSets grow: {:?}", p.scale);
    }

    /// Applies a plan to the simulated cluster, then lets the ReplicaSet controller and the
    /// kubelet act: each ReplicaSet gets its Pods, new ones not yet ready.
    fn apply(p: &DeploymentPlan, d: &mut Deployment, rss: &mut Vec<ReplicaSet>, step: usize) {
        if let Some(created) = &p.create_rs {
            let mut created = created.clone();
            created.metadata.uid = Some(format!("uid-step-{step}"));
            created.metadata.generation = Some(1);
            created.metadata.creation_timestamp =
                Some(Time(now() + SignedDuration::from_secs(step as i64)));
            rss.push(created);
        }
        for rs in rss.iter_mut() {
            let rs_name = name(&rs.metadata).to_owned();
            for (n, size) in &p.scale {
                if *n == rs_name {
                    set_replicas(rs, *size);
                }
            }
            for (n, annotations) in &p.annotate {
                if *n == rs_name {
                    rs.metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .extend(annotations.clone());
                }
            }
            let size = replicas(rs);
            let status = rs.status.get_or_insert_with(Default::default);
            status.replicas = size;
            status.observed_generation = Some(1);
            status.available_replicas = Some(status.available_replicas.unwrap_or(0).min(size));
            status.ready_replicas = status.available_replicas;
        }
        rss.retain(|rs| !p.delete_rs.contains(&name(&rs.metadata).to_owned()));
        if let Some(revision) = &p.revision {
            d.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(REVISION.to_owned(), revision.clone());
        }
        d.status = Some(p.status.clone());
    }

    #[test]
    fn rolling_update_proceeds_step_by_step_to_completion() {
        let mut d = deploy(json!({"metadata": {"annotations": {REVISION: "1"}},
            "status": {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4,
                       "readyReplicas": 4, "availableReplicas": 4}}));
        let mut rss = vec![rs(&d, "v1", 4, 1, json!({}))];
        let mut reasons = Vec::new();
        for step in 0..30 {
            let p = plan(&d, &rss, now());
            let idle = p.create_rs.is_none() && p.scale.is_empty() && p.delete_rs.is_empty();
            if idle && d.status.as_ref() == Some(&p.status) {
                break;
            }
            apply(&p, &mut d, &mut rss, step);
            let total: i32 = rss.iter().map(replicas).sum();
            let up: i32 = rss.iter().map(available).sum();
            assert!(
                total <= 5,
                "step {step}: {total} replicas exceed 4 + maxSurge 1"
            );
            assert!(
                up >= 4,
                "step {step}: only {up} available with maxUnavailable 0"
            );
            if let Some(c) = condition(&p.status, "Progressing") {
                reasons.push(c.reason.clone().unwrap_or_default());
            }
            // The new Pods become ready and available.
            for rs in rss.iter_mut() {
                let size = replicas(rs);
                let status = rs.status.get_or_insert_with(Default::default);
                status.available_replicas = Some(size);
                status.ready_replicas = Some(size);
            }
        }
        let status = d.status.clone().unwrap_or_default();
        // What `kubectl rollout status` waits for.
        assert_eq!(count(&status), [4, 4, 4, 4]);
        assert!(status.observed_generation >= d.metadata.generation);
        let progressing = condition(&status, "Progressing")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            progressing.reason.as_deref(),
            Some(reason::NEW_REPLICA_SET_AVAILABLE)
        );
        assert_eq!(
            progressing.message,
            Some(format!(
                "ReplicaSet \"{}\" has successfully progressed.",
                hashed(&d)
            ))
        );
        assert_eq!(
            reasons.first().map(String::as_str),
            Some(reason::NEW_REPLICA_SET_CREATED)
        );
        assert!(
            reasons.iter().any(|r| r == reason::REPLICA_SET_UPDATED),
            "{reasons:?}"
        );
        let sizes: Vec<(String, i32)> = rss
            .iter()
            .map(|rs| (name(&rs.metadata).to_owned(), replicas(rs)))
            .collect();
        assert_eq!(
            sizes,
            [
                (rss[0].metadata.name.clone().unwrap_or_default(), 0),
                (hashed(&d), 4)
            ]
        );
        assert_eq!(annotation(&d.metadata, REVISION), Some("2"));
    }

    #[test]
    fn new_replicaset_carries_hash_owner_and_annotations() {
        let d = deploy(
            json!({"metadata": {"annotations": {REVISION: "2", "team": "a",
            "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}),
        );
        let mut got = serde_json::to_value(new_replicaset(&d, "abc")).expect("json");
        if let Some(spec) = got.pointer_mut("/spec/template/spec") {
            *spec = Value::Null;
        }
        assert_eq!(
            got,
            json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "web-abc", "namespace": "ns",
                    "labels": {"app": "web", POD_TEMPLATE_HASH: "abc"},
                    "annotations": {REVISION: "3", DESIRED_REPLICAS: "4", MAX_REPLICAS: "5", "team": "a"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                        "uid": "d-uid", "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": 0,
                    "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH: "abc"}},
                    "template": {"metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: "abc"}},
                                 "spec": null}}
            })
        );
    }

    #[test]
    fn rs_patches_merge_the_actions_per_replicaset() {
        let p = DeploymentPlan {
            scale: vec![("a".to_owned(), 3)],
            min_ready_seconds: vec![("a".to_owned(), 5)],
            annotate: vec![(
                "b".to_owned(),
                BTreeMap::from([(REVISION.to_owned(), "2".to_owned())]),
            )],
            ..DeploymentPlan::default()
        };
        assert_eq!(
            p.rs_patches(),
            [
                (
                    "a".to_owned(),
                    json!({"spec": {"replicas": 3, "minReadySeconds": 5}})
                ),
                (
                    "b".to_owned(),
                    json!({"metadata": {"annotations": {REVISION: "2"}}})
                ),
            ]
        );
    }

    #[test]
    fn owned_replicasets_claims_by_controller_and_selector() {
        let d = deploy(json!({}));
        let mine = rs(&d, "v1", 1, 1, json!({}));
        let mut orphan = rs(&d, "v0", 1, 1, json!({}));
        orphan.metadata.owner_references = None;
        let mut foreign = rs(
            &d,
            "v3",
            1,
            1,
            json!({"metadata": {"labels": {"app": "db"}}}),
        );
        foreign.metadata.owner_references = None;
        let got = owned_replicasets(&d, [&mine, &orphan, &foreign]);
        assert_eq!(got.owned, [&mine]);
        assert_eq!(got.adopt, [&orphan]);
        assert!(got.release.is_empty());
    }
}
