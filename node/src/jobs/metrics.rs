//! Prometheus metrics of the job lifecycle.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::state::JobState;

/// Counters and gauges of submitted jobs and executions.
#[derive(Clone)]
pub struct JobMetrics {
    /// `agora_jobs{state}`: this node's submitted jobs by state.
    pub by_state: IntGaugeVec,
    /// `agora_jobs_submitted_total`.
    pub submitted: IntCounter,
    /// `agora_jobs_verified_total`.
    pub verified: IntCounter,
    /// `agora_jobs_failed_total`.
    pub failed: IntCounter,
    /// `agora_job_verify_seconds`: submission to verified.
    pub verify_seconds: Histogram,
    /// `agora_executions_total{outcome}`: jobs this node ran as executor.
    pub executions: IntCounterVec,
    /// `agora_adaptive_plans_total{plan}`: what adaptive replication chose.
    pub plans: IntCounterVec,
}

impl JobMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            by_state: IntGaugeVec::new(
                Opts::new("agora_jobs", "Jobs submitted through this node, by state"),
                &["state"],
            )?,
            submitted: IntCounter::new(
                "agora_jobs_submitted_total",
                "Jobs submitted through this node",
            )?,
            verified: IntCounter::new(
                "agora_jobs_verified_total",
                "Jobs submitted through this node that k executors verified",
            )?,
            failed: IntCounter::new(
                "agora_jobs_failed_total",
                "Jobs submitted through this node that failed",
            )?,
            verify_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "agora_job_verify_seconds",
                    "Time from submission to a verified result",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ]),
            )?,
            executions: IntCounterVec::new(
                Opts::new(
                    "agora_executions_total",
                    "Assignments this node ran as executor, by outcome",
                ),
                &["outcome"],
            )?,
            plans: IntCounterVec::new(
                Opts::new(
                    "agora_adaptive_plans_total",
                    "Adaptive jobs of this node by plan: full, solo, spot_check, fallback",
                ),
                &["plan"],
            )?,
        };
        registry.register(Box::new(m.by_state.clone()))?;
        registry.register(Box::new(m.submitted.clone()))?;
        registry.register(Box::new(m.verified.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.verify_seconds.clone()))?;
        registry.register(Box::new(m.executions.clone()))?;
        registry.register(Box::new(m.plans.clone()))?;
        Ok(m)
    }

    /// Moves one job from state `from` (if any) to `to`.
    pub fn transition(&self, from: Option<JobState>, to: JobState) {
        if from == Some(to) {
            return;
        }
        if let Some(f) = from {
            self.by_state.with_label_values(&[f.as_str()]).dec();
        }
        self.by_state.with_label_values(&[to.as_str()]).inc();
        match to {
            JobState::Verified => self.verified.inc(),
            JobState::Failed => self.failed.inc(),
            _ => {}
        }
    }
}
