//! Owner references and the claim rules of upstream's `ControllerRefManager`: which objects a
//! controller owns, which orphans it adopts and which of its objects it lets go.

use std::collections::BTreeMap;

use berth_api::selector::Selector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// What a controller does with one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Controlled by the controller and still selected.
    Owned,
    /// An orphan the controller selects; it should become the controller of it.
    Adopt,
    /// Controlled by the controller but no longer selected; the reference should be removed.
    Release,
    /// Belongs to someone else, or is not selected.
    Ignore,
}

/// The controller reference of an object (the owner reference with `controller: true`).
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner`, as upstream's `metav1.NewControllerRef` makes it.
pub(crate) fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream `ClaimObject` for one object of the owner's namespace. `selector` None (an
/// unparsable selector) claims nothing new and releases nothing: upstream stops the sync then.
pub(crate) fn claim(owner: &ObjectMeta, selector: Option<&Selector>, obj: &ObjectMeta) -> Claim {
    let empty = BTreeMap::new();
    let matches = || selector.map(|s| s.matches(obj.labels.as_ref().unwrap_or(&empty)));
    let owner_deleting = owner.deletion_timestamp.is_some();
    match controller_of(obj) {
        Some(r) if owner.uid.as_deref().is_some_and(|uid| uid == r.uid) => match matches() {
            Some(false) if !owner_deleting => Claim::Release,
            // A controller being deleted keeps what it has, so its garbage collection finds it.
            _ => Claim::Owned,
        },
        Some(_) => Claim::Ignore,
        None => {
            // Objects on their way out are not worth adopting; nor adopts a dying controller.
            if owner_deleting || obj.deletion_timestamp.is_some() || matches() != Some(true) {
                Claim::Ignore
            } else {
                Claim::Adopt
            }
        }
    }
}

/// A count as Go writes an `omitempty` integer: absent when zero, so that computed statuses
/// compare equal to what the API returns.
pub(crate) fn nonzero<T: Default + PartialEq>(n: T) -> Option<T> {
    (n != T::default()).then_some(n)
}
