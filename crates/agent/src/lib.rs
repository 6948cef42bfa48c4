//! berth's node agent. It runs inside the node's network namespace, watches the API for the
//! pods bound to its node and runs them; start from [`sandbox`], which gives each pod its own
//! network namespace on the node bridge with an IP from the node's pod CIDR.

pub mod console;
pub mod env;
pub mod error;
mod events;
mod hostfiles;
pub mod init;
pub mod layout;
mod node;
pub mod oci;
mod oom;
mod pods;
mod probe;
pub mod pull;
pub mod runtime;
pub mod sandbox;
mod server;
pub mod shim;
pub mod volumes;
mod worker;

pub use node::detect_ip;
pub use pods::{Config, NetworkGate, PodNetworkGate, run};

pub use error::{Error, Result};
