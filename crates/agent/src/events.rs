//! The agent's Events (`kubectl describe pod` shows them), posted in order from one task so
//! that no pod worker waits for them. Repeats are folded into the first Event's `count`, as
//! the kubelet's recorder does, so a probe failing every second adds no new objects.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

struct Record {
    object: ObjectReference,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

/// Hands Events to the posting task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
}

/// How many distinct Events are remembered for folding before the memory starts over.
const REMEMBERED: usize = 4096;

impl Recorder {
    /// A recorder for node `host`, and the task that posts (it ends when every recorder is
    /// dropped).
    pub(crate) fn start(client: Client, host: String) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
        let task = tokio::spawn(async move {
            let mut seen: HashMap<String, (String, i32)> = HashMap::new();
            while let Some(r) = rx.recv().await {
                let ns = r.object.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                let key = format!(
                    "{}/{}/{}/{}/{}",
                    r.object.uid.as_deref().unwrap_or_default(),
                    r.object.field_path.as_deref().unwrap_or_default(),
                    r.type_,
                    r.reason,
                    r.message
                );
                if let Some((name, count)) = seen.get_mut(&key) {
                    *count += 1;
                    let now = jiff::Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%SZ")
                        .to_string();
                    let patch = json!({"count": *count, "lastTimestamp": now});
                    match api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => continue,
                        // Gone (deleted, or the namespace went): post it afresh.
                        Err(_) => {
                            seen.remove(&key);
                        }
                    }
                }
                let ev = berth_api::events::event(
                    r.object,
                    "kubelet",
                    Some(&host),
                    r.type_,
                    r.reason,
                    &r.message,
                );
                let name = ev.metadata.name.clone().unwrap_or_default();
                match api.create(&PostParams::default(), &ev).await {
                    Ok(_) => {
                        if seen.len() >= REMEMBERED {
                            seen.clear();
                        }
                        seen.insert(key, (name, 1));
                    }
                    Err(e) => tracing::debug!(%ns, error = %e, "recording an event"),
                }
            }
        });
        (Recorder { tx }, task)
    }

    /// Queues an Event about `object`.
    pub(crate) fn record(
        &self,
        object: ObjectReference,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let _ = self.tx.send(Record {
            object,
            type_,
            reason,
            message,
        });
    }
}
