//! What reaches a submitted job's task: an input for its core (checked
//! where it arrived), or a cancel whose caller waits for the record.

use tokio::sync::oneshot;

use super::core::Input;

/// What reaches a job's task.
#[derive(Debug)]
pub enum JobInput {
    /// An input for the job's core.
    Core(Input),
    /// The user cancels the job; the reply comes once it is recorded.
    Cancel(oneshot::Sender<()>),
}
