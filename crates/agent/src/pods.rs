//! The agent loop: registers the Node, binds unscheduled pods to it (a one-node scheduler),
//! and runs each bound pod: a sandbox, its containers as processes inside the pod's network
//! namespace, and a status as the kubelet reports it. Processes are started through
//! `ip netns exec` (which also gives them the pod's /etc/resolv.conf and /etc/hosts from
//! /etc/netns/<name>/) and `setpriv --pdeathsig KILL`, so they die with the agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Container, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::sandbox::{Bridge, Ipam, Sandbox};

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The node's pod CIDR; the bridge takes its first address.
    pub pod_cidr: Ipv4Net,
    /// Where IPAM state, pod logs and per-pod files live.
    pub state_dir: PathBuf,
    /// The `berth` binary, which runs built-in workloads (`berth workload ...`).
    pub self_exe: PathBuf,
    /// The cluster DNS server pods are pointed at.
    pub cluster_dns: String,
    /// The node's InternalIP, which the API server dials for logs and exec.
    pub node_ip: std::net::Ipv4Addr,
    /// The port the agent's server (logs, exec, port-forward) listens on.
    pub kubelet_port: u16,
    /// PEM of the CA whose client certificates the agent's server accepts (the cluster CA).
    pub client_ca: String,
}

struct Running {
    sandbox: Sandbox,
    children: Vec<Child>,
}

/// Runs the agent until `shutdown`; on the way out, every pod it started is stopped.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<()> {
    let gateway = Ipv4Net::new(
        std::net::Ipv4Addr::from(u32::from(config.pod_cidr.network()).saturating_add(1)),
        config.pod_cidr.prefix_len(),
    )
    .unwrap_or(config.pod_cidr);
    let bridge = Bridge::ensure("berth0", gateway).await?;
    let mut ipam = Ipam::open(&config.state_dir, config.pod_cidr)?;
    crate::node::register(&client, &config).await?;
    crate::server::spawn(client.clone(), config.clone(), shutdown.clone());
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { break };
        let result = match ev {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                on_pod(&client, &config, &bridge, &mut ipam, &mut running, pod).await
            }
            Ok(watcher::Event::Delete(pod)) => {
                stop(&mut ipam, &mut running, &pod.uid().unwrap_or_default()).await
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "pod sync failed");
        }
    }
    let uids: Vec<String> = running.keys().cloned().collect();
    for uid in uids {
        let _ = stop(&mut ipam, &mut running, &uid).await;
    }
    Ok(())
}

