//! Docker executor (bollard): runs a job in a locally present image under
//! a locked-down container and turns what it did into a [`ResultBundle`].
//!
//! In: an [`ExecRequest`] whose spec names an image and pins its id. Out:
//! exit code, demultiplexed stdout/stderr and the declared files under
//! `/out`, or an [`ExecError`] naming the broken limit.
//!
//! Every container gets: no network, a read-only root, all capabilities
//! dropped, `no-new-privileges`, uid/gid 65534, pids/memory/CPU limits with
//! no swap, a size-limited tmpfs at `/tmp`, logging disabled (output is
//! read through attach and capped here, never spooled to disk by Docker),
//! and the labels `agora.managed=true`, `agora.job=<id>` and, when
//! configured, `agora.node=<instance>`. Inputs and outputs travel through
//! per-run host directories bind-mounted at `/in` (read-only) and `/out`,
//! so the Docker daemon must share this machine's filesystem (a local
//! socket, or a daemon-in-container setup that mounts
//! [`DockerConfig::work_dir`] at the same path). `/out` is on disk, so its
//! size is watched while the job runs ([`DockerConfig::out_dir_bytes`]);
//! `VOLUME`s the image declares get a bounded tmpfs instead of an
//! unbounded anonymous volume. Declared outputs are read only after the
//! container is gone, never through a symlink.
//!
//! **Invariant:** nothing is ever pulled; a container is removed on every
//! path, including errors and a dropped future (a guard spawns the
//! removal), and [`DockerExecutor::reap`] removes what a crashed daemon
//! left behind.
//!
//! Length: about 860 lines before its tests, over the usual 700: one
//! container's whole life (create, copy in, start, stream with caps,
//! wait, copy out, remove) shares the guard that removes it on every
//! path; the file copying already lives in `docker/files.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::{ExecutorSpec, JobSpec, ResultBundle};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions, MountTypeEnum,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde_bytes::ByteBuf;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::{Capabilities, ExecError, ExecRequest, Executor, OutputStream};

mod files;
pub mod images;

use files::Workspace;

/// Label present on every container this executor creates.
pub const LABEL_MANAGED: &str = "agora.managed";
/// Label carrying the job id (hex) of a container.
pub const LABEL_JOB: &str = "agora.job";
/// Label carrying the owning node instance, when configured.
pub const LABEL_NODE: &str = "agora.node";
/// The uid and gid every job runs as (`nobody`).
pub const JOB_UID: u32 = 65534;
/// Docker refuses memory limits below 6 MiB; smaller requests are raised
/// to this floor (the same on every executor, so results still agree).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// How a [`DockerExecutor`] reaches Docker and what it imposes beyond the
/// job's own limits.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Unix socket of the engine (`/path` or `unix:///path`); `None` uses
    /// `DOCKER_HOST` if it is a unix URL, else `/var/run/docker.sock`.
    pub socket: Option<String>,
    /// Bound on each Docker API call (not on the job, which has its own
    /// deadline). Docker's client takes whole seconds; at least 1 s.
    pub api_timeout: Duration,
    /// Most processes/threads a container may have; stops fork bombs.
    /// Values below 1 are raised to 1 (Docker would read them as no limit).
    pub pids_limit: i64,
    /// Size of the `/tmp` tmpfs and of `/dev/shm`, in bytes. tmpfs pages
    /// count against the job's memory limit too.
    pub tmpfs_bytes: u64,
    /// Value of the `agora.node` label; when set, [`DockerExecutor::reap`]
    /// only removes this instance's containers, so two daemons on one
    /// machine do not kill each other's jobs.
    pub node_label: Option<String>,
    /// Parent of the per-run `/in` and `/out` host directories; must be
    /// visible to the Docker daemon at the same path.
    pub work_dir: PathBuf,
    /// Disk budget for everything a job writes under `/out` (which is on
    /// the host's disk, not in memory). Each entry counts at least 4 KiB.
    /// Checked while the job runs; going over kills it with
    /// [`ExecError::OutputTooLarge`] for `/out/`.
    pub out_dir_bytes: u64,
    /// How often the `/out` budget is checked. A job can overshoot by what
    /// it writes in one interval.
    pub out_dir_poll: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            api_timeout: Duration::from_secs(60),
            pids_limit: 128,
            tmpfs_bytes: 64 * 1024 * 1024,
            node_label: None,
            work_dir: std::env::temp_dir(),
            out_dir_bytes: 1024 * 1024 * 1024,
            out_dir_poll: Duration::from_millis(250),
        }
    }
}

