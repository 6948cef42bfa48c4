//! Embedded backend: a durable redb file plus an in-memory copy of all keys for reads (values
//! packed, [`crate::pack`]), a bounded event history for watches (kept in the file too, so
//! watches resume across a restart), and one writer thread that group-commits concurrent
//! writes into a single redb transaction (one fsync per batch) and recovers by itself from
//! failed commits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::pack::{Held, Packer};
use crate::{Error, Event, KeyValue, ListOptions, ListResult, Result, Store, WatchStream};

/// key → 8-byte create revision, 8-byte mod revision (little endian), then the value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Store-wide metadata; holds the revision counter under [`REVISION`].
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// The last `history` events by revision, so watches resume across a restart as with etcd.
const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
const FILE_NAME: &str = "berth.redb";

/// Tuning of the [`Embedded`] backend.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// How many recent events are kept for watches and historical lists (default 10,000).
    pub history: usize,
    /// Most bytes of object values those events may hold, as memory holds them (packed,
    /// [`crate::pack`]; default 16 MiB): the oldest go first when either bound is reached.
    /// Each event counts the version it wrote (a delete, the version it removed), so this
    /// bounds the old versions only the history keeps; at 10,000 Pods of 5 KB, 10,000
    /// events held some 50 MB. The newest event always stays.
    pub history_bytes: usize,
    /// How often an idle watch stream emits [`Event::Progress`] (default 1 s).
    pub progress_interval: Duration,
    /// How many events a watcher may fall behind before its stream ends with
    /// [`Error::Lagged`] (default 10,000).
    pub watch_buffer: usize,
    /// Most writes committed in one redb transaction (default 1,024).
    pub max_batch: usize,
    /// fsync every commit (default true). Off only for throwaway stores: a crash may then
    /// lose recent writes.
    pub durable: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history: 10_000,
            history_bytes: 16 << 20,
            progress_interval: Duration::from_secs(1),
            watch_buffer: 10_000,
            max_batch: 1_024,
            durable: true,
        }
    }
}

