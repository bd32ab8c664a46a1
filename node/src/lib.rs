//! agora-node: the node daemon as a library.
//!
//! The daemon's parts live here as modules, each with one job: the
//! sandboxed executors, the network task that owns the libp2p Swarm, the
//! sled store, the submitter and worker sides of the job lifecycle, and the
//! control API. The `agora` and `agora-bootstrap` binaries are thin glue
//! over this crate.

pub mod api;
pub mod blobs;
pub mod config;
pub mod daemon;
pub mod executor;
pub mod identity;
pub mod jobs;
pub mod logging;
pub mod network;
pub mod reputation;
