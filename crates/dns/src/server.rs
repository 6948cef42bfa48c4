//! The serving edge: UDP and TCP listeners that answer cluster names inline from the shared
//! `Zone` (compiled wire answers first, the `answer` slow path otherwise) and hand other names
//! to the `Forwarder`, only for clients allowed to recurse.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;
use std::net::UdpSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::answer::{self, Outcome};
use crate::batch;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::forward::Forwarder;
use crate::metrics::{Metrics, Observed};
use crate::zone::Zone;

/// The zone the server reads and the watchers (or a test) write.
pub type SharedZone = Arc<RwLock<Zone>>;

/// Most forwarded queries in flight at once; past it, UDP queries are dropped (clients retry).
const MAX_PENDING: usize = 1024;
/// Most TCP connections at once.
const MAX_TCP: usize = 256;
/// A TCP connection idle this long is closed (RFC 7766 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);

pub(crate) struct Ctx {
    zone: SharedZone,
    forwarder: Forwarder,
    allow_recursion: Vec<IpNet>,
    pub(crate) pending: Arc<Semaphore>,
    metrics: Metrics,
    /// Metric `zone` labels: the cluster domain (`cluster.local.`) and `.` for the rest.
    cluster_label: Arc<String>,
    root_label: Arc<String>,
}

/// Work that needs the network before the answer can be sent.
pub(crate) enum Pending {
    /// A name outside the zone.
    Forward(Message),
    /// An ExternalName CNAME whose target is resolved upstream and appended.
    Chase(Message, Box<Message>, Name),
}

/// What one received packet leads to.
pub(crate) enum Step {
    /// The response is in `out`.
    Ready { qtype: u16, in_zone: bool },
    /// The response needs upstream answers first.
    Later {
        pending: Box<Pending>,
        limit: usize,
        qtype: u16,
    },
    /// No response.
    Nothing,
}

/// Where a query came from, for the ACL and the metrics.
#[derive(Clone)]
pub(crate) struct Client {
    pub ip: IpAddr,
    pub tcp: bool,
    pub server: Arc<String>,
    pub received: Instant,
}

impl Ctx {
    fn may_recurse(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow_recursion.iter().any(|net| net.contains(&ip))
    }

    /// Everything that can be done without waiting: the compiled answer, else parse, answer
    /// from the zone or refuse; forwarding is left to `slow`.
    pub(crate) fn step(&self, bytes: &[u8], client: &Client, out: &mut Vec<u8>) -> Step {
        let recurse = self.may_recurse(client.ip);
        let (req, outcome) = {
            let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
            if let Some(qtype) = zone.fast_answer(bytes, recurse, client.tcp, out) {
                return Step::Ready {
                    qtype,
                    in_zone: true,
                };
            }
            match answer::handle(&zone, bytes) {
                Ok(parsed) => parsed,
                Err(formerr) => {
                    let Some(formerr) = formerr else {
                        return Step::Nothing;
                    };
                    *out = formerr;
                    return Step::Ready {
                        qtype: 0,
                        in_zone: false,
                    };
                }
            }
        };
        self.decide(req, outcome, recurse, client.tcp, out)
    }

