//! berth's NetworkPolicy enforcement on a node: watches NetworkPolicies, Pods and Namespaces
//! through the kube client, computes the nf_tables table that enforces them for the pods on
//! this node ([`desired`], pure), the difference to what it last wrote ([`diff`]), and
//! applies it as one netlink transaction ([`Netlink`]) through the proxy's nf_tables layer.
//! Start from [`run`]; [`cleanup`] removes the table.

pub mod apply;
pub mod desired;
pub mod error;
pub mod policy;
pub mod render;
pub mod ruleset;
mod run;

pub use apply::Netlink;
pub use desired::{Scope, TABLE, desired};
pub use error::{Error, Result};
pub use policy::PodView;
pub use ruleset::{Op, Ruleset, diff};
pub use run::{Config, cleanup, run};
