//! The gossip and request-response messages of the job lifecycle. Each is
//! sent inside a [`crate::Signed`] envelope under its own domain tag.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::job::JobSpec;
use crate::limits::{self, check, check_strings, Bounded, LimitError};
use crate::result::ResultBundle;
use crate::sign::{Signed, SignedMessage};
use crate::ContentId;

/// What a node can run, gossiped on `agora/adverts/1` every 30 s; it is
/// also the node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityAdvert {
    /// Increases with every advert from this node; older ones are replays.
    pub seq: u64,
    /// When it was made (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The node's software version.
    pub agent_version: String,
    /// Wasm engine version, if the node runs Wasm jobs.
    pub wasm: Option<String>,
    /// Docker image ids (`sha256:<hex>`) held locally, if Docker runs.
    pub docker_images: Option<Vec<String>>,
    /// CPU cores offered.
    pub cpu_cores: u32,
    /// Memory offered, in bytes.
    pub memory_bytes: u64,
    /// Jobs run at once at most.
    pub max_jobs: u32,
    /// Jobs running now.
    pub running_jobs: u32,
    /// Operator labels such as `region=eu`.
    pub labels: BTreeMap<String, String>,
    /// Addresses where the node can be dialled.
    pub listen_addrs: Vec<String>,
    /// Every executor kind the node runs (`ExecutorSpec::kind`), so a
    /// new kind needs no field of its own; `wasm` and `docker` above
    /// carry their details. Absent in adverts of older nodes.
    #[serde(default)]
    pub executors: Vec<String>,
    /// Whether the node fetches Docker images it lacks from peers (then it
    /// can run a job whose image it does not hold, if the job names the
    /// image's manifest).
    #[serde(default)]
    pub image_fetch: bool,
    /// Image ids whose config and layers the node serves as blobs (at
    /// most [`limits::MAX_IMAGES`]): where executors fetch images from.
    #[serde(default)]
    pub shared_images: Vec<String>,
}

impl CapabilityAdvert {
    /// Records that the node runs `kind`, with its engine version and the
    /// images it holds where the kind has them (at most
    /// [`limits::MAX_IMAGES`]).
    pub fn add_executor(
        &mut self,
        kind: &str,
        version: Option<String>,
        images: Option<Vec<String>>,
    ) {
        match kind {
            "wasm" => self.wasm = Some(version.unwrap_or_default()),
            "docker" => {
                let mut images = images.unwrap_or_default();
                images.truncate(limits::MAX_IMAGES);
                self.docker_images = Some(images);
            }
            _ => {}
        }
        if !self.executors.iter().any(|k| k == kind) {
            self.executors.push(kind.to_string());
        }
    }

    /// The executor kinds the node runs, each with the image ids it holds
    /// (empty for kinds without images). Reads older adverts too, which
    /// only have `wasm` and `docker_images`.
    pub fn executor_kinds(&self) -> BTreeMap<String, Vec<String>> {
        let mut kinds: BTreeMap<String, Vec<String>> = self
            .executors
            .iter()
            .map(|k| (k.clone(), Vec::new()))
            .collect();
        if self.wasm.is_some() {
            kinds.entry("wasm".into()).or_default();
        }
        if let Some(images) = &self.docker_images {
            kinds.insert("docker".into(), images.clone());
        }
        kinds
    }
}

impl Bounded for CapabilityAdvert {
    fn check_bounds(&self) -> Result<(), LimitError> {
        check(
            "advert.agent_version",
            self.agent_version.len(),
            limits::MAX_STRING_BYTES,
        )?;
        if let Some(w) = &self.wasm {
            check("advert.wasm", w.len(), limits::MAX_STRING_BYTES)?;
        }
        if let Some(images) = &self.docker_images {
            check_strings("advert.docker_images", images, limits::MAX_IMAGES)?;
        }
        check_strings("advert.labels", self.labels.keys(), limits::MAX_LABELS)?;
        check_strings("advert.labels", self.labels.values(), limits::MAX_LABELS)?;
        check_strings("advert.executors", &self.executors, limits::MAX_LABELS)?;
        check_strings(
            "advert.shared_images",
            &self.shared_images,
            limits::MAX_IMAGES,
        )?;
        check_strings("advert.listen_addrs", &self.listen_addrs, limits::MAX_ADDRS)
    }
}

impl SignedMessage for CapabilityAdvert {
    const DOMAIN: &'static str = "agora/capability-advert";
}

/// A job offered to the network on `agora/jobs/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOffer {
    /// The submitter-signed spec; its content id is the job id.
    pub spec: Signed<JobSpec>,
    /// When the offer was made (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Random per offer, so a replayed offer is recognised.
    pub nonce: u64,
    /// Bids after this instant (ms since the Unix epoch) are ignored.
    pub bid_deadline_ms: u64,
}

impl JobOffer {
    /// The job id: content id of the signed spec.
    pub fn job_id(&self) -> ContentId {
        self.spec.id()
    }
}

impl Bounded for JobOffer {
    fn check_bounds(&self) -> Result<(), LimitError> {
        self.spec.check_bounds()
    }
}

impl SignedMessage for JobOffer {
    const DOMAIN: &'static str = "agora/job-offer";
}

