//! Netlink framing for nf_tables, written by hand: attribute (TLV) writing with nesting, the
//! `nlmsghdr` + `nfgenmsg` header of each message, and walking the attributes of a reply.
//! netlink-packet-core's `NlasIterator` does the reading; writing is a few lines here.

use netlink_packet_core::{NLA_F_NESTED, NLA_TYPE_MASK, NlaBuffer, NlasIterator};

/// `NFNL_SUBSYS_NFTABLES`, the high byte of every nf_tables message type.
pub(crate) const SUBSYS_NFTABLES: u16 = 10;
/// `NFPROTO_IPV4`: our table is `ip berth`.
pub(crate) const FAMILY_IPV4: u8 = 2;
const NLMSG_HDRLEN: usize = 16;

/// An attribute writer over one growing buffer (a whole batch is one buffer).
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
    /// Set when a nested attribute grew past the 16-bit length field; the batch is refused.
    pub(crate) overflow: bool,
}

impl Writer {
    pub(crate) fn put(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        if len > usize::from(u16::MAX) {
            self.overflow = true;
            return;
        }
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// nf_tables integers are big-endian on the wire (`NLA_BE32`).
    pub(crate) fn u32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, kind: u16, v: i32) {
        self.put(kind, &v.to_be_bytes());
    }

    /// A NUL-terminated string (`NLA_NUL_STRING`).
    pub(crate) fn str(&mut self, kind: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(kind, &v);
    }

    pub(crate) fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Writer)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        body(self);
        let len = self.buf.len() - start;
        if len > usize::from(u16::MAX) {
            self.overflow = true;
            return;
        }
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    /// Appends one netlink message: `nlmsghdr`, `nfgenmsg` (version 0, `res_id`), then
    /// whatever `body` writes. `ty` is the full 16-bit message type.
    pub(crate) fn message(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
        body: impl FnOnce(&mut Writer),
    ) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; NLMSG_HDRLEN]);
        self.buf[start + 4..start + 6].copy_from_slice(&ty.to_ne_bytes());
        self.buf[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
        self.buf[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        body(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// The attributes of one level, as `(type without flags, value)`; malformed tails are dropped.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    NlasIterator::new(buf)
        .map_while(Result::ok)
        .map(|nla: NlaBuffer<&[u8]>| {
            let kind = nla.kind() & NLA_TYPE_MASK;
            let len = usize::from(nla.length());
            let inner = nla.into_inner();
            (kind, inner.get(4..len).unwrap_or_default())
        })
}

/// The first attribute of type `kind` at this level.
pub(crate) fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

pub(crate) fn attr_str(buf: &[u8], kind: u16) -> Option<String> {
    attr(buf, kind).map(|v| {
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        String::from_utf8_lossy(v).into_owned()
    })
}

pub(crate) fn attr_u32(buf: &[u8], kind: u16) -> Option<u32> {
    attr(buf, kind).and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
}

/// One reply message: header fields and the payload after `nfgenmsg` (or the raw payload for
/// `NLMSG_ERROR`/`NLMSG_DONE`).
pub(crate) struct Reply<'a> {
    pub(crate) ty: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

/// Splits a datagram into netlink messages.
pub(crate) fn replies(mut buf: &[u8]) -> Vec<Reply<'_>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        out.push(Reply {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        let next = len.next_multiple_of(4).min(buf.len());
        buf = &buf[next..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip() {
        let mut w = Writer::default();
        w.nest(4, |w| {
            w.str(1, "berth");
            w.u32(2, 7);
        });
        let (kind, inner) = attrs(&w.buf).next().expect("well-formed");
        assert_eq!(kind, 4);
        assert_eq!(attr_str(inner, 1).as_deref(), Some("berth"));
        assert_eq!(attr_u32(inner, 2), Some(7));
    }

    #[test]
    fn messages_are_framed_and_split_back() {
        let mut w = Writer::default();
        w.message(0x0a00, 1, 5, FAMILY_IPV4, 0, |w| w.str(1, "t"));
        w.message(0x0a03, 1, 6, FAMILY_IPV4, 0, |_| {});
        let r = replies(&w.buf);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].ty, r[0].seq), (0x0a00, 5));
        assert_eq!(attr_str(&r[0].payload[4..], 1).as_deref(), Some("t"));
        assert_eq!((r[1].ty, r[1].seq), (0x0a03, 6));
    }
}
