//! Watch: a chunked stream of `{"type":..., "object":...}` lines from a resourceVersion on,
//! with label/field filtering that turns objects leaving the selection into DELETED events,
//! bookmarks, the `sendInitialEvents` watch-list protocol, and Tables for `kubectl get -w`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_store::{Event, ListOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::Server;
use crate::error::{ApiError, Result};
use crate::filter::Filter;
use crate::meta::{ObjectMeta, collection_key};
use crate::request::{Params, Target, flag};
use crate::rest::{decode_as, is_events_v1};
use crate::table::{self, Include};

/// How a watch renders objects: raw, or as one-row Tables.
#[derive(Clone, Copy)]
struct Render {
    resource: &'static berth_api::resources::Resource,
    table: bool,
    /// PartialObjectMetadata objects instead of whole ones.
    metadata: bool,
    include: Include,
}

impl Render {
    fn line(&self, kind: &str, obj: Value, first: &mut bool) -> bytes::Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let t = table::render(
                self.resource,
                std::slice::from_ref(&obj),
                json!({}),
                self.include,
                *first,
            );
            *first = false;
            t
        } else if self.metadata && kind != "ERROR" {
            table::partial(&obj)
        } else {
            obj
        };
        // `type` before `object`, as Go's WatchEvent has them.
        let mut s = Vec::with_capacity(256);
        s.extend_from_slice(br#"{"type":"#);
        berth_api::order::write(&json!(kind), &mut s);
        s.extend_from_slice(br#","object":"#);
        berth_api::order::write(&object, &mut s);
        s.extend_from_slice(b"}\n");
        bytes::Bytes::from(s)
    }
}

/// How often a watch that allows bookmarks gets one, as kube-apiserver's watch cache sends
/// them: clients only keep the revision to resume from, so one a second (the store's
/// progress tick) to each of the controllers' ~30 watches was work for nothing.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// How long before the watch's end its last bookmark is due, so the client resumes from a
/// recent revision.
const BOOKMARK_BEFORE_END: Duration = Duration::from_secs(2);

/// When the next bookmark is due, at `now`, for a watch that ends at `end`: a minute on, or
/// 2 s before the end if that is sooner; none once that time has come (it was sent).
fn next_bookmark(
    now: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Option<tokio::time::Instant> {
    let due = (now + BOOKMARK_EVERY).min(end.checked_sub(BOOKMARK_BEFORE_END)?);
    (due > now).then_some(due)
}

fn bookmark(r: &berth_api::resources::Resource, rv: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta})
}

