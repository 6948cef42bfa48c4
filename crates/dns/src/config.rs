//! How the DNS server is set up: listen addresses, cluster domain, TTLs, upstreams and who may
//! recurse. `Config::default()` matches a stock cluster (`cluster.local`, CoreDNS's TTLs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::metrics::Metrics;

/// The server's settings; `Default` reads the host's `/etc/resolv.conf` for upstreams.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to answer, over both UDP and TCP (default `0.0.0.0:53`). Port 0 picks one port
    /// for UDP and uses the same for TCP.
    pub listen: Vec<SocketAddr>,
    /// UDP sockets per listen address (`SO_REUSEPORT`, the kernel spreads clients over them),
    /// each served by its own task so queries are answered on every core (default: CPUs).
    pub udp_sockets: usize,
    /// The cluster domain (`--cluster-domain`, default `cluster.local`).
    pub domain: String,
    /// TTL of positive answers from the cluster zone, in seconds (default 30).
    pub ttl: u32,
    /// TTL of negative answers (NXDOMAIN, no data) and the SOA minimum, in seconds (default 5).
    pub negative_ttl: u32,
    /// Resolvers for every name outside the cluster zone; empty answers SERVFAIL.
    pub upstream: Vec<SocketAddr>,
    /// How long one upstream gets before the next is tried.
    pub upstream_timeout: Duration,
    /// Clients that may have other names resolved (pod range, node range); everyone else gets
    /// REFUSED for names outside the cluster zone, so the server is never an open resolver.
    pub allow_recursion: Vec<IpNet>,
    /// Most answers the forwarding cache holds.
    pub cache_entries: usize,
    /// Longest an upstream answer is cached, whatever its TTL says.
    pub cache_max_ttl: u32,
    /// Where queries are counted; `Metrics::register` them in the binary's registry.
    pub metrics: Metrics,
    /// Set once the first lists are in the zone and the server answers; `berth server` prints "ready" and `/readyz` passes only
    /// after every part of the node has set its own.
    pub synced: std::sync::Arc<tokio::sync::SetOnce<()>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53)],
            udp_sockets: std::thread::available_parallelism().map_or(1, usize::from),
            domain: "cluster.local".to_owned(),
            ttl: 30,
            negative_ttl: 5,
            upstream: upstream_from_resolv_conf(Path::new("/etc/resolv.conf")),
            upstream_timeout: Duration::from_secs(2),
            allow_recursion: loopback(),
            cache_entries: 10_000,
            cache_max_ttl: 3600,
            metrics: Metrics::default(),
            synced: Default::default(),
        }
    }
}

/// 127.0.0.0/8 and ::1, the clients always allowed to recurse.
pub fn loopback() -> Vec<IpNet> {
    vec![
        IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
}

/// The `nameserver` lines of a resolv.conf file, on port 53; none if it cannot be read.
pub fn upstream_from_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

/// The `nameserver` addresses of resolv.conf text (glibc's syntax: comments with `#` or `;`).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // A scoped IPv6 address (`fe80::1%eth0`) is not a plain IpAddr; skip it.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\n;nameserver 1.1.1.1\n\
                    nameserver ::1\nnameserver fe80::1%eth0\noptions ndots:5\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse().expect("addr"),
                "[::1]:53".parse().expect("addr"),
            ]
        );
    }
}
