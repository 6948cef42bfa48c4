//! berth's NetworkPolicy enforcement on a node: watches NetworkPolicies, Pods and Namespaces
//! through the kube client, computes the nf_tables table that enforces them for the pods on
//! this node ([`desired`], pure), the difference to what it last wrote ([`diff`]), and
//! applies it as one netlink transaction ([`Netlink`]) through the proxy's nf_tables layer.
//! Start from [`run`]; [`cleanup`] removes the table.
//!
//! Two behaviours Kubernetes leaves to the implementation, decided here:
//! - **Established flows are kept when a policy tightens.** The documentation of
//!   NetworkPolicy defines which new connections are allowed, not what happens to open ones.
//!   The base chains accept `ct state established,related` before any pod's chain (as
//!   Calico's iptables and nftables data planes do), so replies pass and a connection opened
//!   while allowed keeps flowing until it ends or its conntrack entry expires; new
//!   connections see the new rules at once. To cut open flows, delete their conntrack entries
//!   in the node (`conntrack -D -d POD_IP`) or restart the pod.
//! - **A new pod's first moments.** The rules key pods by address, learnt from the Pod's
//!   status. The upstream documentation asks that a pod created after a policy is in force be
//!   filtered from its first instant, so in `berth server` the agent, once it has given a
//!   pod in a namespace with policies its address, reports it and waits for [`Programmed`]
//!   (a table that accounts for the pod is in the kernel) before starting its containers, as
//!   CNI plugins with policy do. The wait is bounded (a few seconds, then the agent starts
//!   the pod and says so in an event): an enforcer that is down does not stop pods running.
//!   `berth agent` alone beside another enforcer has no such gate.

pub mod apply;
pub mod desired;
pub mod error;
mod gate;
pub mod policy;
pub mod render;
pub mod ruleset;
mod run;

pub use apply::Netlink;
pub use desired::{Scope, TABLE, desired};
pub use error::{Error, Result};
pub use gate::Programmed;
pub use policy::PodView;
pub use ruleset::{Op, Ruleset, diff};
pub use run::{Config, cleanup, run};