/// Serves a watch request.
pub async fn serve(
    srv: Arc<Server>,
    t: &Target,
    params: &Params,
    as_table: bool,
    metadata: bool,
    include: Include,
) -> Result<Response> {
    let r = t.resource;
    let filter = Filter::new(r, params)?.with_name(t.name.clone());
    let prefix = collection_key(r, t.namespace.as_deref());
    let rv_param = params.resource_version.as_deref().unwrap_or("");
    let send_initial = flag(&params.send_initial_events);
    let bookmarks = flag(&params.allow_watch_bookmarks);
    let render = Render {
        resource: r,
        table: as_table,
        metadata,
        include,
    };

    // resourceVersion "" or "0" (or sendInitialEvents) starts with the current state. Plain
    // JSON watches send the stored bytes as they are (see `rawjson`), selectors decoding only
    // the members they read; the rest decode each object to filter or render it.
    let raw = !as_table && !metadata && !is_events_v1(r);
    let mut initial = Vec::new();
    let mut initial_raw = Vec::new();
    let from = if rv_param.is_empty() || rv_param == "0" || send_initial {
        let listed = srv
            .store
            .list(
                &prefix,
                ListOptions {
                    limit: 0,
                    start_after: None,
                    revision: None,
                },
            )
            .await?;
        if raw {
            for kv in listed.items {
                if filter.matches_stored(&kv)? {
                    initial_raw.push(kv);
                }
            }
        } else {
            for kv in &listed.items {
                if !is_events_v1(r) && !filter.matches_stored(kv)? {
                    continue;
                }
                let obj = decode_as(r, kv)?;
                if filter.matches(&obj) {
                    initial.push(obj);
                }
            }
        }
        listed.revision
    } else {
        rv_param
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv_param}")))?
    };

    let timeout = params
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30 * 60));
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    let upstream = srv.store.watch(&prefix, from).await;
    let watch_rv = from;
    tokio::spawn(async move {
        let mut first = true;
        for kv in initial_raw {
            let Some(line) = raw_line(r, "ADDED", &kv, kv.mod_revision, &render, &mut first) else {
                continue;
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
        for obj in initial {
            if tx
                .send(render.line("ADDED", obj, &mut first))
                .await
                .is_err()
            {
                return;
            }
        }
        if send_initial {
            let _ = tx
                .send(render.line("BOOKMARK", bookmark(r, watch_rv, true), &mut first))
                .await;
        }
        let mut stream = match upstream {
            Ok(s) => s,
            Err(e) => {
                let _ = tx
                    .send(render.line("ERROR", ApiError::from(e).status().to_value(), &mut first))
                    .await;
                return;
            }
        };
        let end = tokio::time::Instant::now() + timeout;
        let deadline = tokio::time::sleep_until(end);
        tokio::pin!(deadline);
        let mut bookmark_due = bookmarks
            .then(|| next_bookmark(tokio::time::Instant::now(), end))
            .flatten();
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { return };
            let line = match ev {
                // Plain JSON watches write the stored bytes, as the initial events do: no
                // decode per watcher and event (selectors read only their members).
                Ok(Event::Put { kv, prev }) if raw => {
                    let now = filter.matches_stored(&kv).unwrap_or(false);
                    let before = prev
                        .as_ref()
                        .map(|p| filter.matches_stored(p).unwrap_or(false));
                    let kind = match (before, now) {
                        (None | Some(false), true) => Some("ADDED"),
                        (Some(true), true) => Some("MODIFIED"),
                        (Some(true), false) => Some("DELETED"),
                        _ => None,
                    };
                    kind.and_then(|k| raw_line(r, k, &kv, kv.mod_revision, &render, &mut first))
                }
                Ok(Event::Delete { prev, revision }) if raw => {
                    if filter.matches_stored(&prev).unwrap_or(false) {
                        raw_line(r, "DELETED", &prev, revision, &render, &mut first)
                    } else {
                        None
                    }
                }
                Ok(Event::Put { kv, prev }) => {
                    let Ok(obj) = decode_as(r, &kv) else { continue };
                    let now = filter.matches(&obj);
                    let before = prev
                        .as_ref()
                        .and_then(|p| decode_as(r, p).ok())
                        .map(|o| filter.matches(&o));
                    match (before, now) {
                        (None | Some(false), true) => Some(render.line("ADDED", obj, &mut first)),
                        (Some(true), true) => Some(render.line("MODIFIED", obj, &mut first)),
                        (Some(true), false) => Some(render.line("DELETED", obj, &mut first)),
                        _ => None,
                    }
                }
                Ok(Event::Delete { prev, revision }) => match decode_as(r, &prev) {
                    Ok(mut obj) if filter.matches(&obj) => {
                        obj.set_meta("resourceVersion", json!(revision.to_string()));
                        Some(render.line("DELETED", obj, &mut first))
                    }
                    _ => None,
                },
                Ok(Event::Progress { revision })
                    if bookmark_due.is_some_and(|t| tokio::time::Instant::now() >= t) =>
                {
                    bookmark_due = next_bookmark(tokio::time::Instant::now(), end);
                    Some(render.line("BOOKMARK", bookmark(r, revision, false), &mut first))
                }
                Ok(Event::Progress { .. }) => None,
                Err(e) => {
                    let _ = tx
                        .send(render.line(
                            "ERROR",
                            ApiError::from(e).status().to_value(),
                            &mut first,
                        ))
                        .await;
                    return;
                }
            };
            if let Some(line) = line
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A watch event line written from an object's stored bytes, its resourceVersion set to `rv`
/// (for a deletion, the deleting revision); decoded and rendered only when the bytes cannot
/// be spliced. None when the object cannot be read at all.
fn raw_line(
    r: &'static berth_api::resources::Resource,
    kind: &str,
    kv: &berth_store::KeyValue,
    rv: i64,
    render: &Render,
    first: &mut bool,
) -> Option<bytes::Bytes> {
    let mut line = Vec::with_capacity(kv.value.len() + 48);
    line.extend_from_slice(br#"{"type":""#);
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(br#"","object":"#);
    if crate::rawjson::with_resource_version(&kv.value, rv, &mut line) {
        line.extend_from_slice(b"}\n");
        return Some(bytes::Bytes::from(line));
    }
    let mut obj = decode_as(r, kv).ok()?;
    obj.set_meta("resourceVersion", json!(rv.to_string()));
    Some(render.line(kind, obj, first))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn bookmarks_come_each_minute_and_just_before_the_end() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_bookmark(now, now + s(290)), Some(now + s(60)));
        assert_eq!(
            next_bookmark(now, now + s(3)),
            Some(now + s(1)),
            "2 s before a near end"
        );
        assert_eq!(
            next_bookmark(now + s(1), now + s(3)),
            None,
            "the last one was sent"
        );
        assert_eq!(
            next_bookmark(now + s(2), now + s(3)),
            None,
            "too late for one"
        );
        assert_eq!(next_bookmark(now + s(61), now + s(290)), Some(now + s(121)));
    }
}
