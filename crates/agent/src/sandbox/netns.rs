//! Named network namespaces and the dedicated threads all netlink work runs on. A thread, not
//! a process, belongs to a namespace: `setns` on a tokio worker would move every task that
//! later runs there, so each operation gets a fresh thread (with its own current-thread
//! runtime) that may enter a pod's namespace and then ends.
//!
//! Creating and deleting the namespace itself shells out to `ip netns add/del`: a named netns
//! is a bind mount under /run/netns, which rtnetlink cannot make without `unshare` + `mount`
//! (unsafe in nix), and `ip netns exec` and other tools find it there. The pod's UTS and IPC
//! namespaces are pinned the same way, with `unshare --uts=FILE --ipc=FILE`.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;

use futures_util::TryStreamExt;
use rtnetlink::Handle;

use crate::error::{Error, Result};

/// Where `ip netns add` bind-mounts named namespaces.
pub(crate) fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether a named network namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Where the pod whose network namespace is `netns` keeps its UTS (`kind` = `uts`) or IPC
/// (`ipc`) namespace, which all its containers join, as they join the pause container's in
/// Kubernetes: `/run/berth/ns/<netns>/<kind>`, an nsfs bind mount.
pub fn shared_path(netns: &str, kind: &str) -> PathBuf {
    shared_dir(netns).join(kind)
}

fn shared_dir(netns: &str) -> PathBuf {
    PathBuf::from("/run/berth/ns").join(netns)
}

/// Makes the pod's shared UTS and IPC namespaces ([`shared_path`]): `unshare --uts=FILE
/// --ipc=FILE` (util-linux) bind-mounts new ones there, with no process needed to keep them.
pub(crate) fn add_shared(netns: &str) -> Result<()> {
    let (uts, ipc) = (shared_path(netns, "uts"), shared_path(netns, "ipc"));
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| Error::SharedNamespace { path, source }
    };
    let dir = shared_dir(netns);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for file in [&uts, &ipc] {
        std::fs::File::create(file).map_err(io(file))?;
    }
    run(
        "unshare",
        &[
            &format!("--uts={}", uts.display()),
            &format!("--ipc={}", ipc.display()),
            "true",
        ],
    )
}

/// Unmounts and removes the pod's shared namespaces; what is already gone is not an error.
/// The PID-namespace holder of a pod that has one is killed first, which ends every process
/// left in that namespace.
pub(crate) fn del_shared(netns: &str) -> Result<()> {
    super::pause::kill(netns);
    let dir = shared_dir(netns);
    for kind in ["uts", "ipc", "pid"] {
        // EINVAL: not a mount point (never made, or already unmounted).
        match nix::mount::umount2(&dir.join(kind), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::SharedNamespace {
                    path: dir.join(kind),
                    source: e.into(),
                });
            }
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::SharedNamespace {
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Makes `/run/netns/NAME` name the network namespace process `pid` is in, and the pod's
/// [`shared_path`]s its UTS and IPC namespaces (and the PID namespace of the pod's
/// [`super::pause`] holder, if it has one), unless they do already. An agent started in a
/// mount namespace of its own (`ip netns exec`) does not see the bind mounts an earlier agent
/// made in its own; the namespaces live on while the pod's processes are in them, and a bind
/// mount of theirs names them again.
pub(crate) fn restore(name: &str, pid: u32) -> Result<()> {
    pin(name, pid, "net", &path(name))?;
    let dir = shared_dir(name);
    std::fs::create_dir_all(&dir).map_err(|source| Error::SharedNamespace {
        path: dir.clone(),
        source,
    })?;
    pin(name, pid, "uts", &shared_path(name, "uts"))?;
    pin(name, pid, "ipc", &shared_path(name, "ipc"))?;
    match super::pause::find(name) {
        Some(pause) => pin(name, pause.pid, "pid", &shared_path(name, "pid")),
        None => Ok(()),
    }
}

/// Bind-mounts process `pid`'s namespace of `kind` on `p`, unless `p` names it already.
pub(crate) fn pin(name: &str, pid: u32, kind: &str, p: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ns = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let fail = |source: std::io::Error| Error::RenameNetns {
        netns: name.to_owned(),
        pid,
        source,
    };
    let theirs = std::fs::metadata(&ns).map(id).map_err(fail)?;
    if std::fs::metadata(p).map(id).ok() == Some(theirs) {
        return Ok(());
    }
    if !p.exists() {
        std::fs::File::create(p).map_err(fail)?;
    }
    nix::mount::mount(
        Some(&ns),
        p,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail(std::io::Error::from(e)))
}

/// `ip netns add NAME`.
pub(crate) fn add(name: &str) -> Result<()> {
    ip(&["netns", "add", name])
}

/// `ip netns del NAME`; a namespace that is already gone is not an error.
pub(crate) fn del(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    ip(&["netns", "del", name])
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Runs `work` on a new thread (which starts in the caller's namespace) inside a
/// current-thread runtime, and waits for it without blocking the caller's runtime.
pub(crate) async fn on_thread<T, F, Fut>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(Error::Thread)
                .and_then(|rt| rt.block_on(work()));
            let _ = tx.send(result);
        })
        .map_err(Error::Thread)?;
    rx.await.map_err(|_| Error::ThreadPanicked)?
}

/// A TCP connection to `127.0.0.1:port` inside the named namespace, as the kubelet connects
/// port-forwards: the socket is made on a thread of its own that enters the namespace, and
/// keeps that namespace wherever it is used afterwards.
pub async fn connect_loopback(name: &str, port: u16) -> Result<std::net::TcpStream> {
    let name = name.to_owned();
    on_thread(move || async move {
        enter(&name)?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
            .and_then(|t| t.set_nonblocking(true).map(|()| t))
            .map_err(|source| Error::Connect {
                netns: name.clone(),
                port,
                source,
            })?;
        Ok(tcp)
    })
    .await
}

/// Moves the current thread into the named namespace. Only for threads from [`on_thread`].
pub(crate) fn enter(name: &str) -> Result<()> {
    let file = std::fs::File::open(path(name)).map_err(|source| Error::OpenNetns {
        path: path(name),
        source,
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        Error::EnterNetns {
            netns: name.to_owned(),
            source,
        }
    })
}

/// A netlink handle bound to the current thread's namespace (the socket keeps the namespace
/// it was opened in). Must be called inside a runtime, as [`on_thread`] provides.
pub(crate) fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Wraps a netlink error with what was being done.
pub(crate) fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink {
        op: op.into(),
        source,
    }
}

/// Whether a netlink error carries this errno (the kernel sends it negated).
pub(crate) fn is_errno(e: &rtnetlink::Error, errno: nix::errno::Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| c.get() == -(errno as i32)))
}

/// The index of link `name`, or `None` if there is no such link.
pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up link {name}"))(e)),
    }
}

/// Like [`link_index`], failing with [`Error::LinkNotFound`].
pub(crate) async fn require_link(handle: &Handle, name: &str) -> Result<u32> {
    link_index(handle, name)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            name: name.to_owned(),
        })
}
