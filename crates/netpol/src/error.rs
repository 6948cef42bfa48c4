//! The NetworkPolicy enforcer's error type.

/// What failed: programming nf_tables (through the proxy's netlink layer) or the watches.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nf_tables: {op}")]
    Nft {
        op: &'static str,
        #[source]
        source: berth_proxy::Error,
    },
    #[error("the netlink thread is gone")]
    Thread,
    #[error("the {resource} cache stopped before it was ready")]
    CacheGone { resource: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
