//! The serving edge: UDP and TCP listeners that answer cluster names inline from the shared
//! `Zone` and hand other names to the `Forwarder` (only for clients allowed to recurse).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::answer::{self, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::forward::Forwarder;
use crate::zone::Zone;

/// The zone the server reads and the watchers (or a test) write.
pub type SharedZone = Arc<RwLock<Zone>>;

/// Most forwarded queries in flight at once; past it, UDP queries are dropped (clients retry).
const MAX_PENDING: usize = 1024;
/// Most TCP connections at once.
const MAX_TCP: usize = 256;
/// A TCP connection idle this long is closed (RFC 7766 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);

struct Ctx {
    zone: SharedZone,
    forwarder: Forwarder,
    allow_recursion: Vec<IpNet>,
    pending: Arc<Semaphore>,
}

/// Work that needs the network before the answer can be sent.
enum Pending {
    /// A name outside the zone.
    Forward(Message),
    /// An ExternalName CNAME whose target is resolved upstream and appended.
    Chase(Message, Box<Message>, Name),
}

enum Reply {
    Now(Vec<u8>),
    Later(Box<Pending>),
    Nothing,
}

impl Ctx {
    fn may_recurse(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow_recursion.iter().any(|net| net.contains(&ip))
    }

    /// Everything that can be decided without waiting: parse, answer from the zone, refuse.
    /// The compiled answer for a plain cluster query, written to `out`; false if the slow
    /// path must answer.
    fn fast(&self, bytes: &[u8], client: IpAddr, tcp: bool, out: &mut Vec<u8>) -> bool {
        let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
        zone.fast()
            .answer(bytes, self.may_recurse(client), tcp, out)
    }

    /// The reply and the most bytes it may have (the client's UDP size, or 64 KiB on TCP).
    fn quick(&self, bytes: &[u8], client: IpAddr, udp: bool) -> (Reply, usize) {
        let (req, outcome) = {
            let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
            match answer::handle(&zone, bytes) {
                Ok(parsed) => parsed,
                Err(Some(formerr)) => return (Reply::Now(formerr), 512),
                Err(None) => return (Reply::Nothing, 0),
            }
        };
        let limit = if udp {
            answer::udp_limit(&req)
        } else {
            usize::from(u16::MAX)
        };
        let reply = match outcome {
            Outcome::Drop => Reply::Nothing,
            Outcome::Answer(resp) => {
                let recurse = self.may_recurse(client);
                match external_target(&self.zone, &req, &resp) {
                    Some(target) if recurse => {
                        Reply::Later(Box::new(Pending::Chase(req, Box::new(resp), target)))
                    }
                    _ => encode(resp, recurse, limit),
                }
            }
            Outcome::Forward if self.may_recurse(client) => {
                Reply::Later(Box::new(Pending::Forward(req)))
            }
            Outcome::Forward => encode(
                answer::response_to(&req, ResponseCode::Refused),
                false,
                limit,
            ),
        };
        (reply, limit)
    }

    async fn slow(&self, pending: Box<Pending>) -> Message {
        match *pending {
            Pending::Forward(req) => self.forwarder.resolve(&req).await,
            Pending::Chase(req, mut resp, target) => {
                let mut chased = req.clone();
                if let Some(q) = chased.queries.first_mut() {
                    q.set_name(target);
                }
                let upstream = self.forwarder.resolve(&chased).await;
                resp.answers.extend(upstream.answers);
                resp.metadata.recursion_available = true;
                *resp
            }
        }
    }
}

fn encode(mut resp: Message, recurse: bool, limit: usize) -> Reply {
    resp.metadata.recursion_available = recurse;
    answer::encode(&resp, limit).map_or(Reply::Nothing, Reply::Now)
}

/// The out-of-zone target of a CNAME answer that the client wants resolved further.
fn external_target(zone: &SharedZone, req: &Message, resp: &Message) -> Option<Name> {
    let qtype = req.queries.first()?.query_type();
    if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
        return None;
    }
    let RData::CNAME(target) = &resp.answers.last()?.data else {
        return None;
    };
    let zone = zone.read().unwrap_or_else(|e| e.into_inner());
    (!zone.origin().zone_of(&target.0)).then(|| target.0.clone())
}