/// Runs Docker jobs. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    /// The engine connection, already negotiated down to the server's API.
    docker: Docker,
    /// Limits and labels applied to every container.
    config: Arc<DockerConfig>,
    /// CPUs the engine reports; `nano_cpus` above this is refused by
    /// Docker, so requests are capped to it.
    host_cpus: u32,
    /// Local images as last listed, for [`Executor::capabilities`].
    images: Arc<Mutex<Vec<String>>>,
}

/// Makes container names unique within this process.
static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DockerExecutor {
    /// Connects to the engine, negotiates the API version and reads the
    /// host's CPU count. Fails with [`ExecError::DockerUnavailable`] if the
    /// engine cannot be reached. The advertised image list starts empty
    /// until [`Executor::refresh`].
    pub async fn connect(config: DockerConfig) -> Result<Self, ExecError> {
        let secs = config.api_timeout.as_secs().max(1);
        let where_ = config
            .socket
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "/var/run/docker.sock".to_string());
        let docker = match &config.socket {
            Some(path) => Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|e| ExecError::DockerUnavailable(format!("cannot connect to {where_}: {e}")))?
        .with_timeout(Duration::from_secs(secs));
        let timeout = Duration::from_secs(secs);
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| {
                ExecError::DockerUnavailable(format!(
                    "no answer from docker at {where_} within {secs} s"
                ))
            })?
            .map_err(|e| {
                ExecError::DockerUnavailable(format!("cannot reach docker at {where_}: {e}"))
            })?;
        let info = docker
            .info()
            .await
            .map_err(|e| ExecError::DockerUnavailable(format!("docker info failed: {e}")))?;
        let host_cpus = info
            .ncpu
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        tracing::info!(
            api = %docker.client_version(),
            host_cpus,
            "connected to docker"
        );
        Ok(Self {
            docker,
            config: Arc::new(config),
            host_cpus,
            images: Arc::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Image ids (`sha256:...`) and tags present locally, for capability
    /// adverts. Ids come first; untagged images appear by id only.
    pub async fn list_local_images(&self) -> Result<Vec<String>, ExecError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
            .await
            .map_err(|e| api_err("list images", e))?;
        let mut ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
        let mut tags: Vec<String> = images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t != "<none>:<none>")
            .collect();
        ids.sort();
        ids.dedup();
        tags.sort();
        tags.dedup();
        ids.extend(tags);
        Ok(ids)
    }

    /// Resolves an image reference (tag or id) to its local image id, for
    /// the CLI to pin in a spec.
    pub async fn resolve_image(&self, name: &str) -> Result<String, ExecError> {
        self.inspect_image(name)
            .await?
            .map(|img| img.id)
            .ok_or_else(|| ExecError::ImageMissing {
                image: name.to_string(),
            })
    }

    /// Removes every container labelled `agora.managed=true` (and, if
    /// [`DockerConfig::node_label`] is set, carrying this node's label),
    /// running or not. The daemon calls it at start to clean up after a
    /// crash. Returns how many were removed.
    pub async fn reap(&self) -> Result<usize, ExecError> {
        let ids = self.managed_containers().await?;
        let mut removed = 0;
        for id in &ids {
            match remove_container(&self.docker, id, self.config.api_timeout).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "reap: removal failed"),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "reaped leftover job containers");
        }
        Ok(removed)
    }

    /// Ids of the containers [`reap`](Self::reap) would remove.
    pub async fn managed_containers(&self) -> Result<Vec<String>, ExecError> {
        let mut labels = vec![format!("{LABEL_MANAGED}=true")];
        if let Some(node) = &self.config.node_label {
            labels.push(format!("{LABEL_NODE}={node}"));
        }
        let filters = HashMap::from([("label", labels)]);
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| api_err("list containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// `Some` if the reference exists locally, `None` if not.
    async fn inspect_image(&self, reference: &str) -> Result<Option<LocalImage>, ExecError> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => {
                let id = img.id.ok_or_else(|| {
                    ExecError::Docker(format!("inspect image {reference}: no id in the answer"))
                })?;
                let mut volumes: Vec<String> = img
                    .config
                    .and_then(|c| c.volumes)
                    .map(|v| v.into_keys().collect())
                    .unwrap_or_default();
                volumes.sort();
                Ok(Some(LocalImage { id, volumes }))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            // Docker answers 400 for references it cannot parse; such an
            // image cannot be present either.
            Err(BollardError::DockerResponseServerError {
                status_code: 400, ..
            }) => Ok(None),
            Err(e) => Err(api_err(&format!("inspect image {reference}"), e)),
        }
    }

    /// Finds the image to run: by the pinned id first (what matters), else
    /// by name to tell "missing" from "different bytes".
    async fn check_image(&self, image: &str, digest: &str) -> Result<LocalImage, ExecError> {
        if let Some(img) = self.inspect_image(digest).await? {
            if img.id == digest {
                return Ok(img);
            }
        }
        match self.inspect_image(image).await? {
            Some(img) if img.id == digest => Ok(img),
            Some(img) => Err(ExecError::DigestMismatch {
                image: image.to_string(),
                expected: digest.to_string(),
                found: img.id,
            }),
            None => Err(ExecError::ImageMissing {
                image: if image == digest {
                    image.to_string()
                } else {
                    format!("{image} ({digest})")
                },
            }),
        }
    }

    async fn run(
        &self,
        req: ExecRequest,
        image: &str,
        digest: &str,
    ) -> Result<ResultBundle, ExecError> {
        let image = self.check_image(image, digest).await?;
        let spec = req.spec.spec().clone();
        let declared = spec.outputs.clone();
        let cap = spec.resources.max_output_bytes;

        for name in spec.inputs.keys() {
            if !req.inputs.contains_key(name) {
                return Err(ExecError::Io {
                    context: format!("input {name}"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "named by the spec but not provided",
                    ),
                });
            }
        }
        let work_dir = self.config.work_dir.clone();
        let inputs = req.inputs;
        let ws = tokio::task::spawn_blocking(move || {
            Workspace::create(&work_dir, &inputs, JOB_UID, JOB_UID)
        })
        .await
        .map_err(|e| ExecError::Docker(format!("work dir task failed: {e}")))??;

        // The guard removes by name, so the name must never be another
        // run's: pid and counter separate runs on this host, the clock
        // separates hosts sharing one engine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "agora-{}-{}-{}-{nanos:08x}",
            req.job_id.short(),
            std::process::id(),
            RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let params = RunParams {
            image_id: &image.id,
            image_volumes: &image.volumes,
            job_hex: req.job_id.to_hex(),
            node_label: self.config.node_label.as_deref(),
            in_dir: ws.in_dir().to_string_lossy().into_owned(),
            out_dir: ws.out_dir().to_string_lossy().into_owned(),
            pids_limit: self.config.pids_limit,
            tmpfs_bytes: self.config.tmpfs_bytes,
            host_cpus: self.host_cpus,
        };
        let body = container_body(&spec, &params);

        // Armed before create: if this future is dropped mid-create, the
        // guard still removes the container by name.
        let out_dir = ws.out_dir().to_path_buf();
        let guard = ContainerGuard {
            docker: self.docker.clone(),
            name: name.clone(),
            api_timeout: self.config.api_timeout,
            workspace: Some(ws),
            armed: true,
        };
        let outcome = self
            .run_container(&name, body, &spec, req.stdin, out_dir)
            .await;
        let ws = guard.dispose().await;

        let (exit_code, stdout, stderr, duration_ms) = outcome?;
        // Read only now: the container is gone, so nothing can change
        // /out under us between the checks and the reads.
        let ws = ws.ok_or_else(|| ExecError::Docker("work dir already released".into()))?;
        let out_dir = ws.out_dir().to_path_buf();
        let collected = tokio::task::spawn_blocking(move || {
            let r = files::collect_outputs(&out_dir, &declared, cap);
            if let Err(e) = ws.remove() {
                tracing::warn!(error = %e, "could not delete the run's work dir");
            }
            r
        })
        .await
        .map_err(|e| ExecError::Docker(format!("output task failed: {e}")))??;

        Ok(ResultBundle {
            exit_code,
            stdout: ByteBuf::from(stdout),
            stderr: ByteBuf::from(stderr),
            outputs: collected,
            duration_ms,
        })
    }

    /// Create, attach, start, feed stdin, read capped output under the
    /// deadline, wait, and check for OOM. Removal is the caller's job.
    async fn run_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
        spec: &JobSpec,
        stdin: Vec<u8>,
        out_dir: PathBuf,
    ) -> Result<(i32, Vec<u8>, Vec<u8>, u64), ExecError> {
        let res = &spec.resources;
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(name).build()),
                body,
            )
            .await
            .map_err(|e| api_err("create container", e))?;

        // Attach before start so no early output is lost.
        let attach = self
            .docker
            .attach_container(
                name,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stream(true)
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .logs(false)
                        .build(),
                ),
            )
            .await
            .map_err(|e| api_err("attach container", e))?;
        let mut output = attach.output;
        let mut input = attach.input;

        self.docker
            .start_container(name, None::<StartContainerOptions>)
            .await
            .map_err(|e| api_err("start container", e))?;
        let started = Instant::now();
        tracing::debug!(container = name, "started");

        let feed = async move {
            // Runs beside the reader: a program that echoes its input would
            // otherwise fill the pipe and stall both sides. A program may
            // exit without reading its input, so write errors are normal.
            if !stdin.is_empty() {
                if let Err(e) = input.write_all(&stdin).await {
                    tracing::debug!(error = %e, "stdin not fully consumed");
                }
            }
            if let Err(e) = input.shutdown().await {
                tracing::debug!(error = %e, "closing stdin");
            }
            Ok::<(), ExecError>(())
        };
        let read = async {
            let mut out = CappedBuf::new(OutputStream::Stdout, res.max_output_bytes);
            let mut err = CappedBuf::new(OutputStream::Stderr, res.max_output_bytes);
            while let Some(item) = output.next().await {
                match item.map_err(|e| api_err("read container output", e))? {
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => out.push(&message)?,
                    bollard::container::LogOutput::StdErr { message } => err.push(&message)?,
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            Ok::<_, ExecError>((out.into_inner(), err.into_inner()))
        };
        let wait = async {
            let (_, (stdout, stderr)) = tokio::try_join!(feed, read)?;
            // Output closing does not mean exit (a program can close its
            // streams and keep running), so wait for the container itself.
            let mut waiter = self.docker.wait_container(
                name,
                Some(
                    WaitContainerOptionsBuilder::new()
                        .condition("not-running")
                        .build(),
                ),
            );
            while let Some(r) = waiter.next().await {
                match r {
                    Ok(_) | Err(BollardError::DockerContainerWaitError { .. }) => {}
                    Err(e) => return Err(api_err("wait for container", e)),
                }
            }
            Ok((stdout, stderr))
        };

        // /out lives on the host's disk: watch it while the job runs.
        let budget = self.config.out_dir_bytes;
        let poll = self.config.out_dir_poll;
        let watch = async move {
            loop {
                tokio::time::sleep(poll).await;
                let dir = out_dir.clone();
                let used = tokio::task::spawn_blocking(move || files::usage(&dir, budget))
                    .await
                    .map_err(|e| ExecError::Docker(format!("output watch failed: {e}")))?;
                if used > budget {
                    tracing::info!(used, budget, "job went over its /out disk budget");
                    return Err(ExecError::OutputTooLarge {
                        stream: OutputStream::File(String::new()),
                        limit_bytes: budget,
                    });
                }
            }
        };
        let guarded = async {
            tokio::select! {
                biased;
                r = wait => r,
                r = watch => r,
            }
        };

        let limit = Duration::from_millis(res.timeout_ms);
        let (stdout, stderr) = match tokio::time::timeout(limit, guarded).await {
            Ok(r) => r?,
            Err(_) => {
                tracing::info!(
                    container = name,
                    limit_ms = res.timeout_ms,
                    "deadline passed"
                );
                return Err(ExecError::Timeout {
                    limit_ms: res.timeout_ms,
                });
            }
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let info = self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| api_err("inspect container", e))?;
        let state = info
            .state
            .ok_or_else(|| ExecError::Docker("inspect container: no state".into()))?;
        if state.oom_killed == Some(true) {
            return Err(ExecError::OutOfMemory {
                limit_bytes: effective_memory(res.memory_bytes),
            });
        }
        let code = state
            .exit_code
            .ok_or_else(|| ExecError::Docker("inspect container: no exit code".into()))?;
        let exit_code = i32::try_from(code)
            .map_err(|_| ExecError::Docker(format!("exit code {code} out of range")))?;
        Ok((exit_code, stdout, stderr, duration_ms))
    }
}