    /// The step for a parsed request: an answer or refusal now, or upstream work.
    fn decide(
        &self,
        req: Message,
        outcome: Outcome,
        recurse: bool,
        tcp: bool,
        out: &mut Vec<u8>,
    ) -> Step {
        let qtype = req.queries.first().map_or(0, |q| q.query_type().into());
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            answer::udp_limit(&req)
        };
        let (mut resp, in_zone) = match outcome {
            Outcome::Drop => return Step::Nothing,
            Outcome::Answer(resp) => match external_target(&self.zone, &req, &resp) {
                Some(target) if recurse => {
                    let pending = Box::new(Pending::Chase(req, Box::new(resp), target));
                    return Step::Later {
                        pending,
                        limit,
                        qtype,
                    };
                }
                _ => (resp, true),
            },
            Outcome::Forward if recurse => {
                let pending = Box::new(Pending::Forward(req));
                return Step::Later {
                    pending,
                    limit,
                    qtype,
                };
            }
            Outcome::Forward => (answer::response_to(&req, ResponseCode::Refused), false),
        };
        resp.metadata.recursion_available = recurse;
        match answer::encode(&resp, limit) {
            Some(bytes) => {
                *out = bytes;
                Step::Ready { qtype, in_zone }
            }
            None => Step::Nothing,
        }
    }

    pub(crate) async fn slow(&self, pending: Box<Pending>) -> Message {
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

    /// Records one sent response.
    pub(crate) fn observe(&self, client: &Client, qtype: u16, in_zone: bool, out: &[u8]) {
        self.observe_many(
            client,
            qtype,
            in_zone,
            out.get(3).map_or(0, |b| b & 0x0f),
            1,
        );
    }

    /// Records `n` sent responses alike in client family, type, zone and RCODE.
    pub(crate) fn observe_many(
        &self,
        client: &Client,
        qtype: u16,
        in_zone: bool,
        rcode: u8,
        n: u64,
    ) {
        let observed = Observed {
            server: &client.server,
            zone: if in_zone {
                &self.cluster_label
            } else {
                &self.root_label
            },
            tcp: client.tcp,
            ipv6: client.ip.is_ipv6(),
            qtype,
            rcode,
            forwarded: !in_zone,
            seconds: client.received.elapsed().as_secs_f64(),
        };
        self.metrics.observe_many(&observed, n);
    }
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
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

fn bind_error(addr: SocketAddr, transport: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Bind {
        addr,
        transport,
        source,
    }
}

/// A UDP socket with `SO_REUSEPORT`, so several can share one address.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    free_bind(&socket, addr)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `IP_FREEBIND`: the address may appear after the bind (the node's DNS listens on the pod
/// bridge's address, which the agent may not have made yet).
fn free_bind(socket: &socket2::Socket, addr: SocketAddr) -> std::io::Result<()> {
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true),
        SocketAddr::V6(_) => socket.set_freebind_v6(true),
    }
}

