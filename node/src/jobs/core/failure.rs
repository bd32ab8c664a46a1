//! Why a submitted job failed: one typed error per cause, whose text is
//! what the user reads in `agora run`, `agora job show` and the API.

use std::time::Duration;

use agora_protocol::ContentId;

/// Why a job ended without a verified result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    /// No online node can run the job (the text names what is missing).
    #[error("{0}")]
    NoCapable(String),
    /// Fewer capable nodes are online than executors must agree.
    #[error("too few capable nodes: {k} executors must agree, and {capable} of the {online} other node(s) online can run this job (this node knows {known}); lower -k, or add nodes")]
    TooFewCapable {
        /// Executors that must agree.
        k: u8,
        /// Capable nodes online.
        capable: usize,
        /// Nodes online.
        online: usize,
        /// Nodes known.
        known: usize,
    },
    /// The answers disagree and nobody is left to settle the dispute.
    #[error("the answers disagree ({tally}) and no other capable node is left to settle it: a result must lead the others by {k} attestations")]
    Disputed {
        /// "HASH from COUNT, ..."
        tally: String,
        /// The lead needed.
        k: u8,
    },
    /// Offers went unanswered.
    #[error("no capable node answered: {bids} bid(s) in {window:?} after {offers} offer(s); this node knows {known} other node(s), {online} online, {capable} of them capable per their adverts and not yet assigned this job{}", undelivered.as_ref().map(|e| format!("; the last offer was not delivered: {e}")).unwrap_or_default())]
    NoBids {
        /// Bids received in all.
        bids: u32,
        /// The longest bid window.
        window: Duration,
        /// Offers made.
        offers: u32,
        /// Nodes known.
        known: usize,
        /// Nodes online.
        online: usize,
        /// Capable nodes not yet used.
        capable: usize,
        /// Why the last offer was not published, if it was not.
        undelivered: Option<String>,
    },
    /// k executors ran the job and it failed the same way on each.
    #[error("{k} executor(s) ran the job and it failed: {error}")]
    Repeated {
        /// How many.
        k: u8,
        /// The shared error.
        error: String,
    },
    /// No answer led by k within the cap.
    #[error("no consensus: no result led the others by {k} attestations within {cap} executors ({tally})")]
    NoConsensus {
        /// The lead needed.
        k: u8,
        /// Most executors used.
        cap: u8,
        /// "HASH from COUNT, ..."
        tally: String,
    },
    /// The job's own deadline passed first.
    #[error("deadline passed before {k} executors agreed")]
    DeadlinePassed {
        /// Executors that had to agree.
        k: u8,
    },
    /// Too many executors failed or went missing.
    #[error("too few executors answered to reach {k}{}", if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) })]
    TooFewAnswered {
        /// Executors that had to agree.
        k: u8,
        /// "PEER: error" per executor that reported one.
        errors: Vec<String>,
    },
    /// The agreed result could not be fetched from any agreeing executor.
    #[error("{agreeing} executors agreed on {}, but none delivered the result: {}", hash.short(), errors.join("; "))]
    ResultUndelivered {
        /// How many agreed.
        agreeing: usize,
        /// The agreed hash.
        hash: ContentId,
        /// "PEER: error" per executor tried.
        errors: Vec<String>,
    },
    /// The stored job cannot be decided (a record that does not decode).
    #[error("{0}")]
    Internal(String),
}

/// "HASH from COUNT, ..." for a quorum's tally.
pub fn tally_text(hashes: &[(ContentId, u32)]) -> String {
    let list: Vec<String> = hashes
        .iter()
        .map(|(h, c)| format!("{} from {c}", h.short()))
        .collect();
    list.join(", ")
}