/// Store backed by a redb file in a local directory. Reads are served from memory; writes
/// are serialized through one writer thread so revisions and event order agree.
pub struct Embedded {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by the API handles, the writer thread and nothing else (watch streams only
/// hold broadcast receivers, so dropping the store ends them).
struct Shared {
    state: RwLock<State>,
    events: broadcast::Sender<Event>,
    opts: EmbeddedOptions,
    /// Why the last commit failed, until a commit succeeds again.
    fault: std::sync::Mutex<Option<Arc<redb::Error>>>,
}

impl Shared {
    fn fault(&self) -> Option<Arc<redb::Error>> {
        self.fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_fault(&self, fault: Option<Arc<redb::Error>>) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }
}

struct State {
    data: BTreeMap<String, Version>,
    revision: i64,
    /// Events with revision > `compacted`, oldest first.
    history: VecDeque<Change>,
    /// The sum of [`held`] over `history`.
    history_bytes: usize,
    /// Every event after this revision is in `history`.
    compacted: i64,
}

/// A version of a key as memory holds it (the key is where it is filed).
#[derive(Clone)]
struct Version {
    value: Held,
    create_revision: i64,
    mod_revision: i64,
}

impl Version {
    fn pack(packer: &mut Packer, kv: &KeyValue) -> Version {
        Version {
            value: packer.pack(&kv.key, &kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }

    /// The version as readers get it.
    fn kv(&self, key: &str) -> Result<KeyValue> {
        Ok(KeyValue {
            key: key.to_owned(),
            value: self.value.bytes().map_err(|_| Error::Corrupt {
                key: key.to_owned(),
                reason: "its value in memory does not unpack",
            })?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }
}

/// An event as the history holds it: the [`Event`] with its values as memory holds them,
/// shared with [`State::data`] and with the neighbouring events of the same key.
#[derive(Clone)]
enum Change {
    Put {
        key: String,
        new: Version,
        prev: Option<Version>,
    },
    Delete {
        key: String,
        prev: Version,
        revision: i64,
    },
}

impl Change {
    fn revision(&self) -> i64 {
        match self {
            Change::Put { new, .. } => new.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }

    fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Delete { key, .. } => key,
        }
    }

    /// The event as watchers get it.
    fn event(&self) -> Result<Event> {
        Ok(match self {
            Change::Put { key, new, prev } => Event::Put {
                kv: new.kv(key)?,
                prev: prev.as_ref().map(|p| p.kv(key)).transpose()?,
            },
            Change::Delete {
                key,
                prev,
                revision,
            } => Event::Delete {
                prev: prev.kv(key)?,
                revision: *revision,
            },
        })
    }

    /// `event` as the history keeps it: each value is the one `latest` (the batch's writes,
    /// then [`State::data`]) holds for that version, packed only when none does (loading).
    fn of(
        event: &Event,
        packer: &mut Packer,
        latest: impl Fn(&str, i64) -> Option<Version>,
    ) -> Option<Change> {
        let mut held = |kv: &KeyValue| {
            latest(&kv.key, kv.mod_revision).unwrap_or_else(|| Version::pack(packer, kv))
        };
        match event {
            Event::Put { kv, prev } => Some(Change::Put {
                key: kv.key.clone(),
                new: held(kv),
                prev: prev.as_ref().map(&mut held),
            }),
            Event::Delete { prev, revision } => Some(Change::Delete {
                key: prev.key.clone(),
                prev: held(prev),
                revision: *revision,
            }),
            Event::Progress { .. } => None,
        }
    }
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Option<i64>,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way readers
        // care about (the writer applies a batch only after it is durable), so ignore poison.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Embedded {
    /// Opens (or creates) the store in `dir`, loading every key and the recent event history
    /// into memory, so watches from before a restart resume (older ones get
    /// [`Error::Compacted`]).
    /// Blocking (file I/O): call it before serving, or via `spawn_blocking`. Dropping the
    /// store waits for the writer thread to finish the writes already queued.
    pub fn open(dir: &Path, opts: EmbeddedOptions) -> Result<Embedded> {
        // Every Secret is in here: the directory 0700 and the file 0600, even when an older
        // berth made them world-readable.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::Io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(Error::Io)?;
        let file = dir.join(FILE_NAME);
        if !file.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(Error::Io)?;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::Io)?;
        let db = open_db(&file)?;
        // Create the tables on first open so readers never see them missing.
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(META)?;
        txn.open_table(HISTORY)?;
        txn.commit()?;

        let read = db.begin_read()?;
        let revision = read
            .open_table(META)?
            .get(REVISION)?
            .map_or(0, |v| v.value());
        let mut packer = Packer::default();
        let mut data = BTreeMap::new();
        for entry in read.open_table(KV)?.iter()? {
            let (k, v) = entry?;
            let kv = decode(k.value(), v.value())?;
            let version = Version::pack(&mut packer, &kv);
            data.insert(kv.key, version);
        }
        let mut history = VecDeque::new();
        for entry in read.open_table(HISTORY)?.iter()? {
            let (_, raw) = entry?;
            let event = decode_event(raw.value())?;
            // Versions still current share the data's values.
            let current = |key: &str, rev: i64| {
                data.get(key)
                    .filter(|v: &&Version| v.mod_revision == rev)
                    .cloned()
            };
            history.extend(Change::of(&event, &mut packer, current));
        }
        let mut history_bytes = history.iter().map(held).sum();
        trim(&mut history, &mut history_bytes, &opts);
        // Everything after the revision before the oldest kept event is in the history.
        let compacted = history
            .front()
            .map_or(revision, |e: &Change| e.revision() - 1);
        drop(read);

        let (events, _) = broadcast::channel(opts.watch_buffer.max(1));
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                data,
                revision,
                history,
                history_bytes,
                compacted,
            }),
            events,
            opts,
            fault: std::sync::Mutex::new(None),
        });
        // Bounded so a flood of writers waits here (async) instead of growing memory.
        let (tx, rx) = mpsc::channel(shared.opts.max_batch.max(1) * 4);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer_loop(db, file, writer_shared, rx, packer))
            .map_err(Error::Io)?;
        Ok(Embedded {
            shared,
            requests: Some(tx),
            writer: Some(writer),
        })
    }

    /// Drops history up to and including `revision`, like an etcd compaction: later watches
    /// and lists from before it get [`Error::Compacted`]. Values are unaffected.
    pub fn compact(&self, revision: i64) {
        let mut state = self.shared.write();
        while state
            .history
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            if let Some(old) = state.history.pop_front() {
                state.history_bytes -= held(&old);
            }
        }
        state.compacted = state.compacted.max(revision.min(state.revision));
    }

    async fn submit(&self, op: Op) -> Result<KeyValue> {
        let requests = self.requests.as_ref().ok_or(Error::Closed)?;
        let (reply, rx) = oneshot::channel();
        requests
            .send(Request { op, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish pending batches and exit; joining it
        // releases the database file so the directory can be reopened right away.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The bytes of values `change` adds to the history, as memory holds them: the version it
/// wrote, or for a delete the version it removed (its `prev` on a put is the previous
/// event's version, or the one value from before the history, so it is not counted again).
fn held(change: &Change) -> usize {
    match change {
        Change::Put { new, .. } => new.value.held_len(),
        Change::Delete { prev, .. } => prev.value.held_len(),
    }
}

/// Drops the oldest events while the history is over either bound of `opts`, keeping the
/// newest; returns the revision of the last one dropped.
fn trim(history: &mut VecDeque<Change>, bytes: &mut usize, opts: &EmbeddedOptions) -> Option<i64> {
    let mut dropped = None;
    while history.len() > opts.history || (history.len() > 1 && *bytes > opts.history_bytes) {
        let Some(old) = history.pop_front() else {
            break;
        };
        *bytes -= held(&old);
        dropped = Some(old.revision());
    }
    dropped
}

/// An event as stored in [`HISTORY`]: a tag, then length-prefixed key/value records.
fn encode_event(event: &Event) -> Vec<u8> {
    fn record(buf: &mut Vec<u8>, kv: &KeyValue) {
        let key = kv.key.as_bytes();
        let value = encode(kv);
        buf.extend_from_slice(&(key.len() as u64).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(&value);
    }
    let mut buf = Vec::new();
    match event {
        Event::Put { kv, prev: None } => {
            buf.push(0);
            record(&mut buf, kv);
        }
        Event::Put { kv, prev: Some(p) } => {
            buf.push(1);
            record(&mut buf, kv);
            record(&mut buf, p);
        }
        Event::Delete { prev, revision } => {
            buf.push(2);
            record(&mut buf, prev);
            buf.extend_from_slice(&revision.to_le_bytes());
        }
        // Never stored (progress is not a change); encoded for completeness.
        Event::Progress { revision } => {
            buf.push(3);
            buf.extend_from_slice(&revision.to_le_bytes());
        }
    }
    buf
}

/// Reads [`encode_event`]'s records off the front of a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn corrupt() -> Error {
        Error::Corrupt {
            key: "history".to_owned(),
            reason: "truncated event record",
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n).ok_or_else(Self::corrupt)?;
        self.0 = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| Self::corrupt())?;
        Ok(u64::from_le_bytes(b))
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| Self::corrupt())
    }

    fn record(&mut self) -> Result<KeyValue> {
        let n = self.len()?;
        let key = std::str::from_utf8(self.take(n)?).map_err(|_| Self::corrupt())?;
        let n = self.len()?;
        decode(key, self.take(n)?)
    }
}

