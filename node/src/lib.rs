//! agora-node: the node daemon as a library.
//!
//! The daemon's parts live here as modules, each with one job: the
//! sandboxed executors, the network task that owns the libp2p Swarm, the
//! sled store, the submitter and worker sides of the job lifecycle, and the
//! control API. The `agora` and `agora-bootstrap` binaries are thin glue
//! over this crate.

pub mod api;
pub mod arrays;
pub mod blobs;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod executor;
pub mod fsutil;
pub mod identity;
pub mod images;
pub mod jobs;
pub mod logging;
pub mod network;
pub mod reputation;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex even if a panicking thread poisoned it. Every mutex in
/// this crate guards plain data (maps, buffers, flags) that each update
/// leaves consistent in one step, so a panic elsewhere is no reason to
/// stop serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
