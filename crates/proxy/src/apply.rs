//! The edge that touches the kernel: [`Apply`] reads what `table ip berth` holds and applies
//! a list of [`Op`]s as one transaction. [`Netlink`] does it over nf_tables netlink in the
//! network namespace it was opened in; [`Fake`] keeps the state in memory for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;

use crate::error::Result;
use crate::nft::{Expr, Msg, RawExpr, Socket};
use crate::render::{self, TABLE};
use crate::ruleset::{Op, Ruleset};

/// Reads and changes the proxy's table.
pub trait Apply {
    /// What the table holds now (empty if there is no table). Never changes anything.
    fn read(&mut self) -> Result<Ruleset>;
    /// Applies `ops` (as [`crate::diff`] orders them) atomically: all or nothing.
    fn apply(&mut self, ops: &[Op]) -> Result<()>;
    /// Deletes the UDP conntrack entries of flows DNATed to `endpoints`; returns how many.
    fn delete_udp_flows(&mut self, endpoints: &BTreeSet<SocketAddrV4>) -> Result<usize>;
    /// Deletes the ClientIP affinity entries of the chains in `touched` whose slot lost its
    /// endpoint or is gone in `current` ([`render::stale_affinity`]); returns how many.
    fn prune_affinity(
        &mut self,
        touched: &BTreeMap<u32, BTreeSet<u32>>,
        current: &Ruleset,
    ) -> Result<usize>;
    /// Replaces the rules of the `lb-firewall` chain with `rules` in one transaction.
    fn set_firewall(&mut self, rules: &[Vec<Expr>]) -> Result<()>;
}

/// nf_tables over netlink. The table's fixed skeleton (sets, base chains, dispatch rules) is
/// created in the same transaction as the first change if any part of it is missing.
pub struct Netlink {
    sock: Socket,
    mark: u32,
    /// Chains found by the last read; `None` before any read.
    chains: Option<Vec<String>>,
    skeleton_complete: bool,
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace. `mark` is the
    /// packet mark bit that asks for masquerade (kube-proxy's default is `1 << 14`).
    pub fn open(mark: u32) -> Result<Netlink> {
        Ok(Netlink {
            sock: Socket::open()?,
            mark,
            chains: None,
            skeleton_complete: false,
        })
    }

    /// Commits `msgs` in one batch, preceded by whatever of the skeleton is missing.
    fn commit_with_skeleton(&mut self, msgs: Vec<Msg>) -> Result<()> {
        if self.chains.is_none() {
            self.read()?;
        }
        let mut batch = self.sock.batch(TABLE);
        if !self.skeleton_complete {
            let have = self.chains.clone().unwrap_or_default();
            for m in render::skeleton(self.mark, &have) {
                batch.push(m);
            }
        }
        for m in msgs {
            batch.push(m);
        }
        self.sock.commit(batch)?;
        if !self.skeleton_complete {
            self.skeleton_complete = true;
            self.chains = Some(
                render::chains(self.mark)
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
            );
        }
        Ok(())
    }

    /// Deletes the whole table, if there is one.
    pub fn delete_table(&mut self) -> Result<bool> {
        if !self.sock.has_table(TABLE)? {
            return Ok(false);
        }
        let mut batch = self.sock.batch(TABLE);
        batch.push(crate::nft::Msg::DelTable);
        self.sock.commit(batch)?;
        self.chains = None;
        self.skeleton_complete = false;
        Ok(true)
    }
}

impl Apply for Netlink {
    fn read(&mut self) -> Result<Ruleset> {
        let mut out = Ruleset::default();
        let chains = self.sock.dump_chains(TABLE)?;
        let names: Vec<String> = chains.iter().map(|c| c.name.clone()).collect();
        let sets = if chains.is_empty() {
            Vec::new()
        } else {
            self.sock.dump_sets(TABLE)?
        };
        self.skeleton_complete = render::chains(self.mark)
            .iter()
            .all(|f| names.contains(&f.name))
            && render::sets().iter().all(|s| sets.contains(&s.name));
        self.chains = Some(names);
        if chains.is_empty() {
            return Ok(out);
        }
        let rules = self.sock.dump_rules(TABLE)?;
        let mut by_chain: std::collections::HashMap<&str, Vec<&[RawExpr]>> =
            std::collections::HashMap::new();
        for r in &rules {
            by_chain.entry(r.chain.as_str()).or_default().push(&r.exprs);
        }
        for c in &chains {
            let rules = by_chain
                .get(c.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if let Some(sc) = render::read_chain(&c.name, rules) {
                out.chains.insert(c.name.clone(), sc);
            }
        }
        for set in &sets {
            if let Some(elems) = self.sock.dump_elems(TABLE, set)? {
                render::read_elems(&mut out, set, &elems);
            }
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<()> {
        self.commit_with_skeleton(render::messages(ops))
    }

    fn set_firewall(&mut self, rules: &[Vec<Expr>]) -> Result<()> {
        let chain = || crate::external::FIREWALL.to_owned();
        let mut msgs = vec![Msg::FlushChain { name: chain() }];
        msgs.extend(rules.iter().map(|exprs| Msg::NewRule {
            chain: chain(),
            exprs: exprs.clone(),
        }));
        self.commit_with_skeleton(msgs)
    }

    fn delete_udp_flows(&mut self, endpoints: &BTreeSet<SocketAddrV4>) -> Result<usize> {
        crate::conntrack::delete_udp_flows(&mut self.sock, endpoints)
    }

    fn prune_affinity(
        &mut self,
        touched: &BTreeMap<u32, BTreeSet<u32>>,
        current: &Ruleset,
    ) -> Result<usize> {
        let Some(elems) = self.sock.dump_elems(TABLE, render::AFFINITY)? else {
            return Ok(0);
        };
        let stale = render::stale_affinity(&elems, touched, current);
        if stale.is_empty() {
            return Ok(0);
        }
        let n = stale.len();
        let mut batch = self.sock.batch(TABLE);
        batch.push(crate::nft::Msg::DestroyElems {
            set: render::AFFINITY.into(),
            elems: stale,
        });
        self.sock.commit(batch)?;
        Ok(n)
    }
}

/// The kernel's table in memory: applies a batch to a copy and keeps it only if every
/// operation succeeded, as the kernel rolls a failed transaction back.
#[derive(Debug, Default)]
pub struct Fake {
    pub state: Ruleset,
    /// Every batch applied, for assertions on what changed.
    pub batches: Vec<Vec<Op>>,
    /// Every set of endpoints whose UDP flows were to be deleted.
    pub udp_flushes: Vec<BTreeSet<SocketAddrV4>>,
    /// The `lb-firewall` rules last set.
    pub firewall: Vec<Vec<Expr>>,
}

impl Apply for Fake {
    fn read(&mut self) -> Result<Ruleset> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, ops: &[Op]) -> Result<()> {
        let mut next = self.state.clone();
        next.apply_all(ops)?;
        self.state = next;
        self.batches.push(ops.to_vec());
        Ok(())
    }

    fn delete_udp_flows(&mut self, endpoints: &BTreeSet<SocketAddrV4>) -> Result<usize> {
        self.udp_flushes.push(endpoints.clone());
        Ok(0)
    }

    fn prune_affinity(
        &mut self,
        _touched: &BTreeMap<u32, BTreeSet<u32>>,
        _current: &Ruleset,
    ) -> Result<usize> {
        // The packet path never runs here, so there are no affinity entries.
        Ok(0)
    }

    fn set_firewall(&mut self, rules: &[Vec<Expr>]) -> Result<()> {
        self.firewall = rules.to_vec();
        Ok(())
    }
}
