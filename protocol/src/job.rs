//! The job specification: what to run, with what inputs and limits, and
//! how many executors must agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{self, check, check_strings, check_u64, Bounded, LimitError};
use crate::sign::SignedMessage;
use crate::ContentId;

/// Which sandbox runs the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged on purpose: serde buffers internally tagged enums through
// a human-readable intermediate, which breaks binary fields in CBOR.
#[serde(rename_all = "snake_case")]
pub enum ExecutorSpec {
    /// A WASI preview 1 command module, stored as a blob.
    Wasm {
        /// Content id of the module bytes.
        module: ContentId,
    },
    /// A Docker image, pinned by id. An executor that lacks it fetches
    /// it from peers when the spec names its manifest.
    Docker {
        /// Image reference as the user gave it (for messages).
        image: String,
        /// Image id (`sha256:<hex>`) that pins the exact bytes.
        digest: String,
        /// Blob id of the image's [`crate::ImageManifest`] (its config
        /// and layers as blobs), so executors without the image can fetch
        /// it. Left out of the encoding when absent, so specs without
        /// one keep their ids.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<ContentId>,
    },
}

impl ExecutorSpec {
    /// Short name of the executor kind: `wasm` or `docker`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Wasm { .. } => "wasm",
            Self::Docker { .. } => "docker",
        }
    }

    /// The image id a node must hold to run it, for kinds that pin one.
    pub fn pinned_image(&self) -> Option<&str> {
        match self {
            Self::Docker { digest, .. } => Some(digest),
            Self::Wasm { .. } => None,
        }
    }

    /// The blob id of the pinned image's manifest, when the spec names
    /// one (executors without the image fetch it from peers).
    pub fn image_manifest(&self) -> Option<ContentId> {
        match self {
            Self::Docker { manifest, .. } => *manifest,
            Self::Wasm { .. } => None,
        }
    }

    /// What it runs, as records show it: the module's blob id (hex) or
    /// the image id.
    pub fn program(&self) -> String {
        match self {
            Self::Wasm { module } => module.to_hex(),
            Self::Docker { digest, .. } => digest.clone(),
        }
    }
}

/// Resource needs and limits for one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU share in milli-CPUs (1000 = one core); Docker only.
    pub milli_cpus: u32,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit for one execution, in milliseconds.
    pub timeout_ms: u64,
    /// Wasm fuel (instructions, roughly); `None` means no fuel limit.
    pub fuel: Option<u64>,
    /// Cap on stdout, stderr and each output file, in bytes.
    pub max_output_bytes: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            milli_cpus: 1000,
            memory_bytes: 64 * 1024 * 1024,
            timeout_ms: 60_000,
            fuel: None,
            max_output_bytes: 16 * 1024 * 1024,
        }
    }
}

/// How many executors run the job and how many must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// Executors assigned.
    pub n: u8,
    /// Equal results needed to accept.
    pub k: u8,
}

impl Default for Replication {
    fn default() -> Self {
        Self { n: 3, k: 2 }
    }
}

/// Everything an executor needs to run a job. Signed by the submitter; the
/// job id is the content id of that signed spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The sandbox and program.
    pub executor: ExecutorSpec,
    /// Program arguments (after argv\[0\] for Wasm; the command for Docker).
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Content id of the stdin blob, if any.
    pub stdin: Option<ContentId>,
    /// Named input files (name -> blob), visible read-only under `/in`.
    pub inputs: BTreeMap<String, ContentId>,
    /// Paths under `/out` whose contents form part of the result.
    pub outputs: Vec<String>,
    /// Limits for one execution.
    pub resources: Resources,
    /// n executors, k must agree.
    pub replication: Replication,
    /// Submission time (ms since the Unix epoch); with `nonce`, makes two
    /// identical submissions distinct jobs.
    pub created_at_ms: u64,
    /// Random salt chosen by the submitter.
    pub nonce: u64,
    /// Operator labels an executor must advertise with exactly these values
    /// (`gpu=true`): only such nodes bid. Left out of the encoding when
    /// empty, so a spec without requirements keeps the bytes, and the job
    /// id, it had before the field existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, String>,
}

impl JobSpec {
    /// A Wasm job running `module` with no arguments, inputs or outputs,
    /// default resources and replication, made at time 0 with nonce 0:
    /// set the public fields for anything else.
    pub fn wasm(module: ContentId) -> Self {
        Self {
            executor: ExecutorSpec::Wasm { module },
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: None,
            inputs: BTreeMap::new(),
            outputs: Vec::new(),
            resources: Resources::default(),
            replication: Replication::default(),
            created_at_ms: 0,
            nonce: 0,
            requires: BTreeMap::new(),
        }
    }

    /// Every blob the job needs: module, stdin and inputs.
    pub fn blobs(&self) -> Vec<ContentId> {
        let mut v = Vec::new();
        match &self.executor {
            ExecutorSpec::Wasm { module } => v.push(*module),
            ExecutorSpec::Docker { manifest, .. } => v.extend(*manifest),
        }
        v.extend(self.stdin);
        v.extend(self.inputs.values().copied());
        v.sort();
        v.dedup();
        v
    }
}

impl Bounded for JobSpec {
    fn check_bounds(&self) -> Result<(), LimitError> {
        if let ExecutorSpec::Docker { image, digest, .. } = &self.executor {
            check("spec.executor.image", image.len(), limits::MAX_STRING_BYTES)?;
            check(
                "spec.executor.digest",
                digest.len(),
                limits::MAX_STRING_BYTES,
            )?;
        }
        check_strings("spec.args", &self.args, limits::MAX_ARGS)?;
        check_strings("spec.env", self.env.keys(), limits::MAX_ENV)?;
        check_strings("spec.env", self.env.values(), limits::MAX_ENV)?;
        check_strings("spec.inputs", self.inputs.keys(), limits::MAX_INPUTS)?;
        check_strings("spec.outputs", &self.outputs, limits::MAX_FILES)?;
        check_strings("spec.requires", self.requires.keys(), limits::MAX_LABELS)?;
        check_strings("spec.requires", self.requires.values(), limits::MAX_LABELS)?;
        check_u64(
            "spec.resources.memory_bytes",
            self.resources.memory_bytes,
            limits::MAX_MEMORY_BYTES,
        )?;
        check_u64(
            "spec.resources.timeout_ms",
            self.resources.timeout_ms,
            limits::MAX_TIMEOUT_MS,
        )?;
        check_u64(
            "spec.resources.milli_cpus",
            self.resources.milli_cpus.into(),
            limits::MAX_MILLI_CPUS.into(),
        )?;
        check_u64(
            "spec.resources.max_output_bytes",
            self.resources.max_output_bytes,
            limits::MAX_OUTPUT_BYTES,
        )?;
        check_u64(
            "spec.replication.n",
            self.replication.n.into(),
            limits::MAX_REPLICATION.into(),
        )
    }
}

impl SignedMessage for JobSpec {
    const DOMAIN: &'static str = "agora/job-spec";
}
