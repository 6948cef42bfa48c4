//! etcd v3 backend: the same transactions kube-apiserver issues (compare on create/mod
//! revision), ranges with limit for paging, and native watches with progress requests.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions, WatchRequestSender, WatchResponseStream,
};
use futures_util::StreamExt;

use crate::{Error, Event, KeyValue, ListOptions, ListResult, Result, Store, WatchStream};

/// Tuning of the [`Etcd`] backend.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// How often a watch stream asks etcd for a progress notification (default 1 s). etcd
    /// answers only when the watcher has caught up, which is what makes it a safe bookmark.
    pub progress_interval: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// Store backed by an etcd v3 cluster; all keys live under `prefix`.
pub struct Etcd {
    client: Client,
    prefix: String,
    opts: EtcdOptions,
}

impl Etcd {
    /// Connects to etcd at `endpoints` (such as `http://127.0.0.1:2379`) with default options;
    /// every key is stored under `prefix` (such as `/berth`).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd> {
        Self::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// Like [`Etcd::connect`], with explicit options.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        opts: EtcdOptions,
    ) -> Result<Etcd> {
        let client = Client::connect(endpoints, None).await?;
        Ok(Etcd {
            client,
            prefix: prefix.to_owned(),
            opts,
        })
    }

    /// Compacts etcd's history up to `revision` (kube-apiserver does this periodically;
    /// the API server should too, or etcd's history grows without bound).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.client.kv_client().compact(revision, None).await?;
        Ok(())
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Ok(self.client.kv_client().txn(txn).await?)
    }

    /// Maps a failed compare to NotFound / Conflict using the `or_else` get's result.
    fn precondition_failed(&self, key: &str, resp: &TxnResponse) -> Result<Error> {
        let current = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| convert(&self.prefix, kv)),
            _ => return Err(protocol("failed txn without a range response")),
        };
        Ok(match current {
            None => Error::NotFound {
                key: key.to_owned(),
            },
            Some(current) => Error::Conflict {
                key: key.to_owned(),
                current: Box::new(current?),
            },
        })
    }

    /// Compares meaning "the key exists, with this mod revision if one is expected".
    fn exists(full: &str, expected: Option<i64>) -> Vec<Compare> {
        let mut compares = vec![Compare::create_revision(full, CompareOp::Greater, 0)];
        if let Some(rev) = expected {
            compares.push(Compare::mod_revision(full, CompareOp::Equal, rev));
        }
        compares
    }

    /// Turns etcd's revision errors into [`Error::Compacted`] / [`Error::FutureRevision`].
    async fn revision_error(&self, e: etcd_client::Error, requested: i64) -> Error {
        if let etcd_client::Error::GRpcStatus(status) = &e {
            if status.message().contains("has been compacted") {
                return Error::Compacted {
                    requested,
                    compacted: 0,
                };
            }
            if status.message().contains("future revision") {
                let current = self.current_revision().await.unwrap_or(0);
                return Error::FutureRevision { requested, current };
            }
        }
        e.into()
    }
}

/// etcd rejects an empty key; "\0" is the smallest real key, so ranges from it cover all keys.
fn non_empty(key: String) -> String {
    if key.is_empty() { "\0".to_owned() } else { key }
}

fn protocol(what: &str) -> Error {
    Error::EtcdProtocol(what.to_owned())
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| protocol("response without header"))
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty or all-0xff prefix: "\0" means "to the end of the keyspace" to etcd.
    vec![0]
}

/// An etcd key as the store's: without the backend prefix.
fn store_key(prefix: &str, key: &[u8]) -> Result<String> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(prefix))
        .map(str::to_owned)
        .ok_or_else(|| protocol("key outside the store prefix or not UTF-8"))
}

