//! What the control API asks of the job lifecycle: submit a job, list and
//! read records, the verified result, cancel, follow progress, and this
//! node's reputation table. Turns API requests into signed specs and stored
//! records into API answers, so the jobs layer never sees a JSON type.

use std::collections::BTreeMap;

use agora_protocol::{
    validate, ContentId, ExecutorSpec, IdPrefix, JobSpec, PeerId, Replication, Resources,
};
use agora_verifier::reputation::{Observation, PeerRecord, ReputationBook, Standing};
use agora_verifier::AdaptivePolicy;
use tokio::sync::{broadcast, oneshot};

use super::types::{
    AdaptivePlan, BlobInfo, EvidenceInfo, ExecutorRecord, JobEvent, JobRecord, JobResult, JobState,
    ReplicationMode, ReputationInfo, SubmitExecutor, SubmitJob,
};
use crate::clock::unix_now_ms;
use crate::jobs::core::{cap_for, rebuild_quorum};
use crate::jobs::input::JobInput;
use crate::jobs::record::{JobRecordDb, StoredBlob};
use crate::jobs::submitter;
use crate::jobs::{Jobs, JobsError};
use crate::lock;

impl Jobs {
    /// Validates, signs, stores and starts a job.
    pub async fn submit(&self, req: SubmitJob) -> Result<JobRecord, JobsError> {
        let rec = self.prepare(req).await?;
        self.launch(rec).await
    }

    /// Validates and signs a job and builds its record; nothing is stored
    /// or started.
    pub(crate) async fn prepare(&self, req: SubmitJob) -> Result<JobRecordDb, JobsError> {
        let ctx = &self.ctx;
        if lock(&ctx.active).len() >= ctx.cfg.max_active_jobs {
            return Err(JobsError::Busy(format!(
                "{} jobs are in flight on this node; try again later",
                ctx.cfg.max_active_jobs
            )));
        }
        let spec = self.build_spec(req.clone()).await?;
        let validated =
            validate(spec).map_err(|e| JobsError::BadRequest(format!("invalid job: {e}")))?;
        let spec = validated.into_inner();
        let signed = ctx.key.sign(&spec);
        let now = unix_now_ms();
        let mut rec = JobRecordDb {
            spec: signed,
            state: JobState::Pending,
            allow_local: req.allow_local,
            submitted_at_ms: now,
            finished_at_ms: None,
            reason: None,
            bids: 0,
            offers: 0,
            cap: cap_for(spec.replication.n),
            log: Vec::new(),
            executors: Vec::new(),
            result: None,
            verdict: None,
            events: Vec::new(),
            replication: req.replication,
            plan: None,
        };
        rec.push_event(JobEvent {
            at_ms: now,
            kind: "submitted".into(),
            peer_id: None,
            state: JobState::Pending,
            detail: format!(
                "{}-of-{} {} job{}",
                spec.replication.k,
                spec.replication.n,
                spec.executor.kind(),
                match req.replication {
                    ReplicationMode::Fixed => "",
                    ReplicationMode::Adaptive => ", adaptive replication",
                }
            ),
        });
        // Refuses a replication the quorum cannot run before anything is
        // stored.
        rebuild_quorum(&rec, &spec).map_err(JobsError::Internal)?;
        Ok(rec)
    }

    /// Stores and starts a job [`Jobs::prepare`] built.
    pub(crate) async fn launch(&self, rec: JobRecordDb) -> Result<JobRecord, JobsError> {
        let ctx = &self.ctx;
        ctx.db
            .put_job(&rec)
            .await
            .map_err(|e| JobsError::Internal(e.to_string()))?;
        ctx.metrics.submitted.inc();
        ctx.metrics.transition(None, JobState::Pending);
        let answer = to_api(&rec, true);
        submitter::start(ctx, rec).map_err(JobsError::Internal)?;
        Ok(answer)
    }