/// A TCP listener on `addr`, with `IP_FREEBIND` as the UDP sockets.
fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    free_bind(&socket, addr)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// `count` UDP sockets and one TCP listener on the same address and port.
fn bind_set(addr: SocketAddr, count: usize) -> Result<(Vec<UdpSocket>, TcpListener)> {
    let tries = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let first = udp_socket(addr).map_err(bind_error(addr, "udp"))?;
        let bound = first.local_addr().map_err(bind_error(addr, "udp"))?;
        let tcp = tcp_listener(bound)
            .and_then(|t| {
                t.set_nonblocking(true)?;
                TcpListener::from_std(t)
            })
            .map_err(bind_error(bound, "tcp"));
        match tcp {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..count.max(1) {
                    udp.push(udp_socket(bound).map_err(bind_error(bound, "udp"))?);
                }
                return Ok((udp, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| bind_error(addr, "tcp")(std::io::ErrorKind::AddrInUse.into())))
}

impl Server {
    /// Binds every address over TCP and `udp_sockets` times over UDP (`SO_REUSEPORT`); port 0
    /// takes the port UDP got for TCP too (retrying a few ports when it is taken over TCP).
    /// Must be called inside a tokio runtime.
    pub fn bind(listen: &[SocketAddr], udp_sockets: usize) -> Result<Self> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let (u, t) = bind_set(addr, udp_sockets)?;
            udp.extend(u);
            tcp.push(t);
        }
        Ok(Self { udp, tcp })
    }

    /// The addresses actually bound (with the ports chosen for port 0), one per address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
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
        let cluster_label = Arc::new(zone.read().map_or_else(
            |e| e.into_inner().origin().to_ascii(),
            |z| z.origin().to_ascii(),
        ));
        let upstream = without_loops(&config.upstream, &self.local_addrs());
        let ctx = Arc::new(Ctx {
            zone,
            forwarder: Forwarder::new(
                upstream,
                config.upstream_timeout,
                config.cache_entries,
                config.cache_max_ttl,
            )
            .with_metrics(config.metrics.clone()),
            allow_recursion: config.allow_recursion.clone(),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            metrics: config.metrics.clone(),
            cluster_label,
            root_label: Arc::new(".".to_owned()),
        });
        let mut tasks = JoinSet::new();
        let runtime = tokio::runtime::Handle::current();
        for socket in self.udp {
            let addr = socket
                .local_addr()
                .map_err(bind_error(SocketAddr::from(([0; 4], 0)), "udp"))?;
            let (ctx, runtime, shutdown) = (ctx.clone(), runtime.clone(), shutdown.clone());
            tasks.spawn_blocking(move || {
                batch::serve(ctx, socket, server_label(addr), runtime, shutdown)
                    .map_err(|source| Error::Serve { addr, source })
            });
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

/// The upstreams that are not this server itself (a resolv.conf naming the address we listen
/// on would make every forwarded query loop back to us).
fn without_loops(upstream: &[SocketAddr], listening: &[SocketAddr]) -> Vec<SocketAddr> {
    upstream
        .iter()
        .filter(|u| {
            let ours = listening
                .iter()
                .any(|l| l.port() == u.port() && (l.ip() == u.ip() || l.ip().is_unspecified()));
            if ours {
                tracing::warn!(upstream = %u, "ignoring an upstream that is this server");
            }
            !ours
        })
        .copied()
        .collect()
}

/// Binds `config.listen` and serves `zone` until `shutdown`: the way to run the server on a
/// fixed set of objects (tests, benchmarks).
pub async fn serve(config: Config, zone: SharedZone, shutdown: CancellationToken) -> Result<()> {
    Server::bind(&config.listen, config.udp_sockets)?
        .serve(&config, zone, shutdown)
        .await
}

/// CoreDNS's `server` label: `dns://<address>`.
fn server_label(addr: SocketAddr) -> Arc<String> {
    Arc::new(format!("dns://{addr}"))
}

async fn tcp_loop(ctx: Arc<Ctx>, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let server = server_label(listener.local_addr().map_err(|source| Error::Serve {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?);
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
        let (ctx, shutdown, server) = (ctx.clone(), shutdown.clone(), server.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tcp_conn(&ctx, stream, peer.ip(), server) => {}
                () = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed queries answered in order until idle or closed.
async fn tcp_conn(ctx: &Ctx, mut stream: TcpStream, ip: IpAddr, server: Arc<String>) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        buf.resize(usize::from(len), 0);
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let client = Client {
            ip,
            tcp: true,
            server: server.clone(),
            received: Instant::now(),
        };
        let (qtype, in_zone) = match ctx.step(&buf, &client, &mut out) {
            Step::Ready { qtype, in_zone } => (qtype, in_zone),
            Step::Later { pending, qtype, .. } => {
                let chase = matches!(*pending, Pending::Chase(..));
                let resp = ctx.slow(pending).await;
                match answer::encode(&resp, usize::from(u16::MAX)) {
                    Some(bytes) => out = bytes,
                    None => return,
                }
                (qtype, chase)
            }
            Step::Nothing => return,
        };
        if !write_framed(&mut stream, &out).await {
            return;
        }
        ctx.observe(&client, qtype, in_zone, &out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_that_are_us_are_dropped() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let upstream = [
            addr("127.0.0.1:53"),
            addr("10.0.0.1:53"),
            addr("127.0.0.53:53"),
        ];
        assert_eq!(
            without_loops(&upstream, &[addr("127.0.0.1:53")]),
            [addr("10.0.0.1:53"), addr("127.0.0.53:53")]
        );
        assert_eq!(
            without_loops(&upstream, &[addr("0.0.0.0:53")]),
            Vec::<SocketAddr>::new()
        );
        assert_eq!(without_loops(&upstream, &[addr("0.0.0.0:5353")]), upstream);
    }
}