fn convert(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: store_key(prefix, kv.key())?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// [`convert`] for a key-value the caller owns: the value's buffer becomes the [`Bytes`].
fn convert_owned(prefix: &str, kv: etcd_client::KeyValue) -> Result<KeyValue> {
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (key, value) = kv.into_key_value();
    Ok(KeyValue {
        key: store_key(prefix, &key)?,
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    })
}

#[async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self.client.kv_client().get(self.full(key), None).await?;
        resp.kvs()
            .first()
            .map(|kv| convert(&self.prefix, kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let full = self.full(prefix);
        let start = match &opts.start_after {
            // The first key after `after` is `after` + "\0".
            Some(after) if after.as_str() >= prefix => format!("{}{after}\0", self.prefix),
            _ => full.clone(),
        };
        let mut get = GetOptions::new().with_range(range_end(full.as_bytes()));
        if opts.limit > 0 {
            get = get.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        }
        let requested = opts.revision.filter(|r| *r > 0);
        if let Some(rev) = requested {
            get = get.with_revision(rev);
        }
        // A whole list can pass gRPC's default 4 MiB; kube-apiserver's etcd client takes up to
        // MaxInt32 bytes too.
        let mut resp = match self
            .client
            .kv_client()
            .max_decoding_message_size(i32::MAX as usize)
            .get(non_empty(start), Some(get))
            .await
        {
            Ok(resp) => resp,
            Err(e) => return Err(self.revision_error(e, requested.unwrap_or(0)).await),
        };
        let revision = match requested {
            Some(rev) => rev,
            None => header_revision(resp.header())?,
        };
        let more = resp.more();
        // The values are taken, not copied: a LIST of 10,000 objects is megabytes.
        let items = resp
            .take_kvs()
            .into_iter()
            .map(|kv| convert_owned(&self.prefix, kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        let full = self.full(prefix);
        let get = GetOptions::new()
            .with_range(range_end(full.as_bytes()))
            .with_count_only();
        let resp = self
            .client
            .kv_client()
            .get(non_empty(full), Some(get))
            .await?;
        usize::try_from(resp.count()).map_err(|_| protocol("negative count"))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        crate::check_key(key)?;
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.as_str(), value.to_vec(), None)])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue> {
        crate::check_key(key)?;
        let full = self.full(key);
        let txn = Txn::new()
            .when(Self::exists(&full, expected_mod_revision))
            .and_then([TxnOp::put(
                full.as_str(),
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(self.precondition_failed(key, &resp)?);
        }
        let create_revision = match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Put(put)) => put
                .prev_key()
                .map(|prev| prev.create_revision())
                .ok_or_else(|| protocol("put response without the previous key"))?,
            _ => return Err(protocol("successful txn without a put response")),
        };
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: header_revision(resp.header())?,
        })
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue> {
        crate::check_key(key)?;
        let full = self.full(key);
        let txn = Txn::new()
            .when(Self::exists(&full, expected_mod_revision))
            .and_then([TxnOp::delete(
                full.as_str(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(self.precondition_failed(key, &resp)?);
        }
        match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(del)) => del
                .prev_kvs()
                .first()
                .map(|kv| convert(&self.prefix, kv))
                .ok_or_else(|| protocol("delete response without the previous key"))?,
            _ => Err(protocol("successful txn without a delete response")),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let full = self.full(prefix);
        let mut opts = WatchOptions::new()
            .with_range(range_end(full.as_bytes()))
            .with_prev_key()
            .with_progress_notify();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision + 1);
        }
        let (sender, mut responses) = self
            .client
            .watch_client()
            .watch(non_empty(full), Some(opts))
            .await?
            .split();
        // Wait for the "created" answer so a refused watch fails here, not in the stream.
        match responses.message().await? {
            Some(resp) if resp.compact_revision() != 0 => {
                return Err(Error::Compacted {
                    requested: from_revision,
                    compacted: resp.compact_revision(),
                });
            }
            Some(resp) if resp.created() && !resp.canceled() => {}
            Some(resp) => {
                return Err(protocol(&format!(
                    "watch not created: {}",
                    resp.cancel_reason()
                )));
            }
            None => return Err(protocol("watch stream closed before it was created")),
        }
        let period = self.opts.progress_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watcher = EtcdWatcher {
            sender,
            responses,
            ticker,
            prefix: self.prefix.clone(),
            from: from_revision,
            queue: VecDeque::new(),
        };
        Ok(futures_util::stream::unfold(Some(watcher), |w| async move { w?.next().await }).boxed())
    }

    async fn check(&self) -> Result<()> {
        const SECONDS: u64 = 2;
        match tokio::time::timeout(Duration::from_secs(SECONDS), self.current_revision()).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(Error::Unavailable {
                backend: "etcd",
                seconds: SECONDS,
            }),
        }
    }

    async fn current_revision(&self) -> Result<i64> {
        // A count-only range of one key is the cheapest request that carries the revision.
        let get = GetOptions::new().with_count_only();
        let resp = self
            .client
            .kv_client()
            .get(non_empty(self.prefix.clone()), Some(get))
            .await?;
        header_revision(resp.header())
    }
}

