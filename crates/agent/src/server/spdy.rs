//! The SPDY/3.1 framing that port-forward streams travel in (the frames moby/spdystream, and so
//! client-go, speaks): a frame parser over a byte buffer, frame encoders for what the server
//! sends, and the zlib-compressed name/value header blocks, whose inflater is primed with the
//! protocol's fixed dictionary. No flow control: spdystream neither sends nor honours
//! WINDOW_UPDATE.

use std::collections::HashMap;

use bytes::{Buf, Bytes};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The dictionary SPDY/3 header compression starts from (protocol data from the draft).
const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// Flag on a data frame (and SYN_STREAM): the sender sends nothing more on the stream.
pub const FLAG_FIN: u8 = 1;
/// Frames larger than this are refused rather than buffered.
const MAX_FRAME: usize = 1 << 24;

/// Why the byte stream is not SPDY this server can follow.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("a {0} frame is too short")]
    Short(&'static str),
    #[error("the header block does not decompress")]
    Compression,
    #[error("the header block is malformed")]
    HeaderBlock,
}

/// A frame the server acts on; the rest are `Other`.
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: HashMap<String, String>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    Other,
}

/// Reads frames from the connection's bytes; keeps the header inflater, which spans the
/// whole connection.
pub struct Reader {
    buf: bytes::BytesMut,
    inflate: Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            buf: bytes::BytesMut::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl Reader {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `Ok(None)` until one has arrived.
    pub fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let flags = self.buf[4];
        let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > MAX_FRAME || self.buf.len() < 8 + len {
            return Ok(None);
        }
        self.buf.advance(8);
        let body = self.buf.split_to(len).freeze();
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: word & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let id = |what| {
            body.get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or(SpdyError::Short(what))
        };
        Ok(Some(match (word & 0xffff) as u16 {
            SYN_STREAM => {
                let stream = id("SYN_STREAM")?;
                let block = body.get(10..).ok_or(SpdyError::Short("SYN_STREAM"))?;
                let headers = self.headers(block)?;
                Frame::SynStream {
                    stream,
                    fin: flags & FLAG_FIN != 0,
                    headers,
                }
            }
            RST_STREAM => Frame::RstStream {
                stream: id("RST_STREAM")?,
            },
            PING => Frame::Ping { id: id("PING")? },
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    /// Inflates one header block (the stream continues from the previous block) and parses
    /// its 32-bit-length name/value pairs; several values of one name are NUL-separated, of
    /// which the first is kept.
    fn headers(&mut self, block: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        while !input.is_empty() {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.inflate.total_in();
            let res = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used.min(input.len())..];
            match res {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) => break,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|_| SpdyError::Compression)?;
                }
                Err(_) => return Err(SpdyError::Compression),
            }
        }
        parse_block(&out)
    }
}

fn parse_block(mut b: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
    let take = |b: &mut &[u8]| -> Result<Vec<u8>, SpdyError> {
        if b.len() < 4 {
            return Err(SpdyError::HeaderBlock);
        }
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let rest = &b[4..];
        let v = rest.get(..n).ok_or(SpdyError::HeaderBlock)?.to_vec();
        *b = &rest[n..];
        Ok(v)
    };
    if b.len() < 4 {
        return Err(SpdyError::HeaderBlock);
    }
    let count = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    b = &b[4..];
    let mut headers = HashMap::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(&take(&mut b)?).to_ascii_lowercase();
        let value = take(&mut b)?;
        let first = value.split(|c| *c == 0).next().unwrap_or_default();
        headers.insert(name, String::from_utf8_lossy(first).into_owned());
    }
    Ok(headers)
}

/// Encodes the frames the server sends; keeps the header deflater, which spans the whole
/// connection.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
        }
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

impl Writer {
    /// SYN_REPLY accepting `stream`, with no headers (as the kubelet replies).
    pub fn syn_reply(&mut self, stream: u32) -> Vec<u8> {
        let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
        body.extend_from_slice(&self.compress(&0u32.to_be_bytes()));
        control(SYN_REPLY, 0, &body)
    }

