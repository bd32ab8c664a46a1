//! Job arrays: one submission over many inputs. Each item is an ordinary
//! job (verified k-of-n on its own, with its own executor draw); an
//! optional reduce job aggregates the items' verified outputs.
//!
//! - [`record`]: the persisted array and item records, and count moves.
//! - [`template`]: the item jobs and the reduce job from the templates.
//! - [`store`]: the sled trees, items read by range.
//! - [`driver`]: one task per unfinished array keeps at most `parallel`
//!   items in flight and starts the reduce job.
//! - [`service`]: what the control API asks (submit, read, items, cancel,
//!   retry, events).
//!
//! **Invariant:** an item's job id is on disk before its job is, so after
//! a restart an item is either verified (kept), running a stored job
//! (followed, not re-run) or never submitted (submitted now).

pub mod driver;
pub mod record;
pub mod service;
pub mod store;
pub mod template;

use std::collections::HashMap;
use std::sync::Mutex;

use agora_protocol::ContentId;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::types::ArrayEvent;
use store::ArrayDb;

/// What the API asks of a running array's driver.
pub(crate) enum ArrayCmd {
    /// Cancel every unfinished item; answered once the array is final.
    Cancel(oneshot::Sender<()>),
}

/// An array whose driver runs.
pub(crate) struct ActiveArray {
    /// Commands to its driver (bounded).
    pub tx: mpsc::Sender<ArrayCmd>,
    /// Its item changes.
    pub events: broadcast::Sender<ArrayEvent>,
}

/// The arrays of this node.
pub(crate) struct ArraysState {
    /// Where they are kept.
    pub db: ArrayDb,
    /// Those whose driver runs.
    pub active: Mutex<HashMap<ContentId, ActiveArray>>,
}
