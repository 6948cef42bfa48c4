//! berth's service proxy, kube-proxy's replacement: watches Services and EndpointSlices
//! through the kube client, computes the nf_tables ruleset they call for ([`desired`]),
//! the difference to what the kernel holds ([`diff`]) and applies it as one netlink
//! transaction ([`Apply`]). Start from [`run`]; [`cleanup`] removes everything.

pub mod apply;
pub mod conntrack;
pub mod desired;
pub mod error;
pub mod external;
pub mod health;
pub mod metrics;
pub mod nft;
pub mod render;
pub mod ruleset;
mod run;
pub mod sysctl;
pub mod tracker;
pub mod view;

pub use apply::{Apply, Fake, Netlink};
pub use desired::{Node, desired, desired_from};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use ruleset::{Op, Ruleset, diff};
pub use run::{Config, cleanup, cleanup_routes, run};
pub use tracker::Tracker;
pub use view::{ServiceView, SliceView};
