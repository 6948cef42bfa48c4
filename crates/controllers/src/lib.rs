//! berth's controllers, as kube-controller-manager runs them: Endpoints, EndpointSlices (and
//! their mirroring for selector-less Services), Deployments, ReplicaSets (and
//! ReplicationControllers), StatefulSets, DaemonSets, LoadBalancer IPs and garbage collection. They learn about the world only by watching the API and write only
//! through it, so they run against any cluster.
//!
//! The pure "what should exist" functions are the modules named after their objects; `sync`
//! holds the watch-and-write loops. Start from [`run`].

mod cache;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslices;
mod error;
pub mod gc;
pub mod history;
mod index;
pub mod lb_pool;
mod owners;
mod pods;
pub mod replicaset;
pub mod statefulset;
mod sync;
#[cfg(test)]
mod testing;

pub use endpoints::{desired_endpoints, endpoints_equal};
pub use endpointslices::{
    DEFAULT_MAX_ENDPOINTS_PER_SLICE, SliceChanges, desired_slices, mirrored_slices,
};
pub use error::{Error, Result};
pub use sync::{Config, run};
