//! ClusterIP and NodePort allocation. The sets live in memory behind one mutex, rebuilt from the
//! stored Services at start, so an address is never handed out twice within this server.
//! (Several API servers sharing one etcd would need the allocation in the store, as
//! kube-apiserver keeps its bitmaps there; berth runs one API server per store today.)

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// Why an address or port could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    IpOutOfRange { ip: Ipv4Addr, range: Ipv4Net },
    #[error("provided IP is already allocated")]
    IpTaken,
    #[error("range is full")]
    IpsExhausted,
    #[error("provided port is not in the valid range. The range of valid ports is {lo}-{hi}")]
    PortOutOfRange { lo: u16, hi: u16 },
    #[error("provided port is already allocated")]
    PortTaken,
    #[error("range is full")]
    PortsExhausted,
}

/// Service IPs from one IPv4 CIDR; the network and broadcast addresses are never handed out.
#[derive(Debug)]
pub struct ClusterIps {
    range: Ipv4Net,
    used: HashSet<u32>,
    cursor: u32,
}

impl ClusterIps {
    pub fn new(range: Ipv4Net) -> Self {
        // Start dynamic allocation past the first 16 addresses, which people pick by hand
        // (kubernetes = .1, DNS = .10); kube-apiserver likewise prefers the upper band.
        Self {
            range: range.trunc(),
            used: HashSet::new(),
            cursor: 16,
        }
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(u32::from(self.range.network()))?;
        (self.range.contains(&ip) && off != 0 && ip != self.range.broadcast()).then_some(off)
    }

    fn size(&self) -> u32 {
        let host_bits = 32 - u32::from(self.range.prefix_len());
        if host_bits >= 32 {
            u32::MAX
        } else {
            1u32 << host_bits
        }
    }

    /// Marks `ip` as used by the caller.
    pub fn allocate(&mut self, ip: Ipv4Addr) -> Result<(), AllocError> {
        let off = self.offset(ip).ok_or(AllocError::IpOutOfRange {
            ip,
            range: self.range,
        })?;
        if !self.used.insert(off) {
            return Err(AllocError::IpTaken);
        }
        Ok(())
    }

    /// Hands out a free address.
    pub fn allocate_next(&mut self) -> Result<Ipv4Addr, AllocError> {
        let size = self.size();
        if size <= 2 || self.used.len() as u64 >= u64::from(size - 2) {
            return Err(AllocError::IpsExhausted);
        }
        for _ in 0..size {
            let off = self.cursor % size;
            self.cursor = self.cursor.wrapping_add(1);
            if off == 0 || off == size - 1 {
                continue;
            }
            if self.used.insert(off) {
                return Ok(Ipv4Addr::from(u32::from(self.range.network()) + off));
            }
        }
        Err(AllocError::IpsExhausted)
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(off) = self.offset(ip) {
            self.used.remove(&off);
        }
    }
}

/// Node ports from a range such as 30000-32767.
#[derive(Debug)]
pub struct NodePorts {
    range: RangeInclusive<u16>,
    used: HashSet<u16>,
    /// Seeds the random choice of a free port.
    random: std::collections::hash_map::RandomState,
    draws: u64,
}