fn decode_event(raw: &[u8]) -> Result<Event> {
    let (&tag, rest) = raw.split_first().ok_or_else(Cursor::corrupt)?;
    let mut c = Cursor(rest);
    Ok(match tag {
        0 => Event::Put {
            kv: c.record()?,
            prev: None,
        },
        1 => Event::Put {
            kv: c.record()?,
            prev: Some(c.record()?),
        },
        2 => Event::Delete {
            prev: c.record()?,
            revision: c.u64()?.cast_signed(),
        },
        _ => Event::Progress {
            revision: c.u64()?.cast_signed(),
        },
    })
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + kv.value.len());
    buf.extend_from_slice(&kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&kv.mod_revision.to_le_bytes());
    buf.extend_from_slice(&kv.value);
    buf
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue> {
    let corrupt = || Error::Corrupt {
        key: key.to_owned(),
        reason: "record shorter than its 16-byte header",
    };
    let (create, rest) = raw.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (modr, value) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        create_revision: i64::from_le_bytes(*create),
        mod_revision: i64::from_le_bytes(*modr),
    })
}

/// The writer thread: takes everything queued (up to `max_batch`), commits it as one redb
/// transaction, publishes it, answers, repeat. Batching is what keeps latency low under
/// concurrency: N writers waiting on one fsync instead of N fsyncs in a row.
///
/// A failed commit (a full disk) fails its batch and marks the store faulted; redb refuses
/// every later transaction on that handle, so the writer closes it and opens the file again,
/// retrying each second while idle, until a probe commit succeeds: the store recovers by
/// itself once the fault clears.
fn writer_loop(
    db: Database,
    path: std::path::PathBuf,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    mut packer: Packer,
) {
    let max_batch = shared.opts.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    let mut db = Some(db);
    loop {
        let first = if shared.fault().is_some() {
            match rx.try_recv() {
                Ok(req) => Some(req),
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_secs(1));
                    recover(&mut db, &path, &shared);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            rx.blocking_recv()
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        if shared.fault().is_some() {
            recover(&mut db, &path, &shared);
        }
        match (&db, shared.fault()) {
            (Some(d), None) => {
                if let Err(e) = process_batch(d, &shared, &mut batch, &mut packer) {
                    tracing::error!(error = %e, path = %path.display(), "store write failed; retrying until it recovers");
                    shared.set_fault(Some(e));
                    db = None;
                }
            }
            (_, fault) => {
                let e = fault.unwrap_or_else(|| Arc::new(redb::Error::PreviousIo));
                for Request { reply, .. } in batch.drain(..) {
                    let _ = reply.send(Err(Error::Embedded(e.clone())));
                }
            }
        }
    }
}

/// redb's page cache (reads and the write buffer). Its default, 1 GiB, grew to ~48 MB at
/// 10,000 Services + slices: memory held for nothing, since every value is also in this
/// store's memory and reads never go to redb; the kernel's page cache serves redb's own reads.
const REDB_CACHE_BYTES: usize = 8 << 20;

/// Opens (or creates) the redb file with berth's cache size.
fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(path)
}