    async fn build_spec(&self, req: SubmitJob) -> Result<JobSpec, JobsError> {
        let executor = match req.executor {
            SubmitExecutor::Wasm { module } => {
                let id = self.blob(&module)?;
                self.check_module(&id)?;
                ExecutorSpec::Wasm { module: id }
            }
            SubmitExecutor::Docker { image } => {
                let digest = self.resolve_image(&image).await?;
                let manifest = self.manifest_for(&digest).await?;
                ExecutorSpec::Docker {
                    image,
                    digest,
                    manifest,
                }
            }
        };
        let stdin = req.stdin.as_deref().map(|s| self.blob(s)).transpose()?;
        let mut inputs = BTreeMap::new();
        for (name, id) in &req.inputs {
            inputs.insert(name.clone(), self.blob(id)?);
        }
        let d = Resources::default();
        let r = Replication::default();
        Ok(JobSpec {
            executor,
            args: req.args,
            env: req.env,
            stdin,
            inputs,
            outputs: req.outputs,
            resources: Resources {
                milli_cpus: req.milli_cpus.unwrap_or(d.milli_cpus),
                memory_bytes: req.memory_bytes.unwrap_or(d.memory_bytes),
                timeout_ms: req.timeout_ms.unwrap_or(d.timeout_ms),
                fuel: req.fuel,
                max_output_bytes: req.max_output_bytes.unwrap_or(d.max_output_bytes),
            },
            replication: Replication {
                n: req.n.unwrap_or(r.n),
                k: req.k.unwrap_or(r.k),
            },
            created_at_ms: unix_now_ms(),
            nonce: rand::random(),
            requires: req.requires,
        })
    }

    /// Refuses a module the executors would refuse to compile.
    fn check_module(&self, id: &ContentId) -> Result<(), JobsError> {
        let bytes = self
            .ctx
            .blobs
            .get(id)
            .map_err(|e| JobsError::Internal(format!("reading module {}: {e}", id.short())))?;
        let Some(wasm) = self.ctx.worker.sandboxes().wasm() else {
            return Err(JobsError::BadRequest(format!(
                "module {}: this node does not run wasm jobs",
                id.short()
            )));
        };
        wasm.validate(&bytes)
            .map_err(|e| JobsError::BadRequest(format!("module {}: {e}", id.short())))
    }

    /// A blob of this node by id or unique prefix.
    pub(crate) fn blob(&self, prefix: &str) -> Result<ContentId, JobsError> {
        self.ctx.blobs.resolve(prefix).map_err(|e| {
            JobsError::BadRequest(format!(
                "blob {prefix}: {e} (upload it with POST /api/v1/blobs)"
            ))
        })
    }

