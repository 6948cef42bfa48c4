//! The LoadBalancer IP controller loop: a LoadBalancer Service berth is responsible for gets
//! an address from the pool in `status.loadBalancer.ingress`; failures become Events.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{Ctx, events, requeue_on_error};
use crate::Error;
use crate::lb_pool::{assigned, is_ours};

/// `released` fires when a Service goes away, since its address may be what a `<pending>`
/// Service is waiting for.
pub(crate) fn controller(
    ctx: Arc<Ctx>,
    services: impl Stream<Item = Arc<Service>> + Send + 'static,
    released: impl Stream<Item = ()> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<Service>, Action), impl std::fmt::Display>> {
    Controller::for_shared_stream(services, ctx.services.clone())
        .reconcile_all_on(released)
        .run(reconcile, requeue_on_error, ctx)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !is_ours(&svc) || !assigned(&svc).is_empty() {
        return Ok(Action::await_change());
    }
    // One allocation at a time, and addresses handed out but not yet visible in the cache
    // count as used, so two Services never get the same address.
    let mut pending = ctx.lb_pending.lock().await;
    let cached = ctx.services.state();
    let in_cache: BTreeSet<Ipv4Addr> = cached.iter().flat_map(|s| assigned(s)).collect();
    let live_uids: BTreeSet<String> = cached.iter().filter_map(|s| s.uid()).collect();
    // An address stays pending only while its Service is known and does not show it yet: once
    // the cache has it, or the Service is gone, the pending entry would only leak it.
    pending.retain(|ip, uid| !in_cache.contains(ip) && live_uids.contains(uid));
    let used: BTreeSet<Ipv4Addr> = in_cache
        .union(&pending.keys().copied().collect())
        .copied()
        .collect();
    let requested = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref());
    match ctx.config.lb_pool.allocate(requested, &used) {
        Ok(ip) => {
            let api: Api<Service> =
                Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
            api.patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
            pending.insert(ip, svc.uid().unwrap_or_default());
            drop(pending);
            events::record(
                &ctx.client,
                &*svc,
                "Normal",
                "IPAllocated",
                &format!("Assigned IP [\"{ip}\"]"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            drop(pending);
            events::record(
                &ctx.client,
                &*svc,
                "Warning",
                "AllocationFailed",
                &format!(
                    "Failed to allocate IP for \"{}/{}\": {e}",
                    svc.namespace().unwrap_or_default(),
                    svc.name_any()
                ),
            )
            .await;
            Ok(Action::requeue(Duration::from_secs(10)))
        }
    }
}