/// Reopens the database after a failed commit and proves it writable with a commit of the
/// current revision; clears the fault on success.
fn recover(db: &mut Option<Database>, path: &Path, shared: &Shared) {
    // redb locks the file: the old handle must be gone before it is opened again.
    db.take();
    let revision = shared.read().revision;
    let probe = open_db(path).map_err(redb::Error::from).and_then(|d| {
        let txn = d.begin_write()?;
        txn.open_table(META)?.insert(REVISION, revision)?;
        txn.commit()?;
        Ok(d)
    });
    match probe {
        Ok(d) => {
            tracing::info!(path = %path.display(), "store writable again");
            *db = Some(d);
            shared.set_fault(None);
        }
        Err(e) => shared.set_fault(Some(Arc::new(e))),
    }
}

/// Commits one batch; the error is the failed commit (the batch's writes have been failed).
fn process_batch(
    db: &Database,
    shared: &Shared,
    batch: &mut Vec<Request>,
    packer: &mut Packer,
) -> Result<(), Arc<redb::Error>> {
    // Evaluate preconditions against memory plus this batch's earlier writes. Only this
    // thread mutates State, so what we read stays true until we apply the batch.
    let mut staged: HashMap<String, Option<KeyValue>> = HashMap::new();
    let mut events = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let base_revision;
    let mut revision;
    {
        let state = shared.read();
        base_revision = state.revision;
        revision = state.revision;
        for Request { op, reply } in batch.drain(..) {
            let key = match &op {
                Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => {
                    key.clone()
                }
            };
            let current = match staged.get(&key) {
                Some(v) => Ok(v.clone()),
                None => state.data.get(&key).map(|v| v.kv(&key)).transpose(),
            };
            let outcome = current.and_then(|current| apply(op, current, revision + 1));
            if let Ok((kv, event)) = &outcome {
                revision += 1;
                let new = match event {
                    Event::Delete { .. } => None,
                    _ => Some(kv.clone()),
                };
                staged.insert(key, new);
                events.push(event.clone());
            }
            outcomes.push((reply, outcome.map(|(kv, _)| kv)));
        }
    }

    if !events.is_empty()
        && let Err(e) = commit(db, &shared.opts, &staged, &events, revision)
    {
        // Nothing was applied: fail the writes of this batch, keep the precondition errors.
        let e = Arc::new(e);
        for (reply, outcome) in outcomes {
            let outcome = outcome.and_then(|_| Err(Error::Embedded(e.clone())));
            let _ = reply.send(outcome);
        }
        return Err(e);
    }

    if !events.is_empty() {
        // Packed before the write lock is taken, each value once: the history's versions
        // are the data's. Only this thread writes State, so reading it here is consistent.
        let mut latest: HashMap<String, Version> = HashMap::new();
        let mut changes = Vec::with_capacity(events.len());
        {
            let state = shared.read();
            for event in events {
                let found = |key: &str, rev: i64| {
                    latest
                        .get(key)
                        .or_else(|| state.data.get(key))
                        .filter(|v| v.mod_revision == rev)
                        .cloned()
                };
                let Some(change) = Change::of(&event, packer, found) else {
                    continue;
                };
                if let Change::Put { key, new, .. } = &change {
                    latest.insert(key.clone(), new.clone());
                }
                changes.push((event, change));
            }
        }
        let mut state = shared.write();
        debug_assert_eq!(state.revision, base_revision);
        for (key, value) in staged {
            match value {
                Some(kv) => {
                    // The batch's last put of the key, packed above.
                    let v = latest
                        .remove(key.as_str())
                        .unwrap_or_else(|| Version::pack(packer, &kv));
                    state.data.insert(key, v)
                }
                None => state.data.remove(&key),
            };
        }
        state.revision = revision;
        for (event, change) in changes {
            state.history_bytes += held(&change);
            state.history.push_back(change);
            let state = &mut *state;
            if let Some(last) = trim(&mut state.history, &mut state.history_bytes, &shared.opts) {
                state.compacted = last;
            }
            // Sent under the lock so a watch registering under the read lock sees each
            // event exactly once: either in the history snapshot or on its receiver.
            let _ = shared.events.send(event);
        }
    }
    for (reply, outcome) in outcomes {
        let _ = reply.send(outcome);
    }
    Ok(())
}

