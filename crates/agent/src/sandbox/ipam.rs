//! Pod IPs from the node's pod CIDR, one per pod uid, persisted in the agent's state directory
//! so a restarted agent never hands out an IP a running pod still holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file inside the state directory.
const FILE: &str = "ipam.json";

/// What is on disk: the CIDR it belongs to, the allocations, and the last IP handed out.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    cidr: String,
    /// Where the next search starts, so a released IP is reused as late as possible (as CNI's
    /// host-local plugin does with its last_reserved_ip), which keeps stale endpoints of a
    /// deleted pod from reaching a new one.
    last: Option<Ipv4Addr>,
    pods: BTreeMap<String, Ipv4Addr>,
}

/// The allocator. Every change is written (temp file + rename) before it is returned, so a
/// crash leaves either the old or the new state, never a torn file.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    cidr: Ipv4Net,
    state: State,
}

impl Ipam {
    /// Opens (or starts) the allocation state in `state_dir` for `cidr`, creating the directory.
    /// Fails with [`Error::CidrMismatch`] if the state there belongs to another CIDR.
    pub fn open(state_dir: &Path, cidr: Ipv4Net) -> Result<Ipam> {
        let cidr = cidr.trunc();
        let path = state_dir.join(FILE);
        let io_err = |source| Error::State {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_err)?;
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|source| Error::StateCorrupt {
                        path: path.clone(),
                        source,
                    })?;
                if state.cidr != cidr.to_string() {
                    return Err(Error::CidrMismatch {
                        path,
                        found: state.cidr,
                        expected: cidr,
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                cidr: cidr.to_string(),
                ..State::default()
            },
            Err(e) => return Err(io_err(e)),
        };
        Ok(Ipam { path, cidr, state })
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway: the CIDR's first host address, which the node bridge holds.
    pub fn gateway(&self) -> Ipv4Net {
        let first = u32::from(self.cidr.network()).saturating_add(1);
        Ipv4Net::new(first.into(), self.cidr.prefix_len()).unwrap_or(self.cidr)
    }

    /// The IP of `pod_uid`: the one it already holds, or a free one (never the network,
    /// gateway or broadcast address, never one another pod holds). Fails with
    /// [`Error::Exhausted`] when none is free.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.state.pods.get(pod_uid) {
            return Ok(*ip);
        }
        let gateway = self.gateway().addr();
        let hosts: Vec<Ipv4Addr> = self.cidr.hosts().filter(|ip| *ip != gateway).collect();
        let start = self
            .state
            .last
            .and_then(|last| hosts.iter().position(|ip| *ip == last))
            .map_or(0, |i| i + 1);
        let taken: std::collections::HashSet<Ipv4Addr> =
            self.state.pods.values().copied().collect();
        let ip = (0..hosts.len())
            .map(|i| hosts[(start + i) % hosts.len()])
            .find(|ip| !taken.contains(ip))
            .ok_or(Error::Exhausted { cidr: self.cidr })?;
        let previous = self.state.last.replace(ip);
        self.state.pods.insert(pod_uid.to_owned(), ip);
        if let Err(e) = self.save() {
            self.state.pods.remove(pod_uid);
            self.state.last = previous;
            return Err(e);
        }
        Ok(ip)
    }

    /// Frees the IP of `pod_uid` and returns it (`None` if it held none).
    pub fn release(&mut self, pod_uid: &str) -> Result<Option<Ipv4Addr>> {
        let Some(ip) = self.state.pods.remove(pod_uid) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.state.pods.insert(pod_uid.to_owned(), ip);
            return Err(e);
        }
        Ok(Some(ip))
    }

    /// The IP `pod_uid` holds, if any.
    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.state.pods.get(pod_uid).copied()
    }

    /// Every allocation, by pod uid.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.state.pods.iter().map(|(uid, ip)| (uid.as_str(), *ip))
    }

    fn save(&self) -> Result<()> {
        let io_err = |source| Error::State {
            path: self.path.clone(),
            source,
        };
        let bytes =
            serde_json::to_vec_pretty(&self.state).map_err(|source| Error::StateCorrupt {
                path: self.path.clone(),
                source,
            })?;
        let tmp = self.path.with_extension("json.tmp");
        // Pod IPs and uids are the node's business only: 0600 from creation.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(&bytes).map_err(io_err)?;
        // Data on disk before the rename makes it visible: otherwise a crash could leave an
        // empty file under the real name.
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, &self.path).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP")
    }

    #[test]
    fn skips_network_gateway_and_broadcast_until_exhausted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/29")).expect("open");
        assert_eq!(ipam.gateway(), cidr("10.244.0.1/29"));
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("pod-{i}")).expect("allocate"))
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|i| ip(&format!("10.244.0.{i}"))).collect();
        assert_eq!(got, want);
        assert!(matches!(
            ipam.allocate("pod-5"),
            Err(Error::Exhausted { .. })
        ));
        // Asking again for a pod that holds an IP is not a new allocation.
        assert_eq!(ipam.allocate("pod-0").expect("again"), ip("10.244.0.2"));
    }

    #[test]
    fn no_duplicates_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = Ipam::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        let a = first.allocate("a").expect("a");
        let b = first.allocate("b").expect("b");
        drop(first);
        let mut again = Ipam::open(dir.path(), cidr("10.244.0.0/24")).expect("reopen");
        assert_eq!(again.get("a"), Some(a));
        assert_eq!(again.allocate("b").expect("b"), b);
        let c = again.allocate("c").expect("c");
        assert!(c != a && c != b);
        assert_eq!(again.allocations().count(), 3);
        assert!(!dir.path().join("ipam.json.tmp").exists());
    }

    #[test]
    fn release_frees_and_reuses_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/29")).expect("open");
        let a = ipam.allocate("a").expect("a");
        assert_eq!(ipam.release("a").expect("release"), Some(a));
        assert_eq!(ipam.release("a").expect("release twice"), None);
        // The freed IP comes back only after the rest of the range was used.
        let next: Vec<Ipv4Addr> = ["b", "c", "d", "e", "f"]
            .iter()
            .map(|p| ipam.allocate(p).expect("allocate"))
            .collect();
        assert_eq!(next.last(), Some(&a));
        assert!(!next[..4].contains(&a));
        let reopened = Ipam::open(dir.path(), cidr("10.244.0.0/29")).expect("reopen");
        assert_eq!(reopened.get("a"), None);
        assert_eq!(reopened.get("f"), Some(a));
    }

    #[test]
    fn state_of_another_cidr_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/24")).expect("open");
        ipam.allocate("a").expect("a");
        assert!(matches!(
            Ipam::open(dir.path(), cidr("10.244.1.0/24")),
            Err(Error::CidrMismatch { .. })
        ));
    }
}
