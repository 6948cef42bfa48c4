//! A thin typed nf_tables layer over a netlink socket: [`Batch`] builds one atomic
//! transaction (BEGIN, one sequence number per message, END), [`Socket::commit`] sends it and
//! maps a kernel error back to the operation that failed, and the `dump_*` calls read one
//! table back (chains, sets, elements, rules). Only the `ip` family is spoken.
//!
//! The messages and expressions are encoded by hand (`wire`, `expr`): the typed parts of
//! netlink-packet-netfilter cover too little of nf_tables to build our rules with.

pub mod expr;
pub(crate) mod wire;

use std::os::fd::AsFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
};
use netlink_sys::{Socket as NlSocket, protocols::NETLINK_NETFILTER};

pub use expr::{Data, Expr, RawExpr, Reg, Verdict};
use wire::{FAMILY_IPV4, SUBSYS_NFTABLES, Writer, attr, attr_str, attrs};

use crate::error::{Error, Result};

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// Elements per NEWSETELEM/DELSETELEM message, so the nested list stays under 64 KiB.
const ELEMS_PER_MESSAGE: usize = 256;

#[derive(Debug, Clone, Copy)]
#[repr(u16)]
enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    DelChain = 5,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
    NewSet = 9,
    GetSet = 10,
    DelSet = 11,
    NewSetElem = 12,
    GetSetElem = 13,
    DelSetElem = 14,
    /// Like DELSETELEM, but an absent element is not an error (Linux 6.3+).
    DestroySetElem = 30,
}

fn msg_type(t: MsgType) -> u16 {
    (SUBSYS_NFTABLES << 8) | t as u16
}

/// `NF_INET_*` hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// A base chain's hook, priority and type (`"nat"` or `"filter"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    pub kind: &'static str,
}

/// A named set or map. `key_len` is the padded length of the (concatenated) key;
/// `data_len` is `None` for plain sets, `Some(0)` for verdict maps, else the data length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub key_len: u32,
    /// `nft`'s datatype id for the key (concatenations: 6 bits per field), for printing.
    pub key_type: u32,
    pub data: SetData,
    pub timeout: bool,
    /// Updated from the packet path (`dynset`).
    pub dynamic: bool,
}

/// What a set maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetData {
    None,
    Verdict,
    /// Data of `len` bytes with `nft`'s datatype id.
    Value {
        len: u32,
        ty: u32,
    },
}

/// One element: the key and, in maps, its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    pub key: Vec<u8>,
    pub data: Option<Data>,
}

/// One operation of a transaction; each is one netlink message (element lists may be
/// split across several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    NewTable,
    DelTable,
    NewChain {
        name: String,
        base: Option<BaseChain>,
    },
    DelChain {
        name: String,
    },
    /// Deletes every rule of a chain (DELRULE without a handle).
    FlushChain {
        name: String,
    },
    /// Appends a rule to a chain.
    NewRule {
        chain: String,
        exprs: Vec<Expr>,
    },
    NewSet(SetSpec),
    /// Deletes a set no rule refers to any more.
    DelSet {
        name: String,
    },
    NewElems {
        set: String,
        elems: Vec<Elem>,
    },
    DelElems {
        set: String,
        elems: Vec<Elem>,
    },
    /// Deletes the elements that are still there (the kernel may expire them meanwhile).
    DestroyElems {
        set: String,
        elems: Vec<Elem>,
    },
}

impl Msg {
    fn describe(&self) -> String {
        match self {
            Msg::NewTable => "add table".into(),
            Msg::DelTable => "delete table".into(),
            Msg::NewChain { name, .. } => format!("add chain {name}"),
            Msg::DelChain { name } => format!("delete chain {name}"),
            Msg::FlushChain { name } => format!("flush chain {name}"),
            Msg::NewRule { chain, .. } => format!("add rule to chain {chain}"),
            Msg::NewSet(s) => format!("add set {}", s.name),
            Msg::DelSet { name } => format!("delete set {name}"),
            Msg::NewElems { set, elems } => format!("add {} element(s) to {set}", elems.len()),
            Msg::DelElems { set, elems } | Msg::DestroyElems { set, elems } => {
                format!("delete {} element(s) from {set}", elems.len())
            }
        }
    }
}

/// One nf_tables transaction for the table `table`: applied whole or not at all.
pub struct Batch {
    table: String,
    w: Writer,
    next_seq: u32,
    set_id: u32,
    /// What each sequence number did, for error messages.
    ops: Vec<(u32, String)>,
}

