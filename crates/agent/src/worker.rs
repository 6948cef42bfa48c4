//! One pod's life on the node, in a task of its own (the kubelet's pod worker): make the
//! sandbox, start the containers, restart them by `restartPolicy` with back-off, run their
//! probes, report the pod's status, and on deletion stop them (SIGTERM, the grace period,
//! SIGKILL), release the sandbox and remove the pod object.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectReference, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector;
use kube::{Client, ResourceExt};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::pods::{Config, now};
use crate::probe::{self, Kind, Timing, Verdict};
use crate::runtime::{self, Runtime, StartSpec};
use crate::sandbox::{Bridge, Ipam, Sandbox};
use crate::{Error, layout, volumes};

/// What every pod worker shares.
pub(crate) struct Shared {
    pub client: Client,
    pub config: Config,
    pub bridge: Bridge,
    pub ipam: std::sync::Mutex<Ipam>,
    pub runtime: Arc<dyn Runtime>,
    /// Pulls images from registries; none when image pods cannot run (no runc or store).
    pub puller: Option<Arc<crate::pull::Puller>>,
    pub services: reflector::Store<Service>,
    pub consoles: Arc<runtime::Consoles>,
    pub events: crate::events::Recorder,
}

/// The kubelet's crash-loop back-off: the first restart is immediate, then 10 s, doubling
/// to 5 minutes; a container that ran for 10 minutes starts over.
/// The longest a new pod waits for the NetworkPolicy enforcer.
const NETWORK_GATE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const PROBE_KINDS: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

/// How the dispatcher talks to a worker.
pub(crate) struct Handle {
    pub pod: watch::Sender<Pod>,
    /// Cancelled when the pod object is gone from the API: stop everything now.
    pub gone: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the worker of `pod`. It ends when the pod is deleted (after removing the object),
/// when `gone` is cancelled, or on `shutdown` (stopping its processes but leaving the object).
pub(crate) fn spawn(shared: Arc<Shared>, pod: Pod, shutdown: CancellationToken) -> Handle {
    let (tx, rx) = watch::channel(pod.clone());
    let gone = CancellationToken::new();
    let worker = Worker::new(shared, pod);
    let task = tokio::spawn(worker.run(rx, gone.clone(), shutdown));
    Handle {
        pod: tx,
        gone,
        task,
    }
}

enum Msg {
    Exited {
        idx: usize,
        run: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Probed {
        idx: usize,
        run: u64,
        kind: Kind,
        result: Result<(), String>,
    },
}

#[derive(Debug, Clone)]
enum State {
    Waiting {
        reason: String,
        message: Option<String>,
        /// When a crash-looping container is started again.
        retry_at: Option<Instant>,
    },
    Running {
        started_at: String,
        since: Instant,
    },
    Terminated(Value),
}

struct Ctr {
    spec: Container,
    /// An init container: runs to completion, in order, before the app containers start.
    init: bool,
    state: State,
    restarts: i32,
    last: Option<Value>,
    backoff: Duration,
    /// The image pull back-off: its current length, and when and why the last pull failed.
    pull_backoff: Duration,
    pull_failed: Option<(Instant, String)>,
    /// Which run of the container messages are about; results of an earlier run are dropped.
    run: u64,
    pid: Option<u32>,
    verdicts: HashMap<Kind, Verdict>,
    next_probe: HashMap<Kind, Instant>,
    kill_at: Option<Instant>,
    /// Being stopped (after a failed liveness or startup probe): no more probes this run.
    killing: bool,
}

impl Ctr {
    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    fn started(&self) -> bool {
        self.running() && self.verdicts.get(&Kind::Startup).is_none_or(|v| v.ok)
    }

    fn ready(&self) -> bool {
        self.started() && self.verdicts.get(&Kind::Readiness).is_none_or(|v| v.ok)
    }
}

struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    uid: String,
    api: Api<Pod>,
    sandbox: Option<Sandbox>,
    ip: Option<Ipv4Addr>,
    containers: Vec<Ctr>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    start_time: String,
    /// Each condition's status and when it last changed.
    conditions: BTreeMap<&'static str, (bool, String)>,
    last_status: Option<Value>,
    /// Set once the pod is being deleted: when what is still running gets SIGKILL.
    terminating: Option<Instant>,
    sandbox_error: Option<String>,
    /// Whether the grace period is over and SIGKILL was sent.
    killed: bool,
    /// When to report again after the API refused or could not take a status.
    report_retry: Option<Instant>,
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Pod) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
        let api = Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
        let spec = pod.spec.as_ref();
        let inits = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        let apps = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        let waiting = if inits.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers = inits
            .iter()
            .map(|c| (c, true))
            .chain(apps.iter().map(|c| (c, false)))
            .map(|(c, init)| (c, init, carried_over(&pod, &c.name, init)))
            .map(|(c, init, carried)| Ctr {
                spec: c.clone(),
                init,
                // A pod restarted by a new agent keeps counting (unless it stays finished).
                restarts: match &carried {
                    Some(_) => previous_status(&pod, &c.name, init).map_or(0, |s| s.restart_count),
                    None => previous_restarts(&pod, &c.name, init),
                },
                state: carried.unwrap_or_else(|| State::Waiting {
                    reason: waiting.into(),
                    message: None,
                    retry_at: None,
                }),
                last: None,
                backoff: Duration::ZERO,
                pull_backoff: Duration::ZERO,
                pull_failed: None,
                run: 0,
                pid: None,
                verdicts: HashMap::new(),
                next_probe: HashMap::new(),
                kill_at: None,
                killing: false,
            })
            .collect();
        Worker {
            uid: pod.uid().unwrap_or_default(),
            shared,
            api,
            sandbox: None,
            ip: None,
            containers,
            tx,
            rx,
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map_or_else(now, |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            conditions: BTreeMap::new(),
            last_status: None,
            terminating: None,
            sandbox_error: None,
            report_retry: None,
            killed: false,
            pod,
        }
    }

