//! What can go wrong while starting or running a built-in workload.

use std::net::SocketAddr;

/// A workload that could not start, or a command line that names none.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listening address")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install the SIGTERM handler")]
    Signal(#[source] std::io::Error),
    #[error("no workload named; expected one of: whoami, number-crunch")]
    MissingWorkload,
    #[error("unknown workload {0:?}; expected one of: whoami, number-crunch")]
    UnknownWorkload(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("invalid port {value:?}")]
    InvalidPort {
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