    fn compress(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        // A sync flush ends each block on a byte boundary, so the peer can inflate it alone.
        loop {
            let used = (self.deflate.total_in() - start) as usize;
            let _ = self.deflate.compress_vec(
                &raw[used.min(raw.len())..],
                &mut out,
                FlushCompress::Sync,
            );
            if out.len() < out.capacity() {
                return out;
            }
            out.reserve(64);
        }
    }

    pub fn ping(id: u32) -> Vec<u8> {
        control(PING, 0, &id.to_be_bytes())
    }

    pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + data.len());
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.push(if fin { FLAG_FIN } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header block as a client writes it: pairs, deflated with the dictionary.
    fn client_block(deflate: &mut Compress, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 128);
        deflate
            .compress_vec(&raw, &mut out, FlushCompress::Sync)
            .expect("deflate");
        out
    }

    fn syn_stream(deflate: &mut Compress, stream: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&client_block(deflate, pairs));
        control(SYN_STREAM, 0, &body)
    }

    #[test]
    fn syn_streams_with_dictionary_compressed_headers() {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(DICTIONARY).expect("dictionary");
        let mut r = Reader::default();
        let a = syn_stream(
            &mut deflate,
            1,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        );
        let b = syn_stream(
            &mut deflate,
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        );
        // Arrives in pieces, as websocket messages may cut it.
        let all = [a, b].concat();
        let (first, rest) = all.split_at(5);
        r.push(first);
        assert_eq!(r.next(), Ok(None));
        r.push(rest);
        let Ok(Some(Frame::SynStream {
            stream: 1, headers, ..
        })) = r.next()
        else {
            panic!("a SYN_STREAM");
        };
        assert_eq!(headers["streamtype"], "error");
        assert_eq!(headers["port"], "8080");
        let Ok(Some(Frame::SynStream {
            stream: 3, headers, ..
        })) = r.next()
        else {
            panic!("a second SYN_STREAM");
        };
        assert_eq!(headers["streamtype"], "data");
        assert_eq!(r.next(), Ok(None));
    }

    #[test]
    fn other_frames() {
        let mut r = Reader::default();
        r.push(&Writer::data(3, true, b"hi"));
        r.push(&Writer::ping(7));
        r.push(&control(RST_STREAM, 0, &[0, 0, 0, 3, 0, 0, 0, 5]));
        r.push(&control(9, 0, &[0, 0, 0, 3, 0, 0, 0, 5]));
        assert_eq!(
            r.next(),
            Ok(Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hi")
            }))
        );
        assert_eq!(r.next(), Ok(Some(Frame::Ping { id: 7 })));
        assert_eq!(r.next(), Ok(Some(Frame::RstStream { stream: 3 })));
        assert_eq!(r.next(), Ok(Some(Frame::Other)));
        let mut bad = Reader::default();
        bad.push(&[0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert_eq!(bad.next(), Err(SpdyError::Version(2)));
    }

    #[test]
    fn replies_inflate_to_an_empty_block() {
        let mut w = Writer::default();
        let mut inflate = Decompress::new(true);
        for stream in [1u32, 3] {
            let f = w.syn_reply(stream);
            assert_eq!(&f[..4], &[0x80, 3, 0, 2]);
            assert_eq!(&f[8..12], &stream.to_be_bytes());
            let mut out = Vec::with_capacity(64);
            inflate
                .decompress_vec(&f[12..], &mut out, FlushDecompress::Sync)
                .expect("inflates");
            assert_eq!(out, [0, 0, 0, 0]);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let mut r = Reader::default();
            for c in chunks {
                r.push(&c);
                while let Ok(Some(_)) = r.next() {}
            }
        }

        #[test]
        fn data_frames_round_trip(stream in 0u32..0x7fff_ffff, fin in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = Reader::default();
            r.push(&Writer::data(stream, fin, &data));
            prop_assert_eq!(r.next(), Ok(Some(Frame::Data { stream, fin, data: Bytes::from(data) })));
        }
    }
}
