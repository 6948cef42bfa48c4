//! Typed nf_tables expressions (the kernel's `nft_expr_type`s we use) and their netlink
//! encoding. Hand-written: netlink-packet-netfilter 0.4 types only payload, meta, cmp,
//! lookup, immediate and bitwise; numgen, ct, nat, masq, counter, fib and reject are raw there.

use super::wire::Writer;

/// A register: `VERDICT` or one of the sixteen 32-bit registers (`NFT_REG32_00 + n`).
/// Concatenated keys occupy consecutive 32-bit registers, each field padded to 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u32);

impl Reg {
    pub const VERDICT: Reg = Reg(0);
    pub const fn r32(n: u32) -> Reg {
        Reg(8 + n)
    }
}

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// `enum nft_meta_keys` (the ones we read or write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark = 3,
    /// The output interface's name, 16 bytes (IFNAMSIZ) padded with NULs.
    OifName = 7,
    L4Proto = 16,
}

/// `enum nft_cmp_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    /// Orderings compare the register's bytes as written (big-endian values order as numbers).
    Lt = 2,
    Lte = 3,
    Gt = 4,
    Gte = 5,
}

/// `enum nft_verdicts` plus the target chain of jump/goto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }

    /// Decodes `NFTA_DATA_VERDICT`'s content.
    pub(crate) fn parse(buf: &[u8]) -> Option<Verdict> {
        let code = super::wire::attr_u32(buf, 1)? as i32;
        let chain = super::wire::attr_str(buf, 2);
        Some(match (code, chain) {
            (0, _) => Verdict::Drop,
            (1, _) => Verdict::Accept,
            (-5, _) => Verdict::Return,
            (-3, Some(c)) => Verdict::Jump(c),
            (-4, Some(c)) => Verdict::Goto(c),
            _ => return None,
        })
    }
}

/// `struct nft_data` as written in attributes (`NFTA_DATA_VALUE` or `NFTA_DATA_VERDICT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

impl Data {
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            Data::Value(v) => w.put(1, v),
            Data::Verdict(v) => w.nest(2, |w| {
                w.i32(1, v.code());
                if let Some(c) = v.chain() {
                    w.str(2, c);
                }
            }),
        }
    }
}

