//! The EndpointSlice controller loop, with mirroring: Services with a selector get slices
//! computed from their Pods; selector-less Services get their user-written Endpoints mirrored.

use std::sync::Arc;

use futures_util::Stream;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

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
    service_controller(&ctx, services, pods, endpoints, pods_gone)
        .watches_shared_stream(slices, |s: Arc<EndpointSlice>| {
            let svc = s.labels().get(SERVICE_NAME_LABEL)?;
            Some(ObjectRef::new(svc).within(&s.namespace().unwrap_or_default()))
        })
        .run(reconcile, requeue_on_error, ctx)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let existing = slices_of(&ctx, &ns, &name);
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    let changes = if has_selector {
        desired_slices(
            &svc,
            &selected_pods(&ctx, &svc),
            &existing,
            ctx.config.max_endpoints_per_slice,
        )
    } else if let Some(ep) = ctx.endpoints.get(&ObjectRef::new(&name).within(&ns)) {
        mirrored_slices(&ep, &svc, &existing)
    } else {
        return Ok(Action::await_change());
    };
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    for s in &changes.delete {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
    }
    for s in &changes.update {
        api.replace(&s.name_any(), &PostParams::default(), s)
            .await?;
    }
    for s in &changes.create {
        api.create(&PostParams::default(), s).await?;
    }
    Ok(Action::await_change())
}
