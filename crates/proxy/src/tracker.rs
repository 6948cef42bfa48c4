//! The incremental form of [`crate::desired`]: keeps each Service's part of the ruleset and,
//! when some Services or their EndpointSlices change, recomputes only those parts, so one
//! endpoint change costs the same with 10 Services or 10,000 (kube-proxy's change trackers
//! play this role).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use crate::desired::{Ids, desired_with};
use crate::ruleset::{Elem, Op, Ruleset, diff};
use crate::view::{ServiceView, SliceView};

/// A Service by namespace and name.
pub type ServiceKey = (String, String);

/// The Service a view belongs to: a Service itself, or an EndpointSlice's
/// `kubernetes.io/service-name`.
pub fn service_key(svc: &ServiceView) -> ServiceKey {
    (svc.namespace.to_string(), svc.name.to_string())
}

pub fn slice_key(slice: &SliceView) -> Option<ServiceKey> {
    let (ns, name) = slice.service_key()?;
    Some((ns.to_owned(), name.to_owned()))
}

/// Each Service's part of the desired ruleset (hairpin elements counted, since endpoints
/// are shared between Services).
#[derive(Debug, Default)]
pub struct Tracker {
    ids: Ids,
    parts: HashMap<ServiceKey, Part>,
    hairpin: HashMap<Ipv4Addr, u32>,
}

impl Tracker {
    /// The parts of a ruleset `full` that [`crate::desired`] computed from the same
    /// objects (so chain ids carry over).
    pub fn new<'a>(
        services: impl IntoIterator<Item = &'a ServiceView>,
        slices: impl IntoIterator<Item = &'a SliceView>,
        full: &Ruleset,
    ) -> Tracker {
        let mut t = Tracker {
            ids: Ids::from_ruleset(full),
            ..Tracker::default()
        };
        let mut slices_of: HashMap<(&str, &str), Vec<&SliceView>> = HashMap::new();
        for s in slices {
            if let Some(k) = s.service_key() {
                slices_of.entry(k).or_default().push(s);
            }
        }
        for svc in services {
            let part = desired_with(
                [svc],
                slices_of.get(&svc.key()).into_iter().flatten().copied(),
                &mut t.ids,
            );
            for ip in &part.hairpin {
                *t.hairpin.entry(*ip).or_default() += 1;
            }
            if part != Ruleset::default() {
                t.parts.insert(service_key(svc), Part::new(&part));
            }
        }
        t
    }

    /// The operations for the Services in `changed`, given their current objects
    /// (`service(key)`, absent if deleted) and EndpointSlices (`slices`, any superset).
    /// Ordered as [`diff`] orders them.
    pub fn update<'a>(
        &mut self,
        changed: &BTreeSet<ServiceKey>,
        service: impl Fn(&ServiceKey) -> Option<&'a ServiceView>,
        slices: impl IntoIterator<Item = &'a SliceView>,
    ) -> Vec<Op> {
        // Borrowed keys: this scans every slice, so it must not allocate per slice.
        let wanted: HashMap<(&str, &str), &ServiceKey> = changed
            .iter()
            .map(|k| ((k.0.as_str(), k.1.as_str()), k))
            .collect();
        let mut slices_of: HashMap<&ServiceKey, Vec<&SliceView>> = HashMap::new();
        for s in slices {
            if let Some(k) = s.service_key().and_then(|k| wanted.get(&k)) {
                slices_of.entry(*k).or_default().push(s);
            }
        }
        let mut ops = Vec::new();
        for key in changed {
            let mut old = self
                .parts
                .remove(key)
                .map(|p| p.ruleset())
                .unwrap_or_default();
            let mut new = desired_with(
                service(key),
                slices_of.get(key).into_iter().flatten().copied(),
                &mut self.ids,
            );
            for ip in old.hairpin.difference(&new.hairpin) {
                if let Some(n) = self.hairpin.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.hairpin.remove(ip);
                        ops.push(Op::DelElem(Elem::Hairpin(*ip)));
                    }
                }
            }
            for ip in new.hairpin.difference(&old.hairpin) {
                let n = self.hairpin.entry(*ip).or_default();
                *n += 1;
                if *n == 1 {
                    ops.push(Op::AddElem(Elem::Hairpin(*ip)));
                }
            }
            let hairpin = std::mem::take(&mut new.hairpin);
            old.hairpin.clear();
            ops.extend(diff(&old, &new));
            new.hairpin = hairpin;
            if new != Ruleset::default() {
                self.parts.insert(key.clone(), Part::new(&new));
            }
        }
        // One batch: every deletion before every addition, as `diff` orders a whole ruleset.
        ops.sort_by_key(|op| match op {
            Op::DelElem(_) => 0,
            Op::DelChain(_) => 1,
            Op::SetRule(_) => 2,
            Op::AddChain(_) => 3,
            Op::AddElem(_) => 4,
        });
        ops
    }
}

/// One Service's part of the ruleset, kept as the operations that build it from nothing: a
/// flat list takes about half the memory of a `Ruleset`'s ten maps (10,000 of them are kept),
/// and only the parts of changed Services are rebuilt.
#[derive(Debug)]
struct Part(Box<[Op]>);

impl Part {
    fn new(part: &Ruleset) -> Part {
        Part(diff(&Ruleset::default(), part).into_boxed_slice())
    }

    fn ruleset(&self) -> Ruleset {
        let mut r = Ruleset::default();
        // Additions to an empty ruleset cannot conflict; if the model ever refused one, the
        // part would be recomputed whole by the next full sync.
        if let Err(e) = r.apply_all(&self.0) {
            tracing::error!(error = %e, "a kept part of the ruleset does not rebuild");
        }
        r
    }
}

#[cfg(test)]
mod tests;