async fn on_pod(
    client: &Client,
    config: &Config,
    bridge: &Bridge,
    ipam: &mut Ipam,
    running: &mut HashMap<String, Running>,
    pod: Pod,
) -> Result<()> {
    let uid = pod.uid().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    match node {
        None => {
            // The one-node scheduler: every pod lands here.
            let patch = json!({"spec": {"nodeName": config.node_name}});
            api.patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            Ok(())
        }
        Some(n)
            if n == config.node_name
                && pod.metadata.deletion_timestamp.is_none()
                && !running.contains_key(&uid) =>
        {
            let ip = ipam.allocate(&uid)?;
            let sandbox = Sandbox::create(&uid, &pod.name_any(), ip, bridge).await?;
            write_etc(config, &sandbox, &pod, ip)?;
            let services = Api::<Service>::all(client.clone())
                .list(&Default::default())
                .await?
                .items;
            let links = pod
                .spec
                .as_ref()
                .and_then(|s| s.enable_service_links)
                .unwrap_or(true);
            let service_env = crate::env::service_env(&services, &ns, links);
            let mut children = Vec::new();
            let mut statuses = Vec::new();
            for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                match spawn(config, &sandbox, &pod, c, &service_env) {
                    Ok(child) => {
                        statuses.push(json!({"name": c.name, "image": c.image, "imageID": "", "containerID": format!("berth://{}", child.id()),
                            "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now()}}}));
                        children.push(child);
                    }
                    Err(reason) => statuses.push(json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ErrImagePull", "message": reason}}})),
                }
            }
            let all_ready = children.len() == pod.spec.as_ref().map_or(0, |s| s.containers.len());
            let ready = if all_ready { "True" } else { "False" };
            let status = json!({"status": {
                "phase": if all_ready { "Running" } else { "Pending" },
                "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}], "hostIP": bridge.gateway().addr().to_string(),
                "startTime": now(),
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                    {"type": "ContainersReady", "status": ready, "lastTransitionTime": now()},
                    {"type": "Ready", "status": ready, "lastTransitionTime": now()},
                ],
                "containerStatuses": statuses,
            }});
            running.insert(uid, Running { sandbox, children });
            api.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The argv a container runs: its command and args, or for a built-in image the `berth`
/// binary's workload on the container's first port.
fn argv(config: &Config, c: &Container) -> std::result::Result<Vec<String>, String> {
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    let image = c.image.clone().unwrap_or_default();
    if c.command.is_none() {
        let Some(b) = berth_workloads::Builtin::from_image(&image) else {
            return Err(format!(
                "image {image:?} is not a built-in workload and the container has no command"
            ));
        };
        let port = c
            .ports
            .iter()
            .flatten()
            .next()
            .map_or(b.default_port() as i32, |p| p.container_port);
        let mut builtin = vec![
            config.self_exe.display().to_string(),
            "workload".into(),
            b.name().into(),
            "--port".into(),
            port.to_string(),
        ];
        builtin.extend(argv);
        return Ok(builtin);
    }
    Ok(argv)
}

/// The pod's /etc/resolv.conf and /etc/hosts, which `ip netns exec` mounts over the node's.
fn write_etc(config: &Config, sandbox: &Sandbox, pod: &Pod, ip: std::net::Ipv4Addr) -> Result<()> {
    let dir = etc_dir(sandbox);
    let ns = pod.namespace().unwrap_or_default();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Write { path, source })
    };
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    write(
        "resolv.conf",
        format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
            config.cluster_dns
        ),
    )?;
    write(
        "hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{}\n",
            pod.name_any()
        ),
    )
}

fn etc_dir(sandbox: &Sandbox) -> PathBuf {
    PathBuf::from("/etc/netns").join(sandbox.netns())
}

fn spawn(
    config: &Config,
    sandbox: &Sandbox,
    pod: &Pod,
    c: &Container,
    service_env: &[(String, String)],
) -> std::result::Result<Child, String> {
    let argv = argv(config, c)?;
    let log_dir = config
        .state_dir
        .join("pods")
        .join(pod.uid().unwrap_or_default());
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(log_dir.join(format!("{}.log", c.name)))
        .map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("ip");
    // A UTS namespace of its own gives the container the pod's name as hostname.
    let netns = sandbox.netns();
    cmd.args([
        "netns",
        "exec",
        netns,
        "unshare",
        "--uts",
        "--",
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
    ])
    .args(["/bin/sh", "-c", "hostname \"$0\" && exec \"$@\""])
    .arg(pod.name_any())
    .args(&argv)
    .env_clear()
    .env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    .env("HOSTNAME", pod.name_any())
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(err);
    cmd.envs(service_env.iter().map(|(k, v)| (k, v)));
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            cmd.env(&e.name, v);
        }
    }
    let child = cmd.spawn().map_err(|e| format!("starting {argv:?}: {e}"))?;
    // Exec enters this process's namespaces; logs are followed while it lives.
    let pid_file =
        crate::layout::pid_path(&config.state_dir, &pod.uid().unwrap_or_default(), &c.name);
    let _ = std::fs::write(pid_file, child.id().to_string());
    Ok(child)
}

async fn stop(ipam: &mut Ipam, running: &mut HashMap<String, Running>, uid: &str) -> Result<()> {
    let Some(mut r) = running.remove(uid) else {
        return Ok(());
    };
    for c in &mut r.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(etc_dir(&r.sandbox));
    r.sandbox.destroy().await?;
    ipam.release(uid)?;
    Ok(())
}
