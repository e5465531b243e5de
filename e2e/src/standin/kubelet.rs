//! The stand-in's loop: pod events start and stop processes, ConfigMap/Secret events resync
//! volumes, and a tick probes readiness, restarts crashed processes and writes pod status and
//! `/etc/hosts`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, Volume};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::address;
use super::container::{probe, RunningPod};
use super::hosts::{self, HostEntry};
use super::podspec::{self, ContainerState};
use super::volumes::{self, Backing};
use crate::bed::TestBed;

/// Longest wait between SIGTERM and SIGKILL when a pod is deleted (kubelet uses the pod's
/// `terminationGracePeriodSeconds`; tests need no more).
pub const DELETE_GRACE: Duration = Duration::from_secs(10);
/// Between SIGTERM and SIGKILL at teardown.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(3);
/// Readiness probe and status interval.
const TICK: Duration = Duration::from_millis(500);
/// Crash restart backoff cap.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The node pods are bound to (so deletions are graceful and come back to us, as to a kubelet).
pub const NODE_NAME: &str = "mqtt-e2e-standin";

/// Why a pod could not be started (yet: pods are retried while pending).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pod spec asks for something the stand-in does not emulate.
    #[error("pod {pod}: {reason}")]
    Spec {
        /// The pod.
        pod: String,
        /// What is wrong.
        reason: String,
    },
    /// Binding the pod to the stand-in's node failed.
    #[error("binding pod {pod} to node {NODE_NAME}: {source}")]
    Bind {
        /// The pod.
        pod: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// No loopback address.
    #[error(transparent)]
    Address(#[from] address::AddressError),
    /// A volume could not be materialised.
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    /// Unsupported env.
    #[error(transparent)]
    Unsupported(#[from] podspec::Unsupported),
    /// The process could not be spawned.
    #[error("spawning the broker: {0}")]
    Spawn(#[from] crate::bed::TestBedError),
}

pub(super) struct Ctx {
    pub bed: &'static TestBed,
    pub namespace: String,
    pub owner: String,
    pub root: PathBuf,
    pub broker: PathBuf,
    pub pods: Arc<Mutex<BTreeMap<String, RunningPod>>>,
}

fn now() -> String {
    // RFC 3339 in UTC, whole seconds (the form the API server stores).
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn owned_by_stateful_set(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet")
}

struct Loop {
    ctx: Ctx,
    client: Client,
    pods: Api<Pod>,
    pending: BTreeMap<String, (Pod, String)>,
    finalised: BTreeSet<String>,
    volumes_dirty: bool,
    hosts_written: Option<Vec<HostEntry>>,
    ticks: u64,
    next_address: u32,
}

pub(super) async fn run(ctx: Ctx, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let client = match ctx.bed.client().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("standin: no client: {e}");
            return;
        }
    };
    let ns = ctx.namespace.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut pod_events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut cm_events = watcher::watcher(
        Api::<ConfigMap>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .boxed();
    let mut secret_events = watcher::watcher(
        Api::<Secret>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .boxed();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spread starting addresses between test processes and namespaces.
    let seed = std::process::id().wrapping_mul(7919)
        ^ ns.bytes().fold(0u32, |h, b| h.wrapping_mul(31) ^ b as u32);
    let mut l = Loop {
        ctx,
        client,
        pods,
        pending: BTreeMap::new(),
        finalised: BTreeSet::new(),
        volumes_dirty: false,
        hosts_written: None,
        ticks: 0,
        next_address: seed,
    };
    let mut seen: Option<BTreeSet<String>> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            ev = pod_events.next() => match ev {
                Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (seen.as_mut(), pod.uid()) {
                        seen.insert(uid);
                    }
                    l.on_pod(pod).await;
                }
                Some(Ok(Event::Delete(pod))) => l.on_gone(&pod.uid().unwrap_or_default()),
                Some(Ok(Event::Init)) => seen = Some(BTreeSet::new()),
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = seen.take() {
                        let gone: Vec<String> = l.running_uids().into_iter().filter(|u| !seen.contains(u)).collect();
                        for uid in gone {
                            l.on_gone(&uid);
                        }
                    }
                }
                Some(Err(e)) => {
                    eprintln!("standin: pod watch: {e}");
                    tokio::time::sleep(TICK).await;
                }
                None => return,
            },
            ev = cm_events.next() => {
                if let Some(Ok(Event::Apply(_) | Event::Delete(_))) = ev {
                    l.volumes_dirty = true;
                }
            }
            ev = secret_events.next() => {
                if let Some(Ok(Event::Apply(_) | Event::Delete(_))) = ev {
                    l.volumes_dirty = true;
                }
            }
            _ = tick.tick() => l.on_tick().await,
        }
    }
}

