//! The indexes agree with a full scan of the objects a sequence of watch events leaves, for
//! random objects, updates, deletions and relists.

use std::collections::BTreeMap;

use berth_api::selector::Selector;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::runtime::watcher::Event;
use proptest::prelude::*;
use serde_json::json;

use super::*;

const NAMESPACES: [&str; 2] = ["a", "b"];

fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(vec!["app", "tier", "x"]),
        prop::sample::select(vec!["1", "2", "3"]),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// One step: an object (namespace, name index, labels or selector, listed pods) applied,
/// deleted, or every object relisted.
#[derive(Debug, Clone)]
enum Step {
    Apply(usize, usize, Labels, Vec<usize>),
    Delete(usize, usize),
    Relist(Vec<(usize, usize, Labels, Vec<usize>)>),
}

fn object() -> impl Strategy<Value = (usize, usize, Labels, Vec<usize>)> {
    (
        0..NAMESPACES.len(),
        0..6usize,
        labels(),
        prop::collection::vec(0..6usize, 0..3),
    )
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => object().prop_map(|(n, i, l, p)| Step::Apply(n, i, l, p)),
        2 => (0..NAMESPACES.len(), 0..6usize).prop_map(|(n, i)| Step::Delete(n, i)),
        1 => prop::collection::vec(object(), 0..8).prop_map(Step::Relist),
    ];
    prop::collection::vec(step, 0..40)
}

/// Runs `steps` through a mirror and a plain map (the truth), building objects with `make`.
fn run<K: Clone, T: Track<K>>(
    index: T,
    steps: &[Step],
    make: impl Fn(&str, String, &Labels, &[usize]) -> K,
) -> (Mirror<T>, BTreeMap<(String, String), K>) {
    let mut mirror = Mirror::new(index);
    let mut truth = BTreeMap::new();
    let name = |i: usize| format!("o{i}");
    for s in steps {
        match s {
            Step::Apply(n, i, l, p) => {
                let o = make(NAMESPACES[*n], name(*i), l, p);
                mirror.event(&Event::Apply(o.clone()));
                truth.insert((NAMESPACES[*n].to_owned(), name(*i)), o);
            }
            Step::Delete(n, i) => {
                let key = (NAMESPACES[*n].to_owned(), name(*i));
                if let Some(o) = truth.remove(&key) {
                    mirror.event(&Event::Delete(o));
                }
            }
            Step::Relist(objs) => {
                mirror.event(&Event::<K>::Init);
                truth.clear();
                for (n, i, l, p) in objs {
                    let o = make(NAMESPACES[*n], name(*i), l, p);
                    mirror.event(&Event::InitApply(o.clone()));
                    truth.insert((NAMESPACES[*n].to_owned(), name(*i)), o);
                }
                mirror.event(&Event::<K>::InitDone);
            }
        }
    }
    (mirror, truth)
}

fn pod(ns: &str, name: String, labels: &Labels, _: &[usize]) -> Pod {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name, "labels": labels}}))
        .expect("pod")
}

fn service(ns: &str, name: String, selector: &Labels, _: &[usize]) -> Service {
    serde_json::from_value(
        json!({"metadata": {"namespace": ns, "name": name}, "spec": {"selector": selector}}),
    )
    .expect("service")
}

fn endpoints(ns: &str, name: String, _: &Labels, pods: &[usize]) -> Endpoints {
    let (ready, not_ready) = pods.split_at(pods.len() / 2);
    let addr = |p: &usize| json!({"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": format!("o{p}")}});
    let ready: Vec<_> = ready.iter().map(addr).collect();
    let not_ready: Vec<_> = not_ready.iter().map(addr).collect();
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name},
        "subsets": [{"addresses": ready, "notReadyAddresses": not_ready}]}))
    .expect("endpoints")
}