/// Checks one operation against the key's current value; on success returns the result kv
/// and the event it produces at `revision`.
fn apply(op: Op, current: Option<KeyValue>, revision: i64) -> Result<(KeyValue, Event)> {
    let check = |key: &str, expected: Option<i64>, current: Option<KeyValue>| match current {
        None => Err(Error::NotFound {
            key: key.to_owned(),
        }),
        Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => Err(Error::Conflict {
            key: key.to_owned(),
            current: Box::new(cur),
        }),
        Some(cur) => Ok(cur),
    };
    match op {
        Op::Create { key, value } => {
            if current.is_some() {
                return Err(Error::AlreadyExists { key });
            }
            let kv = KeyValue {
                key,
                value,
                create_revision: revision,
                mod_revision: revision,
            };
            Ok((kv.clone(), Event::Put { kv, prev: None }))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let cur = check(&key, expected, current)?;
            let kv = KeyValue {
                key,
                value,
                create_revision: cur.create_revision,
                mod_revision: revision,
            };
            Ok((
                kv.clone(),
                Event::Put {
                    kv,
                    prev: Some(cur),
                },
            ))
        }
        Op::Delete { key, expected } => {
            let cur = check(&key, expected, current)?;
            Ok((
                cur.clone(),
                Event::Delete {
                    prev: cur,
                    revision,
                },
            ))
        }
    }
}

/// How many revisions pass between deletions of the oldest history records on disk.
const RETAIN_RUN: i64 = 256;