/// A node's answer to an offer it can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// The job bid on.
    pub job: ContentId,
    /// Jobs running now.
    pub running_jobs: u32,
    /// Jobs run at once at most.
    pub max_jobs: u32,
    /// Jobs waiting in the node's queue.
    pub queue_len: u32,
    /// Load in thousandths of capacity (0..=1000, more if overcommitted).
    pub load_permille: u32,
}

impl Bounded for Bid {
    fn check_bounds(&self) -> Result<(), LimitError> {
        Ok(())
    }
}

impl SignedMessage for Bid {
    const DOMAIN: &'static str = "agora/bid";
}

/// The submitter's instruction to one executor to run a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The submitter-signed spec (the executor may not have seen the offer).
    pub spec: Signed<JobSpec>,
    /// The executor assigned.
    pub executor: PeerId,
    /// Attempt number, counting re-dispatches and escalations from 0.
    pub attempt: u32,
    /// The attestation is due by this instant (ms since the Unix epoch).
    pub deadline_ms: u64,
}

impl Bounded for Assignment {
    fn check_bounds(&self) -> Result<(), LimitError> {
        self.spec.check_bounds()
    }
}

impl SignedMessage for Assignment {
    const DOMAIN: &'static str = "agora/assignment";
}

/// An executor's signed acceptance of an assignment: "I took job J from
/// submitter S and owe an answer by D". It is the only evidence on which
/// a verdict may charge the executor with a miss, so nobody can be blamed
/// for work it never took on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// The job accepted.
    pub job: ContentId,
    /// The submitter it was accepted from.
    pub submitter: PeerId,
    /// The assignment attempt accepted.
    pub attempt: u32,
    /// The answer is due by this instant (ms since the Unix epoch).
    pub deadline_ms: u64,
}

impl Bounded for Acceptance {
    fn check_bounds(&self) -> Result<(), LimitError> {
        Ok(())
    }
}

impl SignedMessage for Acceptance {
    const DOMAIN: &'static str = "agora/acceptance";
}

/// An executor's signed claim: "running job J gave result hash H".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The job run.
    pub job: ContentId,
    /// sha256 of the canonical (exit code, stdout, outputs).
    pub result_hash: ContentId,
    /// The exit code, repeated for display without the bundle.
    pub exit_code: i32,
    /// When the run finished (ms since the Unix epoch).
    pub finished_at_ms: u64,
}

impl Bounded for Attestation {
    fn check_bounds(&self) -> Result<(), LimitError> {
        Ok(())
    }
}

impl SignedMessage for Attestation {
    const DOMAIN: &'static str = "agora/attestation";
}

/// An executor's reply to an assignment: its signed attestation and the
/// bundle whose hash it attests. Not signed as a whole: the attestation is
/// what the executor vouches for, and the bundle is checked against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedResult {
    /// The executor's signed attestation.
    pub attestation: Signed<Attestation>,
    /// The full result; its `result_hash()` must equal the attested hash.
    pub bundle: ResultBundle,
}

impl Bounded for AttestedResult {
    fn check_bounds(&self) -> Result<(), LimitError> {
        self.attestation.check_bounds()?;
        self.bundle.check_bounds()
    }
}

/// How a job ended, as a verdict reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictOutcome {
    /// k executors agreed on `accepted`.
    Verified,
    /// All executors answered and no hash reached k.
    NoConsensus,
    /// The deadline passed before k agreed.
    Timeout,
}

/// The submitter's signed account of a decided job, gossiped on
/// [`crate::TOPIC_VERDICTS`]. It embeds the submitter's signed spec (the
/// job exists and is the signer's), the executors' own signed attestations
/// and, for every executor charged with a miss, its own signed acceptance,
/// so every node can check who agreed and who owed an answer without
/// trusting the submitter's word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The job decided.
    pub job: ContentId,
    /// The submitter-signed spec; its content id is `job`.
    pub spec: Signed<JobSpec>,
    /// Agreement threshold the job used.
    pub k: u8,
    /// Executors first assigned.
    pub n: u8,
    /// How the job ended.
    pub outcome: VerdictOutcome,
    /// The accepted result hash, when verified.
    pub accepted: Option<ContentId>,
    /// Every attestation the submitter received for the job.
    pub attestations: Vec<Signed<Attestation>>,
    /// The signed acceptances of the executors that took the job on and
    /// never answered.
    pub missed: Vec<Signed<Acceptance>>,
    /// When the decision was made (ms since the Unix epoch).
    pub decided_at_ms: u64,
}

impl Bounded for Verdict {
    fn check_bounds(&self) -> Result<(), LimitError> {
        self.spec.check_bounds()?;
        check(
            "verdict.attestations",
            self.attestations.len(),
            limits::MAX_ATTESTATIONS,
        )?;
        for a in &self.attestations {
            a.check_bounds()?;
        }
        check(
            "verdict.missed",
            self.missed.len(),
            limits::MAX_ATTESTATIONS,
        )?;
        for m in &self.missed {
            m.check_bounds()?;
        }
        Ok(())
    }
}

impl SignedMessage for Verdict {
    const DOMAIN: &'static str = "agora/verdict";
}
