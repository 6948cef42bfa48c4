//! The EndpointSlice controller loop, with mirroring: Services with a selector get slices
//! computed from their Pods; selector-less Services get their user-written Endpoints mirrored.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::written::Written;
use super::{Ctx, requeue_on_error, selected_pods, service_controller, slices_of};
use crate::endpointslices::SERVICE_NAME_LABEL;
use crate::{Error, desired_slices, mirrored_slices};

pub(crate) fn controller(
    ctx: Arc<Ctx>,
    services: impl Stream<Item = Arc<Service>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    endpoints: impl Stream<Item = Arc<Endpoints>> + Send + 'static,
    slices: impl Stream<Item = Arc<EndpointSlice>> + Send + 'static,
    pods_gone: impl Stream<Item = ObjectRef<Service>> + Send + 'static,
) -> impl Stream<Item = Result<(ObjectRef<Service>, Action), impl std::fmt::Display>> {
    // Endpoints matter here only to mirror them, for Services without a selector: the
    // Endpoints controller's own write after each Pod change would otherwise run a second,
    // idle reconcile of the Service's slices.
    let svcs = ctx.services.clone();
    let endpoints = endpoints.filter(move |ep| {
        let svc =
            svcs.get(&ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()));
        std::future::ready(svc.is_none_or(|svc| !has_selector(&svc)))
    });
    let written = Arc::new(Written::default());
    let ours = written.clone();
    service_controller(&ctx, services, pods, endpoints, pods_gone)
        .watches_shared_stream(slices, move |s: Arc<EndpointSlice>| {
            if ours.is_own(&s.metadata) {
                return None;
            }
            let svc = s.labels().get(SERVICE_NAME_LABEL)?;
            Some(ObjectRef::new(svc).within(&s.namespace().unwrap_or_default()))
        })
        .run(
            move |svc, ctx| reconcile(svc, ctx, written.clone()),
            requeue_on_error,
            ctx,
        )
}

/// Whether the Service selects Pods (its slices are computed) rather than mirroring Endpoints.
fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

async fn reconcile(
    svc: Arc<Service>,
    ctx: Arc<Ctx>,
    written: Arc<Written>,
) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let existing = slices_of(&ctx, &ns, &name);
    let changes = if has_selector(&svc) {
        desired_slices(
            &svc,
            &selected_pods(&ctx, &svc),
            &existing,
            ctx.config.max_endpoints_per_slice,
        )
    } else if let Some(ep) = ctx.endpoints.get(&ns, &name) {
        mirrored_slices(&ep, &svc, &existing)
    } else {
        return Ok(Action::await_change());
    };
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    for s in &changes.delete {
        written.forget(&s.metadata);
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
    }
    for s in &changes.update {
        written.writing(&s.metadata);
        let done = api.replace(&s.name_any(), &PostParams::default(), s).await;
        written.record(&s.metadata, done)?;
    }
    for s in &changes.create {
        // A generated name is known only from the reply: nothing to mark before.
        let done = api.create(&PostParams::default(), s).await;
        written.record(&s.metadata, done)?;
    }
    Ok(Action::await_change())
}
