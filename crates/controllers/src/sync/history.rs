//! Writes an owner's ControllerRevisions as [`crate::history::plan`] says, from the shared
//! cache of revisions.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::Ctx;
use super::workloads::ignore_404;
use crate::Error;
use crate::history::{self, Owner};

/// Records `owner`'s template and prunes its history. Returns the template of the revision
/// named `current`, when it is recorded.
pub(crate) async fn sync(
    ctx: &Ctx,
    owner: Owner<'_>,
    in_use: &BTreeSet<String>,
    current: Option<&str>,
) -> Result<Option<PodTemplateSpec>, Error> {
    let ns = owner.meta.namespace.as_deref().unwrap_or("default");
    let all = ctx.revisions.state();
    let mine = history::owned(owner.meta, all.iter().map(|r| &**r));
    let found = current.and_then(|c| {
        mine.iter()
            .find(|r| r.metadata.name.as_deref() == Some(c))
            .and_then(|r| history::template_of(r))
    });
    if owner.meta.deletion_timestamp.is_some() {
        return Ok(found);
    }
    let plan = history::plan(owner, &mine, in_use);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(rev) = &plan.create {
        match api.create(&PostParams::default(), rev).await {
            // The cache is behind: it exists already.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            r => {
                r?;
            }
        }
    }
    if let Some((name, number)) = &plan.renumber {
        let patch = Patch::Merge(json!({"revision": number}));
        ignore_404(api.patch(name, &PatchParams::default(), &patch).await)?;
    }
    for name in &plan.delete {
        ignore_404(api.delete(name, &DeleteParams::default()).await)?;
    }
    Ok(found)
}