impl Loop {
    fn running_uids(&self) -> Vec<String> {
        self.ctx
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn take(&self, uid: &str) -> Option<RunningPod> {
        self.ctx
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid)
    }

    /// The pod is gone from the API: stop its process.
    fn on_gone(&mut self, uid: &str) {
        self.pending.remove(uid);
        if let Some(p) = self.take(uid) {
            p.terminate(DELETE_GRACE);
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        if !owned_by_stateful_set(&pod) {
            return;
        }
        let Some(uid) = pod.uid() else { return };
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            // kubelet's part of a graceful delete: stop the containers, then delete for good.
            self.pending.remove(&uid);
            if let Some(p) = self.take(&uid) {
                p.terminate(DELETE_GRACE);
            }
            self.write_hosts().await;
            if self.finalised.insert(uid.clone()) {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match self.pods.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        eprintln!("standin: finalising the deletion of pod {name}: {e}");
                        self.finalised.remove(&uid);
                    }
                }
            }
            return;
        }
        {
            let mut pods = self.ctx.pods.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(running) = pods.get_mut(&uid) {
                running.pod = pod;
                return;
            }
        }
        self.pending.insert(uid, (pod, String::new()));
        self.start_pending().await;
    }

    async fn start_pending(&mut self) {
        let uids: Vec<String> = self.pending.keys().cloned().collect();
        for uid in uids {
            let Some((pod, last_error)) = self.pending.remove(&uid) else {
                continue;
            };
            match self.start(&pod).await {
                Ok(running) => {
                    self.ctx
                        .pods
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid, running);
                    self.write_hosts().await;
                }
                Err(e) => {
                    // Report each new reason once, not every retry.
                    let e = e.to_string();
                    if e != last_error {
                        eprintln!("standin: pod {} not started yet: {e}", pod.name_any());
                    }
                    self.pending.insert(uid, (pod, e));
                }
            }
        }
    }

    async fn start(&mut self, pod: &Pod) -> Result<RunningPod, StartError> {
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let spec_error = |reason: String| StartError::Spec {
            pod: name.clone(),
            reason,
        };
        let spec = pod
            .spec
            .clone()
            .ok_or_else(|| spec_error("no spec".into()))?;
        let [container] = spec.containers.as_slice() else {
            return Err(spec_error(format!(
                "{} containers; the stand-in runs pods of one container",
                spec.containers.len()
            )));
        };
        if spec.node_name.is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
            });
            self.pods
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map_err(|e| StartError::Bind {
                    pod: name.clone(),
                    source: Box::new(e),
                })?;
        }
        let dir = self
            .ctx
            .root
            .join(format!("{name}-{}", &uid[..uid.len().min(8)]));
        let claims = self.ctx.root.join("claims");
        let volumes_spec = spec.volumes.clone().unwrap_or_default();
        let lease = address::lease(self.next_address)?;
        self.next_address = self.next_address.wrapping_add(1);
        let ip = lease.ip();
        let mounts = self
            .materialise(&volumes_spec, &dir, &claims, ip)
            .await?
            .into_iter()
            .collect::<BTreeMap<_, _>>();
        let mounts: Vec<(String, PathBuf)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                mounts
                    .get(&m.name)
                    .map(|host| (m.mount_path.clone(), host.clone()))
                    .ok_or_else(|| spec_error(format!("volume mount {} has no volume", m.name)))
            })
            .collect::<Result<_, _>>()?;
        let start_time = now();
        let mut running = RunningPod {
            pod: pod.clone(),
            name: name.clone(),
            uid,
            lease,
            container: container.clone(),
            dir,
            process: None,
            start_time,
            started_at: String::new(),
            ready: false,
            restarts: 0,
            restart_at: None,
            reported: None,
        };
        self.spawn(&mut running, &mounts)?;
        Ok(running)
    }

    /// Writes every volume of a pod; returns (volume name, host directory).
    async fn materialise(
        &self,
        volumes: &[Volume],
        dir: &std::path::Path,
        claims: &std::path::Path,
        ip: Ipv4Addr,
    ) -> Result<Vec<(String, PathBuf)>, volumes::VolumeError> {
        let objects = volumes::fetch(&self.client, &self.ctx.namespace, volumes).await?;
        let mut out = Vec::new();
        for v in volumes {
            let backing = match volumes::backing(v, &objects, dir, claims)? {
                Backing::Files(d, files) => Backing::Files(
                    d,
                    files
                        .into_iter()
                        .map(|(path, (bytes, mode))| {
                            let bytes = podspec::network_namespace_rewrite(&path, bytes, ip);
                            (path, (bytes, mode))
                        })
                        .collect(),
                ),
                dir => dir,
            };
            volumes::write(&backing)?;
            let host = match backing {
                Backing::Files(d, _) | Backing::Dir(d) => d,
            };
            out.push((v.name.clone(), host));
        }
        Ok(out)
    }

    fn spawn(
        &self,
        running: &mut RunningPod,
        mounts: &[(String, PathBuf)],
    ) -> Result<(), StartError> {
        let c = &running.container;
        let env = podspec::env(&running.pod, c, running.ip())?;
        let mut args: Vec<String> = c.command.iter().flatten().skip(1).cloned().collect();
        args.extend(c.args.iter().flatten().cloned());
        let mut cmd = Command::new(&self.ctx.broker);
        cmd.args(args.iter().map(|a| podspec::map_arg(a, mounts)))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .current_dir(&running.dir);
        let log_name = format!(
            "standin-{}-{}-{}-{}",
            self.ctx.namespace,
            running.name,
            &running.uid[..running.uid.len().min(8)],
            running.restarts
        );
        let process = self.ctx.bed.spawn(&log_name, cmd)?;
        running.process = Some(process);
        running.started_at = now();
        running.ready = false;
        running.restart_at = None;
        Ok(())
    }

    async fn on_tick(&mut self) {
        self.ticks += 1;
        if !self.pending.is_empty() && self.ticks.is_multiple_of(2) {
            self.start_pending().await;
        }
        if std::mem::take(&mut self.volumes_dirty) {
            self.resync_volumes().await;
        }
        let mut changed = false;
        for uid in self.running_uids() {
            // Probe without holding the lock.
            let (probe_target, exited) = {
                let pods = self.ctx.pods.lock().unwrap_or_else(|e| e.into_inner());
                let Some(p) = pods.get(&uid) else { continue };
                let exited = p
                    .process
                    .as_ref()
                    .is_none_or(|proc| proc.exited().is_some());
                (
                    podspec::readiness_http(&p.container).map(|(path, port)| (p.ip(), port, path)),
                    exited,
                )
            };
            let ready = match (&probe_target, exited) {
                (_, true) => false,
                (Some((ip, port, path)), false) => probe(*ip, *port, path).await,
                (None, false) => true,
            };
            let patch = {
                let mut pods = self.ctx.pods.lock().unwrap_or_else(|e| e.into_inner());
                let Some(p) = pods.get_mut(&uid) else {
                    continue;
                };
                if exited {
                    self.restart_if_due(p);
                }
                if p.ready != ready {
                    changed = true;
                }
                p.ready = ready;
                let state = (p.ready, p.restarts, p.started_at.clone());
                (p.reported.as_ref() != Some(&state)).then(|| {
                    let status = podspec::running_status(
                        Some(&p.pod),
                        p.ip(),
                        &p.start_time,
                        &now(),
                        &[ContainerState {
                            name: p.container.name.clone(),
                            image: p.container.image.clone().unwrap_or_default(),
                            ready: p.ready,
                            restarts: p.restarts,
                            started_at: p.started_at.clone(),
                        }],
                    );
                    (p.name.clone(), status, state)
                })
            };
            if let Some((name, mut status, state)) = patch {
                status["metadata"] = json!({"uid": uid});
                match self
                    .pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    Ok(pod) => {
                        let mut pods = self.ctx.pods.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(p) = pods.get_mut(&uid) {
                            p.pod = pod;
                            p.reported = Some(state);
                        }
                    }
                    Err(e) => eprintln!("standin: status of pod {name}: {e}"),
                }
            }
        }
        if changed || self.ticks.is_multiple_of(10) {
            self.write_hosts().await;
        }
    }

    fn restart_if_due(&self, p: &mut RunningPod) {
        let now = Instant::now();
        match p.restart_at {
            None => {
                let backoff = Duration::from_secs(1 << p.restarts.min(4)).min(MAX_BACKOFF);
                if let Some(proc) = &p.process {
                    eprintln!(
                        "standin: pod {} exited ({}); restarting in {backoff:?}; log {}",
                        p.name,
                        proc.exited().unwrap_or_default(),
                        proc.log_path().display()
                    );
                }
                p.restart_at = Some(now + backoff);
            }
            Some(at) if now >= at => {
                let mounts = self.mounts_of(p);
                p.restarts += 1;
                if let Err(e) = self.spawn(p, &mounts) {
                    eprintln!("standin: restarting pod {}: {e}", p.name);
                    p.restart_at = None;
                }
            }
            Some(_) => {}
        }
    }

    /// The host directories of a running pod's mounts (same layout as at start).
    fn mounts_of(&self, p: &RunningPod) -> Vec<(String, PathBuf)> {
        let volumes = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let claims = self.ctx.root.join("claims");
        let host_of = |name: &str| -> Option<PathBuf> {
            let v = volumes.iter().find(|v| v.name == name)?;
            Some(match &v.persistent_volume_claim {
                Some(c) => claims.join(&c.claim_name),
                None => p.dir.join("volumes").join(name),
            })
        };
        p.container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| Some((m.mount_path.clone(), host_of(&m.name)?)))
            .collect()
    }

    async fn resync_volumes(&mut self) {
        let targets: Vec<(String, Vec<Volume>, PathBuf, Ipv4Addr)> = {
            let pods = self.ctx.pods.lock().unwrap_or_else(|e| e.into_inner());
            pods.iter()
                .map(|(uid, p)| {
                    let v = p
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.volumes.clone())
                        .unwrap_or_default();
                    (uid.clone(), v, p.dir.clone(), p.ip())
                })
                .collect()
        };
        let claims = self.ctx.root.join("claims");
        for (uid, v, dir, ip) in targets {
            if let Err(e) = self.materialise(&v, &dir, &claims, ip).await {
                eprintln!("standin: resyncing the volumes of pod uid {uid}: {e}");
                self.volumes_dirty = true;
            }
        }
    }

    /// Pod DNS names for every running pod; Service names for the pods each Service selects
    /// (ready ones, or all with `publishNotReadyAddresses`).
    async fn write_hosts(&mut self) {
        let services = Api::<Service>::namespaced(self.client.clone(), &self.ctx.namespace)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut entries = Vec::new();
        {
            let pods = self.ctx.pods.lock().unwrap_or_else(|e| e.into_inner());
            for p in pods.values() {
                entries.push(HostEntry {
                    ip: p.ip(),
                    names: podspec::pod_dns_names(&p.pod),
                });
                let labels = p.pod.labels();
                for svc in &services {
                    let Some(spec) = &svc.spec else { continue };
                    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    let selects = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
                    let publish = p.ready || spec.publish_not_ready_addresses == Some(true);
                    if selects && publish {
                        entries.push(HostEntry {
                            ip: p.ip(),
                            names: podspec::service_dns_names(&svc.name_any(), &self.ctx.namespace),
                        });
                    }
                }
            }
        }
        entries.sort();
        if self.hosts_written.as_ref() == Some(&entries) {
            return;
        }
        match hosts::update(&self.ctx.owner, &entries) {
            Ok(()) => self.hosts_written = Some(entries),
            Err(e) => eprintln!("standin: writing /etc/hosts: {e}"),
        }
    }
}
