//! The crate's one error type: what failed while binding, serving, forwarding or watching.

use std::net::SocketAddr;

/// Everything the DNS server can fail at; per-query problems never surface here (a malformed
/// query gets FORMERR, an unreachable upstream SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr} ({transport})")]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A listening socket failed while serving.
    #[error("listener on {addr} failed")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The watch of a resource type ended (the kube client is gone).
    #[error("the watch of {resource} ended")]
    WatchEnded { resource: &'static str },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