/// `enum nft_reject_types` with the ICMP code where it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// ICMP destination unreachable with this code (3: port unreachable).
    Icmp(u8),
    TcpReset,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    Meta {
        key: MetaKey,
        dreg: Reg,
    },
    MetaSet {
        key: MetaKey,
        sreg: Reg,
    },
    Cmp {
        sreg: Reg,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Membership test, or a map lookup into `dreg` (the verdict register for vmaps).
    Lookup {
        set: String,
        sreg: Reg,
        dreg: Option<Reg>,
    },
    Immediate {
        dreg: Reg,
        data: Data,
    },
    /// `numgen random mod modulus` (host-endian u32 into `dreg`).
    NumgenRandom {
        dreg: Reg,
        modulus: u32,
    },
    /// `ct <key>` into `dreg` (`enum nft_ct_keys`: 0 state, 1 direction, 2 status, ...).
    Ct {
        key: u32,
        dreg: Reg,
    },
    /// IPv4 `dnat`/`snat` to the address (and port) held in registers.
    Nat {
        dnat: bool,
        addr: Reg,
        port: Option<Reg>,
    },
    Masquerade,
    Counter,
    /// `notrack`: the packet skips connection tracking (and so NAT).
    Notrack,
    /// `fib daddr type` into `dreg` (a u32 `RTN_*`).
    FibDaddrType {
        dreg: Reg,
    },
    Reject(Reject),
    /// Adds (or, `update`, refreshes the timeout of) the element `key` (`: data`) in a set
    /// from the packet path.
    Dynset {
        set: String,
        update: bool,
        key: Reg,
        data: Option<Reg>,
        timeout_ms: u64,
    },
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Ct { .. } => "ct",
            Expr::Nat { .. } => "nat",
            Expr::Masquerade => "masq",
            Expr::Counter => "counter",
            Expr::Notrack => "notrack",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Reject(_) => "reject",
            Expr::Dynset { .. } => "dynset",
        }
    }

    /// Writes `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }`.
    pub(crate) fn write(&self, w: &mut Writer) {
        w.nest(1, |w| {
            w.str(1, self.name());
            w.nest(2, |w| self.write_data(w));
        });
    }

    fn write_data(&self, w: &mut Writer) {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.u32(1, dreg.0);
                w.u32(2, *base as u32);
                w.u32(3, *offset);
                w.u32(4, *len);
            }
            Expr::Meta { key, dreg } => {
                w.u32(1, dreg.0);
                w.u32(2, *key as u32);
            }
            Expr::MetaSet { key, sreg } => {
                w.u32(2, *key as u32);
                w.u32(3, sreg.0);
            }
            Expr::Cmp { sreg, op, data } => {
                w.u32(1, sreg.0);
                w.u32(2, *op as u32);
                w.nest(3, |w| w.put(1, data));
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                w.u32(1, sreg.0);
                w.u32(2, dreg.0);
                w.u32(3, mask.len() as u32);
                w.nest(4, |w| w.put(1, mask));
                w.nest(5, |w| w.put(1, xor));
            }
            Expr::Lookup { set, sreg, dreg } => {
                w.str(1, set);
                w.u32(2, sreg.0);
                if let Some(d) = dreg {
                    w.u32(3, d.0);
                }
            }
            Expr::Immediate { dreg, data } => {
                w.u32(1, dreg.0);
                w.nest(2, |w| data.write(w));
            }
            Expr::NumgenRandom { dreg, modulus } => {
                w.u32(1, dreg.0);
                w.u32(2, *modulus);
                w.u32(3, 1);
                w.u32(4, 0);
            }
            Expr::Ct { key, dreg } => {
                w.u32(1, dreg.0);
                w.u32(2, *key);
            }
            Expr::Nat { dnat, addr, port } => {
                w.u32(1, u32::from(*dnat));
                w.u32(2, u32::from(super::wire::FAMILY_IPV4));
                w.u32(3, addr.0);
                w.u32(4, addr.0);
                if let Some(p) = port {
                    w.u32(5, p.0);
                    w.u32(6, p.0);
                }
            }
            Expr::Masquerade | Expr::Counter | Expr::Notrack => {}
            Expr::FibDaddrType { dreg } => {
                w.u32(1, dreg.0);
                // NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR
                w.u32(2, 3);
                w.u32(3, 1 << 1);
            }
            Expr::Dynset {
                set,
                update,
                key,
                data,
                timeout_ms,
            } => {
                w.str(1, set);
                w.u32(3, u32::from(*update));
                w.u32(4, key.0);
                if let Some(d) = data {
                    w.u32(5, d.0);
                }
                w.put(6, &timeout_ms.to_be_bytes());
            }
            Expr::Reject(r) => match r {
                Reject::Icmp(code) => {
                    w.u32(1, 0);
                    w.put(2, &[*code]);
                }
                Reject::TcpReset => w.u32(1, 1),
            },
        }
    }
}

/// What a dumped expression looked like: its name and raw `NFTA_EXPR_DATA`. Reading back
/// only needs a few fields (see [`RawExpr::numgen_modulus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExpr {
    pub name: String,
    pub data: Vec<u8>,
}

impl RawExpr {
    pub fn numgen_modulus(&self) -> Option<u32> {
        (self.name == "numgen")
            .then(|| super::wire::attr_u32(&self.data, 2))
            .flatten()
    }

    /// The timeout of a `dynset`, in milliseconds.
    pub fn dynset_timeout_ms(&self) -> Option<u64> {
        if self.name != "dynset" {
            return None;
        }
        let v = super::wire::attr(&self.data, 6)?;
        Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
    }

    /// The 4-byte value an `immediate` loads into a data register.
    pub fn immediate_value(&self) -> Option<Vec<u8>> {
        if self.name != "immediate" {
            return None;
        }
        let data = super::wire::attr(&self.data, 2)?;
        super::wire::attr(data, 1).map(<[u8]>::to_vec)
    }
}