impl NodePorts {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            used: HashSet::new(),
            random: std::collections::hash_map::RandomState::new(),
            draws: 0,
        }
    }

    pub fn allocate(&mut self, port: u16) -> Result<(), AllocError> {
        if !self.range.contains(&port) {
            return Err(AllocError::PortOutOfRange {
                lo: *self.range.start(),
                hi: *self.range.end(),
            });
        }
        if !self.used.insert(port) {
            return Err(AllocError::PortTaken);
        }
        Ok(())
    }

    /// A free port picked at random, as kube-apiserver does: first from the upper part of the
    /// range, keeping the lowest `offset` ports (16 to 128) for Services that ask for a fixed
    /// port (KEP-3668), then from anywhere.
    pub fn allocate_next(&mut self) -> Result<u16, AllocError> {
        use std::hash::BuildHasher;
        let (lo, hi) = (u32::from(*self.range.start()), u32::from(*self.range.end()));
        let size = hi - lo + 1;
        let offset = (size / 32).clamp(16, 128).min(size - 1);
        self.draws += 1;
        let draw = self.random.hash_one(self.draws);
        for (band_lo, band_hi) in [(lo + offset, hi), (lo, hi)] {
            let band = band_hi - band_lo + 1;
            let start = u32::try_from(draw % u64::from(band)).unwrap_or(0);
            for i in 0..band {
                let p = band_lo + (start + i) % band;
                let Ok(p) = u16::try_from(p) else { continue };
                if self.used.insert(p) {
                    return Ok(p);
                }
            }
        }
        Err(AllocError::PortsExhausted)
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("cidr")
    }

    #[test]
    fn cluster_ips_are_unique_and_in_range() {
        let mut a = ClusterIps::new(net("10.96.0.0/28"));
        a.allocate(Ipv4Addr::new(10, 96, 0, 1)).expect("free");
        assert_eq!(
            a.allocate(Ipv4Addr::new(10, 96, 0, 1)),
            Err(AllocError::IpTaken)
        );
        assert!(matches!(
            a.allocate(Ipv4Addr::new(10, 0, 0, 1)),
            Err(AllocError::IpOutOfRange { .. })
        ));
        assert!(a.allocate(Ipv4Addr::new(10, 96, 0, 0)).is_err());
        assert!(a.allocate(Ipv4Addr::new(10, 96, 0, 15)).is_err());
        let mut seen = HashSet::new();
        while let Ok(ip) = a.allocate_next() {
            assert!(seen.insert(ip));
            assert_ne!(ip, Ipv4Addr::new(10, 96, 0, 1));
        }
        assert_eq!(seen.len(), 13);
        a.release(Ipv4Addr::new(10, 96, 0, 7));
        assert_eq!(a.allocate_next(), Ok(Ipv4Addr::new(10, 96, 0, 7)));
        let e = AllocError::IpOutOfRange {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            range: net("10.96.0.0/12"),
        };
        assert_eq!(
            e.to_string(),
            "provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
    }

    #[test]
    fn node_ports_are_unique_and_in_range() {
        let mut p = NodePorts::new(30000..=30002);
        p.allocate(30001).expect("free");
        assert_eq!(p.allocate(30001), Err(AllocError::PortTaken));
        assert_eq!(
            p.allocate(40000),
            Err(AllocError::PortOutOfRange {
                lo: 30000,
                hi: 30002
            })
        );
        let got: HashSet<u16> = [p.allocate_next(), p.allocate_next()]
            .into_iter()
            .map(|r| r.expect("free"))
            .collect();
        assert_eq!(got, HashSet::from([30000, 30002]));
        assert_eq!(p.allocate_next(), Err(AllocError::PortsExhausted));
    }

    #[test]
    fn node_ports_are_random_and_spare_the_static_band() {
        let mut p = NodePorts::new(30000..=32767);
        let ports: Vec<u16> = (0..50).map(|_| p.allocate_next().expect("free")).collect();
        // The static band is the lowest 86 ports (2768 / 32).
        assert!(ports.iter().all(|&x| x >= 30086), "{ports:?}");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        assert_ne!(ports, sorted, "not handed out in order");
        sorted.dedup();
        assert_eq!(sorted.len(), 50);
        // Once the dynamic band is full, the static band is used too.
        let mut small = NodePorts::new(30000..=30019);
        let all: HashSet<u16> = (0..20)
            .map(|_| small.allocate_next().expect("free"))
            .collect();
        assert_eq!(all.len(), 20);
        assert_eq!(small.allocate_next(), Err(AllocError::PortsExhausted));
    }
}
