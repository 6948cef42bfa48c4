//! The agent's error type: one variant per thing that can fail, with the name of the link,
//! namespace, command or file involved.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;

use ipnet::Ipv4Net;

/// Everything the agent's operations can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("setting {name}")]
    Sysctl {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the pod's shared namespace file {}", path.display())]
    SharedNamespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("could not open a netlink socket")]
    NetlinkSocket(#[source] io::Error),
    #[error("netlink: {op} failed")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("could not start a namespace thread")]
    Thread(#[source] io::Error),
    #[error("the namespace thread panicked")]
    ThreadPanicked,
    #[error("could not open network namespace {}", path.display())]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not enter network namespace {netns}")]
    EnterNetns {
        netns: String,
        #[source]
        source: nix::Error,
    },
    #[error("link {name} does not exist")]
    LinkNotFound { name: String },
    #[error("pod uid {uid:?} has fewer than 12 hex digits")]
    InvalidUid { uid: String },
    #[error("network namespace {netns} already exists")]
    SandboxExists { netns: String },
    #[error("network namespace {netns} is gone")]
    SandboxMissing { netns: String },
    #[error("the PID namespace holder of {netns}: {message}")]
    Pause { netns: String, message: String },
    #[error("naming the namespaces of process {pid} (pod network namespace {netns}) again")]
    RenameNetns {
        netns: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("pod IP {ip} is not in the bridge's subnet {subnet}")]
    IpOutsideSubnet { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("IPAM state {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("IPAM state {} is not valid", path.display())]
    StateCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("IPAM state {} is for pod CIDR {found}, not {expected}", path.display())]
    CidrMismatch {
        path: PathBuf,
        found: String,
        expected: Ipv4Net,
    },
    #[error("pod CIDR {cidr} has no free IP left")]
    Exhausted { cidr: Ipv4Net },
    #[error("failed to connect to localhost:{port} inside namespace {netns:?}")]
    Connect {
        netns: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("the agent's server could not listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("making the agent's serving certificate")]
    Certificate(#[source] rcgen::Error),
    #[error("the cluster CA given to the agent is not a PEM certificate")]
    ClientCa,
    #[error("the agent's TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("the agent's client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