impl Batch {
    pub fn new(table: &str, first_seq: u32) -> Batch {
        let mut w = Writer::default();
        // res_id of the batch messages names the subsystem.
        w.message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            SUBSYS_NFTABLES,
            |_| {},
        );
        Batch {
            table: table.to_owned(),
            w,
            next_seq: first_seq.wrapping_add(1),
            set_id: 1,
            ops: Vec::new(),
        }
    }

    /// Number of operations so far (element lists count once per message).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn push(&mut self, msg: Msg) {
        match msg {
            Msg::NewElems { set, elems } if elems.len() > ELEMS_PER_MESSAGE => {
                for chunk in elems.chunks(ELEMS_PER_MESSAGE) {
                    self.push_one(Msg::NewElems {
                        set: set.clone(),
                        elems: chunk.to_vec(),
                    });
                }
            }
            Msg::DelElems { set, elems } if elems.len() > ELEMS_PER_MESSAGE => {
                for chunk in elems.chunks(ELEMS_PER_MESSAGE) {
                    self.push_one(Msg::DelElems {
                        set: set.clone(),
                        elems: chunk.to_vec(),
                    });
                }
            }
            Msg::DestroyElems { set, elems } if elems.len() > ELEMS_PER_MESSAGE => {
                for chunk in elems.chunks(ELEMS_PER_MESSAGE) {
                    self.push_one(Msg::DestroyElems {
                        set: set.clone(),
                        elems: chunk.to_vec(),
                    });
                }
            }
            msg => self.push_one(msg),
        }
    }

    fn push_one(&mut self, msg: Msg) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.ops.push((seq, msg.describe()));
        let table = self.table.clone();
        let create = NLM_F_REQUEST | NLM_F_CREATE;
        let (ty, flags) = match &msg {
            Msg::NewTable => (MsgType::NewTable, create),
            Msg::DelTable => (MsgType::DelTable, NLM_F_REQUEST),
            Msg::NewChain { .. } => (MsgType::NewChain, create),
            Msg::DelChain { .. } => (MsgType::DelChain, NLM_F_REQUEST),
            Msg::FlushChain { .. } => (MsgType::DelRule, NLM_F_REQUEST),
            Msg::NewRule { .. } => (MsgType::NewRule, create | NLM_F_APPEND),
            Msg::NewSet(_) => (MsgType::NewSet, create),
            Msg::DelSet { .. } => (MsgType::DelSet, NLM_F_REQUEST),
            Msg::NewElems { .. } => (MsgType::NewSetElem, create),
            Msg::DelElems { .. } => (MsgType::DelSetElem, NLM_F_REQUEST),
            Msg::DestroyElems { .. } => (MsgType::DestroySetElem, NLM_F_REQUEST),
        };
        let set_id = self.set_id;
        if matches!(msg, Msg::NewSet(_)) {
            self.set_id += 1;
        }
        self.w
            .message(msg_type(ty), flags, seq, FAMILY_IPV4, 0, |w| {
                write_body(w, &table, &msg, set_id)
            });
    }

    /// The datagram, what each sequence number does, and the END message's number.
    fn finish(mut self) -> Result<Finished> {
        if self.w.overflow {
            return Err(Error::AttributeTooLong);
        }
        let end = self.next_seq;
        self.w.message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            SUBSYS_NFTABLES,
            |_| {},
        );
        // Only the last operation asks for an acknowledgement: errors are reported for
        // every failing message anyway, and all replies are queued before send returns.
        if let Some(&(last, _)) = self.ops.last() {
            set_ack(&mut self.w.buf, last);
        }
        Ok((self.w.buf, self.ops, end))
    }
}

/// A finished batch: the datagram, each operation by sequence number, the END's number.
type Finished = (Vec<u8>, Vec<(u32, String)>, u32);

/// Sets NLM_F_ACK on the message with sequence number `seq`.
fn set_ack(buf: &mut [u8], seq: u32) {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
        let s = u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
        if s == seq {
            let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]) | NLM_F_ACK;
            buf[off + 6..off + 8].copy_from_slice(&flags.to_ne_bytes());
            return;
        }
        off += (len as usize).next_multiple_of(4).max(16);
    }
}

