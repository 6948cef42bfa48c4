//! One conformance suite for the `Store` contract, written once over `&dyn Store` and run
//! against the embedded backend and a real etcd process started by the test.

use std::future::Future;
use std::time::Duration;

use berth_store::{
    Embedded, EmbeddedOptions, Error, Etcd, EtcdOptions, Event, KeyValue, ListOptions, Store,
    WatchStream,
};
use bytes::Bytes;
use futures_util::StreamExt;

const PROGRESS: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Next non-progress event, failing the test after [`TIMEOUT`].
async fn next_change(w: &mut WatchStream) -> Event {
    loop {
        let item = tokio::time::timeout(TIMEOUT, w.next())
            .await
            .expect("timed out waiting for a watch event")
            .expect("watch stream ended")
            .expect("watch stream error");
        if !matches!(item, Event::Progress { .. }) {
            return item;
        }
    }
}

/// Asserts that no change arrives within a short while (progress events are fine).
async fn assert_quiet(w: &mut WatchStream) {
    let deadline = tokio::time::Instant::now() + PROGRESS * 3;
    loop {
        match tokio::time::timeout_at(deadline, w.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Event::Progress { .. }))) => {}
            Ok(other) => panic!("unexpected watch item {other:?}"),
        }
    }
}

async fn crud(s: &dyn Store, p: &str) {
    let key = format!("{p}a");
    let created = s.create(&key, b("v1")).await.expect("create");
    assert_eq!(created.key, key);
    assert_eq!(created.value, b("v1"));
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(
        s.current_revision().await.expect("rev"),
        created.mod_revision
    );
    assert!(
        matches!(s.create(&key, b("x")).await, Err(Error::AlreadyExists { key: k }) if k == key)
    );
    assert_eq!(s.get(&key).await.expect("get"), Some(created.clone()));
    assert_eq!(s.get(&format!("{p}missing")).await.expect("get"), None);

    let updated = s
        .update(&key, b("v2"), Some(created.mod_revision))
        .await
        .expect("update");
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(s.get(&key).await.expect("get"), Some(updated.clone()));

    match s.update(&key, b("v3"), Some(created.mod_revision)).await {
        Err(Error::Conflict { key: k, current }) => {
            assert_eq!(k, key);
            assert_eq!(*current, updated);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    let unconditional = s.update(&key, b("v3"), None).await.expect("update");
    assert!(unconditional.mod_revision > updated.mod_revision);
    assert!(matches!(
        s.update(&format!("{p}missing"), b("x"), None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.update(&format!("{p}missing"), b("x"), Some(1)).await,
        Err(Error::NotFound { .. })
    ));

    assert!(matches!(
        s.delete(&key, Some(updated.mod_revision)).await,
        Err(Error::Conflict { .. })
    ));
    let deleted = s
        .delete(&key, Some(unconditional.mod_revision))
        .await
        .expect("delete");
    assert_eq!(deleted, unconditional);
    assert_eq!(s.get(&key).await.expect("get"), None);
    assert!(s.current_revision().await.expect("rev") > unconditional.mod_revision);
    assert!(matches!(
        s.delete(&key, None).await,
        Err(Error::NotFound { .. })
    ));

    // Recreating starts a new lifetime: a fresh create revision.
    let again = s.create(&key, b("v4")).await.expect("recreate");
    assert!(again.create_revision > created.create_revision);
    assert_eq!(again.create_revision, again.mod_revision);
    assert!(matches!(
        s.create("", b("x")).await,
        Err(Error::InvalidKey { .. })
    ));
}

async fn list_paging(s: &dyn Store, p: &str) {
    let dir = format!("{p}items/");
    for name in ["d", "b", "e", "a", "c"] {
        s.create(&format!("{dir}{name}"), b(name))
            .await
            .expect("create");
    }
    // Neighbours that share a string prefix but are outside the listed "directory".
    s.create(&format!("{p}items"), b("x"))
        .await
        .expect("create");
    s.create(&format!("{p}itemsz/a"), b("x"))
        .await
        .expect("create");

    let all = s.list(&dir, ListOptions::default()).await.expect("list");
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| format!("{dir}{n}"))
        .collect();
    assert_eq!(keys, want);
    assert!(!all.more);
    assert_eq!(all.revision, s.current_revision().await.expect("rev"));
    assert_eq!(s.count(&dir).await.expect("count"), 5);
    assert_eq!(s.count(&format!("{p}nothing/")).await.expect("count"), 0);

    // Page by 2, pinned at the first page's revision while the data changes under us.
    let page1 = s
        .list(
            &dir,
            ListOptions {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .expect("page 1");
    assert_eq!(page1.items.len(), 2);
    assert!(page1.more);
    let pinned = page1.revision;
    let c = s.get(&format!("{dir}c")).await.expect("get").expect("c");
    s.delete(&c.key, None).await.expect("delete c");
    s.update(&format!("{dir}d"), b("d2"), None)
        .await
        .expect("update d");
    s.create(&format!("{dir}bb"), b("bb"))
        .await
        .expect("create bb");
    for (op, name, value) in [
        ("del", "e", ""),
        ("new", "e", "e2"),
        ("new", "f", "f"),
        ("del", "f", ""),
    ] {
        let key = format!("{dir}{name}");
        if op == "del" {
            s.delete(&key, None).await.expect("delete");
        } else {
            s.create(&key, b(value)).await.expect("create");
        }
    }

    let mut after = page1.items.last().map(|kv| kv.key.clone());
    let mut seen: Vec<KeyValue> = page1.items.clone();
    loop {
        let page = s
            .list(
                &dir,
                ListOptions {
                    limit: 2,
                    start_after: after.clone(),
                    revision: Some(pinned),
                },
            )
            .await
            .expect("next page");
        assert_eq!(page.revision, pinned);
        seen.extend(page.items.iter().cloned());
        after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(
        seen, all.items,
        "pinned pages show the state at the pinned revision"
    );

    // Unpinned, the latest state.
    let latest = s.list(&dir, ListOptions::default()).await.expect("list");
    let names: Vec<_> = latest
        .items
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    assert_eq!(names, ["a", "b", "bb", "d2", "e2"]);
    let tail = s
        .list(
            &dir,
            ListOptions {
                start_after: Some(format!("{dir}bb")),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(tail.items.len(), 2);

    let future = latest.revision + 1000;
    assert!(matches!(
        s.list(
            &dir,
            ListOptions {
                revision: Some(future),
                ..Default::default()
            }
        )
        .await,
        Err(Error::FutureRevision { .. })
    ));
}

async fn watch_from_revision(s: &dyn Store, p: &str) {
    let dir = format!("{p}w/");
    let other = format!("{p}other/");
    let start = s.current_revision().await.expect("rev");
    let a1 = s.create(&format!("{dir}a"), b("1")).await.expect("create");
    s.create(&format!("{other}x"), b("x"))
        .await
        .expect("create");
    let a2 = s.update(&a1.key, b("2"), None).await.expect("update");
    let del = s.delete(&a1.key, None).await.expect("delete");
    let del_rev = s.current_revision().await.expect("rev");
    s.create(&format!("{other}y"), b("y"))
        .await
        .expect("create");
    let bkv = s.create(&format!("{dir}b"), b("b")).await.expect("create");

    let mut w = s.watch(&dir, start).await.expect("watch");
    assert_eq!(
        next_change(&mut w).await,
        Event::Put {
            kv: a1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut w).await,
        Event::Put {
            kv: a2.clone(),
            prev: Some(a1.clone())
        }
    );
    assert_eq!(
        next_change(&mut w).await,
        Event::Delete {
            prev: del.clone(),
            revision: del_rev
        }
    );
    assert_eq!(
        next_change(&mut w).await,
        Event::Put {
            kv: bkv.clone(),
            prev: None
        }
    );
    assert_quiet(&mut w).await;

    // Live events after the replay, still ignoring the other prefix.
    s.create(&format!("{other}z"), b("z"))
        .await
        .expect("create");
    let c = s.create(&format!("{dir}c"), b("c")).await.expect("create");
    assert_eq!(next_change(&mut w).await, Event::Put { kv: c, prev: None });

    // From a later revision: exactly the later events.
    let mut w2 = s.watch(&dir, a2.mod_revision).await.expect("watch");
    assert!(
        matches!(next_change(&mut w2).await, Event::Delete { revision, .. } if revision == del_rev)
    );
    assert!(matches!(next_change(&mut w2).await, Event::Put { kv, .. } if kv == bkv));

    // From now (0): only new events.
    let mut w3 = s.watch(&dir, 0).await.expect("watch");
    assert_quiet(&mut w3).await;
    let d = s.create(&format!("{dir}d"), b("d")).await.expect("create");
    assert_eq!(next_change(&mut w3).await, Event::Put { kv: d, prev: None });
}

async fn concurrent_creates(s: &dyn Store, p: &str) {
    let creates = (0..200).map(|i| s.create_owned(format!("{p}c/{i:03}")));
    let results = futures_util::future::join_all(creates).await;
    let mut revisions: Vec<i64> = results
        .into_iter()
        .map(|r| r.expect("create").mod_revision)
        .collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 200, "every create got its own revision");
    assert_eq!(s.count(&format!("{p}c/")).await.expect("count"), 200);
}

/// Small helper so `join_all` can hold the futures (the key must outlive the call).
trait CreateOwned {
    fn create_owned(&self, key: String) -> impl Future<Output = berth_store::Result<KeyValue>>;
}

impl CreateOwned for &dyn Store {
    fn create_owned(&self, key: String) -> impl Future<Output = berth_store::Result<KeyValue>> {
        let s = *self;
        async move { s.create(&key, b("v")).await }
    }
}

async fn progress(s: &dyn Store, p: &str) {
    let dir = format!("{p}prog/");
    let mut w = s.watch(&dir, 0).await.expect("watch");
    let first = tokio::time::timeout(TIMEOUT, w.next())
        .await
        .expect("no progress event")
        .expect("stream ended")
        .expect("stream error");
    assert!(matches!(first, Event::Progress { .. }), "{first:?}");
    let kv = s.create(&format!("{dir}a"), b("a")).await.expect("create");
    // Unrelated writes advance the store revision; progress must still be sound for us.
    let other = s
        .create(&format!("{p}noise"), b("n"))
        .await
        .expect("create");
    let mut saw_put = false;
    loop {
        let item = tokio::time::timeout(TIMEOUT, w.next())
            .await
            .expect("timed out")
            .expect("stream ended")
            .expect("stream error");
        match item {
            Event::Put { kv: got, .. } => {
                assert_eq!(got, kv);
                saw_put = true;
            }
            Event::Progress { revision } if revision >= other.mod_revision => {
                assert!(
                    saw_put,
                    "progress past the put before the put was delivered"
                );
                break;
            }
            Event::Progress { revision } => {
                assert!(!saw_put || revision >= kv.mod_revision);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn compaction<F, Fut>(s: &dyn Store, p: &str, compact: F)
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = format!("{p}compact/");
    let r1 = s.create(&format!("{dir}x"), b("x")).await.expect("create");
    s.create(&format!("{dir}y"), b("y")).await.expect("create");
    let r2 = s.create(&format!("{dir}z"), b("z")).await.expect("create");
    s.update(&r2.key, b("z2"), None).await.expect("update");
    compact(r2.mod_revision).await;

    match s.watch(&dir, r1.mod_revision).await {
        Err(Error::Compacted { requested, .. }) => assert_eq!(requested, r1.mod_revision),
        Ok(mut w) => {
            let first = tokio::time::timeout(TIMEOUT, w.next())
                .await
                .expect("timed out");
            assert!(
                matches!(first, Some(Err(Error::Compacted { .. }))),
                "expected compacted, got {first:?}"
            );
        }
        Err(other) => panic!("expected compacted, got {other:?}"),
    }
    let listed = s
        .list(
            &dir,
            ListOptions {
                revision: Some(r1.mod_revision),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(listed, Err(Error::Compacted { .. })), "{listed:?}");

    // From the compaction revision on, history is still there.
    let mut w = s.watch(&dir, r2.mod_revision).await.expect("watch");
    assert!(matches!(next_change(&mut w).await, Event::Put { kv, .. } if kv.value == b("z2")));
}

/// A list bigger than gRPC's default 4 MiB message comes back whole (etcd: kube-apiserver
/// lifts the client's receive limit the same way).
async fn large_list(s: &dyn Store, p: &str) {
    let value = Bytes::from(vec![b'x'; 64 * 1024]);
    for i in 0..80 {
        s.create(&format!("{p}{i:03}"), value.clone())
            .await
            .expect("create");
    }
    let all = s.list(p, ListOptions::default()).await.expect("list");
    assert_eq!(all.items.len(), 80);
    assert!(!all.more);
}

/// The backend-independent part, each case in its own key space.
async fn suite<F, Fut>(s: &dyn Store, compact: F)
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = ()>,
{
    crud(s, "/t/crud/").await;
    list_paging(s, "/t/list/").await;
    watch_from_revision(s, "/t/watch/").await;
    concurrent_creates(s, "/t/conc/").await;
    progress(s, "/t/progress/").await;
    large_list(s, "/t/large/").await;
    // Last: on etcd a compaction affects the whole keyspace.
    compaction(s, "/t/compaction/", compact).await;
}

fn embedded_opts() -> EmbeddedOptions {
    EmbeddedOptions {
        progress_interval: PROGRESS,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Embedded::open(dir.path(), embedded_opts()).expect("open");
    suite(&store, |rev| {
        store.compact(rev);
        async {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, rev) = {
        let store = Embedded::open(dir.path(), embedded_opts()).expect("open");
        let kept = store.create("/r/a", b("a")).await.expect("create");
        store.create("/r/b", b("b")).await.expect("create");
        store.delete("/r/b", None).await.expect("delete");
        (kept, store.current_revision().await.expect("rev"))
    };
    let store = Embedded::open(dir.path(), embedded_opts()).expect("reopen");
    assert_eq!(
        store.current_revision().await.expect("rev"),
        rev,
        "revision persisted, deletes included"
    );
    assert_eq!(store.get("/r/a").await.expect("get"), Some(kept.clone()));
    assert_eq!(store.get("/r/b").await.expect("get"), None);
    // Recent history survives a restart, as with etcd: a watch resumes where it was.
    let mut resumed = store.watch("/r/", kept.mod_revision).await.expect("resume");
    assert!(matches!(
        next_change(&mut resumed).await,
        Event::Put { ref kv, prev: None } if kv.key == "/r/b"
    ));
    assert!(matches!(
        next_change(&mut resumed).await,
        Event::Delete { ref prev, .. } if prev.key == "/r/b"
    ));
    drop(resumed);
    // But watching from the current revision works, and new revisions continue upward.
    let mut w = store.watch("/r/", rev).await.expect("watch");
    let c = store.create("/r/c", b("c")).await.expect("create");
    assert_eq!(c.mod_revision, rev + 1);
    assert_eq!(next_change(&mut w).await, Event::Put { kv: c, prev: None });
    drop(w);
    drop(store);
    // Only the last `history` events are kept across a restart; older watches re-list.
    let small = EmbeddedOptions {
        history: 2,
        ..embedded_opts()
    };
    let store = Embedded::open(dir.path(), small).expect("reopen");
    let d = store.update("/r/a", b("a2"), None).await.expect("update");
    drop(store);
    let store = Embedded::open(dir.path(), small_opts()).expect("reopen");
    assert!(matches!(
        store.watch("/r/", kept.mod_revision).await,
        Err(Error::Compacted { .. })
    ));
    let mut w = store
        .watch("/r/", d.mod_revision - 1)
        .await
        .expect("recent");
    assert!(matches!(
        next_change(&mut w).await,
        Event::Put { ref kv, prev: Some(ref p) } if kv.value == b("a2") && p.value == b("a")
    ));
}

/// An object-like value of a few hundred bytes that the embedded store keeps packed.
fn object(kind: &str, name: &str, version: usize) -> Bytes {
    b(&format!(
        r#"{{"kind":"{kind}","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"default","labels":{{"app":"web","tier":"front"}},"annotations":{{"note":"{version}"}}}},"spec":{{"ports":[{{"name":"http","port":80,"targetPort":8080,"protocol":"TCP"}}],"selector":{{"app":"web"}},"type":"ClusterIP","sessionAffinity":"None"}},"status":{{"version":{version}}}}}"#
    ))
}

/// Values the embedded store packs in memory read back as written on every read path:
/// get, lists now and at past revisions, watches replayed from the history (with their
/// previous values), live watches, and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_packed_values_read_back_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Embedded::open(dir.path(), embedded_opts()).expect("open");
    // A first write elsewhere: watching from revision 0 would mean "from now".
    let start = store
        .create("/other", b("x"))
        .await
        .expect("create")
        .mod_revision;
    let mut want = std::collections::BTreeMap::new();
    for i in 0..40 {
        for kind in ["Service", "Pod"] {
            let key = format!("/k/{kind}s/default/o{i:02}");
            let kv = store
                .create(&key, object(kind, &format!("o{i}"), 0))
                .await
                .expect("create");
            want.insert(key, kv);
        }
    }
    let created = store.current_revision().await.expect("rev");
    let mut live = store.watch("/k/", created).await.expect("watch");
    let old = want.clone();
    for (i, (key, kv)) in want.iter_mut().enumerate() {
        if i % 3 == 0 {
            store.delete(key, None).await.expect("delete");
        } else {
            let kind = if key.contains("/Pods/") {
                "Pod"
            } else {
                "Service"
            };
            *kv = store
                .update(key, object(kind, key, i + 1), None)
                .await
                .expect("update");
        }
    }
    want.retain(|_, kv| kv.mod_revision > created);
    for (key, kv) in &want {
        assert_eq!(store.get(key).await.expect("get").as_ref(), Some(kv));
    }
    let listed = store
        .list("/k/", ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.items, want.values().cloned().collect::<Vec<_>>());
    let at = ListOptions {
        revision: Some(created),
        ..Default::default()
    };
    let past = store
        .list("/k/", at.clone())
        .await
        .expect("list at a past revision");
    assert_eq!(past.items, old.values().cloned().collect::<Vec<_>>());
    // The history replays every value, previous ones included, as the live watch saw them.
    let mut replay = store.watch("/k/", start).await.expect("replay");
    let mut creates = Vec::new();
    for _ in 0..old.len() {
        match next_change(&mut replay).await {
            Event::Put { kv, prev: None } => creates.push(kv),
            other => panic!("expected a create, got {other:?}"),
        }
    }
    creates.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(creates, old.values().cloned().collect::<Vec<_>>());
    for _ in 0..old.len() {
        let seen = next_change(&mut live).await;
        assert_eq!(next_change(&mut replay).await, seen);
        let (key, prev) = match &seen {
            Event::Put { kv, prev } => (&kv.key, prev.as_ref()),
            Event::Delete { prev, .. } => (&prev.key, Some(prev)),
            Event::Progress { .. } => unreachable!("next_change skips progress"),
        };
        assert_eq!(prev, old.get(key), "the previous value of {key}");
    }
    drop((live, replay));
    drop(store);
    let store = Embedded::open(dir.path(), embedded_opts()).expect("reopen");
    let listed = store
        .list("/k/", ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.items, want.values().cloned().collect::<Vec<_>>());
    let past = store
        .list("/k/", at)
        .await
        .expect("list at a past revision");
    assert_eq!(past.items, old.values().cloned().collect::<Vec<_>>());
}

fn small_opts() -> EmbeddedOptions {
    EmbeddedOptions {
        history: 2,
        ..embedded_opts()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_history_is_bounded_and_slow_watchers_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Embedded::open(
        dir.path(),
        EmbeddedOptions {
            history: 10,
            watch_buffer: 8,
            progress_interval: PROGRESS,
            ..Default::default()
        },
    )
    .expect("open");
    store.create("/s/first", b("v")).await.expect("create");
    let start = store.current_revision().await.expect("rev");
    let mut slow = store.watch("/s/", start).await.expect("watch");
    for i in 0..30 {
        store
            .create(&format!("/s/{i:02}"), b("v"))
            .await
            .expect("create");
    }
    // Old history is gone...
    assert!(matches!(
        store.watch("/s/", start).await,
        Err(Error::Compacted { .. })
    ));
    // ...recent history is there...
    let now = store.current_revision().await.expect("rev");
    drop(store.watch("/s/", now - 5).await.expect("recent watch"));
    // ...and the watcher that never read ends with Lagged after what it could still get.
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(TIMEOUT, slow.next())
            .await
            .expect("timed out")
        {
            Some(Ok(Event::Put { .. })) => delivered += 1,
            Some(Ok(Event::Progress { .. })) => {}
            Some(Err(Error::Lagged { revision })) => {
                assert!(revision < now);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(delivered < 30);
    assert!(slow.next().await.is_none(), "stream ends after the error");
}

/// The history also keeps at most `history_bytes` of values: old revisions go as the bytes
/// come in (410 Gone for watches and lists from them), recent ones stay, the newest event
/// stays even when it alone is over, and the bound holds again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_history_is_bounded_by_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        history_bytes: 100,
        ..embedded_opts()
    };
    let store = Embedded::open(dir.path(), opts.clone()).expect("open");
    let value = b(&"x".repeat(30));
    let first = store.create("/h/a", value.clone()).await.expect("create");
    let mut last = first.clone();
    for i in 0..5 {
        last = store
            .update("/h/a", b(&format!("{i}{}", "y".repeat(29))), None)
            .await
            .expect("update");
    }
    // 6 events of 30 bytes: only the last 3 fit in 100.
    assert!(matches!(
        store.watch("/h/", first.mod_revision).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        store
            .list(
                "/h/",
                ListOptions {
                    revision: Some(first.mod_revision),
                    ..Default::default()
                }
            )
            .await,
        Err(Error::Compacted { .. })
    ));
    let mut w = store
        .watch("/h/", last.mod_revision - 3)
        .await
        .expect("recent history");
    assert!(matches!(
        next_change(&mut w).await,
        Event::Put { ref kv, prev: Some(_) } if kv.mod_revision == last.mod_revision - 2
    ));
    drop(w);
    let old = store
        .list(
            "/h/",
            ListOptions {
                revision: Some(last.mod_revision - 1),
                ..Default::default()
            },
        )
        .await
        .expect("list from recent history");
    assert_eq!(old.items[0].value, b(&format!("3{}", "y".repeat(29))));
    // One value over the bound by itself (memory holds it packed, so one without repeats):
    // the watch from just before it still works.
    let mut x = 0x9e37_79b9_u32;
    let noise: String = (0..500)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let big = store.create("/h/big", b(&noise)).await.expect("create");
    let mut w = store
        .watch("/h/", big.mod_revision - 1)
        .await
        .expect("the newest event stays");
    assert!(matches!(next_change(&mut w).await, Event::Put { ref kv, .. } if kv == &big));
    drop(w);
    drop(store);
    // Reopened with the same bound, the history read back from the file is bounded too.
    let store = Embedded::open(dir.path(), opts).expect("reopen");
    assert!(matches!(
        store.watch("/h/", last.mod_revision - 1).await,
        Err(Error::Compacted { .. })
    ));
    drop(
        store
            .watch("/h/", big.mod_revision - 1)
            .await
            .expect("newest kept"),
    );
}

/// Connects to a throwaway etcd from berth-testkit, retrying until it answers.
async fn connect(server: &berth_testkit::Etcd, prefix: &str) -> Etcd {
    let endpoints = [format!("http://{}", server.endpoint)];
    let opts = EtcdOptions {
        progress_interval: PROGRESS,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = match Etcd::connect_with(&endpoints, prefix, opts.clone()).await {
            Ok(etcd) => match etcd.current_revision().await {
                Ok(_) => return etcd,
                Err(e) => e,
            },
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd did not start: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance() {
    let server = berth_testkit::Etcd::start();
    let store = connect(&server, "/berth").await;
    // A key outside the store's prefix must be invisible.
    let raw = connect(&server, "").await;
    raw.create("/elsewhere/t/crud/a", b("x"))
        .await
        .expect("create");
    suite(&store, |rev| {
        let store = &store;
        async move { store.compact(rev).await.expect("compact") }
    })
    .await;
    assert_eq!(raw.count("/berth/t/crud/").await.expect("count"), 1);
}
