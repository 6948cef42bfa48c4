//! The one sysctl the proxy sets: `net.bridge.bridge-nf-call-iptables=1`, so pod-to-pod
//! replies across the `berth0` bridge pass conntrack and are un-DNATed (else a pod reaching
//! a Service whose endpoint shares its bridge gets the answer from the endpoint's address).
//! The setting is per network namespace; it is never written in the root one.

use crate::error::{Error, Result};

const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// `net:[PROC_NET_INIT_INO]`: the root namespace's fixed inode on current kernels.
const INIT_NET: &str = "net:[4026531833]";

/// Whether the calling thread is in the root network namespace: its namespace is the one
/// with the fixed init inode, or (older kernels) the one PID 1 is in.
pub fn in_root_netns() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let Some(me) = ns("/proc/thread-self/ns/net") else {
        // Unknown: behave as if it were the root namespace.
        return true;
    };
    me.as_os_str() == INIT_NET || ns("/proc/1/ns/net").is_some_and(|init| init == me)
}

/// Sets `bridge-nf-call-iptables=1` in the calling thread's network namespace unless that
/// is the root one. Returns whether it was set; an absent sysctl (no br_netfilter) is an
/// error naming the path.
pub fn enable_bridge_netfilter() -> Result<bool> {
    if in_root_netns() {
        tracing::warn!(
            sysctl = "net.bridge.bridge-nf-call-iptables",
            "not set: this is the root network namespace"
        );
        return Ok(false);
    }
    std::fs::write(BRIDGE_NF_CALL_IPTABLES, "1").map_err(|source| Error::Sysctl {
        path: BRIDGE_NF_CALL_IPTABLES.into(),
        source,
    })?;
    tracing::info!(
        sysctl = "net.bridge.bridge-nf-call-iptables",
        value = 1,
        "set in the proxy's network namespace so bridged replies are un-DNATed"
    );
    Ok(true)
}