impl Executor for DockerExecutor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: self.kind(),
            version: None,
            images: Some(crate::lock(&self.images).clone()),
        }
    }

    async fn refresh(&self) -> Result<(), ExecError> {
        let list = self.list_local_images().await?;
        *crate::lock(&self.images) = list;
        Ok(())
    }

    async fn execute(&self, req: ExecRequest) -> Result<ResultBundle, ExecError> {
        let (image, digest) = match &req.spec.spec().executor {
            ExecutorSpec::Docker { image, digest, .. } => (image.clone(), digest.clone()),
            other => {
                return Err(ExecError::WrongExecutor {
                    expected: "docker",
                    found: other.kind(),
                })
            }
        };
        let span = tracing::info_span!("docker_exec", job = %req.job_id.short(), image = %image);
        async move {
            let r = self.run(req, &image, &digest).await;
            match &r {
                Ok(b) => tracing::info!(
                    exit_code = b.exit_code,
                    duration_ms = b.duration_ms,
                    "job finished"
                ),
                Err(e) => tracing::info!(error = %e, kind = e.kind(), "job failed"),
            }
            r
        }
        .instrument(span)
        .await
    }
}

/// The facts about a local image that a run needs.
struct LocalImage {
    /// `sha256:...`; containers are created from the id, never the name,
    /// so a tag moved after the check cannot change what runs.
    id: String,
    /// Paths the image declares as `VOLUME`s.
    volumes: Vec<String>,
}

