//! The Endpoints controller loop: one reconcile per Service, triggered by the Service, the
//! Pods it selects (or selected) and its Endpoints object.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::written::Written;
use super::{Ctx, requeue_on_error, selected_pods, service_controller};
use crate::{Error, desired_endpoints, endpoints_equal};

pub(crate) fn controller(
    ctx: Arc<Ctx>,
    services: impl Stream<Item = Arc<Service>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    endpoints: impl Stream<Item = Arc<Endpoints>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<Service>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<Service>, Action), impl std::fmt::Display>> {
    // The event of this controller's own write asks for nothing new.
    let written = Arc::new(Written::default());
    let ours = written.clone();
    let endpoints = endpoints.filter(move |ep| std::future::ready(!ours.is_own(&ep.metadata)));
    service_controller(&ctx, services, pods, endpoints, pods_gone).run(
        move |svc, ctx| reconcile(svc, ctx, written.clone()),
        requeue_on_error,
        ctx,
    )
}

async fn reconcile(
    svc: Arc<Service>,
    ctx: Arc<Ctx>,
    written: Arc<Written>,
) -> Result<Action, Error> {
    let pods = selected_pods(&ctx, &svc);
    let Some(desired) = desired_endpoints(&svc, &pods) else {
        return Ok(Action::await_change());
    };
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    match ctx.endpoints.get(&ns, &name) {
        Some(cur) if endpoints_equal(&cur, &desired) => {}
        Some(cur) => {
            let mut next = desired;
            next.metadata.resource_version = cur.metadata.resource_version.clone();
            written.writing(&next.metadata);
            let done = api.replace(&name, &PostParams::default(), &next).await;
            written.record(&next.metadata, done)?;
        }
        None => {
            written.writing(&desired.metadata);
            let done = api.create(&PostParams::default(), &desired).await;
            written.record(&desired.metadata, done)?;
        }
    }
    Ok(Action::await_change())
}

/// A deleted Service takes its Endpoints and EndpointSlices with it.
pub(crate) async fn cleanup(client: Client, svc: Service) {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = eps.delete(&name, &DeleteParams::default()).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        tracing::warn!(%ns, %name, error = %e, "deleting the Endpoints of a deleted Service");
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client, &ns);
    let lp = ListParams::default().labels(&format!(
        "{}={name}",
        crate::endpointslices::SERVICE_NAME_LABEL
    ));
    if let Err(e) = slices
        .delete_collection(&DeleteParams::default(), &lp)
        .await
    {
        tracing::warn!(%ns, %name, error = %e, "deleting the EndpointSlices of a deleted Service");
    }
}
