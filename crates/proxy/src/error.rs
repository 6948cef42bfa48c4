//! The proxy's error type.

/// What failed in the proxy: talking netlink, a batch the kernel refused, or the watches.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {op}")]
    Netlink {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nf_tables refused the transaction at `{op}`")]
    Kernel {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nf_tables sent no acknowledgement for the transaction")]
    NoAck,
    #[error("an nf_tables attribute grew past 64 KiB")]
    AttributeTooLong,
    #[error("the in-memory nf_tables fake refused `{op}`: {reason}")]
    Fake { op: String, reason: &'static str },
    #[error("setting sysctl {path}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening a netlink route socket")]
    RouteSocket(#[source] std::io::Error),
    #[error("rtnetlink: {op}")]
    Route {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("the netlink thread is gone")]
    Thread,
    #[error("the {resource} cache stopped before it was ready")]
    CacheGone { resource: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