/// State of one etcd watch stream.
struct EtcdWatcher {
    /// Kept to request progress, and because dropping it would close the gRPC stream.
    sender: WatchRequestSender,
    responses: WatchResponseStream,
    ticker: tokio::time::Interval,
    prefix: String,
    from: i64,
    queue: VecDeque<Result<Event>>,
}

impl EtcdWatcher {
    /// The next item, and the state to continue from (`None` once the stream has ended).
    async fn next(mut self) -> Option<(Result<Event>, Option<EtcdWatcher>)> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return match item {
                    Ok(event) => Some((Ok(event), Some(self))),
                    Err(e) => Some((Err(e), None)),
                };
            }
            tokio::select! {
                biased;
                message = self.responses.message() => match message {
                    Ok(Some(resp)) => self.handle(resp),
                    Ok(None) => return Some((Err(protocol("etcd closed the watch stream")), None)),
                    Err(e) => return Some((Err(e.into()), None)),
                },
                _ = self.ticker.tick() => {
                    if let Err(e) = self.sender.request_progress().await {
                        return Some((Err(e.into()), None));
                    }
                }
            }
        }
    }

    fn handle(&mut self, resp: etcd_client::WatchResponse) {
        if resp.compact_revision() != 0 {
            self.queue.push_back(Err(Error::Compacted {
                requested: self.from,
                compacted: resp.compact_revision(),
            }));
            return;
        }
        if resp.canceled() {
            let reason = format!("watch canceled by etcd: {}", resp.cancel_reason());
            self.queue.push_back(Err(Error::EtcdProtocol(reason)));
            return;
        }
        if resp.events().is_empty() {
            // No events and not a create/cancel: a progress notification (requested or
            // etcd's own progress_notify), sent only once this watcher has caught up.
            if !resp.created()
                && let Some(header) = resp.header()
            {
                self.queue.push_back(Ok(Event::Progress {
                    revision: header.revision(),
                }));
            }
            return;
        }
        for event in resp.events() {
            let item = self.convert(event);
            let failed = item.is_err();
            self.queue.push_back(item);
            if failed {
                return;
            }
        }
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<Event> {
        let kv = event
            .kv()
            .ok_or_else(|| protocol("watch event without a key"))?;
        let prev = event
            .prev_kv()
            .map(|p| convert(&self.prefix, p))
            .transpose()?;
        match event.event_type() {
            EventType::Put => Ok(Event::Put {
                kv: convert(&self.prefix, kv)?,
                prev,
            }),
            EventType::Delete => {
                // Without the previous value (compacted away) keep at least the key.
                let prev = match prev {
                    Some(p) => p,
                    None => KeyValue {
                        value: Bytes::new(),
                        create_revision: 0,
                        ..convert(&self.prefix, kv)?
                    },
                };
                Ok(Event::Delete {
                    prev,
                    revision: kv.mod_revision(),
                })
            }
        }
    }
}