fn write_body(w: &mut Writer, table: &str, msg: &Msg, set_id: u32) {
    match msg {
        Msg::NewTable | Msg::DelTable => {
            w.str(1, table);
            if matches!(msg, Msg::NewTable) {
                w.u32(2, 0);
            }
        }
        Msg::NewChain { name, base } => {
            w.str(1, table);
            w.str(3, name);
            if let Some(b) = base {
                w.nest(4, |w| {
                    w.u32(1, b.hook as u32);
                    w.i32(2, b.priority);
                });
                w.u32(5, 1); // policy accept
                w.str(7, b.kind);
            }
        }
        Msg::DelChain { name } => {
            w.str(1, table);
            w.str(3, name);
        }
        Msg::FlushChain { name } => {
            w.str(1, table);
            w.str(2, name);
        }
        Msg::NewRule { chain, exprs } => {
            w.str(1, table);
            w.str(2, chain);
            w.nest(4, |w| exprs.iter().for_each(|e| e.write(w)));
        }
        Msg::NewSet(s) => write_set(w, table, s, set_id),
        Msg::DelSet { name } => {
            w.str(1, table);
            w.str(2, name);
        }
        Msg::NewElems { set, elems }
        | Msg::DelElems { set, elems }
        | Msg::DestroyElems { set, elems } => {
            w.str(1, table);
            w.str(2, set);
            w.nest(3, |w| {
                for e in elems {
                    w.nest(1, |w| {
                        w.nest(1, |w| w.put(1, &e.key));
                        if let (Msg::NewElems { .. }, Some(d)) = (msg, &e.data) {
                            w.nest(2, |w| d.write(w));
                        }
                    });
                }
            });
        }
    }
}

fn write_set(w: &mut Writer, table: &str, s: &SetSpec, set_id: u32) {
    const MAP: u32 = 0x8;
    const TIMEOUT: u32 = 0x10;
    const EVAL: u32 = 0x20;
    let mut flags = 0;
    if s.data != SetData::None {
        flags |= MAP;
    }
    if s.timeout {
        flags |= TIMEOUT;
    }
    if s.dynamic {
        flags |= EVAL;
    }
    w.str(1, table);
    w.str(2, &s.name);
    w.u32(3, flags);
    w.u32(4, s.key_type);
    w.u32(5, s.key_len);
    match s.data {
        SetData::None => {}
        SetData::Verdict => w.u32(6, 0xffff_ff00),
        SetData::Value { len, ty } => {
            w.u32(6, ty);
            w.u32(7, len);
        }
    }
    w.u32(10, set_id);
}

/// A chain as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    pub base: bool,
}

/// A rule as dumped: its chain, handle and expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub exprs: Vec<RawExpr>,
}

/// An `NETLINK_NETFILTER` socket bound in the calling thread's network namespace (a socket
/// stays in the namespace it was made in, whatever thread uses it later).
pub struct Socket {
    sock: NlSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> Result<Socket> {
        let io = |source| Error::Netlink {
            op: "open socket",
            source,
        };
        let mut sock = NlSocket::new(NETLINK_NETFILTER).map_err(io)?;
        sock.bind_auto().map_err(io)?;
        // Our acks need no copy of the request.
        sock.set_cap_ack(true).map_err(io)?;
        sock.set_ext_ack(true).map_err(io)?;
        // A 10,000-Service batch is a few MiB in one datagram; dumps are read as they come.
        // Forcing the sizes needs CAP_NET_ADMIN; without it the plain options are capped by
        // net.core.{w,r}mem_max, and a batch too big for that fails with EMSGSIZE (reported
        // by `commit` as "send batch").
        use nix::sys::socket::{setsockopt, sockopt};
        let fd = sock.as_fd();
        let (snd, rcv): (usize, usize) = (64 << 20, 8 << 20);
        if setsockopt(&fd, sockopt::SndBufForce, &snd).is_err() {
            let _ = setsockopt(&fd, sockopt::SndBuf, &snd);
        }
        if setsockopt(&fd, sockopt::RcvBufForce, &rcv).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &rcv);
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Socket {
            sock,
            seq,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    pub fn batch(&mut self, table: &str) -> Batch {
        let b = Batch::new(table, self.seq);
        self.seq = self.seq.wrapping_add(1 << 20);
        b
    }

    /// Sends the batch as one datagram and waits for the kernel's verdict on it. On failure
    /// nothing was applied; the error names the first operation the kernel refused.
    pub fn commit(&mut self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (buf, ops, _end) = batch.finish()?;
        let last = ops.last().map(|(s, _)| *s);
        self.sock.send(&buf, 0).map_err(|source| Error::Netlink {
            op: "send batch",
            source,
        })?;
        let mut first_error: Option<(u32, i32)> = None;
        let mut acked = false;
        while !acked {
            self.recv()?;
            for r in wire::replies(&self.buf) {
                if r.ty != NLMSG_ERROR || r.payload.len() < 4 {
                    continue;
                }
                let code =
                    i32::from_ne_bytes([r.payload[0], r.payload[1], r.payload[2], r.payload[3]]);
                if code != 0 && first_error.is_none_or(|(s, _)| r.seq < s) {
                    first_error = Some((r.seq, code));
                }
                if Some(r.seq) == last {
                    acked = true;
                }
            }
            // The kernel handles the batch inside our send, so every reply is queued by now:
            // once nothing more is, an error aborted the batch (its final ack may be missing).
            if !acked && !self.more_queued()? {
                if first_error.is_some() {
                    break;
                }
                return Err(Error::NoAck);
            }
        }
        match first_error {
            None => Ok(()),
            Some((seq, code)) => {
                let op = ops
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(|| format!("message {seq}"));
                Err(Error::Kernel {
                    op,
                    source: std::io::Error::from_raw_os_error(-code),
                })
            }
        }
    }

    fn recv(&mut self) -> Result<()> {
        self.buf.clear();
        self.buf.reserve(1 << 20);
        self.sock
            .recv(&mut self.buf, 0)
            .map_err(|source| Error::Netlink {
                op: "receive",
                source,
            })?;
        Ok(())
    }

    fn more_queued(&mut self) -> Result<bool> {
        let mut probe: Vec<u8> = Vec::with_capacity(16);
        match self
            .sock
            .recv(&mut probe, libc_flags::MSG_PEEK | libc_flags::MSG_DONTWAIT)
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(source) => Err(Error::Netlink {
                op: "receive",
                source,
            }),
        }
    }

