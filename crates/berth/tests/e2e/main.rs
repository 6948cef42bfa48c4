//! End-to-end tests: the real kubectl against a real `berth server`, once with the embedded
//! store and once with etcd. One test binary, a module per feature; the harness is
//! `berth-testkit`.

mod adopt;
mod agent;
mod apiproxy;
mod builtin;
mod clients;
mod controllers;
mod dataplane;
mod dns;
mod errors;
mod events;
mod explain;
mod gc;
mod hardening;
mod images;
mod ingress;
mod kubectl;
mod kubelet;
mod lifecycle;
mod netpol;
mod pidns;
mod raw;
mod registry;
mod restart;
mod serviceaccounts;
mod singlenode;
mod ssa;
mod statefulsets;
mod tutorials;
mod watch;
mod workloads;

use berth_testkit::{Backend, Cluster};

fn cluster(backend: Backend) -> Cluster {
    Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_berth")), backend)
}

/// Defines `mod $name { fn embedded(); fn etcd(); }` running `$body` against each backend.
macro_rules! on_both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn embedded() {
                let c = $crate::cluster(berth_testkit::Backend::Embedded);
                ($body)(&c);
            }
            #[test]
            fn etcd() {
                let c = $crate::cluster(berth_testkit::Backend::Etcd);
                ($body)(&c);
            }
        }
    };
}
pub(crate) use on_both_stores;