fn commit(
    db: &Database,
    opts: &EmbeddedOptions,
    staged: &HashMap<String, Option<KeyValue>>,
    events: &[Event],
    revision: i64,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    if !opts.durable {
        txn.set_durability(Durability::None)?;
    }
    {
        let mut history = txn.open_table(HISTORY)?;
        for event in events {
            history.insert(event.revision(), encode_event(event).as_slice())?;
        }
        // The oldest records go in runs, once every RETAIN_RUN revisions, not one per
        // commit: each delete rewrites the tree's first leaf (1.2 % of the server's CPU per
        // readiness flip). Opening trims what is read back to the bound anyway.
        let first = revision - i64::try_from(events.len()).unwrap_or(i64::MAX);
        if !events.is_empty() && revision.div_euclid(RETAIN_RUN) != first.div_euclid(RETAIN_RUN) {
            let keep_from =
                revision.saturating_sub(i64::try_from(opts.history).unwrap_or(i64::MAX));
            history.retain_in(..=keep_from, |_, _| false)?;
        }
    }
    {
        let mut kv = txn.open_table(KV)?;
        for (key, value) in staged {
            match value {
                Some(v) => {
                    kv.insert(key.as_str(), encode(v).as_slice())?;
                }
                None => {
                    kv.remove(key.as_str())?;
                }
            }
        }
        txn.open_table(META)?.insert(REVISION, revision)?;
    }
    txn.commit()?;
    Ok(())
}

/// Keys under `prefix` strictly after `start_after`, in order.
fn range<'a>(
    data: &'a BTreeMap<String, Version>,
    prefix: &'a str,
    start_after: Option<&'a str>,
) -> impl Iterator<Item = (&'a str, &'a Version)> + 'a {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    data.range::<str, _>((lower, Bound::Unbounded))
        .map(|(k, v)| (k.as_str(), v))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The page `opts` asks for, as memory holds it: taken under the read lock, unpacked by
/// [`Page::unpack`] after it is released.
struct Page {
    items: Vec<(String, Version)>,
    revision: i64,
    more: bool,
}

impl Page {
    fn unpack(self) -> Result<ListResult> {
        Ok(ListResult {
            items: self
                .items
                .iter()
                .map(|(key, v)| v.kv(key))
                .collect::<Result<_>>()?,
            revision: self.revision,
            more: self.more,
        })
    }
}

fn list_at(state: &State, prefix: &str, opts: &ListOptions) -> Result<Page> {
    let at = match opts.revision {
        None | Some(0) => state.revision,
        Some(r) => r,
    };
    if at > state.revision {
        return Err(Error::FutureRevision {
            requested: at,
            current: state.revision,
        });
    }
    if at < state.compacted {
        return Err(Error::Compacted {
            requested: at,
            compacted: state.compacted,
        });
    }
    let after = opts.start_after.as_deref();
    let in_page = |key: &str| key.starts_with(prefix) && after.is_none_or(|a| key > a);
    // State at `at` = current state with the events after `at` undone. Walk them newest
    // first so the oldest one (whose `prev` is the value at `at`) wins.
    let first_newer = state.history.partition_point(|e| e.revision() <= at);
    let mut undo: BTreeMap<&str, Option<&Version>> = BTreeMap::new();
    for change in state.history.range(first_newer..).rev() {
        if in_page(change.key()) {
            let before = match change {
                Change::Put { prev, .. } => prev.as_ref(),
                Change::Delete { prev, .. } => Some(prev),
            };
            undo.insert(change.key(), before);
        }
    }
    let mut current = range(&state.data, prefix, after)
        .filter(|(k, _)| !undo.contains_key(k))
        .peekable();
    let mut restored = undo
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .peekable();
    let mut items = Vec::new();
    let mut more = false;
    loop {
        let next = match (current.peek(), restored.peek()) {
            (Some(a), Some(b)) if a.0 < b.0 => current.next(),
            (_, Some(_)) => restored.next(),
            (Some(_), None) => current.next(),
            (None, None) => None,
        };
        let Some((key, version)) = next else { break };
        if opts.limit > 0 && items.len() == opts.limit {
            more = true;
            break;
        }
        items.push((key.to_owned(), version.clone()));
    }
    Ok(Page {
        items,
        revision: at,
        more,
    })
}

