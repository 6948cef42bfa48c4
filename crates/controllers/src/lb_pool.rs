//! LoadBalancer IP allocation, the job MetalLB does: a pool of address ranges, one address per
//! LoadBalancer Service, written to `status.loadBalancer.ingress`. The pool itself is pure; the
//! controller derives "in use" from Service statuses, so nothing else has to be persisted.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;

/// Why an address could not be handed out; the text is the Event message users see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("no LoadBalancer address pool is configured (berth server --lb-pool)")]
    NoPool,
    #[error("the LoadBalancer address pool {pool} is exhausted")]
    Exhausted { pool: String },
    #[error("requested loadBalancerIP {ip} is not in the pool {pool}")]
    NotInPool { ip: Ipv4Addr, pool: String },
    #[error("requested loadBalancerIP {ip} is already in use by another Service")]
    Taken { ip: Ipv4Addr },
    #[error("invalid loadBalancerIP {0:?}")]
    BadRequest(String),
}

/// A malformed `--lb-pool` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address range {0:?}: expected FIRST-LAST (10.0.0.10-10.0.0.50) or a CIDR (10.0.0.0/28)"
)]
pub struct RangeError(String);

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    first: u32,
    last: u32,
}

impl FromStr for Range {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let bad = || RangeError(s.to_owned());
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let first: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
            let last: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
            let (first, last) = (u32::from(first), u32::from(last));
            if first > last {
                return Err(bad());
            }
            return Ok(Range { first, last });
        }
        if let Some((ip, len)) = s.split_once('/') {
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
            let len: u32 = len.parse().map_err(|_| bad())?;
            if len > 32 {
                return Err(bad());
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let first = u32::from(ip) & mask;
            return Ok(Range {
                first,
                last: first | !mask,
            });
        }
        let ip: Ipv4Addr = s.parse().map_err(|_| bad())?;
        Ok(Range {
            first: ip.into(),
            last: ip.into(),
        })
    }
}

impl Range {
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first)
    }

    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.last)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            Ipv4Addr::from(self.first),
            Ipv4Addr::from(self.last)
        )
    }
}

/// The configured pool: any number of ranges, searched in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<Range>,
}

impl Pool {
    pub fn new(ranges: Vec<Range>) -> Self {
        Self { ranges }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.ranges.iter().any(|r| (r.first..=r.last).contains(&n))
    }

    fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(Range::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Picks an address: the requested one if it is in the pool and free, else the first free.
    pub fn allocate(
        &self,
        requested: Option<&str>,
        used: &BTreeSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr, PoolError> {
        if self.ranges.is_empty() {
            return Err(PoolError::NoPool);
        }
        if let Some(req) = requested.filter(|r| !r.is_empty()) {
            let ip: Ipv4Addr = req
                .parse()
                .map_err(|_| PoolError::BadRequest(req.to_owned()))?;
            if !self.contains(ip) {
                return Err(PoolError::NotInPool {
                    ip,
                    pool: self.describe(),
                });
            }
            if used.contains(&ip) {
                return Err(PoolError::Taken { ip });
            }
            return Ok(ip);
        }
        for r in &self.ranges {
            for n in r.first..=r.last {
                let ip = Ipv4Addr::from(n);
                if !used.contains(&ip) {
                    return Ok(ip);
                }
            }
        }
        Err(PoolError::Exhausted {
            pool: self.describe(),
        })
    }
}

/// Whether this controller is responsible for `svc`: type LoadBalancer and no other
/// implementation named in `spec.loadBalancerClass`.
pub fn is_ours(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none_or(|c| c == CLASS)
}

/// The loadBalancerClass berth answers to (besides Services that name none).
pub const CLASS: &str = "berth.dev/lb-pool";

/// The ingress IPs a Service's status holds.
pub fn assigned(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.split(',').map(|r| r.parse().expect("range")).collect())
    }

    fn used(ips: &[&str]) -> BTreeSet<Ipv4Addr> {
        ips.iter().map(|i| i.parse().expect("ip")).collect()
    }

    fn check(p: &Pool, requested: Option<&str>, taken: &[&str], expected: Result<&str, PoolError>) {
        let got = p.allocate(requested, &used(taken)).map(|ip| ip.to_string());
        assert_eq!(got, expected.map(str::to_owned));
    }

    #[test]
    fn allocation() {
        let p = pool("10.100.10.10-10.100.10.12,10.100.20.0/31");
        check(&p, None, &[], Ok("10.100.10.10"));
        check(&p, None, &["10.100.10.10"], Ok("10.100.10.11"));
        check(
            &p,
            None,
            &["10.100.10.10", "10.100.10.11", "10.100.10.12"],
            Ok("10.100.20.0"),
        );
        check(
            &p,
            None,
            &[
                "10.100.10.10",
                "10.100.10.11",
                "10.100.10.12",
                "10.100.20.0",
                "10.100.20.1",
            ],
            Err(PoolError::Exhausted {
                pool: "10.100.10.10-10.100.10.12,10.100.20.0-10.100.20.1".into(),
            }),
        );
        check(&p, Some("10.100.10.12"), &[], Ok("10.100.10.12"));
        check(
            &p,
            Some("10.100.10.12"),
            &["10.100.10.12"],
            Err(PoolError::Taken {
                ip: Ipv4Addr::new(10, 100, 10, 12),
            }),
        );
        assert!(matches!(
            p.allocate(Some("1.2.3.4"), &used(&[])),
            Err(PoolError::NotInPool { .. })
        ));
        assert!(matches!(
            p.allocate(Some("bogus"), &used(&[])),
            Err(PoolError::BadRequest(_))
        ));
        check(&Pool::default(), None, &[], Err(PoolError::NoPool));
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(
            "10.0.0.1-10.0.0.2".parse::<Range>().map(|r| r.to_string()),
            Ok("10.0.0.1-10.0.0.2".into())
        );
        assert_eq!(
            "10.0.0.5/30".parse::<Range>().map(|r| r.to_string()),
            Ok("10.0.0.4-10.0.0.7".into())
        );
        assert!("10.0.0.2-10.0.0.1".parse::<Range>().is_err());
        assert!("x".parse::<Range>().is_err());
        assert!("10.0.0.0/33".parse::<Range>().is_err());
    }
}
