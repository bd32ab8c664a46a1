//! agora-verifier: deciding which results to trust and which peers to use.
//!
//! - [`quorum`]: the k-of-n [`Quorum`] for one job. Assignments, signed
//!   attestations, misses, crashes and cancellation go in; a [`Decision`]
//!   comes out after every event (wait, assign more, verified, failed,
//!   cancelled), and a decided quorum yields the unsigned protocol
//!   [`Verdict`](agora_protocol::Verdict) for the node to sign and gossip.
//! - [`reputation`]: the [`ReputationBook`], this node's score for every
//!   peer, updated from local verdicts and from gossiped verdicts whose
//!   embedded attestations check out, weighted by trust in the reporter.
//! - [`select`]: [`select_executors`], a seeded weighted draw of executors
//!   favouring reputation and spare capacity, bounding newcomers per job
//!   and spreading executors over subnets ([`SelectConfig`]).
//! - [`adaptive`]: [`AdaptivePolicy`], opt-in adaptive replication: a job
//!   runs on one executor with a long clean streak, with random spot checks
//!   at full k-of-n.
//! - [`sim`]: a seeded simulation of many jobs over these pieces, no
//!   network; `examples/simulate.rs` runs it at full size.
//!
//! **Invariant:** pure state machines. No I/O, no tokio, no clock reads:
//! time comes in as `now_ms` arguments, randomness as a seed. With
//! `2k > n` at most one result hash ever reaches k in a quorum, and an
//! executor that attested another hash is never counted as agreeing.

pub mod adaptive;
pub mod quorum;
pub mod reputation;
pub mod select;
pub mod sim;

pub use adaptive::{AdaptiveConfigError, AdaptivePolicy, PlanKind, ReplicationPlan};
pub use quorum::{Decision, Ended, Failure, MoreReason, Quorum, QuorumConfigError, QuorumError};
pub use reputation::{
    Observation, PeerRecord, ReputationBook, ReputationConfig, ScoreChange, Standing,
    VerdictEffect, VerdictError,
};
pub use select::{select_executors, select_executors_with, subnet_of, Candidate, SelectConfig};
