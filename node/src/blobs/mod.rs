//! Content-addressed blobs: job modules, inputs, outputs and large result
//! bundles, each named by the sha256 of its bytes.
//!
//! - [`store`]: the files in the data directory and their sled index,
//!   resumable partial downloads, garbage collection under a size budget.
//! - [`mod@fetch`]: getting a missing blob from peers in hash-checked chunks,
//!   and serving chunks to them.
//! - [`metrics`]: bytes in and out, bytes stored.
//!
//! **Boundary:** the job engine and the control API use [`BlobStore`]
//! (synchronous: call it from `spawn_blocking`), [`fetch()`] and
//! [`serve_chunk`]; the daemon registers [`BlobMetrics`].

pub mod fetch;
mod locks;
pub mod metrics;
pub mod store;

pub use fetch::{fetch, serve_chunk, FetchError};
pub use metrics::BlobMetrics;
pub use store::{BlobError, BlobStore, GcReport};