    async fn run(
        mut self,
        mut pod_rx: watch::Receiver<Pod>,
        gone: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let name = self.pod.name_any();
        if self.pod.metadata.deletion_timestamp.is_none() {
            self.start().await;
        }
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.begin_termination();
                if self.containers.iter().all(|c| c.pid.is_none()) {
                    self.teardown(Teardown::PodGone).await;
                    self.delete_object().await;
                    return;
                }
            }
            self.report().await;
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = gone.cancelled() => {
                    self.teardown(Teardown::PodGone).await;
                    return;
                }
                changed = pod_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.pod = pod_rx.borrow_and_update().clone();
                }
                Some(msg) = self.rx.recv() => {
                    if self.on_msg(msg) {
                        self.start_next().await;
                    }
                }
                _ = sleep_until(deadline) => self.on_timers().await,
            }
        }
        tracing::debug!(pod = %name, "worker stopping with the agent");
        self.teardown(Teardown::AgentStops).await;
    }

    /// The sandbox, then every container; or, when an earlier agent left containers of this
    /// pod running under their shims, the sandbox they are in and those containers.
    async fn start(&mut self) {
        let t0 = std::time::Instant::now();
        let found = self.left_running();
        if !found.is_empty() {
            if self.adopt(found).await {
                self.start_next().await;
                return;
            }
            // Its network is gone (a node namespace made afresh): start the pod afresh.
            let dir = layout::pod_dir(&self.shared.config.state_dir, &self.uid);
            crate::shim::kill_all(&dir);
        }
        let sandbox = self.make_sandbox().await;
        let sandbox_ms = t0.elapsed().as_secs_f64() * 1e3;
        match sandbox {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(pod = %self.pod.name_any(), error = %e, "creating the pod sandbox");
                self.sandbox_error = Some(e.to_string());
                self.events(vec![(
                    "Warning",
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                    None,
                )]);
                return;
            }
        }
        self.await_network_gate().await;
        self.start_next().await;
        tracing::debug!(
            pod = %self.pod.name_any(),
            sandbox_ms,
            containers_ms = t0.elapsed().as_secs_f64() * 1e3 - sandbox_ms,
            "pod started"
        );
    }

    /// What an earlier agent left of this pod's containers, by index; empty unless at
    /// least one of them still runs (otherwise the pod starts afresh).
    fn left_running(&self) -> Vec<(usize, crate::shim::Found)> {
        let state_dir = &self.shared.config.state_dir;
        let found: Vec<(usize, crate::shim::Found)> = self
            .containers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let log = layout::log_path(state_dir, &self.uid, &c.spec.name);
                crate::shim::find(&log).map(|f| (i, f))
            })
            .collect();
        let any_running = found
            .iter()
            .any(|(_, f)| matches!(f, crate::shim::Found::Running(_)));
        if any_running { found } else { Vec::new() }
    }

    /// Takes on the sandbox and the containers an earlier agent left: running ones keep
    /// their process, container ID, restart count and start time (from the pod's status);
    /// ones that ended meanwhile are handled as if they had just exited. False, with nothing
    /// taken on, when the sandbox cannot be.
    async fn adopt(&mut self, found: Vec<(usize, crate::shim::Found)>) -> bool {
        let ip = match self.ipam(|ipam, uid| ipam.allocate(uid)).await {
            Ok(ip) => ip,
            Err(e) => {
                tracing::warn!(pod = %self.pod.name_any(), error = %e, "the pod's IP");
                return false;
            }
        };
        self.ip = Some(ip);
        let subnet = self.shared.bridge.gateway().trunc();
        // A process in the pod's network namespace: a process container's init, or an image
        // container's (the child of its runc).
        let inside = found.iter().find_map(|(_, f)| match f {
            crate::shim::Found::Running(held) => {
                Some(crate::oci::container_init(held.pid).unwrap_or(held.pid))
            }
            crate::shim::Found::Exited(_) => None,
        });
        let existing = Sandbox::existing(
            &self.uid,
            &self.pod.name_any(),
            ip,
            subnet,
            inside.unwrap_or(0),
        )
        .await;
        match existing {
            Ok(sandbox) => self.sandbox = Some(sandbox),
            Err(e) => {
                tracing::warn!(pod = %self.pod.name_any(), error = %e, "the pod's sandbox cannot be taken on; starting the pod afresh");
                return false;
            }
        }
        let state_dir = self.shared.config.state_dir.clone();
        for (idx, f) in found {
            let Some(c) = self.containers.get_mut(idx) else {
                continue;
            };
            let previous = previous_status(&self.pod, &c.spec.name, c.init);
            c.restarts = previous.map_or(0, |p| p.restart_count);
            c.run = previous
                .and_then(|p| p.container_id.as_deref())
                .and_then(run_of)
                .unwrap_or(1);
            let started_at = previous
                .and_then(|p| p.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map_or_else(now, |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            let log = layout::log_path(&state_dir, &self.uid, &c.spec.name);
            match f {
                crate::shim::Found::Running(held) => {
                    tracing::info!(pod = %self.pod.name_any(), container = %c.spec.name, pid = held.pid, "adopting a running container");
                    self.shared.runtime.adopt(held.pid, &log, &c.spec);
                    // A console container's shim serves its terminal or pipes again.
                    let console = crate::console::reconnect(&log, &c.spec);
                    self.shared.consoles.set(&self.uid, &c.spec.name, console);
                    let started = runtime::Started::held(held, &log);
                    running(
                        c,
                        idx,
                        started,
                        started_at,
                        &state_dir,
                        &self.uid,
                        self.tx.clone(),
                    );
                }
                // Already handled by the earlier agent, which reported it finished for good.
                crate::shim::Found::Exited(_) if matches!(c.state, State::Terminated(_)) => {}
                crate::shim::Found::Exited(exit) => {
                    c.state = State::Running {
                        started_at,
                        since: Instant::now(),
                    };
                    let _ = self.tx.send(Msg::Exited {
                        idx,
                        run: c.run,
                        code: exit.code,
                        signal: exit.signal,
                    });
                }
            }
        }
        true
    }

    /// When a NetworkPolicy may select the pod: publishes its address (the status) and waits,
    /// boundedly, until the enforcer's table accounts for it.
    async fn await_network_gate(&mut self) {
        let (Some(gate), Some(ip)) = (self.shared.config.network_gate.0.clone(), self.ip) else {
            return;
        };
        let ns = self.pod.namespace().unwrap_or_default();
        if !gate.applies(&ns) {
            return;
        }
        self.report().await;
        let t0 = std::time::Instant::now();
        if tokio::time::timeout(NETWORK_GATE_TIMEOUT, gate.ready(&self.uid, ip))
            .await
            .is_err()
        {
            tracing::warn!(pod = %self.pod.name_any(), "the NetworkPolicy enforcer has not taken the pod's address; starting it anyway");
            self.events(vec![(
                "Warning",
                "NetworkNotReady",
                format!(
                    "NetworkPolicy rules for {ip} were not in place after {}s; starting the containers anyway",
                    NETWORK_GATE_TIMEOUT.as_secs()
                ),
                None,
            )]);
        }
        tracing::debug!(pod = %self.pod.name_any(), waited = ?t0.elapsed(), "network policy in place");
    }

    /// Starts what is due: the first init container that has not completed (one at a time,
    /// in order), or once they all have, every app container not started yet.
    async fn start_next(&mut self) {
        if self.terminating.is_some() {
            return;
        }
        let pending_init = self.containers.iter().position(|c| {
            c.init && !matches!(&c.state, State::Terminated(t) if t["exitCode"] == 0)
        });
        if let Some(idx) = pending_init {
            let c = &self.containers[idx];
            let idle = c.run == 0 && c.pid.is_none();
            if idle && self.terminating.is_none() {
                self.start_container(idx, false).await;
            }
            return;
        }
        let due: Vec<usize> = (0..self.containers.len())
            .filter(|i| !self.containers[*i].init && self.containers[*i].run == 0)
            .collect();
        for idx in due {
            if matches!(self.containers[idx].state, State::Waiting { .. }) {
                self.start_container(idx, false).await;
            }
        }
    }

    /// Runs `op` on the IPAM for this pod off the async runtime: it writes (and fsyncs) the
    /// IPAM state, which must not stall other pods' workers.
    async fn ipam<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Ipam, &str) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (shared, uid) = (self.shared.clone(), self.uid.clone());
        tokio::task::spawn_blocking(move || {
            let mut ipam = shared.ipam.lock().unwrap_or_else(|p| p.into_inner());
            op(&mut ipam, &uid)
        })
        .await
        .map_err(|_| Error::ThreadPanicked)?
    }

    async fn make_sandbox(&mut self) -> Result<(), Error> {
        let ip = self.ipam(|ipam, uid| ipam.allocate(uid)).await?;
        let shared = &self.shared;
        self.ip = Some(ip);
        let name = self.pod.name_any();
        let sandbox = match Sandbox::create(&self.uid, &name, ip, &shared.bridge).await {
            Err(Error::SandboxExists { .. }) => {
                // Left by an agent that stopped without cleaning up: start the pod afresh.
                Sandbox::destroy_pod(&self.uid).await?;
                Sandbox::create(&self.uid, &name, ip, &shared.bridge).await?
            }
            r => r?,
        };
        let share = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.share_process_namespace);
        if share == Some(true)
            && let Err(e) = sandbox.share_pids(&shared.config.self_exe).await
        {
            let _ = Sandbox::destroy_pod(&self.uid).await;
            return Err(e);
        }
        write_etc(&shared.config, &sandbox, &self.pod, ip)?;
        let dir = layout::pod_dir(&shared.config.state_dir, &self.uid);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::Write { path: dir, source })?;
        self.sandbox = Some(sandbox);
        Ok(())
    }

    /// The container's whole environment: Service variables, then its own.
    async fn env(&self, c: &Container) -> Result<Vec<(String, String)>, String> {
        let spec = self.pod.spec.as_ref();
        let links = spec.and_then(|s| s.enable_service_links).unwrap_or(true);
        // Shared with the reflector's cache, not copied.
        let services = self.shared.services.state();
        let ns = self.pod.namespace().unwrap_or_default();
        let mut sources = crate::env::Sources::new();
        for (kind, name) in crate::env::references(c) {
            let client = self.shared.client.clone();
            let data = match kind {
                crate::env::Source::ConfigMap => Api::<ConfigMap>::namespaced(client, &ns)
                    .get_opt(&name)
                    .await
                    .map(|m| m.map(|m| m.data.unwrap_or_default())),
                crate::env::Source::Secret => Api::<Secret>::namespaced(client, &ns)
                    .get_opt(&name)
                    .await
                    .map(|s| {
                        s.map(|s| {
                            let text = |b: &k8s_openapi::ByteString| {
                                String::from_utf8_lossy(&b.0).into_owned()
                            };
                            let mut d: std::collections::BTreeMap<String, String> = s
                                .data
                                .unwrap_or_default()
                                .iter()
                                .map(|(k, v)| (k.clone(), text(v)))
                                .collect();
                            d.extend(s.string_data.unwrap_or_default());
                            d
                        })
                    }),
            }
            .map_err(|e| format!("reading {name}: {e}"))?;
            sources.insert((kind, name), data);
        }
        let mut env = crate::env::service_env(services.iter().map(|s| &**s), &ns, links);
        let pod_ip = self.ip.map(|i| i.to_string()).unwrap_or_default();
        let host_ip = self.shared.config.node_ip.to_string();
        let own = crate::env::container_env(c, &self.pod, &pod_ip, &host_ip, &env, &sources)?;
        env.extend(own);
        Ok(env)
    }

    /// The container's volumes, made afresh under the pod's state directory (objects as they
    /// are now; an emptyDir kept across restarts), as binds over their mount paths. Errors are
    /// the container's CreateContainerConfigError message.
    async fn binds(&self, c: &Container) -> Result<Vec<crate::init::Bind>, String> {
        let Some(spec) = self.pod.spec.as_ref() else {
            return Ok(Vec::new());
        };
        let mut binds = Vec::new();
        for (mount, volume) in volumes::needed(spec, c)? {
            let dir = layout::volume_dir(&self.shared.config.state_dir, &self.uid, &volume.name);
            let failed = |e: std::io::Error| format!("making volume {:?}: {e}", volume.name);
            let read_only = if volume.empty_dir.is_some() {
                volumes::ensure_dir(&dir).map_err(failed)?;
                mount.read_only == Some(true)
            } else {
                let files = self.volume_files(volume).await?;
                volumes::write_files(&dir, &files).map_err(failed)?;
                true
            };
            let source = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir,
            };
            binds.push(crate::init::Bind {
                source: source.display().to_string(),
                target: mount.mount_path.clone(),
                read_only,
            });
        }
        Ok(binds)
    }

    /// The files of a configMap, secret, downwardAPI or projected volume.
    async fn volume_files(
        &self,
        volume: &k8s_openapi::api::core::v1::Volume,
    ) -> Result<Vec<volumes::File>, String> {
        use volumes::{FILE_MODE, Keyed};
        let mut files = Vec::new();
        if let Some(s) = &volume.config_map {
            let mode = s.default_mode.unwrap_or(FILE_MODE);
            let (items, optional) = (s.items.as_deref(), s.optional == Some(true));
            files = self
                .keyed_files(Keyed::ConfigMap, &s.name, items, optional, mode)
                .await?;
        } else if let Some(s) = &volume.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(FILE_MODE);
            let (items, optional) = (s.items.as_deref(), s.optional == Some(true));
            files = self
                .keyed_files(Keyed::Secret, &name, items, optional, mode)
                .await?;
        } else if let Some(d) = &volume.downward_api {
            let mode = d.default_mode.unwrap_or(FILE_MODE);
            let items = d.items.as_deref().unwrap_or_default();
            files = volumes::downward_files(&self.pod, items, mode)?;
        } else if let Some(p) = &volume.projected {
            let mode = p.default_mode.unwrap_or(FILE_MODE);
            for source in p.sources.iter().flatten() {
                if let Some(s) = &source.config_map {
                    let (items, optional) = (s.items.as_deref(), s.optional == Some(true));
                    files.extend(
                        self.keyed_files(Keyed::ConfigMap, &s.name, items, optional, mode)
                            .await?,
                    );
                }
                if let Some(s) = &source.secret {
                    let (items, optional) = (s.items.as_deref(), s.optional == Some(true));
                    files.extend(
                        self.keyed_files(Keyed::Secret, &s.name, items, optional, mode)
                            .await?,
                    );
                }
                if let Some(d) = &source.downward_api {
                    let items = d.items.as_deref().unwrap_or_default();
                    files.extend(volumes::downward_files(&self.pod, items, mode)?);
                }
                if let Some(t) = &source.service_account_token {
                    files.push(volumes::File {
                        path: t.path.clone(),
                        content: self.token(t).await?.into_bytes(),
                        mode,
                    });
                }
            }
        }
        Ok(files)
    }

    /// The files of a configMap or secret source, read now.
    async fn keyed_files(
        &self,
        what: volumes::Keyed,
        name: &str,
        items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
        optional: bool,
        mode: i32,
    ) -> Result<Vec<volumes::File>, String> {
        let data = self.keyed(what, name).await?;
        volumes::keyed_files(what, name, items, optional, mode, data.as_ref())
    }

    /// The data of a ConfigMap (`data` and `binaryData`) or Secret in the pod's namespace;
    /// `None` when it does not exist.
    async fn keyed(
        &self,
        what: volumes::Keyed,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let ns = self.pod.namespace().unwrap_or_default();
        let client = self.shared.client.clone();
        match what {
            volumes::Keyed::ConfigMap => Ok(Api::<ConfigMap>::namespaced(client, &ns)
                .get_opt(name)
                .await
                .map_err(|e| format!("reading configmap {name:?}: {e}"))?
                .map(|m| {
                    let text = m.data.unwrap_or_default().into_iter();
                    let binary = m.binary_data.unwrap_or_default().into_iter();
                    text.map(|(k, v)| (k, v.into_bytes()))
                        .chain(binary.map(|(k, v)| (k, v.0)))
                        .collect()
                })),
            volumes::Keyed::Secret => Ok(Api::<Secret>::namespaced(client, &ns)
                .get_opt(name)
                .await
                .map_err(|e| format!("reading secret {name:?}: {e}"))?
                .map(|s| {
                    let mut data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    for (k, v) in s.string_data.unwrap_or_default() {
                        data.insert(k, v.into_bytes());
                    }
                    data
                })),
        }
    }

    /// A token for the pod's ServiceAccount, bound to the pod, as the kubelet asks for one.
    async fn token(
        &self,
        t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        let ns = self.pod.namespace().unwrap_or_default();
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let mut spec = json!({
            "expirationSeconds": t.expiration_seconds.unwrap_or(3600),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod.name_any(), "uid": self.uid},
        });
        if let Some(aud) = &t.audience {
            spec["audiences"] = json!([aud]);
        }
        let request =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let answer: Value = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
            self.shared.client.clone(),
            &ns,
        )
        .create_subresource("token", &sa, &kube::api::PostParams::default(), &request)
        .await
        .map_err(|e| format!("requesting a token for serviceaccount {sa:?}: {e}"))?;
        answer
            .pointer("/status/token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in the answer for serviceaccount {sa:?}"))
    }

    async fn start_container(&mut self, idx: usize, restart: bool) {
        if self.sandbox.is_none() {
            return;
        }
        let Some(pulled) = self.ensure_image(idx).await else {
            return;
        };
        let Some(sandbox) = &self.sandbox else { return };
        let state_dir = &self.shared.config.state_dir;
        let name = self.containers[idx].spec.name.clone();
        let log = layout::log_path(state_dir, &self.uid, &name);
        if log.exists() {
            let _ = std::fs::rename(&log, layout::previous_log_path(state_dir, &self.uid, &name));
        }
        let c = &self.containers[idx].spec;
        let prepared = match self.env(c).await {
            Ok(env) => self.binds(c).await.map(|binds| (env, binds)),
            Err(e) => Err(e),
        };
        let (env, binds) = match prepared {
            Ok(prepared) => prepared,
            Err(message) => {
                let c = &mut self.containers[idx];
                // Tried again after a while, as the kubelet does: the object may turn up.
                c.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message.clone()),
                    retry_at: Some(Instant::now() + BACKOFF_START),
                };
                self.events(vec![(
                    "Warning",
                    "Failed",
                    format!("Error: {message}"),
                    Some(format!("spec.containers{{{name}}}")),
                )]);
                return;
            }
        };
        let mut spec = self.containers[idx].spec.clone();
        // `$(VAR)` in command and args refers to the container's environment.
        let lookup = |n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        for list in [&mut spec.command, &mut spec.args].into_iter().flatten() {
            for arg in list.iter_mut() {
                *arg = crate::env::expand(arg, lookup);
            }
        }
        let started = self.shared.runtime.start(&StartSpec {
            netns: sandbox.netns(),
            hostname: &pod_hostname(&self.pod),
            container: &spec,
            env,
            log: &log,
            binds,
        });
        let image = spec.image.clone().unwrap_or_default();
        let c = &mut self.containers[idx];
        c.run += 1;
        c.verdicts.clear();
        c.next_probe.clear();
        c.kill_at = None;
        match started {
            Ok((started, console)) => {
                self.shared.consoles.set(&self.uid, &name, console);
                if restart {
                    c.restarts += 1;
                }
                let tx = self.tx.clone();
                running(c, idx, started, now(), state_dir, &self.uid, tx);
                let (pulled, created, started) = (
                    pulled.unwrap_or_else(|| {
                        format!("Container image \"{image}\" already present on machine")
                    }),
                    format!("Created container: {name}"),
                    format!("Started container {name}"),
                );
                let field = Some(format!("spec.containers{{{name}}}"));
                self.events(vec![
                    ("Normal", "Pulled", pulled, field.clone()),
                    ("Normal", "Created", created, field.clone()),
                    ("Normal", "Started", started, field),
                ]);
            }
            Err(e) => {
                c.state = State::Waiting {
                    reason: e.reason.into(),
                    message: Some(e.message.clone()),
                    retry_at: None,
                };
                self.events(vec![(
                    "Warning",
                    "Failed",
                    format!("Error: {}", e.message),
                    Some(format!("spec.containers{{{name}}}")),
                )]);
            }
        }
    }

    /// Makes sure the container's image is in the store when it must come from a registry,
    /// as the kubelet's EnsureImageExists does: `Some(Some(message))` after a pull (the
    /// `Pulled` event's), `Some(None)` when no pull was needed, `None` when the container
    /// waits (`ErrImagePull`, then `ImagePullBackOff` until the back-off has passed).
    async fn ensure_image(&mut self, idx: usize) -> Option<Option<String>> {
        let Some(puller) = self.shared.puller.clone() else {
            return Some(None);
        };
        let c = &mut self.containers[idx];
        let Some(image) = puller.wanted(&c.spec) else {
            return Some(None);
        };
        let field = Some(format!("spec.containers{{{}}}", c.spec.name));
        if let Some((at, error)) = &c.pull_failed
            && at.elapsed() < c.pull_backoff
        {
            let back_off = format!("Back-off pulling image \"{image}\"");
            c.state = State::Waiting {
                reason: "ImagePullBackOff".into(),
                message: Some(format!("{back_off}: ErrImagePull: {error}")),
                retry_at: Some(*at + c.pull_backoff),
            };
            let failed = "Error: ImagePullBackOff".to_owned();
            self.events(vec![
                ("Normal", "BackOff", back_off, field.clone()),
                ("Warning", "Failed", failed, field),
            ]);
            return None;
        }
        let pulling = format!("Pulling image \"{image}\"");
        self.events(vec![("Normal", "Pulling", pulling, field.clone())]);
        let t0 = Instant::now();
        let secrets = self.pull_secrets().await;
        let auths = crate::pull::auths_for(&secrets, &image);
        let result = puller.pull(&image, &auths).await;
        let c = &mut self.containers[idx];
        match result {
            Ok(p) => {
                c.pull_backoff = Duration::ZERO;
                c.pull_failed = None;
                Some(Some(format!(
                    "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {} bytes.",
                    crate::pull::go_duration(p.elapsed),
                    crate::pull::go_duration(t0.elapsed()),
                    p.size
                )))
            }
            // An image that is not in any registry but comes with a command runs that
            // command from the host, as before registry pulls.
            Err(e) if c.spec.command.is_some() => {
                tracing::info!(image, error = %e, "pull failed; running the container's command from the host");
                Some(None)
            }
            Err(error) => {
                c.pull_backoff = if c.pull_backoff.is_zero() {
                    crate::pull::BACKOFF_START
                } else {
                    (c.pull_backoff * 2).min(crate::pull::BACKOFF_MAX)
                };
                c.pull_failed = Some((Instant::now(), error.clone()));
                // The kubelet's next sync, moments later, finds the back-off.
                c.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message: Some(error.clone()),
                    retry_at: Some(Instant::now() + Duration::from_secs(1)),
                };
                let failed = format!("Failed to pull image \"{image}\": {error}");
                self.events(vec![
                    ("Warning", "Failed", failed, field.clone()),
                    ("Warning", "Failed", "Error: ErrImagePull".into(), field),
                ]);
                None
            }
        }
    }

    /// The pod's `imagePullSecrets` that exist; a Warning names those that do not.
    async fn pull_secrets(&self) -> Vec<k8s_openapi::api::core::v1::Secret> {
        let names: Vec<String> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .collect();
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
            self.shared.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match api.get(&name).await {
                Ok(s) => found.push(s),
                Err(_) => missing.push(name),
            }
        }
        if !missing.is_empty() {
            self.events(vec![(
                "Warning",
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
                None,
            )]);
        }
        found
    }

    /// Handles a message; true when an init container has completed (so the next can start).
    fn on_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Exited {
                idx,
                run,
                code,
                signal,
            } => self.on_exit(idx, run, code, signal),
            Msg::Probed {
                idx,
                run,
                kind,
                result,
            } => {
                self.on_probe(idx, run, kind, result);
                false
            }
        }
    }

    fn on_exit(&mut self, idx: usize, run: u64, code: Option<i32>, signal: Option<i32>) -> bool {
        let policy = self.restart_policy();
        let terminating = self.terminating.is_some();
        let state_dir = self.shared.config.state_dir.clone();
        let Some(c) = self.containers.get_mut(idx).filter(|c| c.run == run) else {
            return false;
        };
        let _ = std::fs::remove_file(layout::pid_path(&state_dir, &self.uid, &c.spec.name));
        self.shared.consoles.set(&self.uid, &c.spec.name, None);
        // The container is over when its main process is: whatever it started goes too, as
        // the kubelet stops the whole container (and a restart then finds its ports free).
        let mut oom = false;
        if let Some(pid) = c.pid.take() {
            self.shared.runtime.signal(pid, Signal::SIGKILL);
            let sigkilled = signal == Some(9) || code == Some(128 + 9);
            oom = self.shared.runtime.oom_killed(pid, sigkilled);
        }
        c.kill_at = None;
        c.killing = false;
        let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(9));
        let (started_at, ran) = match &c.state {
            State::Running { started_at, since } => (started_at.clone(), since.elapsed()),
            _ => (now(), Duration::ZERO),
        };
        let mut terminated = json!({
            "exitCode": exit_code,
            "reason": match (oom, exit_code) {
                (true, _) => "OOMKilled",
                (false, 0) => "Completed",
                (false, _) => "Error",
            },
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": format!("berth://{}-{}-{}", self.uid, c.spec.name, c.run),
        });
        if let Some(s) = signal {
            terminated["signal"] = json!(s);
        }
        tracing::debug!(container = %c.spec.name, exit_code, "container exited");
        // An init container that failed runs again unless the pod never restarts anything.
        let restart = !terminating
            && match policy.as_str() {
                "Never" => false,
                "OnFailure" => exit_code != 0,
                _ => !c.init || exit_code != 0,
            };
        if !restart {
            c.state = State::Terminated(terminated);
            return c.init && exit_code == 0;
        }
        c.last = Some(terminated);
        if ran >= BACKOFF_RESET {
            c.backoff = Duration::ZERO;
        }
        let delay = c.backoff;
        c.backoff = if delay.is_zero() {
            BACKOFF_START
        } else {
            (delay * 2).min(BACKOFF_MAX)
        };
        let pod = format!(
            "{}_{}({})",
            self.pod.name_any(),
            self.pod.namespace().unwrap_or_default(),
            self.uid
        );
        c.state = State::Waiting {
            reason: if delay.is_zero() {
                "ContainerCreating".into()
            } else {
                "CrashLoopBackOff".into()
            },
            message: (!delay.is_zero()).then(|| {
                format!(
                    "back-off {}s restarting failed container={} pod={pod}",
                    delay.as_secs(),
                    c.spec.name
                )
            }),
            retry_at: Some(Instant::now() + delay),
        };
        if !delay.is_zero() {
            let name = c.spec.name.clone();
            let msg = format!("Back-off restarting failed container {name} in pod {pod}");
            let field = Some(format!("spec.containers{{{name}}}"));
            self.events(vec![("Warning", "BackOff", msg, field)]);
        }
        false
    }

    fn on_probe(&mut self, idx: usize, run: u64, kind: Kind, result: Result<(), String>) {
        let grace = self.grace_seconds();
        let Some(c) = self.containers.get_mut(idx).filter(|c| c.run == run) else {
            return;
        };
        if !c.running() || self.terminating.is_some() {
            return;
        }
        let Some(probe) = kind.of(&c.spec).cloned() else {
            return;
        };
        let Some(v) = c.verdicts.get_mut(&kind) else {
            return;
        };
        let timing = Timing::of(&probe);
        v.record(result.is_ok());
        let (ok, failed) = (v.ok, v.failed());
        c.next_probe.insert(kind, Instant::now() + timing.period);
        if kind == Kind::Startup && ok {
            // A startup probe stops once it has succeeded.
            c.next_probe.remove(&kind);
        }
        let name = c.spec.name.clone();
        let kill = matches!(kind, Kind::Liveness | Kind::Startup) && failed;
        if kill {
            c.next_probe.clear();
            let grace = probe
                .termination_grace_period_seconds
                .unwrap_or(grace)
                .max(0);
            if let Some(pid) = c.pid {
                self.shared.runtime.signal(pid, Signal::SIGTERM);
            }
            c.kill_at = Some(Instant::now() + Duration::from_secs(cap(grace)));
            c.killing = true;
        }
        if let Err(why) = result {
            let field = Some(format!("spec.containers{{{name}}}"));
            let msg = format!("{} probe failed: {why}", kind.title());
            let mut events = vec![("Warning", "Unhealthy", msg, field.clone())];
            if kill {
                let k = format!(
                    "Container {name} failed {} probe, will be restarted",
                    kind.title().to_lowercase()
                );
                events.push(("Normal", "Killing", k, field));
            }
            self.events(events);
        }
    }

    async fn on_timers(&mut self) {
        let now_i = Instant::now();
        if let Some(at) = self.terminating
            && at <= now_i
            && !self.killed
        {
            // Once: what SIGKILL does not end at once ends when the kernel lets it.
            self.killed = true;
            for c in &self.containers {
                if let Some(pid) = c.pid {
                    self.shared.runtime.signal(pid, Signal::SIGKILL);
                }
            }
        }
        let mut restarts = Vec::new();
        for (idx, c) in self.containers.iter_mut().enumerate() {
            if let Some(at) = c.kill_at
                && at <= now_i
            {
                c.kill_at = None;
                if let Some(pid) = c.pid {
                    self.shared.runtime.signal(pid, Signal::SIGKILL);
                }
            }
            if let State::Waiting {
                retry_at: Some(at), ..
            } = c.state
                && at <= now_i
                && self.terminating.is_none()
            {
                restarts.push(idx);
            }
            let Some(pid) = c.pid.filter(|_| c.running() && !c.killing) else {
                continue;
            };
            let started = c.started();
            for kind in PROBE_KINDS {
                // Until the startup probe has succeeded, it is the only one that runs.
                if kind != Kind::Startup && !started {
                    continue;
                }
                let Some(at) = c.next_probe.get(&kind).copied().filter(|at| *at <= now_i) else {
                    continue;
                };
                let Some(probe) = kind.of(&c.spec).cloned() else {
                    continue;
                };
                // Not again until this result is in (on_probe schedules the next one).
                c.next_probe.insert(kind, at + Duration::from_secs(3600));
                let target = probe::Target {
                    pod_ip: IpAddr::V4(self.ip.unwrap_or(Ipv4Addr::LOCALHOST)),
                    pid,
                    container: c.spec.clone(),
                };
                let (tx, run) = (self.tx.clone(), c.run);
                tokio::spawn(async move {
                    let result = probe::run(&probe, &target).await;
                    let _ = tx.send(Msg::Probed {
                        idx,
                        run,
                        kind,
                        result,
                    });
                });
            }
        }
        for idx in restarts {
            // A container that never ran (its configuration was missing) is not restarted.
            let restart = self.containers[idx].last.is_some();
            self.start_container(idx, restart).await;
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// The pod's grace period: the one its deletion asked for, else its spec's.
    fn grace_seconds(&self) -> i64 {
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// On deletion: SIGTERM to every running container once, SIGKILL when the grace period
    /// is over (sooner if a later deletion shortened it).
    fn begin_termination(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(cap(self.grace_seconds()));
        if self.terminating.is_some_and(|at| at <= deadline) {
            return;
        }
        let first = self.terminating.is_none();
        self.terminating = Some(deadline);
        if !first {
            return;
        }
        for c in &mut self.containers {
            c.next_probe.clear();
            match c.pid {
                Some(pid) => self.shared.runtime.signal(pid, Signal::SIGTERM),
                None => {
                    if let State::Waiting { retry_at, .. } = &mut c.state {
                        *retry_at = None;
                    }
                }
            }
        }
        let names: Vec<String> = self
            .containers
            .iter()
            .filter(|c| c.pid.is_some())
            .map(|c| c.spec.name.clone())
            .collect();
        self.events(
            names
                .iter()
                .map(|n| {
                    let field = Some(format!("spec.containers{{{n}}}"));
                    (
                        "Normal",
                        "Killing",
                        format!("Stopping container {n}"),
                        field,
                    )
                })
                .collect(),
        );
    }

    /// Stops whatever still runs and removes the sandbox; what else goes depends on `why`.
    async fn teardown(&mut self, why: Teardown) {
        let state_dir = &self.shared.config.state_dir;
        if why == Teardown::AgentStops && self.shared.config.keep_pods_on_exit {
            // The shims hold the containers; the next agent adopts them.
            return;
        }
        for c in &mut self.containers {
            if let Some(pid) = c.pid.take() {
                self.shared.runtime.signal(pid, Signal::SIGKILL);
                let _ = std::fs::remove_file(layout::pid_path(state_dir, &self.uid, &c.spec.name));
            }
            self.shared.consoles.set(&self.uid, &c.spec.name, None);
        }
        let _ = std::fs::remove_dir_all(etc_dir(&self.uid));
        if let Err(e) = Sandbox::destroy_pod(&self.uid).await {
            tracing::warn!(pod = %self.pod.name_any(), error = %e, "removing the pod sandbox");
        }
        self.sandbox = None;
        if why == Teardown::AgentStops {
            // The pod keeps its IP for when the agent starts it again.
            return;
        }
        if let Err(e) = self.ipam(|ipam, uid| ipam.release(uid)).await {
            tracing::warn!(pod = %self.pod.name_any(), error = %e, "releasing the pod IP");
        }
        if why == Teardown::PodGone {
            let _ =
                std::fs::remove_dir_all(layout::pod_dir(&self.shared.config.state_dir, &self.uid));
        }
    }

    /// The last step of a graceful deletion: the object goes, only if it is still this pod.
    async fn delete_object(&self) {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&self.pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.pod.name_any(), error = %e, "deleting the pod object")
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut at = self.terminating.filter(|_| !self.killed);
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if let Some(t) = self.report_retry {
            consider(t);
        }
        for c in &self.containers {
            if let State::Waiting {
                retry_at: Some(t), ..
            } = c.state
                && self.terminating.is_none()
            {
                consider(t);
            }
            if let Some(t) = c.kill_at {
                consider(t);
            }
            if c.running() && !c.killing {
                let started = c.started();
                for (kind, t) in &c.next_probe {
                    if *kind == Kind::Startup || started {
                        consider(*t);
                    }
                }
            }
        }
        at
    }

    fn reference(&self, container: Option<&str>) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(self.pod.name_any()),
            namespace: self.pod.namespace(),
            uid: Some(self.uid.clone()),
            field_path: container.map(|n| format!("spec.containers{{{n}}}")),
            ..Default::default()
        }
    }

    /// Records Events about this pod, in order, without holding the worker up.
    fn events(&self, events: Vec<(&'static str, &'static str, String, Option<String>)>) {
        for (type_, reason, message, field) in events {
            let mut r = self.reference(None);
            r.field_path = field;
            self.shared.events.record(r, type_, reason, message);
        }
    }

    /// Patches the pod's status when it differs from what was last reported.
    async fn report(&mut self) {
        self.report_retry = None;
        let status = self.status();
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        // The uid makes the write fail rather than land on a new pod of the same name.
        let patch = json!({"metadata": {"uid": self.uid}, "status": status});
        match self
            .api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                let terminal = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
                self.last_status = Some(status);
                if terminal && self.sandbox.is_some() {
                    // A finished pod keeps its logs and status but not its network.
                    self.teardown(Teardown::PodFinished).await;
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.pod.name_any(), error = %e, "reporting pod status; retrying");
                self.report_retry = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn container_status(&self, c: &Ctr) -> Value {
        let state = match &c.state {
            State::Waiting {
                reason, message, ..
            } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at, .. } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => json!({"terminated": t}),
        };
        let mut s = json!({
            "name": c.spec.name,
            "image": c.spec.image.clone().unwrap_or_default(),
            "imageID": self.shared.runtime.image_id(c.spec.image.as_deref().unwrap_or_default()),
            "ready": c.ready(),
            "started": c.started(),
            "restartCount": c.restarts,
            "state": state,
            "lastState": c.last.as_ref().map_or(json!({}), |t| json!({"terminated": t})),
        });
        if c.pid.is_some() || matches!(c.state, State::Terminated(_)) {
            s["containerID"] = json!(format!("berth://{}-{}-{}", &self.uid, c.spec.name, c.run));
        }
        s
    }

    fn status(&mut self) -> Value {
        let policy = self.restart_policy();
        let (inits, apps): (Vec<&Ctr>, Vec<&Ctr>) = self.containers.iter().partition(|c| c.init);
        let incomplete: Vec<&str> = inits
            .iter()
            .filter(|c| !matches!(&c.state, State::Terminated(t) if t["exitCode"] == 0))
            .map(|c| c.spec.name.as_str())
            .collect();
        let init_failed = inits
            .iter()
            .any(|c| matches!(&c.state, State::Terminated(t) if t["exitCode"] != 0));
        let views: Vec<Phase> = apps
            .iter()
            .map(|c| match &c.state {
                State::Running { .. } => Phase::Running,
                State::Terminated(t) => Phase::Exited(t["exitCode"].as_i64().unwrap_or(1) == 0),
                State::Waiting { .. } if c.last.is_some() => Phase::Restarting,
                State::Waiting { .. } => Phase::Waiting,
            })
            .collect();
        let phase = if init_failed {
            "Failed"
        } else if !incomplete.is_empty() {
            "Pending"
        } else {
            phase(&views, &policy)
        };
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let unready: Vec<&str> = apps
            .iter()
            .filter(|c| !c.ready())
            .map(|c| c.spec.name.as_str())
            .collect();
        let ready = unready.is_empty() && !terminal;
        let sandbox = self.sandbox.is_some() || terminal;
        let mut conditions = Vec::new();
        for (ty, ok) in [
            ("PodReadyToStartContainers", sandbox && !terminal),
            ("Initialized", incomplete.is_empty()),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", true),
        ] {
            let at = match self.conditions.get(ty) {
                Some((was, at)) if *was == ok => at.clone(),
                _ => {
                    let at = now();
                    self.conditions.insert(ty, (ok, at.clone()));
                    at
                }
            };
            let mut cond = json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": at});
            if ty == "Initialized" && !ok {
                cond["reason"] = json!("ContainersNotInitialized");
                cond["message"] = json!(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                ));
            }
            if matches!(ty, "Ready" | "ContainersReady") && !ok {
                if terminal {
                    cond["reason"] = json!("PodCompleted");
                } else {
                    cond["reason"] = json!("ContainersNotReady");
                    cond["message"] = json!(format!(
                        "containers with unready status: [{}]",
                        unready.join(" ")
                    ));
                }
            }
            conditions.push(cond);
        }
        let host_ip = self.shared.config.node_ip.to_string();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time,
            "qosClass": qos_class(&self.pod),
            "containerStatuses": apps.iter().map(|c| self.container_status(c)).collect::<Vec<_>>(),
        });
        if !inits.is_empty() {
            status["initContainerStatuses"] = json!(
                inits
                    .iter()
                    .map(|c| self.container_status(c))
                    .collect::<Vec<_>>()
            );
        }
        if let Some(ip) = self.ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        if let Some(e) = &self.sandbox_error {
            status["message"] = json!(e);
        }
        status
    }
}

