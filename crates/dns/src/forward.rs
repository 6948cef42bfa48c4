//! Forwarding names outside the cluster zone to upstream resolvers, with a small cache that
//! respects the upstream TTLs (negative answers by their SOA, RFC 2308). Upstreams are tried
//! in order over UDP, over TCP when an answer comes back truncated.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::answer::{MAX_UDP_PAYLOAD, response_to};
use crate::metrics::{CacheLabels, Metrics};

type Key = (Name, RecordType, DNSClass);

struct Cached {
    response: Message,
    stored: Instant,
    ttl: u32,
}

/// The upstream resolvers and the cache of their answers.
pub struct Forwarder {
    upstream: Vec<SocketAddr>,
    timeout: Duration,
    capacity: usize,
    max_ttl: u32,
    cache: Mutex<HashMap<Key, Cached>>,
    metrics: Metrics,
}

/// Why one upstream did not answer.
#[derive(Debug)]
enum Failure {
    Io,
    Timeout,
    Malformed,
}

impl Forwarder {
    /// A forwarder to `upstream`, giving each `timeout`, caching at most `capacity` answers
    /// for at most `max_ttl` seconds each.
    pub fn new(
        upstream: Vec<SocketAddr>,
        timeout: Duration,
        capacity: usize,
        max_ttl: u32,
    ) -> Self {
        Self {
            upstream,
            timeout,
            capacity,
            max_ttl,
            cache: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
        }
    }

    /// Counts cache hits and misses into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// How many answers are cached now.
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response to `req` (one question): from the cache, else from the first upstream that
    /// answers; SERVFAIL when none does. Never fails.
    pub async fn resolve(&self, req: &Message) -> Message {
        let Some(query) = req.queries.first() else {
            return response_to(req, ResponseCode::FormErr);
        };
        let key = (
            query.name().to_lowercase(),
            query.query_type(),
            query.query_class(),
        );
        if let Some(resp) = self.cached_reply(&key, req) {
            let hit = if resp.answers.is_empty() {
                "denial"
            } else {
                "success"
            };
            self.metrics
                .cache_hits
                .get_or_create(&CacheLabels { r#type: hit })
                .inc();
            return resp;
        }
        self.metrics.cache_misses.inc();
        let mut upstream_query = Message::query();
        upstream_query.metadata.recursion_desired = true;
        upstream_query.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        upstream_query.edns = Some(edns);
        let Ok(bytes) = upstream_query.to_vec() else {
            return response_to(req, ResponseCode::FormErr);
        };
        for addr in &self.upstream {
            match self.exchange(*addr, &bytes, &upstream_query).await {
                Ok(resp) => {
                    self.store(key, &resp);
                    return reply(req, resp, 0);
                }
                Err(failure) => {
                    tracing::debug!(upstream = %addr, ?failure, "upstream did not answer");
                }
            }
        }
        let mut resp = response_to(req, ResponseCode::ServFail);
        resp.metadata.recursion_available = true;
        resp
    }

    fn cached_reply(&self, key: &Key, req: &Message) -> Option<Message> {
        let mut cache = self.lock();
        let entry = cache.get(key)?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            cache.remove(key);
            return None;
        }
        Some(reply(req, entry.response.clone(), age))
    }

    fn store(&self, key: Key, resp: &Message) {
        let ttl = cache_ttl(resp).min(self.max_ttl);
        if ttl == 0 {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= self.capacity {
            cache.retain(|_, c| c.stored.elapsed().as_secs() < u64::from(c.ttl));
            if cache.len() >= self.capacity {
                return;
            }
        }
        let cached = Cached {
            response: resp.clone(),
            stored: Instant::now(),
            ttl,
        };
        cache.insert(key, cached);
    }

    async fn exchange(
        &self,
        addr: SocketAddr,
        bytes: &[u8],
        query: &Message,
    ) -> Result<Message, Failure> {
        let resp = tokio::time::timeout(self.timeout, udp_exchange(addr, bytes, query))
            .await
            .map_err(|_| Failure::Timeout)??;
        if !resp.metadata.truncation {
            return Ok(resp);
        }
        tokio::time::timeout(self.timeout, tcp_exchange(addr, bytes, query))
            .await
            .map_err(|_| Failure::Timeout)?
    }
}

/// Whether `resp` answers `query`: same ID and same question.
fn matches(resp: &Message, query: &Message) -> bool {
    resp.metadata.id == query.metadata.id && resp.queries == query.queries
}

fn usable(resp: Message) -> Result<Message, Failure> {
    // SERVFAIL, REFUSED and the like make us try the next upstream.
    match resp.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(resp),
        _ => Err(Failure::Malformed),
    }
}

async fn udp_exchange(addr: SocketAddr, bytes: &[u8], query: &Message) -> Result<Message, Failure> {
    let local = match addr.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = UdpSocket::bind(local).await.map_err(|_| Failure::Io)?;
    socket.connect(addr).await.map_err(|_| Failure::Io)?;
    socket.send(bytes).await.map_err(|_| Failure::Io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|_| Failure::Io)?;
        // Anything that is not the answer (a stray or spoofed packet) is ignored.
        if let Ok(resp) = Message::from_vec(buf.get(..n).unwrap_or_default())
            && matches(&resp, query)
        {
            return usable(resp);
        }
    }
}

async fn tcp_exchange(addr: SocketAddr, bytes: &[u8], query: &Message) -> Result<Message, Failure> {
    let mut stream = TcpStream::connect(addr).await.map_err(|_| Failure::Io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| Failure::Malformed)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|_| Failure::Io)?;
    let len = stream.read_u16().await.map_err(|_| Failure::Io)?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(|_| Failure::Io)?;
    let resp = Message::from_vec(&buf).map_err(|_| Failure::Malformed)?;
    if !matches(&resp, query) {
        return Err(Failure::Malformed);
    }
    usable(resp)
}

/// How long an upstream answer may be cached: its smallest TTL, or for a negative answer the
/// SOA's TTL capped by its minimum field (RFC 2308 §5).
fn cache_ttl(resp: &Message) -> u32 {
    if resp.metadata.truncation {
        return 0;
    }
    if !resp.answers.is_empty() {
        return resp.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
    }
    resp.authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(0)
}

/// The upstream's answer re-addressed to the client: its ID, its question (and case), its
/// EDNS presence, TTLs reduced by the time spent in the cache.
fn reply(req: &Message, upstream: Message, age: u32) -> Message {
    let mut resp = response_to(req, upstream.metadata.response_code);
    resp.metadata.recursion_available = true;
    resp.metadata.authentic_data = false;
    let age_out = |mut r: hickory_proto::rr::Record| {
        r.ttl = r.ttl.saturating_sub(age);
        r
    };
    let qname = req.queries.first().map(|q| q.name().clone());
    // Owner names equal to the question take its case, as for cluster answers (0x20 clients).
    let echo = |mut r: hickory_proto::rr::Record| {
        if let Some(qname) = qname.as_ref().filter(|q| **q == r.name) {
            r.name = qname.clone();
        }
        age_out(r)
    };
    resp.answers = upstream.answers.into_iter().map(echo).collect();
    resp.authorities = upstream.authorities.into_iter().map(age_out).collect();
    resp.additionals = upstream.additionals.into_iter().map(age_out).collect();
    resp
}
