//! Protocol limits: every size, count and duration a peer can send is
//! bounded here, and decoders check them before a value is used.

/// Largest gossip message (offer, advert, verdict) in bytes.
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Largest request-response message (bids, assignments, attestations with
/// their result bundles) in bytes, excluding blob chunks.
pub const MAX_RPC_BYTES: usize = 80 * 1024 * 1024;
/// Replication cap: at most this many executors for one job.
pub const MAX_REPLICATION: u8 = 32;
/// Most arguments a job may pass.
pub const MAX_ARGS: usize = 256;
/// Most environment variables a job may set.
pub const MAX_ENV: usize = 128;
/// Longest single argument, env key or value, label, path or image name.
pub const MAX_STRING_BYTES: usize = 4096;
/// Most declared outputs.
pub const MAX_FILES: usize = 64;
/// Most input files of one job (a reduce step over an array takes one per
/// item; each entry costs about 45 bytes of the spec).
pub const MAX_INPUTS: usize = 1024;
/// Largest stdout, stderr or single output file in a result bundle.
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Shortest and longest job timeout, in milliseconds.
pub const MIN_TIMEOUT_MS: u64 = 100;
/// Longest job timeout: one day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// Largest memory a job may ask for: 64 GiB.
pub const MAX_MEMORY_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Most CPUs a job may ask for, in milli-CPUs (256 cores).
pub const MAX_MILLI_CPUS: u32 = 256_000;
/// Most labels a capability advert may carry.
pub const MAX_LABELS: usize = 32;
/// Largest request-response request accepted, in bytes. Requests stay
/// small; the large payloads (blob chunks) travel in responses.
pub const MAX_REQUEST_BYTES: u64 = 256 * 1024;
/// Largest request-response response accepted, in bytes.
pub const MAX_RESPONSE_BYTES: u64 = MAX_RPC_BYTES as u64;
/// A result bundle whose CBOR encoding is at most this big rides inline in
/// an attestation report; larger ones are fetched as a blob.
pub const MAX_INLINE_BUNDLE_BYTES: usize = 192 * 1024;
/// Largest blob chunk asked for or served.
pub const MAX_CHUNK_BYTES: u32 = 4 * 1024 * 1024;
/// Most image digests a capability advert may list.
pub const MAX_IMAGES: usize = 256;
/// Most layers an image manifest may name (Docker's own cap is 127).
pub const MAX_IMAGE_LAYERS: usize = 128;
/// Largest image config blob (JSON) accepted.
pub const MAX_IMAGE_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Largest image manifest blob accepted.
pub const MAX_IMAGE_MANIFEST_BYTES: usize = 64 * 1024;
/// Time an executor may spend fetching and loading a job's image, on top
/// of the job's own timeout (which a fetch does not use up).
pub const IMAGE_FETCH_MS: u64 = 10 * 60 * 1000;
/// Most listen addresses a capability advert may list.
pub const MAX_ADDRS: usize = 16;
/// Most attestations a verdict may embed (escalation cap).
pub const MAX_ATTESTATIONS: usize = 2 * MAX_REPLICATION as usize;

/// A field that broke one of the limits above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {actual} exceeds the limit of {limit}")]
pub struct LimitError {
    /// Which field, e.g. `spec.args`.
    pub field: &'static str,
    /// The value found (a length, count or amount).
    pub actual: u64,
    /// The limit it broke.
    pub limit: u64,
}

/// A wire type whose fields have protocol bounds. Decoders call
/// [`Bounded::check_bounds`] before handing the value out.
pub trait Bounded {
    /// Fails with the first field that breaks a limit.
    fn check_bounds(&self) -> Result<(), LimitError>;
}

/// Checks `actual <= limit` for the field named `field`.
pub fn check(field: &'static str, actual: usize, limit: usize) -> Result<(), LimitError> {
    check_u64(field, actual as u64, limit as u64)
}

/// [`check`] for quantities that are not lengths.
pub fn check_u64(field: &'static str, actual: u64, limit: u64) -> Result<(), LimitError> {
    if actual > limit {
        Err(LimitError {
            field,
            actual,
            limit,
        })
    } else {
        Ok(())
    }
}

/// Checks a count and the length of every string in `items`.
pub fn check_strings<'a, I>(
    field: &'static str,
    items: I,
    max_count: usize,
) -> Result<(), LimitError>
where
    I: IntoIterator<Item = &'a String>,
{
    let mut n = 0usize;
    for s in items {
        n += 1;
        check(field, s.len(), MAX_STRING_BYTES)?;
    }
    check(field, n, max_count)
}