/// What [`container_body`] needs besides the spec.
struct RunParams<'a> {
    image_id: &'a str,
    image_volumes: &'a [String],
    job_hex: String,
    node_label: Option<&'a str>,
    in_dir: String,
    out_dir: String,
    pids_limit: i64,
    tmpfs_bytes: u64,
    host_cpus: u32,
}

fn effective_memory(requested: u64) -> u64 {
    requested.max(MIN_MEMORY_BYTES)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The container definition: the whole sandbox policy in one pure function.
fn container_body(spec: &JobSpec, p: &RunParams<'_>) -> ContainerCreateBody {
    let res = &spec.resources;
    let memory = to_i64(effective_memory(res.memory_bytes));
    let milli = u64::from(res.milli_cpus.min(p.host_cpus.saturating_mul(1000)));
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_JOB.to_string(), p.job_hex.clone()),
    ]);
    if let Some(node) = p.node_label {
        labels.insert(LABEL_NODE.to_string(), node.to_string());
    }
    let bind = |source: &str, target: &str, read_only: bool| Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string()),
        typ: Some(MountTypeEnum::BIND),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            non_recursive: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    // An image VOLUME would otherwise become a writable anonymous volume on
    // disk with no size limit; a bounded tmpfs takes its place.
    let scratch = format!("rw,nosuid,nodev,size={},mode=1777", p.tmpfs_bytes);
    let mut tmpfs = HashMap::from([("/tmp".to_string(), scratch.clone())]);
    for v in p.image_volumes {
        let path = v.trim_end_matches('/');
        let reserved = ["", "/tmp", "/in", "/out", "/dev/shm"].contains(&path);
        if path.starts_with('/') && !reserved && !path.contains("/..") {
            tmpfs.insert(path.to_string(), scratch.clone());
        }
    }
    let host_config = HostConfig {
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        // Docker reads 0 or less as "unlimited"; never pass that on.
        pids_limit: Some(p.pids_limit.max(1)),
        memory: Some(memory),
        // Equal to memory: no swap, so the limit is a real limit.
        memory_swap: Some(memory),
        nano_cpus: Some(to_i64(milli.saturating_mul(1_000_000))),
        tmpfs: Some(tmpfs),
        shm_size: Some(to_i64(p.tmpfs_bytes)),
        ipc_mode: Some("private".into()),
        mounts: Some(vec![
            bind(&p.in_dir, "/in", true),
            bind(&p.out_dir, "/out", false),
        ]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(p.image_id.to_string()),
        cmd: if spec.args.is_empty() {
            None
        } else {
            Some(spec.args.clone())
        },
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(format!("{JOB_UID}:{JOB_UID}")),
        // Same on every executor, so `hostname` cannot split the quorum.
        hostname: Some("agora".into()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Output collected up to a cap; one byte more is an error, so memory use
/// never exceeds the cap.
struct CappedBuf {
    stream: OutputStream,
    cap: u64,
    buf: Vec<u8>,
}

impl CappedBuf {
    fn new(stream: OutputStream, cap: u64) -> Self {
        Self {
            stream,
            cap,
            buf: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), ExecError> {
        if self.buf.len() as u64 + chunk.len() as u64 > self.cap {
            return Err(ExecError::OutputTooLarge {
                stream: self.stream.clone(),
                limit_bytes: self.cap,
            });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Maps a bollard error: failures to reach the engine become
/// [`ExecError::DockerUnavailable`], the rest [`ExecError::Docker`].
fn api_err(context: &str, e: BollardError) -> ExecError {
    match e {
        BollardError::SocketNotFoundError(_)
        | BollardError::IOError { .. }
        | BollardError::HyperLegacyError { .. } => {
            ExecError::DockerUnavailable(format!("{context}: {e}"))
        }
        BollardError::RequestTimeoutError => {
            ExecError::DockerUnavailable(format!("{context}: docker did not answer in time"))
        }
        other => ExecError::Docker(format!("{context}: {other}")),
    }
}

/// Force-removes a container (and its anonymous volumes); one already gone
/// is fine.
async fn remove_container(docker: &Docker, name: &str, timeout: Duration) -> Result<(), ExecError> {
    let call = docker.remove_container(
        name,
        Some(
            RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build(),
        ),
    );
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(()),
        // 409: removal already in progress elsewhere (e.g. a reap).
        Ok(Err(BollardError::DockerResponseServerError {
            status_code: 409, ..
        })) => Ok(()),
        Ok(Err(e)) => Err(api_err(&format!("remove container {name}"), e)),
        Err(_) => Err(ExecError::DockerUnavailable(format!(
            "remove container {name}: no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// Removes the container on every path. [`dispose`](Self::dispose) does it
/// inline; if the future running the job is dropped instead, `Drop` spawns
/// the removal (and the work dir's deletion after it) on the runtime.
struct ContainerGuard {
    docker: Docker,
    name: String,
    api_timeout: Duration,
    /// Deleted only after the container is gone, so a still-running job
    /// cannot recreate files in it.
    workspace: Option<Workspace>,
    armed: bool,
}

impl ContainerGuard {
    /// Removes the container now and hands back the work dir (always
    /// `Some`: only this and `drop` take it, and this consumes the guard).
    async fn dispose(mut self) -> Option<Workspace> {
        self.armed = false;
        if let Err(e) = remove_container(&self.docker, &self.name, self.api_timeout).await {
            // The label lets the next reap() finish the job.
            tracing::warn!(container = %self.name, error = %e, "container removal failed");
        }
        self.workspace.take()
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let docker = self.docker.clone();
        let name = std::mem::take(&mut self.name);
        let timeout = self.api_timeout;
        let ws = self.workspace.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = remove_container(&docker, &name, timeout).await {
                        tracing::warn!(container = %name, error = %e, "container removal after cancel failed");
                    } else {
                        tracing::debug!(container = %name, "removed after cancel");
                    }
                    if let Some(ws) = ws {
                        let _ = tokio::task::spawn_blocking(move || ws.remove()).await;
                    }
                });
            }
            Err(_) => {
                tracing::warn!(container = %name, "no runtime to remove the container; reap() will");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agora_protocol::{Replication, Resources};

    use super::*;

    fn spec(res: Resources) -> JobSpec {
        JobSpec {
            executor: ExecutorSpec::Docker {
                image: "img".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                manifest: None,
            },
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            stdin: None,
            inputs: BTreeMap::new(),
            outputs: vec![],
            resources: res,
            replication: Replication::default(),
            created_at_ms: 0,
            nonce: 0,
            requires: BTreeMap::new(),
        }
    }

    fn params(node: Option<&str>) -> RunParams<'_> {
        RunParams {
            image_id: "sha256:abc",
            image_volumes: &[],
            job_hex: "ff".repeat(32),
            node_label: node,
            in_dir: "/w/in".into(),
            out_dir: "/w/out".into(),
            pids_limit: 128,
            tmpfs_bytes: 1 << 20,
            host_cpus: 2,
        }
    }

    #[test]
    fn body_applies_the_whole_sandbox_policy() {
        let res = Resources {
            milli_cpus: 500,
            memory_bytes: 32 << 20,
            ..Resources::default()
        };
        let b = container_body(&spec(res), &params(Some("node-1")));
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(
            h.security_opt.as_deref(),
            Some(&["no-new-privileges".to_string()][..])
        );
        assert_eq!(h.pids_limit, Some(128));
        assert_eq!(h.memory, Some(32 << 20));
        assert_eq!(h.memory_swap, Some(32 << 20));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert!(h.tmpfs.as_ref().unwrap()["/tmp"].contains("size=1048576"));
        assert_eq!(h.log_config.as_ref().unwrap().typ.as_deref(), Some("none"));
        let mounts = h.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].target.as_deref(), Some("/in"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].target.as_deref(), Some("/out"));
        assert_eq!(mounts[1].read_only, Some(false));
        assert_eq!(b.user.as_deref(), Some("65534:65534"));
        assert_eq!(b.image.as_deref(), Some("sha256:abc"));
        assert_eq!(b.env.as_deref(), Some(&["A=1".to_string()][..]));
        let labels = b.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_JOB], "ff".repeat(32));
        assert_eq!(labels[LABEL_NODE], "node-1");
        assert_eq!(b.open_stdin, Some(true));
        assert_eq!(b.stdin_once, Some(true));
    }

    #[test]
    fn cpu_is_capped_to_the_host_and_memory_raised_to_dockers_floor() {
        let res = Resources {
            milli_cpus: 64_000,
            memory_bytes: 1 << 20,
            ..Resources::default()
        };
        let b = container_body(&spec(res), &params(None));
        let h = b.host_config.unwrap();
        assert_eq!(h.nano_cpus, Some(2_000_000_000));
        assert_eq!(h.memory, Some(MIN_MEMORY_BYTES as i64));
        assert!(!b.labels.unwrap().contains_key(LABEL_NODE));
    }

    #[test]
    fn image_volumes_are_replaced_by_bounded_tmpfs() {
        let vols = [
            "/data".to_string(),
            "/cache/".to_string(),
            "/tmp".to_string(),
            "/out".to_string(),
            "relative".to_string(),
            "/".to_string(),
        ];
        let mut p = params(None);
        p.image_volumes = &vols;
        let b = container_body(&spec(Resources::default()), &p);
        let tmpfs = b.host_config.unwrap().tmpfs.unwrap();
        let mut keys: Vec<_> = tmpfs.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["/cache", "/data", "/tmp"]);
        assert!(tmpfs["/data"].contains("size=1048576"));
    }

    #[test]
    fn empty_args_keep_the_image_command() {
        let mut s = spec(Resources::default());
        s.args.clear();
        assert_eq!(container_body(&s, &params(None)).cmd, None);
    }

    #[test]
    fn capped_buf_refuses_one_byte_over() {
        let mut b = CappedBuf::new(OutputStream::Stdout, 4);
        b.push(b"ab").unwrap();
        b.push(b"cd").unwrap();
        let err = b.push(b"e").unwrap_err();
        assert!(matches!(
            err,
            ExecError::OutputTooLarge {
                stream: OutputStream::Stdout,
                limit_bytes: 4
            }
        ));
        assert_eq!(b.into_inner(), b"abcd");
    }
}