/// The hostname a pod's containers get: `spec.hostname`, else the pod's name, cut to the 63
/// characters a hostname may have (and not ending in `-` or `.`), as the kubelet does.
fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.name_any());
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_owned()
}

/// Seconds of a grace period as a duration the clock can add (Kubernetes allows any int64;
/// a year is as good as forever here).
fn cap(seconds: i64) -> u64 {
    seconds.clamp(0, 365 * 24 * 3600).unsigned_abs()
}

/// Why a pod's sandbox is being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// The agent stops: the pod keeps its IP and logs and is started again by the next agent.
    AgentStops,
    /// The pod finished (Succeeded or Failed): it keeps its logs (`kubectl logs`), not its IP.
    PodFinished,
    /// The pod is deleted: nothing of it stays.
    PodGone,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Marks container `c` (number `idx`) running as `started` since `started_at`: its PID (in
/// the pod's files too, for exec), fresh probes, and a task that reports its exit.
fn running(
    c: &mut Ctr,
    idx: usize,
    started: runtime::Started,
    started_at: String,
    state_dir: &std::path::Path,
    uid: &str,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let _ = std::fs::write(
        layout::pid_path(state_dir, uid, &c.spec.name),
        started.pid.to_string(),
    );
    c.pid = Some(started.pid);
    c.state = State::Running {
        started_at,
        since: Instant::now(),
    };
    let start = Instant::now();
    for kind in PROBE_KINDS {
        if let Some(p) = kind.of(&c.spec) {
            let t = Timing::of(p);
            c.verdicts.insert(kind, Verdict::new(kind, t));
            c.next_probe.insert(kind, start + t.initial_delay);
        }
    }
    let run = c.run;
    tokio::spawn(async move {
        let (code, signal) = started.exit.wait().await;
        let _ = tx.send(Msg::Exited {
            idx,
            run,
            code,
            signal,
        });
    });
}

/// The run number in a container ID this agent reported (`berth://<uid>-<name>-<run>`).
fn run_of(container_id: &str) -> Option<u64> {
    container_id.rsplit_once('-')?.1.parse().ok()
}

/// The restart count an earlier agent reported, so that restarting a pod after the agent
/// restarts counts as one more restart.
fn previous_restarts(pod: &Pod, container: &str, init: bool) -> i32 {
    previous_status(pod, container, init).map_or(0, |c| {
        c.restart_count + i32::from(c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
}

/// What an earlier agent last reported for a container.
fn previous_status<'a>(
    pod: &'a Pod,
    container: &str,
    init: bool,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    let list = if init {
        status.init_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    list?.iter().find(|c| c.name == container)
}

/// The state a container starts in under a new agent: one that finished for good under the
/// earlier agent (an init container that succeeded; with OnFailure one that succeeded; with
/// Never any) stays finished rather than running again, and with Never one that was running
/// is reported lost, as the kubelet reports a container it cannot find.
fn carried_over(pod: &Pod, container: &str, init: bool) -> Option<State> {
    let previous = previous_status(pod, container, init)?.state.as_ref()?;
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if let Some(t) = &previous.terminated {
        let keep = match (init, policy) {
            (_, "Never") => true,
            (true, _) | (_, "OnFailure") => t.exit_code == 0,
            _ => false,
        };
        return keep
            .then(|| serde_json::to_value(t).ok().map(State::Terminated))
            .flatten();
    }
    (policy == "Never" && previous.running.is_some()).then(|| {
        State::Terminated(json!({
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "startedAt": previous.running.as_ref().and_then(|r| r.started_at.clone()),
            "finishedAt": now(),
        }))
    })
}

/// Where each container is, for working out the pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    /// Exited and waiting to be started again.
    Restarting,
    /// Exited for good; whether it succeeded.
    Exited(bool),
}

/// The pod phase the kubelet derives from its containers.
fn phase(containers: &[Phase], restart_policy: &str) -> &'static str {
    let count = |f: fn(&Phase) -> bool| containers.iter().filter(|c| f(c)).count();
    let waiting = count(|c| *c == Phase::Waiting);
    let running = count(|c| matches!(c, Phase::Running | Phase::Restarting));
    let stopped = count(|c| matches!(c, Phase::Exited(_)));
    let succeeded = count(|c| *c == Phase::Exited(true));
    if containers.is_empty() || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match restart_policy {
        "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        "OnFailure" => "Running",
        _ => "Failed",
    }
}

/// The QoS class from the containers' requests and limits (Guaranteed when every container
/// has equal CPU and memory requests and limits, BestEffort when none has any).
fn qos_class(pod: &Pod) -> &'static str {
    let containers: Vec<&Container> = pod.spec.iter().flat_map(|s| s.containers.iter()).collect();
    let any = containers.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let Some(r) = c.resources.as_ref() else {
            return false;
        };
        ["cpu", "memory"].iter().all(|k| {
            let limit = r.limits.as_ref().and_then(|l| l.get(*k));
            let request = r.requests.as_ref().and_then(|l| l.get(*k)).or(limit);
            limit.is_some() && limit == request
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// /etc/netns/<name>/: what `ip netns exec` mounts over the node's /etc for the pod.
fn etc_dir(pod_uid: &str) -> std::path::PathBuf {
    let netns = crate::sandbox::SandboxNames::for_uid(pod_uid)
        .map(|n| n.netns)
        .unwrap_or_else(|_| "berth-pod-invalid".into());
    std::path::PathBuf::from("/etc/netns").join(netns)
}

/// The pod's /etc/resolv.conf and /etc/hosts.
fn write_etc(config: &Config, sandbox: &Sandbox, pod: &Pod, ip: Ipv4Addr) -> Result<(), Error> {
    let dir = etc_dir(sandbox.pod_uid());
    let ns = pod.namespace().unwrap_or_default();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        // Bound over the container's /etc files, which any user in it must read (0644), whatever
        // the agent's own umask.
        std::fs::write(&path, text)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)))
            .map_err(|source| Error::Write { path, source })
    };
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    let node = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write(
        "resolv.conf",
        resolv_conf(pod, &ns, &config.cluster_dns, &node),
    )?;
    write("hosts", hosts_file(pod, &ns, ip))
}