proptest! {
    #[test]
    fn pods_by_label_agree_with_a_scan(steps in steps(), sel in labels()) {
        let (mirror, truth) = run(LabelIndex::default(), &steps, pod);
        let full = Selector::from_map(&sel);
        for ns in NAMESPACES {
            let scan: Vec<String> = truth
                .iter()
                .filter(|((n, _), p)| n == ns && full.matches(&p.metadata.labels.clone().unwrap_or_default()))
                .map(|((_, name), _)| name.clone())
                .collect();
            prop_assert_eq!(mirror.live.selected(ns, &sel), scan);
        }
    }

    #[test]
    fn services_by_selector_agree_with_a_scan(steps in steps(), pod_labels in labels()) {
        let (mirror, truth) = run(ServiceIndex::default(), &steps, service);
        for ns in NAMESPACES {
            // The scan services_for_pod did before the index.
            let scan: BTreeSet<String> = truth
                .iter()
                .filter(|((n, _), _)| n == ns)
                .filter_map(|((_, name), svc)| {
                    let sel = svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())?;
                    Selector::from_map(sel).matches(&pod_labels).then(|| name.clone())
                })
                .collect();
            prop_assert_eq!(mirror.live.selecting(ns, &pod_labels), scan);
        }
    }

    #[test]
    fn endpoints_by_pod_agree_with_a_scan(steps in steps()) {
        let (mirror, truth) = run(TargetIndex::default(), &steps, endpoints);
        for ns in NAMESPACES {
            for p in 0..6 {
                let pod = format!("o{p}");
                let scan: BTreeSet<String> = truth
                    .iter()
                    .filter(|((n, _), ep)| {
                        n == ns && ep.subsets.iter().flatten().flat_map(|s| {
                            s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten())
                        })
                        .filter_map(|a| a.target_ref.as_ref())
                        .any(|r| r.name.as_deref() == Some(pod.as_str()))
                    })
                    .map(|((_, name), _)| name.clone())
                    .collect();
                let listed: BTreeSet<String> = mirror.live.listing(ns, &pod).map(|l| l.iter().cloned().collect()).unwrap_or_default();
                prop_assert_eq!(listed, scan);
            }
        }
    }

    #[test]
    fn one_label_index_agrees_with_a_scan(steps in steps(), value in prop::sample::select(vec!["1", "2", "3"])) {
        let (mirror, truth) = run(LabelIndex::only("app"), &steps, pod);
        let sel: Labels = [("app".to_owned(), value.to_owned())].into();
        for ns in NAMESPACES {
            let scan: Vec<String> = truth
                .iter()
                .filter(|((n, _), p)| n == ns && p.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&value.to_owned()))
                .map(|((_, name), _)| name.clone())
                .collect();
            prop_assert_eq!(mirror.live.selected(ns, &sel), scan);
        }
    }
}

#[test]
fn a_relist_replaces_only_when_done() {
    let mut m = Mirror::new(LabelIndex::default());
    let l: Labels = [("app".to_owned(), "web".to_owned())].into();
    m.event(&Event::Apply(pod("a", "old".into(), &l, &[])));
    m.event(&Event::<Pod>::Init);
    m.event(&Event::InitApply(pod("a", "new".into(), &l, &[])));
    assert_eq!(m.live.selected("a", &l), ["old"]);
    m.event(&Event::<Pod>::InitDone);
    assert_eq!(m.live.selected("a", &l), ["new"]);
}

proptest! {
    /// Posting lists agree with a `BTreeSet` across the small/large switch both ways.
    #[test]
    fn names_agree_with_a_set(ops in prop::collection::vec((any::<bool>(), 0..80usize), 0..300)) {
        let mut names = Names::default();
        let mut truth = BTreeSet::new();
        for (insert, n) in ops {
            let name = format!("p{n}");
            if insert {
                names.insert(&name);
                truth.insert(name);
            } else {
                names.remove(&name);
                truth.remove(&name);
            }
            prop_assert_eq!(names.len(), truth.len());
            prop_assert!(names.iter().eq(truth.iter()));
            if truth.len() < SMALL / 2 {
                prop_assert!(matches!(names, Names::Small(_)));
            }
        }
    }
}
