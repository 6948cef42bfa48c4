//! The UDP serving loop: one blocking thread per `SO_REUSEPORT` socket that takes queries in
//! batches (`recvmmsg`), answers what it can at once and sends the batch back (`sendmmsg`), as
//! NSD does: two system calls per batch instead of two per query and no async machinery on the
//! hot path. Forwarded queries become tokio tasks that answer from the same socket.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::answer;
use crate::server::{Client, Ctx, Pending, Step};

/// Queries taken per `recvmmsg`.
const BATCH: usize = 32;
/// How often an idle loop looks at the shutdown token.
const POLL: Duration = Duration::from_millis(100);
/// Largest query read (bigger ones are truncated by the kernel and get FORMERR).
const MAX_QUERY: usize = 4096;

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Serves `socket` until `shutdown`; forwarded queries are spawned on `runtime`.
pub(crate) fn serve(
    ctx: Arc<Ctx>,
    socket: UdpSocket,
    server: Arc<String>,
    runtime: Handle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(POLL))?;
    let socket = Arc::new(socket);
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    while !shutdown.is_cancelled() {
        got.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            let received = recvmmsg(
                fd,
                &mut recv_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            );
            match received {
                Ok(msgs) => {
                    got.extend(msgs.filter_map(|m| Some((m.bytes, socket_addr(&m.address?)?))))
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let received = Instant::now();
        // (index into `outs`, peer, qtype, in zone) of the answers ready now.
        let mut ready: Vec<(usize, SocketAddr, u16, bool)> = Vec::with_capacity(got.len());
        for (i, &(n, peer)) in got.iter().enumerate() {
            let client = Client {
                ip: peer.ip(),
                tcp: false,
                server: server.clone(),
                received,
            };
            let bytes = bufs[i].get(..n).unwrap_or_default();
            match ctx.step(bytes, &client, &mut outs[i]) {
                Step::Ready { qtype, in_zone } => ready.push((i, peer, qtype, in_zone)),
                Step::Later {
                    pending,
                    limit,
                    qtype,
                } => later(&ctx, &runtime, &socket, client, peer, pending, limit, qtype),
                Step::Nothing => {}
            }
        }
        if ready.is_empty() {
            continue;
        }
        {
            let iovs: Vec<[IoSlice<'_>; 1]> = ready
                .iter()
                .map(|&(i, ..)| [IoSlice::new(&outs[i])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = ready
                .iter()
                .map(|&(_, peer, ..)| Some(SockaddrStorage::from(peer)))
                .collect();
            // A failed send loses answers the clients will ask again for; nothing to do here.
            let _ = sendmmsg(fd, &mut send_headers, &iovs, &addrs, [], MsgFlags::empty());
        }
        observe(&ctx, &server, received, &ready, &outs);
    }
    Ok(())
}

/// Counts a sent batch, grouped by what the metrics tell apart.
fn observe(
    ctx: &Ctx,
    server: &Arc<String>,
    received: Instant,
    ready: &[(usize, SocketAddr, u16, bool)],
    outs: &[Vec<u8>],
) {
    // (ipv6, qtype, in zone, rcode) -> how many; a batch has a handful of distinct keys.
    let mut groups: Vec<((bool, u16, bool, u8), u64)> = Vec::new();
    for &(i, peer, qtype, in_zone) in ready {
        let rcode = outs[i].get(3).map_or(0, |b| b & 0x0f);
        let key = (peer.is_ipv6(), qtype, in_zone, rcode);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    for ((ipv6, qtype, in_zone, rcode), n) in groups {
        let ip = if ipv6 {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        let client = Client {
            ip,
            tcp: false,
            server: server.clone(),
            received,
        };
        ctx.observe_many(&client, qtype, in_zone, rcode, n);
    }
}

/// Hands a query that needs upstream answers to a task; it replies from the same socket.
#[allow(clippy::too_many_arguments)]
fn later(
    ctx: &Arc<Ctx>,
    runtime: &Handle,
    socket: &Arc<UdpSocket>,
    client: Client,
    peer: SocketAddr,
    pending: Box<Pending>,
    limit: usize,
    qtype: u16,
) {
    let Ok(permit) = ctx.pending.clone().try_acquire_owned() else {
        return;
    };
    let (ctx, socket) = (ctx.clone(), socket.clone());
    runtime.spawn(async move {
        let chase = matches!(*pending, Pending::Chase(..));
        let resp = ctx.slow(pending).await;
        if let Some(out) = answer::encode(&resp, limit) {
            // A UDP send does not wait on the peer; the socket is blocking only for receives.
            let _ = socket.send_to(&out, peer);
            ctx.observe(&client, qtype, chase, &out);
        }
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_convert_both_families() {
        for addr in ["127.0.0.1:53", "[::1]:5353"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            assert_eq!(socket_addr(&SockaddrStorage::from(addr)), Some(addr));
        }
    }
}