    /// Sends a dump request and returns the payloads (after `nfgenmsg`) of every reply of
    /// type `want`. `Ok(None)` when the kernel answers ENOENT (no such table or set).
    fn dump(
        &mut self,
        ty: MsgType,
        want: MsgType,
        body: impl FnOnce(&mut Writer),
    ) -> Result<Option<Vec<Vec<u8>>>> {
        self.dump_raw(msg_type(ty), msg_type(want), body)
    }

    /// A dump of any netfilter subsystem: `ty` and `want` are full message types.
    pub(crate) fn dump_raw(
        &mut self,
        ty: u16,
        want: u16,
        body: impl FnOnce(&mut Writer),
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut w = Writer::default();
        w.message(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, FAMILY_IPV4, 0, body);
        self.sock.send(&w.buf, 0).map_err(|source| Error::Netlink {
            op: "send dump",
            source,
        })?;
        let mut out = Vec::new();
        loop {
            self.recv()?;
            for r in wire::replies(&self.buf) {
                if r.seq != seq {
                    continue;
                }
                match r.ty {
                    NLMSG_DONE => return Ok(Some(out)),
                    NLMSG_ERROR => {
                        let code = r
                            .payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok(Some(out));
                        }
                        if -code == 2 {
                            return Ok(None);
                        }
                        return Err(Error::Kernel {
                            op: format!("dump (message type {ty:#x})"),
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                    t if t == want => {
                        out.push(r.payload.get(4..).unwrap_or_default().to_vec());
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends one request of any netfilter subsystem and waits for its acknowledgement;
    /// returns the kernel's errno (0 on success).
    pub(crate) fn request(&mut self, ty: u16, body: impl FnOnce(&mut Writer)) -> Result<i32> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut w = Writer::default();
        w.message(ty, NLM_F_REQUEST | NLM_F_ACK, seq, FAMILY_IPV4, 0, body);
        self.sock.send(&w.buf, 0).map_err(|source| Error::Netlink {
            op: "send request",
            source,
        })?;
        loop {
            self.recv()?;
            for r in wire::replies(&self.buf) {
                if r.seq == seq && r.ty == NLMSG_ERROR {
                    let code = r
                        .payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    return Ok(-code);
                }
            }
        }
    }

    /// Whether the table exists.
    pub fn has_table(&mut self, table: &str) -> Result<bool> {
        let tables = self
            .dump(MsgType::GetTable, MsgType::NewTable, |_| {})?
            .unwrap_or_default();
        Ok(tables
            .iter()
            .any(|t| attr_str(t, 1).as_deref() == Some(table)))
    }

    /// The table's chains.
    pub fn dump_chains(&mut self, table: &str) -> Result<Vec<ChainInfo>> {
        let msgs = self
            .dump(MsgType::GetChain, MsgType::NewChain, |w| w.str(1, table))?
            .unwrap_or_default();
        Ok(msgs
            .iter()
            .filter(|m| attr_str(m, 1).as_deref() == Some(table))
            .filter_map(|m| {
                Some(ChainInfo {
                    name: attr_str(m, 3)?,
                    base: attr(m, 4).is_some(),
                })
            })
            .collect())
    }

    /// The names of the table's sets.
    pub fn dump_sets(&mut self, table: &str) -> Result<Vec<String>> {
        let msgs = self
            .dump(MsgType::GetSet, MsgType::NewSet, |w| w.str(1, table))?
            .unwrap_or_default();
        Ok(msgs
            .iter()
            .filter(|m| attr_str(m, 1).as_deref() == Some(table))
            .filter_map(|m| attr_str(m, 2))
            .collect())
    }

    /// The elements of one set; `None` if the set does not exist.
    pub fn dump_elems(&mut self, table: &str, set: &str) -> Result<Option<Vec<Elem>>> {
        let Some(msgs) = self.dump(MsgType::GetSetElem, MsgType::NewSetElem, |w| {
            w.str(1, table);
            w.str(2, set);
        })?
        else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for m in &msgs {
            let Some(list) = attr(m, 3) else { continue };
            for (_, e) in attrs(list) {
                let Some(key) = attr(e, 1).and_then(|k| attr(k, 1)) else {
                    continue;
                };
                let data = attr(e, 2).and_then(|d| {
                    if let Some(v) = attr(d, 1) {
                        Some(Data::Value(v.to_vec()))
                    } else {
                        attr(d, 2).and_then(Verdict::parse).map(Data::Verdict)
                    }
                });
                out.push(Elem {
                    key: key.to_vec(),
                    data,
                });
            }
        }
        Ok(Some(out))
    }

    /// The table's rules, in chain order.
    pub fn dump_rules(&mut self, table: &str) -> Result<Vec<RuleInfo>> {
        let msgs = self
            .dump(MsgType::GetRule, MsgType::NewRule, |w| w.str(1, table))?
            .unwrap_or_default();
        Ok(msgs
            .iter()
            .filter(|m| attr_str(m, 1).as_deref() == Some(table))
            .filter_map(|m| {
                let exprs = attr(m, 4)
                    .map(|list| {
                        attrs(list)
                            .map(|(_, e)| RawExpr {
                                name: attr_str(e, 1).unwrap_or_default(),
                                data: attr(e, 2).unwrap_or_default().to_vec(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(RuleInfo {
                    chain: attr_str(m, 2)?,
                    handle: attr(m, 3)
                        .and_then(|h| Some(u64::from_be_bytes(h.get(..8)?.try_into().ok()?)))
                        .unwrap_or(0),
                    exprs,
                })
            })
            .collect())
    }
}

/// The two `recv` flags we need, without a libc dependency.
mod libc_flags {
    pub(super) const MSG_PEEK: i32 = 0x2;
    pub(super) const MSG_DONTWAIT: i32 = 0x40;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_numbers_each_message_and_acks_only_the_last() {
        let mut b = Batch::new("berth", 100);
        b.push(Msg::NewTable);
        b.push(Msg::NewChain {
            name: "c".into(),
            base: None,
        });
        let (buf, ops, end) = b.finish().expect("well-formed");
        let r = wire::replies(&buf);
        let seqs: Vec<u32> = r.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![100, 101, 102, 103]);
        assert_eq!(end, 103);
        assert_eq!(ops.len(), 2);
        assert_eq!(r[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(r[3].ty, NFNL_MSG_BATCH_END);
        let flags = |i: usize| {
            let off: usize = r[..i].iter().map(|m| m.payload.len() + 16).sum();
            u16::from_ne_bytes([buf[off + 6], buf[off + 7]])
        };
        assert_eq!(flags(1) & NLM_F_ACK, 0);
        assert_eq!(flags(2) & NLM_F_ACK, NLM_F_ACK);
    }

    #[test]
    fn large_element_lists_are_split() {
        let mut b = Batch::new("berth", 1);
        let elems = (0..1000u32)
            .map(|i| Elem {
                key: i.to_ne_bytes().to_vec(),
                data: None,
            })
            .collect();
        b.push(Msg::NewElems {
            set: "s".into(),
            elems,
        });
        assert_eq!(b.len(), 4);
        assert!(b.finish().is_ok());
    }
}