    /// Pins an image: `sha256:<hex>` or `name@sha256:<hex>` as given,
    /// otherwise the id of the local image of that name.
    pub(crate) async fn resolve_image(&self, image: &str) -> Result<String, JobsError> {
        let pinned = image.rsplit_once('@').map_or(image, |(_, d)| d);
        if let Some(hex) = pinned.strip_prefix("sha256:") {
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(pinned.to_ascii_lowercase());
            }
            return Err(JobsError::BadRequest(format!(
                "image {image}: a digest is sha256: and 64 hex digits"
            )));
        }
        let Some(docker) = self.ctx.worker.sandboxes().docker() else {
            return Err(JobsError::BadRequest(format!(
                "image {image}: this node has no docker to look the name up; pass its id (sha256:...)"
            )));
        };
        docker
            .resolve_image(image)
            .await
            .map_err(|e| JobsError::BadRequest(format!("image {image}: {e}")))
    }

    fn resolve_job(&self, prefix: &str) -> Result<ContentId, JobsError> {
        let p: IdPrefix = prefix
            .parse()
            .map_err(|e: agora_protocol::CidError| JobsError::BadRequest(e.to_string()))?;
        let ids = self
            .ctx
            .db
            .job_ids()
            .map_err(|e| JobsError::Internal(e.to_string()))?;
        p.resolve(ids).map_err(|e| match e {
            agora_protocol::CidError::NotFound(_) => {
                JobsError::NotFound(format!("no job with id {prefix}"))
            }
            other => JobsError::BadRequest(other.to_string()),
        })
    }

    fn load(&self, prefix: &str) -> Result<JobRecordDb, JobsError> {
        let id = self.resolve_job(prefix)?;
        self.ctx
            .db
            .job(&id)
            .map_err(|e| JobsError::Internal(e.to_string()))?
            .ok_or_else(|| JobsError::NotFound(format!("no job with id {prefix}")))
    }

    /// One job's record.
    pub fn get(&self, prefix: &str) -> Result<JobRecord, JobsError> {
        self.load(prefix).map(|r| to_api(&r, true))
    }

    /// Jobs submitted through this node, newest first, optionally only
    /// those in `state`.
    pub fn list(&self, state: Option<JobState>) -> Result<Vec<JobRecord>, JobsError> {
        let (jobs, _) = self.ctx.db.jobs();
        let mut out: Vec<JobRecord> = jobs
            .iter()
            .filter(|j| state.is_none_or(|s| j.state == s))
            .map(|j| to_api(j, false))
            .collect();
        out.sort_by(|a, b| {
            b.submitted_at_ms
                .cmp(&a.submitted_at_ms)
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// The verified result of a job.
    pub fn result(&self, prefix: &str) -> Result<JobResult, JobsError> {
        let rec = self.load(prefix)?;
        let Some(r) = &rec.result else {
            let why = rec.reason.clone().unwrap_or_default();
            return Err(JobsError::Conflict(format!(
                "job {} is {}{}{}",
                rec.id().short(),
                rec.state.as_str(),
                if why.is_empty() { "" } else { ": " },
                why
            )));
        };
        let info = |b: &StoredBlob| BlobInfo {
            id: b.id.to_hex(),
            size: b.size,
        };
        Ok(JobResult {
            id: rec.id().to_hex(),
            result_hash: r.result_hash.to_hex(),
            unverified: k_of(&rec) == 1 || rec.plan == Some(AdaptivePlan::Solo),
            plan: rec.plan,
            exit_code: r.exit_code,
            stdout: info(&r.stdout),
            stderr: info(&r.stderr),
            outputs: r
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), info(v)))
                .collect(),
            agreeing: r.agreeing.iter().map(|p| p.to_base58()).collect(),
        })
    }

    /// Cancels a job that is not final yet.
    pub async fn cancel(&self, prefix: &str) -> Result<JobRecord, JobsError> {
        let id = self.resolve_job(prefix)?;
        let tx = lock(&self.ctx.active).get(&id).map(|a| a.tx.clone());
        let Some(tx) = tx else {
            let rec = self.load(prefix)?;
            return Err(JobsError::Conflict(format!(
                "job {} is already {}",
                id.short(),
                rec.state.as_str()
            )));
        };
        let (reply, done) = oneshot::channel();
        tx.send(JobInput::Cancel(reply))
            .await
            .map_err(|_| JobsError::Conflict(format!("job {} just ended", id.short())))?;
        tokio::time::timeout(std::time::Duration::from_secs(10), done)
            .await
            .map_err(|_| JobsError::Internal("the job did not answer the cancel in time".into()))?
            .map_err(|_| JobsError::Conflict(format!("job {} just ended", id.short())))?;
        self.get(&id.to_hex())
    }

    /// Past events of a job, and live ones if it is still running.
    pub fn events(
        &self,
        prefix: &str,
    ) -> Result<(Vec<JobEvent>, Option<broadcast::Receiver<JobEvent>>), JobsError> {
        let id = self.resolve_job(prefix)?;
        // Subscribe first, then read the record: an event in between shows
        // up in both, and the caller drops live events already seen.
        let live = lock(&self.ctx.active)
            .get(&id)
            .map(|a| a.events.subscribe());
        let rec = self.load(&id.to_hex())?;
        let live = if rec.state.is_final() { None } else { live };
        Ok((rec.events, live))
    }
}

