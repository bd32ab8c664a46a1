//! A job's state as the submitter keeps it: the lifecycle state, the
//! events it emits, and the replication chosen for it. The job record on
//! disk and the JSON API both use these (the API re-exports them), so the
//! stored format does not depend on the API.

use serde::{Deserialize, Serialize};

/// How many executors a job runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// Always k-of-n.
    #[default]
    Fixed,
    /// One executor with a long clean record alone, except on random spot
    /// checks; k-of-n otherwise (opt-in, like BOINC's adaptive replication).
    Adaptive,
}

impl ReplicationMode {
    /// The lower-case name the API and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Adaptive => "adaptive",
        }
    }
}

impl std::str::FromStr for ReplicationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "adaptive" => Ok(Self::Adaptive),
            other => Err(format!("unknown replication {other:?}: fixed or adaptive")),
        }
    }
}

/// What adaptive replication chose for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptivePlan {
    /// The first executor is not trusted yet: full k-of-n.
    Full,
    /// The first executor is trusted: it runs the job alone (1-of-1).
    Solo,
    /// The first executor is trusted, but this job is a random spot check
    /// at full k-of-n.
    SpotCheck,
    /// It ran alone, but its executor failed to answer: full k-of-n.
    Fallback,
}

impl AdaptivePlan {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Solo => "solo",
            Self::SpotCheck => "spot_check",
            Self::Fallback => "fallback",
        }
    }
}

/// A job's state, as the submitter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not yet offered.
    Pending,
    /// Offered; collecting bids or assigning.
    Scheduled,
    /// At least one executor is running it.
    Running,
    /// k executors signed the same result.
    Verified,
    /// No result can be accepted; `reason` says why.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl JobState {
    /// Verified, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Verified | Self::Failed | Self::Cancelled)
    }

    /// The lower-case name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "scheduled" => Self::Scheduled,
            "running" => Self::Running,
            "verified" => Self::Verified,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(format!(
                    "unknown job state {other:?} (pending, scheduled, running, verified, failed, cancelled)"
                ))
            }
        })
    }
}

/// One step of a job's progress, as `GET /api/v1/jobs/{id}/events` streams
/// it and the job record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// `submitted`, `offered`, `bid`, `assigned`, `attested`, `missed`,
    /// `crashed`, `escalated`, `verified`, `failed` or `cancelled`.
    pub kind: String,
    /// The peer concerned, if any.
    pub peer_id: Option<String>,
    /// The job's state after this event.
    pub state: JobState,
    /// Human-readable details.
    pub detail: String,
}
