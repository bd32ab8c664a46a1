//! The persisted records of job arrays: one [`ArrayRecordDb`] per array
//! and one [`ItemRecordDb`] per item, and the pure rules of moving an item
//! from one state to another so the array's counts stay exact.

use std::collections::BTreeMap;

use agora_protocol::ContentId;
use serde::{Deserialize, Serialize};

use crate::api::types::{ArrayCounts, ArrayState, ItemState, SubmitJob};
use crate::jobs::record::StoredBlob;

/// Most items in one array.
pub const MAX_ARRAY_ITEMS: u32 = 100_000;
/// Most items in flight for one array.
pub const MAX_PARALLEL: u32 = 1024;

/// The submitter's record of one array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayRecordDb {
    /// Array id.
    pub id: ContentId,
    /// The job every item runs, before `{}` and `{#}` are filled in (blob
    /// ids resolved to full ids).
    pub template: SubmitJob,
    /// The aggregation job, without its inputs.
    pub reduce: Option<SubmitJob>,
    /// Items in all.
    pub total: u32,
    /// Items in flight at most.
    pub parallel: u32,
    /// Where it stands.
    pub state: ArrayState,
    /// Items per state.
    pub counts: ArrayCounts,
    /// The reduce job, once submitted.
    pub reduce_job: Option<ContentId>,
    /// When it was submitted.
    pub submitted_at_ms: u64,
    /// When it reached a final state.
    pub finished_at_ms: Option<u64>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
}

impl ArrayRecordDb {
    /// The replication every item runs with (the template's, or the
    /// protocol's default for what it leaves unset).
    pub fn replication(&self) -> agora_protocol::Replication {
        replication_of(&self.template)
    }

    /// Moves one item from `from` to `to` in the counts.
    pub fn count_move(&mut self, from: ItemState, to: ItemState) {
        *slot(&mut self.counts, from) = slot(&mut self.counts, from).saturating_sub(1);
        *slot(&mut self.counts, to) += 1;
    }

    /// Sets a final state.
    pub fn finish(&mut self, state: ArrayState, reason: Option<String>, now_ms: u64) {
        self.state = state;
        self.reason = reason;
        self.finished_at_ms = Some(now_ms);
    }

    /// Back to work after a retry.
    pub fn reopen(&mut self, state: ArrayState) {
        self.state = state;
        self.reason = None;
        self.finished_at_ms = None;
    }
}

/// The replication `job` runs with: its own n and k, or the protocol's
/// defaults for those it leaves unset.
pub fn replication_of(job: &SubmitJob) -> agora_protocol::Replication {
    let d = agora_protocol::Replication::default();
    agora_protocol::Replication {
        n: job.n.unwrap_or(d.n),
        k: job.k.unwrap_or(d.k),
    }
}

fn slot(c: &mut ArrayCounts, s: ItemState) -> &mut u32 {
    match s {
        ItemState::Pending => &mut c.pending,
        ItemState::Running => &mut c.running,
        ItemState::Verified => &mut c.verified,
        ItemState::Failed => &mut c.failed,
        ItemState::Cancelled => &mut c.cancelled,
    }
}

/// What one item runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemInput {
    /// An integer of a range.
    Int(i64),
    /// A line of a text.
    Line(String),
    /// A file, seen at `/in/<name>`.
    File {
        /// Its name under `/in`.
        name: String,
        /// Its blob.
        blob: ContentId,
    },
}

impl ItemInput {
    /// What `{}` becomes.
    pub fn value(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Line(l) => l.clone(),
            Self::File { name, .. } => format!("/in/{name}"),
        }
    }
}

/// The submitter's record of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecordDb {
    /// What it runs on.
    pub input: ItemInput,
    /// Where it stands.
    pub state: ItemState,
    /// Its latest job. Written before the job is stored, so after a crash
    /// an item whose job is not in the store was never submitted.
    pub job: Option<ContentId>,
    /// Jobs submitted for it.
    pub attempts: u32,
    /// The verified result.
    pub result: Option<ItemResult>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
}

impl ItemRecordDb {
    /// A fresh item.
    pub fn new(input: ItemInput) -> Self {
        Self {
            input,
            state: ItemState::Pending,
            job: None,
            attempts: 0,
            result: None,
            reason: None,
        }
    }

    /// Whether a retry may run it again.
    pub fn retryable(&self) -> bool {
        matches!(self.state, ItemState::Failed | ItemState::Cancelled)
    }
}

/// An item's verified result (its blobs are also its job's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The verified exit code.
    pub exit_code: i32,
    /// The verified stdout.
    pub stdout: StoredBlob,
    /// The verified outputs by name.
    pub outputs: BTreeMap<String, StoredBlob>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::SubmitExecutor;

    fn array(total: u32) -> ArrayRecordDb {
        ArrayRecordDb {
            id: ContentId::of(b"a"),
            template: SubmitJob::new(SubmitExecutor::Wasm { module: "m".into() }),
            reduce: None,
            total,
            parallel: 2,
            state: ArrayState::Running,
            counts: ArrayCounts {
                pending: total,
                ..ArrayCounts::default()
            },
            reduce_job: None,
            submitted_at_ms: 1,
            finished_at_ms: None,
            reason: None,
        }
    }

    fn sum(c: &ArrayCounts) -> u32 {
        c.pending + c.running + c.verified + c.failed + c.cancelled
    }

    #[test]
    fn counts_follow_every_move_and_always_add_up_to_the_total() {
        use ItemState::*;
        let states = [Pending, Running, Verified, Failed, Cancelled];
        let mut a = array(3);
        let mut items = [Pending; 3];
        // Every transition for every item, in a fixed pseudo-random order.
        for step in 0..200usize {
            let i = step % 3;
            let to = states[(step * 7 + i) % states.len()];
            a.count_move(items[i], to);
            items[i] = to;
            assert_eq!(sum(&a.counts), 3);
            for s in states {
                let n = items.iter().filter(|x| **x == s).count() as u32;
                assert_eq!(
                    *slot(&mut a.counts.clone(), s),
                    n,
                    "{s:?} after step {step}"
                );
            }
        }
    }

    #[test]
    fn an_item_value_is_what_the_arguments_receive() {
        assert_eq!(ItemInput::Int(-3).value(), "-3");
        assert_eq!(ItemInput::Line("a b".into()).value(), "a b");
        let f = ItemInput::File {
            name: "x.txt".into(),
            blob: ContentId::of(b""),
        };
        assert_eq!(f.value(), "/in/x.txt");
    }

    #[test]
    fn only_failed_and_cancelled_items_are_retried() {
        let mut i = ItemRecordDb::new(ItemInput::Int(1));
        for (s, ok) in [
            (ItemState::Pending, false),
            (ItemState::Running, false),
            (ItemState::Verified, false),
            (ItemState::Failed, true),
            (ItemState::Cancelled, true),
        ] {
            i.state = s;
            assert_eq!(i.retryable(), ok, "{s:?}");
        }
    }
}