impl Jobs {
    /// This node's opinion of every peer it has evidence about, lowest
    /// score first, or of the peers whose base58 id starts with `prefix`.
    pub fn reputation_list(&self, prefix: Option<&str>) -> Vec<ReputationInfo> {
        let book = lock(&self.ctx.reputation).clone_records(&self.ctx.cfg.adaptive);
        let mut rows: Vec<ReputationInfo> = book
            .into_iter()
            .filter(|r| r.0 != self.ctx.me)
            .filter(|r| prefix.is_none_or(|x| r.0.to_base58().starts_with(x)))
            .map(|(peer, rec, standing, trusted)| {
                let evidence = self
                    .ctx
                    .reputation_store
                    .get(&peer)
                    .map(|s| s.sources)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| EvidenceInfo {
                        at_ms: e.at_ms,
                        job: e.job.to_hex(),
                        source: e.via.map_or_else(|| "own".to_string(), |p| p.to_base58()),
                        observation: match e.observation {
                            Observation::Agreed => "agreed",
                            Observation::Disagreed => "disagreed",
                            Observation::Missed => "missed",
                        }
                        .into(),
                        before: e.before,
                        after: e.after,
                    })
                    .collect();
                ReputationInfo {
                    peer_id: peer.to_base58(),
                    score: rec.score,
                    agreed: rec.agreed,
                    disagreed: rec.disagreed,
                    missed: rec.missed,
                    excluded: matches!(standing, Standing::Probation | Standing::Excluded),
                    standing: standing.as_str().into(),
                    clean_streak: rec.clean_streak,
                    trusted,
                    first_seen_ms: rec.first_seen_ms,
                    last_seen_ms: rec.last_seen_ms,
                    evidence,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.score.cmp(&b.score).then(a.peer_id.cmp(&b.peer_id)));
        rows
    }
}

/// Copies the book's rows out with each peer's standing and whether it is
/// trusted to run alone, so the lock is not held while the store is read.
trait CloneRecords {
    fn clone_records(&self, policy: &AdaptivePolicy) -> Vec<(PeerId, PeerRecord, Standing, bool)>;
}

impl CloneRecords for ReputationBook {
    fn clone_records(&self, policy: &AdaptivePolicy) -> Vec<(PeerId, PeerRecord, Standing, bool)> {
        self.records()
            .map(|(p, r)| (*p, *r, self.standing(p), policy.is_trusted(self, p)))
            .collect()
    }
}

fn k_of(rec: &JobRecordDb) -> u8 {
    rec.spec
        .verify()
        .map(|v| v.value.replication.k)
        .unwrap_or(0)
}

/// A stored record as the API shows it.
pub fn to_api(rec: &JobRecordDb, with_events: bool) -> JobRecord {
    let spec = rec.spec.verify().map(|v| v.value).ok();
    let (executor, program, n, k) = match &spec {
        Some(s) => (
            s.executor.kind().to_string(),
            s.executor.program(),
            s.replication.n,
            s.replication.k,
        ),
        None => ("unknown".into(), String::new(), 0, 0),
    };
    let accepted = rec.result.as_ref().map(|r| r.result_hash);
    JobRecord {
        id: rec.id().to_hex(),
        state: rec.state,
        executor,
        program,
        n,
        k,
        unverified: k == 1 || rec.plan == Some(AdaptivePlan::Solo),
        replication: rec.replication,
        plan: rec.plan,
        submitted_at_ms: rec.submitted_at_ms,
        finished_at_ms: rec.finished_at_ms,
        reason: rec.reason.clone(),
        result_hash: accepted.map(|h| h.to_hex()),
        exit_code: rec.result.as_ref().map(|r| r.exit_code),
        bids: rec.bids,
        executors: rec
            .executors
            .iter()
            .map(|e| ExecutorRecord {
                peer_id: e.peer.to_base58(),
                attempt: e.attempt,
                state: e.state.as_str().into(),
                result_hash: e.result_hash.map(|h| h.to_hex()),
                agrees: match (accepted, e.result_hash) {
                    (Some(a), Some(h)) => Some(a == h),
                    _ => None,
                },
                assigned_at_ms: e.assigned_at_ms,
                ended_at_ms: e.ended_at_ms,
                error: e.error.clone(),
            })
            .collect(),
        events: if with_events {
            rec.events.clone()
        } else {
            Vec::new()
        },
    }
}
