//! The host name and interface addresses whoami reports, read from procfs so they are those
//! of the caller's UTS and network namespaces (a Pod's, under the agent).
//!
//! IPv4 addresses come from the local routes in `/proc/net/fib_trie` (one `/32 host LOCAL`
//! entry per address), IPv6 ones from `/proc/net/if_inet6`; berth forbids `unsafe`, which rules
//! out calling `getifaddrs` directly. Unlike Go's per-interface order, IPv4 addresses come first
//! (loopback first, then ascending) and IPv6 ones follow in interface-index order.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host name as Go's `os.Hostname` reads it; empty if unreadable (whoami still answers).
pub(crate) fn hostname() -> String {
    // procfs reads never wait on a disk, so reading on the async thread is fine.
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) => name.trim_end().to_owned(),
        Err(error) => {
            tracing::debug!(%error, "cannot read the host name");
            String::new()
        }
    }
}

/// Every address of every interface; an unreadable source contributes nothing.
pub(crate) fn addresses() -> Vec<IpAddr> {
    let v4 = read("/proc/net/fib_trie")
        .map(|t| parse_fib_trie(&t))
        .unwrap_or_default();
    let v6 = read("/proc/net/if_inet6")
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default();
    v4.into_iter()
        .map(IpAddr::V4)
        .chain(v6.into_iter().map(IpAddr::V6))
        .collect()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .inspect_err(|error| tracing::debug!(path, %error, "cannot read"))
        .ok()
}

/// The local IPv4 addresses in a fib_trie dump: a leaf line `|-- A.B.C.D` followed by a
/// `/32 host LOCAL` line. The dump lists the main and local tables, hence the set.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut leaf = None;
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.parse::<Ipv4Addr>().ok();
        } else if line == "/32 host LOCAL" {
            found.extend(leaf);
        } else if !line.starts_with('/') {
            leaf = None;
        }
    }
    // Loopback first, as interface order would put `lo` first.
    let (mut ordered, rest): (Vec<_>, Vec<_>) = found.into_iter().partition(|a| a.is_loopback());
    ordered.extend(rest);
    ordered
}

/// The addresses in `/proc/net/if_inet6` (hex address, hex ifindex, prefix, scope, flags,
/// name per line), ordered by interface index; malformed lines are skipped.
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut found: Vec<(u32, Ipv6Addr)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = u128::from_str_radix(fields.next()?, 16).ok()?;
            let index = u32::from_str_radix(fields.next()?, 16).ok()?;
            Some((index, Ipv6Addr::from(addr)))
        })
        .collect();
    found.sort_by_key(|(index, _)| *index);
    found.into_iter().map(|(_, addr)| addr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.1.0.0/24 2 0 2
        |-- 10.1.0.7
           /32 host LOCAL
        |-- 10.1.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.1.0.0/24 2 0 2
        |-- 10.1.0.7
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
";

    #[test]
    fn fib_trie_gives_local_addresses_once() {
        let expected: Vec<Ipv4Addr> = vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 1, 0, 7)];
        assert_eq!(parse_fib_trie(FIB_TRIE), expected);
        assert!(parse_fib_trie("garbage\n|-- nope\n/32 host LOCAL\n").is_empty());
    }

    #[test]
    fn if_inet6_orders_by_interface() {
        let text = "\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
zz short
";
        let expected: Vec<Ipv6Addr> = vec![
            Ipv6Addr::LOCALHOST,
            "fe80::fc:ff:fe00:1".parse().expect("test address"),
        ];
        assert_eq!(parse_if_inet6(text), expected);
    }

    #[test]
    fn this_host_has_loopback() {
        assert!(addresses().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
