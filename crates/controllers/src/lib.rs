//! What berth's controllers should write, computed as kube-controller-manager's Endpoints,
//! EndpointSlice, EndpointSlice mirroring, ReplicaSet and Deployment controllers compute it.
//! Pure functions only; the watch and write loops that call them live elsewhere.

pub mod deployment;
pub mod endpoints;
pub mod endpointslices;
mod owners;
mod pods;
pub mod replicaset;
#[cfg(test)]
mod testing;

pub use endpoints::{desired_endpoints, endpoints_equal};
pub use endpointslices::{
    DEFAULT_MAX_ENDPOINTS_PER_SLICE, SliceChanges, desired_slices, mirrored_slices,
};
