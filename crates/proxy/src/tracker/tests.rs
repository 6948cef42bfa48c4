//! The tracker agrees with `desired` over the whole world, whichever Services changed.

use std::collections::BTreeSet;

use proptest::prelude::*;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;
use crate::desired::tests::{arb_world, ruleset_of};
use crate::view;

/// The views of a world's Services and slices (for the default node).
fn views(w: &[(Service, EndpointSlice)]) -> (Vec<ServiceView>, Vec<SliceView>) {
    (
        view::services(w.iter().map(|(s, _)| s)),
        view::slices(w.iter().map(|(_, e)| e), ""),
    )
}

proptest! {
    #[test]
    fn kept_parts_rebuild_the_ruleset_they_keep(a in arb_world()) {
        let r = ruleset_of(&a, &Ruleset::default());
        prop_assert_eq!(Part::new(&r).ruleset(), r);
    }

    #[test]
    fn incremental_updates_reach_the_full_desired_state(a in arb_world(), b in arb_world()) {
        let full_a = ruleset_of(&a, &Ruleset::default());
        let mut kernel = full_a.clone();
        let (sa, la) = views(&a);
        let (sb, lb) = views(&b);
        let mut t = Tracker::new(&sa, &la, &full_a);
        // Only the Services whose objects differ are recomputed.
        let keyed = |w: &[(Service, EndpointSlice)]| -> Vec<(ServiceKey, (Service, EndpointSlice))> {
            w.iter()
                .filter_map(|(s, e)| Some((service_key(&ServiceView::new(s)?), (s.clone(), e.clone()))))
                .collect()
        };
        let (ka, kb) = (keyed(&a), keyed(&b));
        let changed: BTreeSet<ServiceKey> = ka
            .iter()
            .chain(&kb)
            .filter(|(k, v)| {
                ka.iter().find(|(x, _)| x == k).map(|(_, o)| o) != Some(v)
                    || kb.iter().find(|(x, _)| x == k).map(|(_, o)| o) != Some(v)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let ops = t.update(&changed, |k| sb.iter().find(|s| service_key(s) == *k), &lb);
        kernel.apply_all(&ops).expect("kernel model refused the ops");
        let full_b = ruleset_of(&b, &kernel);
        prop_assert_eq!(&kernel, &full_b);
    }
}
