//! Sandboxed executors: turn a validated job spec plus its input bytes into
//! a [`ResultBundle`] or a typed [`ExecError`].
//!
//! Two implementations: [`wasm`] (wasmtime, WASI preview 1) and [`docker`]
//! (bollard). Both enforce the spec's limits themselves; a job that breaks
//! one ends with an error naming the limit, never a hang or a dead daemon.
//! The rest of the node reaches them only through [`registry::Sandboxes`],
//! keyed by the spec's executor kind, so a new kind lives here (and in
//! protocol's `ExecutorSpec`) alone.
//!
//! **Boundary:** callers resolve blobs first (the store or the CLI), so an
//! executor never touches the network or the blob store.

use std::collections::BTreeMap;

use agora_protocol::{ContentId, ExecutorSpec, FailKind, ResultBundle, ValidatedSpec};

pub mod docker;
pub mod registry;
pub mod wasm;

const MIB: u64 = 1024 * 1024;

/// One execution to run: the spec and the bytes of every blob it names.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The job id (content id of the signed spec); seeds Wasm randomness
    /// and labels Docker containers.
    pub job_id: ContentId,
    /// What to run and its limits.
    pub spec: ValidatedSpec,
    /// The program's bytes, from the blob [`Executor::program`] names
    /// (the Wasm module; empty for kinds that need none, like Docker).
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
    #[error("timed out after {} (--timeout {})", secs(*.limit_ms), flag_secs(*.limit_ms))]
    Timeout {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The Wasm fuel budget ran out.
    #[error("out of fuel: budget {fuel} (--fuel)")]
    OutOfFuel {
        /// The budget.
        fuel: u64,
    },
    /// The program exceeded its memory limit.
    #[error("out of memory: limit {} (--memory)", size(*.limit_bytes))]
    OutOfMemory {
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// stdout, stderr or an output file exceeded the output cap.
    #[error("output too large: {stream} exceeded {} (--max-output)", size(*.limit_bytes))]
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
    /// The spec asks for an executor kind this node does not run.
    #[error("this node does not run {kind} jobs")]
    Unsupported {
        /// The spec's kind.
        kind: &'static str,
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
            Self::Unsupported { .. } => "unsupported",
            Self::Io { .. } => "io",
        }
    }

    /// How the submitter records the failure: a broken limit by name,
    /// [`FailKind::Unable`] when the job could not be started here (the
    /// program or its image is not available), [`FailKind::Crashed`] for
    /// the rest.
    pub fn fail_kind(&self) -> FailKind {
        match self {
            Self::Timeout { .. } => FailKind::TimedOut,
            Self::OutOfMemory { .. } => FailKind::OutOfMemory,
            Self::OutOfFuel { .. } => FailKind::OutOfFuel,
            Self::OutputTooLarge { .. } => FailKind::OutputTooLarge,
            Self::ImageMissing { .. }
            | Self::DigestMismatch { .. }
            | Self::DockerUnavailable(_)
            | Self::WrongExecutor { .. }
            | Self::Unsupported { .. } => FailKind::Unable,
            Self::Trap(_) | Self::Docker(_) | Self::Io { .. } | Self::InvalidModule(_) => {
                FailKind::Crashed
            }
        }
    }
}

/// `2 s`, `1.5 s`, `250 ms`: a duration as people read it.
fn secs(ms: u64) -> String {
    match (ms / 1000, ms % 1000) {
        (0, ms) => format!("{ms} ms"),
        (s, 0) => format!("{s} s"),
        (s, r) => format!("{s}.{} s", format!("{r:03}").trim_end_matches('0')),
    }
}

/// The duration as the CLI's `--timeout` takes it (`2s`, `1500ms`).
fn flag_secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `64 MiB`, `1.5 KiB`, `10 bytes`: a size as people read it.
fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1024 * MIB, "GiB"), (MIB, "MiB"), (1024, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// What one sandbox offers, for the capability advert and job matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The [`ExecutorSpec::kind`] it runs.
    pub kind: &'static str,
    /// Engine version worth advertising, if any.
    pub version: Option<String>,
    /// Image ids held locally, for kinds whose jobs pin an image.
    pub images: Option<Vec<String>>,
}

/// A sandbox that runs one job at a time per call; implementations are
/// cheap to clone and safe to call concurrently.
#[allow(async_fn_in_trait)]
pub trait Executor {
    /// The [`ExecutorSpec::kind`] it runs: `wasm` or `docker`.
    fn kind(&self) -> &'static str;

    /// What it offers now (see [`Executor::refresh`]).
    fn capabilities(&self) -> Capabilities;

    /// The blob holding the program itself, which the caller loads into
    /// [`ExecRequest::module`]; `None` when the sandbox finds its program
    /// elsewhere (a local image).
    fn program(&self, _spec: &ExecutorSpec) -> Option<ContentId> {
        None
    }

    /// Re-reads what changes under the node's feet (Docker's images), so
    /// [`Executor::capabilities`] stays current.
    async fn refresh(&self) -> Result<(), ExecError> {
        Ok(())
    }

    /// Runs the request to completion or to the first broken limit.
    /// Dropping the future stops the sandbox at once (Wasm: the run is
    /// interrupted at its next epoch tick; Docker: the container is killed
    /// and removed): that is how a cancelled job is stopped.
    async fn execute(&self, req: ExecRequest) -> Result<ResultBundle, ExecError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_named_with_their_flag_and_readable_sizes() {
        let t = ExecError::Timeout { limit_ms: 2000 }.to_string();
        assert_eq!(t, "timed out after 2 s (--timeout 2s)");
        let t = ExecError::Timeout { limit_ms: 1500 }.to_string();
        assert_eq!(t, "timed out after 1.5 s (--timeout 1500ms)");
        let m = ExecError::OutOfMemory {
            limit_bytes: 64 * MIB,
        };
        assert_eq!(m.to_string(), "out of memory: limit 64 MiB (--memory)");
        let o = ExecError::OutputTooLarge {
            stream: OutputStream::Stdout,
            limit_bytes: 16 * MIB,
        };
        assert_eq!(
            o.to_string(),
            "output too large: stdout exceeded 16 MiB (--max-output)"
        );
        assert_eq!(o.fail_kind(), FailKind::OutputTooLarge);
        assert_eq!(size(10), "10 bytes");
        assert_eq!(
            ExecError::ImageMissing { image: "x".into() }.fail_kind(),
            FailKind::Unable
        );
        assert_eq!(ExecError::Trap("t".into()).fail_kind(), FailKind::Crashed);
    }
}
