//! The kernel edge: `table ip berth-netpol` replaced whole or updated by [`Op`]s, each in
//! one nf_tables transaction, in the calling thread's network namespace.

use berth_proxy::nft::{Msg, Socket};

use crate::desired::TABLE;
use crate::error::{Error, Result};
use crate::render;
use crate::ruleset::{Op, Ruleset};

fn nft(op: &'static str) -> impl FnOnce(berth_proxy::Error) -> Error {
    move |source| Error::Nft { op, source }
}

/// A netfilter socket in the namespace it was opened in.
pub struct Netlink {
    sock: Socket,
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        Ok(Netlink {
            sock: Socket::open().map_err(nft("opening a netlink socket"))?,
        })
    }

    /// Makes the table exactly `r`: deletes the old one and builds `r` in one transaction,
    /// so packets see the old rules or the new ones, never none.
    pub fn replace(&mut self, r: &Ruleset) -> Result<()> {
        let exists = self.sock.has_table(TABLE).map_err(nft("listing tables"))?;
        let mut batch = self.sock.batch(TABLE);
        if exists {
            batch.push(Msg::DelTable);
        }
        for m in render::create(r) {
            batch.push(m);
        }
        self.sock
            .commit(batch)
            .map_err(nft("replacing table ip berth-netpol"))
    }

    /// Applies `ops` (from [`crate::diff`]) in one transaction.
    pub fn update(&mut self, ops: &[Op]) -> Result<()> {
        let mut batch = self.sock.batch(TABLE);
        for m in render::messages(ops) {
            batch.push(m);
        }
        self.sock
            .commit(batch)
            .map_err(nft("updating table ip berth-netpol"))
    }

    /// Deletes the table; returns whether there was one.
    pub fn delete_table(&mut self) -> Result<bool> {
        if !self.sock.has_table(TABLE).map_err(nft("listing tables"))? {
            return Ok(false);
        }
        let mut batch = self.sock.batch(TABLE);
        batch.push(Msg::DelTable);
        self.sock
            .commit(batch)
            .map_err(nft("deleting table ip berth-netpol"))?;
        Ok(true)
    }
}
