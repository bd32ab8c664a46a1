//! Sandboxed executors: turn a validated job spec plus its input bytes into
//! a [`ResultBundle`] or a typed [`ExecError`].
//!
//! Two implementations: [`wasm`] (wasmtime, WASI preview 1) and [`docker`]
//! (bollard). Both enforce the spec's limits themselves; a job that breaks
//! one ends with an error naming the limit, never a hang or a dead daemon.
//!
//! **Boundary:** callers resolve blobs first (the store or the CLI), so an
//! executor never touches the network or the blob store.

use std::collections::BTreeMap;

use agora_protocol::{ContentId, ResultBundle, ValidatedSpec};

pub mod docker;
pub mod wasm;

/// One execution to run: the spec and the bytes of every blob it names.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The job id (content id of the signed spec); seeds Wasm randomness
    /// and labels Docker containers.
    pub job_id: ContentId,
    /// What to run and its limits.
    pub spec: ValidatedSpec,
    /// The Wasm module's bytes (empty for Docker jobs).
    pub module: Vec<u8>,
    /// Bytes fed to stdin (empty if the spec has none).
    pub stdin: Vec<u8>,
    /// Input files by name, placed read-only under `/in`.
    pub inputs: BTreeMap<String, Vec<u8>>,
}

/// Which output stream or file broke the output cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A declared output file under `/out`.
    File(String),
}

impl std::fmt::Display for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::Stderr => f.write_str("stderr"),
            Self::File(p) => write!(f, "/out/{p}"),
        }
    }
}

/// Why an execution produced no result bundle. A program that merely exits
/// non-zero is not an error: its exit code is part of the result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The wall-clock limit passed; the program was stopped.
    #[error("timed out after {limit_ms} ms")]
    Timeout {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The Wasm fuel budget ran out.
    #[error("out of fuel (budget {fuel})")]
    OutOfFuel {
        /// The budget.
        fuel: u64,
    },
    /// The program exceeded its memory limit.
    #[error("out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory {
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// stdout, stderr or an output file exceeded the output cap.
    #[error("output too large: {stream} exceeded {limit_bytes} bytes")]
    OutputTooLarge {
        /// Which one.
        stream: OutputStream,
        /// The cap, in bytes.
        limit_bytes: u64,
    },
    /// The module is not a valid WASI command (bad bytes, no `_start`,
    /// unsupported imports).
    #[error("invalid wasm module: {0}")]
    InvalidModule(String),
    /// The program trapped (not a limit): e.g. unreachable, bad memory access.
    #[error("wasm trap: {0}")]
    Trap(String),
    /// The Docker image is not present locally; nothing is ever pulled.
    #[error("docker image {image} is not present on this node (no registry is used: build or load it locally)")]
    ImageMissing {
        /// The image reference or digest asked for.
        image: String,
    },
    /// The image exists but its id differs from the pinned digest.
    #[error("docker image {image} has id {found}, but the job pins {expected}")]
    DigestMismatch {
        /// Image reference.
        image: String,
        /// Digest the job requires.
        expected: String,
        /// Digest found locally.
        found: String,
    },
    /// The Docker engine cannot be reached.
    #[error("docker is not reachable: {0}")]
    DockerUnavailable(String),
    /// A Docker API call failed.
    #[error("docker: {0}")]
    Docker(String),
    /// The spec asks for an executor this instance is not.
    #[error("this executor runs {expected} jobs, not {found}")]
    WrongExecutor {
        /// This executor's kind.
        expected: &'static str,
        /// The spec's kind.
        found: &'static str,
    },
    /// Local I/O failed (temp dirs, cache files).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ExecError {
    /// A stable, short name for metrics and JSON (`timeout`, `out_of_fuel`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidModule(_) => "invalid_module",
            Self::Trap(_) => "trap",
            Self::ImageMissing { .. } => "image_missing",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::DockerUnavailable(_) => "docker_unavailable",
            Self::Docker(_) => "docker_error",
            Self::WrongExecutor { .. } => "wrong_executor",
            Self::Io { .. } => "io",
        }
    }
}

/// A sandbox that runs one job at a time per call; implementations are
/// cheap to clone and safe to call concurrently.
#[allow(async_fn_in_trait)]
pub trait Executor {
    /// `wasm` or `docker`.
    fn kind(&self) -> &'static str;

    /// Runs the request to completion or to the first broken limit.
    async fn execute(&self, req: ExecRequest) -> Result<ResultBundle, ExecError>;
}