#[async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let state = self.shared.read();
        state.data.get(key).map(|v| v.kv(key)).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let page = list_at(&self.shared.read(), prefix, &opts)?;
        page.unpack()
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        Ok(range(&self.shared.read().data, prefix, None).count())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        crate::check_key(key)?;
        self.submit(Op::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue> {
        crate::check_key(key)?;
        self.submit(Op::Update {
            key: key.to_owned(),
            value,
            expected: expected_mod_revision,
        })
        .await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue> {
        crate::check_key(key)?;
        self.submit(Op::Delete {
            key: key.to_owned(),
            expected: expected_mod_revision,
        })
        .await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let (rx, backlog, seen, from) = {
            let state = self.shared.read();
            let from = if from_revision <= 0 {
                state.revision
            } else {
                from_revision
            };
            if from < state.compacted {
                return Err(Error::Compacted {
                    requested: from,
                    compacted: state.compacted,
                });
            }
            // Subscribing under the read lock: the writer sends under the write lock, so
            // the receiver gets exactly the events after this history snapshot.
            let rx = self.shared.events.subscribe();
            let first = state.history.partition_point(|e| e.revision() <= from);
            let backlog: Vec<Change> = state
                .history
                .range(first..)
                .filter(|c| c.key().starts_with(prefix))
                .cloned()
                .collect();
            (rx, backlog, state.revision, from)
        };
        // Unpacked after the lock is released.
        let backlog = backlog
            .iter()
            .map(Change::event)
            .collect::<Result<VecDeque<Event>>>()?;
        let period = self.shared.opts.progress_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watcher = Watcher {
            rx,
            prefix: prefix.to_owned(),
            from,
            seen,
            backlog,
            ticker,
            progress_due: false,
            error: None,
        };
        Ok(futures_util::stream::unfold(Some(watcher), |w| async move { w?.next().await }).boxed())
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.read().revision)
    }

    async fn check(&self) -> Result<()> {
        match self.shared.fault() {
            Some(e) => Err(Error::Embedded(e)),
            None => Ok(()),
        }
    }
}

/// State of one watch stream.
struct Watcher {
    rx: broadcast::Receiver<Event>,
    prefix: String,
    from: i64,
    /// Revision of the newest store event taken off `rx` (matching or not).
    seen: i64,
    /// Matching events not yet yielded.
    backlog: VecDeque<Event>,
    ticker: tokio::time::Interval,
    progress_due: bool,
    /// Ends the stream once the backlog is delivered.
    error: Option<Error>,
}

impl Watcher {
    fn accept(&mut self, event: Event) {
        self.seen = event.revision();
        if event.revision() > self.from && event.key().is_some_and(|k| k.starts_with(&self.prefix))
        {
            self.backlog.push_back(event);
        }
    }

    fn fail(&mut self, closed: bool) {
        // `seen` covers everything accepted; the backlog is delivered before the error.
        self.error = Some(if closed {
            Error::Closed
        } else {
            Error::Lagged {
                revision: self.seen,
            }
        });
    }

    /// The next item, and the state to continue from (`None` once the stream has ended).
    async fn next(mut self) -> Option<(Result<Event>, Option<Watcher>)> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return Some((Ok(event), Some(self)));
            }
            if let Some(error) = self.error.take() {
                // The stream ends after the error: no watcher state is handed back.
                return Some((Err(error), None));
            }
            if self.progress_due {
                self.progress_due = false;
                let revision = self.seen;
                return Some((Ok(Event::Progress { revision }), Some(self)));
            }
            tokio::select! {
                biased;
                received = self.rx.recv() => match received {
                    Ok(event) => self.accept(event),
                    Err(RecvError::Lagged(_)) => self.fail(false),
                    Err(RecvError::Closed) => self.fail(true),
                },
                _ = self.ticker.tick() => {
                    // Take what is already queued so the progress revision covers it.
                    loop {
                        match self.rx.try_recv() {
                            Ok(event) => self.accept(event),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(_)) => { self.fail(false); break; }
                            Err(TryRecvError::Closed) => { self.fail(true); break; }
                        }
                    }
                    self.progress_due = true;
                }
            }
        }
    }
}