/// Bound listening sockets, one UDP and one TCP per configured address.
pub struct Server {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

impl Server {
    /// Binds every address over UDP and TCP; port 0 takes the port UDP got for TCP too.
    pub async fn bind(listen: &[SocketAddr]) -> Result<Self> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let u = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
                addr,
                transport: "udp",
                source,
            })?;
            let bound = u.local_addr().map_err(|source| Error::Bind {
                addr,
                transport: "udp",
                source,
            })?;
            let t = TcpListener::bind(bound)
                .await
                .map_err(|source| Error::Bind {
                    addr: bound,
                    transport: "tcp",
                    source,
                })?;
            udp.push(Arc::new(u));
            tcp.push(t);
        }
        Ok(Self { udp, tcp })
    }

    /// The addresses actually bound (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is cancelled or a listener fails.
    pub async fn serve(
        self,
        config: &Config,
        zone: SharedZone,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let ctx = Arc::new(Ctx {
            zone,
            forwarder: Forwarder::new(
                config.upstream.clone(),
                config.upstream_timeout,
                config.cache_entries,
                config.cache_max_ttl,
            ),
            allow_recursion: config.allow_recursion.clone(),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        });
        let mut tasks = JoinSet::new();
        for socket in self.udp {
            tasks.spawn(udp_loop(ctx.clone(), socket, shutdown.clone()));
        }
        for listener in self.tcp {
            tasks.spawn(tcp_loop(ctx.clone(), listener, shutdown.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                shutdown.cancel();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Binds `config.listen` and serves `zone` until `shutdown`: the way to run the server on a
/// fixed set of objects (tests, benchmarks).
pub async fn serve(config: Config, zone: SharedZone, shutdown: CancellationToken) -> Result<()> {
    Server::bind(&config.listen)
        .await?
        .serve(&config, zone, shutdown)
        .await
}

async fn udp_loop(
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = socket.local_addr().map_err(|source| Error::Serve {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(usize::from(answer::MAX_UDP_PAYLOAD));
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = shutdown.cancelled() => return Ok(()),
        };
        let (n, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "udp receive failed");
                continue;
            }
        };
        let bytes = buf.get(..n).unwrap_or_default();
        if ctx.fast(bytes, peer.ip(), false, &mut out) {
            let _ = socket.send_to(&out, peer).await;
            continue;
        }
        let (reply, limit) = ctx.quick(bytes, peer.ip(), true);
        match reply {
            Reply::Now(out) => {
                let _ = socket.send_to(&out, peer).await;
            }
            Reply::Later(pending) => {
                let Ok(permit) = ctx.pending.clone().try_acquire_owned() else {
                    continue;
                };
                let (ctx, socket) = (ctx.clone(), socket.clone());
                tokio::spawn(async move {
                    let resp = ctx.slow(pending).await;
                    if let Some(out) = answer::encode(&resp, limit) {
                        let _ = socket.send_to(&out, peer).await;
                    }
                    drop(permit);
                });
            }
            Reply::Nothing => {}
        }
    }
}

async fn tcp_loop(ctx: Arc<Ctx>, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let conns = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => return Ok(()),
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue;
        };
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tcp_conn(&ctx, stream, peer.ip()) => {}
                () = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed queries answered in order until idle or closed.
async fn tcp_conn(ctx: &Ctx, mut stream: TcpStream, client: IpAddr) {
    let mut buf = Vec::new();
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        buf.resize(usize::from(len), 0);
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let mut out = Vec::new();
        if ctx.fast(&buf, client, true, &mut out) {
            if !write_framed(&mut stream, &out).await {
                return;
            }
            continue;
        }
        let out = match ctx.quick(&buf, client, false).0 {
            Reply::Now(out) => out,
            Reply::Later(pending) => {
                let resp = ctx.slow(pending).await;
                match answer::encode(&resp, usize::from(u16::MAX)) {
                    Some(out) => out,
                    None => return,
                }
            }
            Reply::Nothing => return,
        };
        if !write_framed(&mut stream, &out).await {
            return;
        }
    }
}

/// Writes one length-prefixed message; false when the connection is gone.
async fn write_framed(stream: &mut TcpStream, out: &[u8]) -> bool {
    let Ok(len) = u16::try_from(out.len()) else {
        return false;
    };
    let mut framed = Vec::with_capacity(out.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(out);
    stream.write_all(&framed).await.is_ok()
}
