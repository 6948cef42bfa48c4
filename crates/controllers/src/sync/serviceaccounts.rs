//! kube-controller-manager's ServiceAccount and root-CA publisher controllers: every active
//! namespace has a `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap holding the
//! cluster CA, made again when deleted and corrected when changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::{Ctx, requeue_on_error};
use crate::Error;

const ROOT_CA: &str = "kube-root-ca.crt";

pub(crate) fn controller(
    ctx: Arc<Ctx>,
) -> impl Stream<Item = Result<(ObjectRef<Namespace>, Action), impl std::fmt::Display>> {
    let client = ctx.client.clone();
    let by_namespace = |ns: Option<String>| ns.map(|n| ObjectRef::<Namespace>::new(&n));
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
        move |sa| by_namespace(sa.namespace()),
    )
    .watches(
        Api::<ConfigMap>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA}")),
        move |cm| by_namespace(cm.namespace()),
    )
    .run(reconcile, requeue_on_error, ctx)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    if !active {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if accounts.get_opt("default").await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        create_ignoring_conflict(&accounts, &sa).await?;
    }
    if let Some(ca) = &ctx.config.root_ca {
        let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
        let want = BTreeMap::from([("ca.crt".to_owned(), ca.clone())]);
        match maps.get_opt(ROOT_CA).await? {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA.into()),
                        // What kube-controller-manager marks it with.
                        annotations: Some(BTreeMap::from([(
                            "kubernetes.io/description".to_owned(),
                            "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(want),
                    ..ConfigMap::default()
                };
                create_ignoring_conflict(&maps, &cm).await?;
            }
            Some(mut cm) if cm.data.as_ref() != Some(&want) => {
                cm.data = Some(want);
                maps.replace(ROOT_CA, &PostParams::default(), &cm).await?;
            }
            Some(_) => {}
        }
    }
    // A slow resync besides the watches, as the upstream controllers have.
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn create_ignoring_conflict<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        // Made meanwhile (or the namespace is going away): nothing to do.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