/// The pod's /etc/resolv.conf as the kubelet makes it from `dnsPolicy` and `dnsConfig`:
/// `ClusterFirst` (the default, and `ClusterFirstWithHostNet`) uses the cluster DNS with the
/// namespace's search list and `ndots:5`, then the node's search domains; `Default` is the
/// node's file; `None` only `dnsConfig`. `dnsConfig` appends nameservers (3 at most) and
/// search domains and overrides options by name.
fn resolv_conf(pod: &Pod, ns: &str, cluster_dns: &str, node: &str) -> String {
    let spec = pod.spec.as_ref();
    let words = |key: &str| -> Vec<String> {
        node.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter(|rest| rest.starts_with([' ', '\t']))
            .flat_map(|rest| rest.split_whitespace().map(str::to_owned))
            .collect()
    };
    let (mut servers, mut search, mut options) = match spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst")
    {
        "Default" => (words("nameserver"), words("search"), words("options")),
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        _ => {
            let mut search = vec![
                format!("{ns}.svc.cluster.local"),
                "svc.cluster.local".to_owned(),
                "cluster.local".to_owned(),
            ];
            search.extend(words("search"));
            (
                vec![cluster_dns.to_owned()],
                search,
                vec!["ndots:5".to_owned()],
            )
        }
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(cfg.nameservers.iter().flatten().cloned());
        search.extend(cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            options.retain(|existing| existing.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    search.retain(|s| seen.insert(s.clone()));
    servers.truncate(3);
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The pod's /etc/hosts as the kubelet writes it: the loopback and IPv6 lines, then the pod's
/// own line, `IP host.subdomain.ns.svc.cluster.local host` when it has a subdomain.
fn hosts_file(pod: &Pod, ns: &str, ip: Ipv4Addr) -> String {
    let host = pod_hostname(pod);
    let subdomain = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty());
    let own = match subdomain {
        Some(sub) => format!("{ip}\t{host}.{sub}.{ns}.svc.cluster.local\t{host}\n"),
        None => format!("{ip}\t{host}\n"),
    };
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{own}"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_come_from_container_ids() {
        assert_eq!(super::run_of("berth://0a1b-2c3d-web-7"), Some(7));
        assert_eq!(super::run_of("berth://0a1b-web"), None);
        assert_eq!(super::run_of(""), None);
    }

    use super::*;

    #[test]
    fn resolv_conf_follows_dns_policy_and_dns_config() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
                .expect("pod")
        };
        let node = "# node\nsearch corp.example\nnameserver 192.0.2.53\noptions edns0\n";
        assert_eq!(
            resolv_conf(
                &pod(serde_json::json!({"containers": []})),
                "shop",
                "10.96.0.10",
                node
            ),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(
                &pod(serde_json::json!({"containers": [], "dnsPolicy": "Default"})),
                "shop",
                "10.96.0.10",
                node
            ),
            "search corp.example\nnameserver 192.0.2.53\noptions edns0\n"
        );
        let none = pod(
            serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
            }}),
        );
        assert_eq!(
            resolv_conf(&none, "shop", "10.96.0.10", node),
            "search a.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        let merged = pod(
            serde_json::json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}),
        );
        assert!(resolv_conf(&merged, "shop", "10.96.0.10", node).ends_with("options ndots:1\n"));
    }

    #[test]
    fn hosts_file_names_the_pod_as_the_kubelet_does() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"containers": []}
        }))
        .expect("pod");
        let ip = Ipv4Addr::new(10, 244, 0, 5);
        assert!(
            hosts_file(&pod, "shop", ip)
                .ends_with("\nfe00::2\tip6-allrouters\n10.244.0.5\tweb-0\n")
        );
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some("db".into());
            spec.subdomain = Some("backend".into());
        }
        assert!(
            hosts_file(&pod, "shop", ip)
                .ends_with("\n10.244.0.5\tdb.backend.shop.svc.cluster.local\tdb\n"),
            "{}",
            hosts_file(&pod, "shop", ip)
        );
    }

    #[test]
    fn phases_follow_the_kubelet() {
        use Phase::*;
        assert_eq!(phase(&[Waiting, Running], "Always"), "Pending");
        assert_eq!(phase(&[Running, Exited(true)], "Never"), "Running");
        assert_eq!(phase(&[Restarting], "Always"), "Running");
        assert_eq!(phase(&[Exited(true), Exited(true)], "Never"), "Succeeded");
        assert_eq!(phase(&[Exited(true), Exited(false)], "Never"), "Failed");
        assert_eq!(phase(&[Exited(true)], "OnFailure"), "Succeeded");
        assert_eq!(phase(&[], "Always"), "Pending");
    }

    #[test]
    fn finished_containers_stay_finished_under_a_new_agent() {
        let pod = |policy: &str, state: Value, init: bool| {
            let list = if init {
                "initContainerStatuses"
            } else {
                "containerStatuses"
            };
            serde_json::from_value::<Pod>(json!({
                "metadata": {"name": "p"},
                "spec": {"restartPolicy": policy, "containers": []},
                "status": {list: [{"name": "c", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 2, "state": state}]},
            }))
            .expect("a pod")
        };
        let done = |code: i32| json!({"terminated": {"exitCode": code}});
        let kept = |p: &Pod, init| matches!(carried_over(p, "c", init), Some(State::Terminated(_)));
        assert!(kept(&pod("Never", done(1), false), false));
        assert!(kept(&pod("OnFailure", done(0), false), false));
        assert!(!kept(&pod("OnFailure", done(1), false), false));
        assert!(!kept(&pod("Always", done(0), false), false));
        assert!(kept(&pod("Always", done(0), true), true));
        assert!(!kept(&pod("Always", done(1), true), true));
        let lost = carried_over(&pod("Never", json!({"running": {}}), false), "c", false);
        assert!(
            matches!(&lost, Some(State::Terminated(t)) if t["reason"] == "ContainerStatusUnknown"),
            "{lost:?}"
        );
        assert!(carried_over(&pod("Always", json!({"running": {}}), false), "c", false).is_none());
    }

    #[test]
    fn hostnames_fit_and_follow_spec_hostname() {
        let pod = |v: Value| serde_json::from_value::<Pod>(v).expect("a pod");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(
            pod_hostname(&pod(json!({"metadata": {"name": long}}))),
            "a".repeat(62)
        );
        assert_eq!(
            pod_hostname(&pod(
                json!({"metadata": {"name": "p"}, "spec": {"hostname": "h", "containers": []}})
            )),
            "h"
        );
    }

    #[test]
    fn qos_classes() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "a"}]}}))
            .expect("test setup");
        assert_eq!(qos_class(&pod), "BestEffort");
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "a",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}))
        .expect("test setup");
        assert_eq!(qos_class(&pod), "Guaranteed");
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "a",
            "resources": {"requests": {"cpu": "1"}}}]}}))
        .expect("test setup");
        assert_eq!(qos_class(&pod), "Burstable");
    }
}
