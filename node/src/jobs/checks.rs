//! Pure checks of the job lifecycle: whether a node's advert meets a job's
//! needs (and, when nobody does, which requirement nobody met), and the
//! checks of offers, bids and assignments as they arrive. No I/O, so every
//! rule is unit tested here.

use std::collections::BTreeMap;

use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::validate::{FreshnessError, ReplayGuard};
use agora_protocol::{
    validate, Assignment, Bid, CapabilityAdvert, ContentId, DecodeError, JobOffer, JobSpec, PeerId,
    SignError, Signed, SpecError, ValidatedSpec,
};

/// A need of a job that a node may not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The sandbox kind.
    Executor(&'static str),
    /// A Docker image id the node must hold.
    Image(String),
    /// Memory in bytes.
    Memory(u64),
    /// CPU in thousandths of a core.
    Cpu(u32),
    /// An operator label the job requires (`agora run --require K=V`).
    Label {
        /// The label's key.
        key: String,
        /// The value it must have.
        value: String,
    },
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Executor(k) => write!(f, "the {k} executor"),
            Self::Image(d) => write!(f, "docker image {d}"),
            Self::Memory(b) => write!(f, "{} MiB of memory", b.div_ceil(1024 * 1024)),
            Self::Cpu(m) => write!(f, "{}.{:03} CPUs", m / 1000, m % 1000),
            Self::Label { key, value } => write!(f, "label {}={}", clip(key), clip(value)),
        }
    }
}

/// What a node offers, as far as matching jobs goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// The executor kinds it runs (`ExecutorSpec::kind`), each with the
    /// image ids it holds (empty for kinds whose jobs pin no image).
    pub executors: BTreeMap<String, Vec<String>>,
    /// Memory offered in bytes.
    pub memory_bytes: u64,
    /// CPU cores offered.
    pub cpu_cores: u32,
    /// Operator labels, matched against a job's `requires`.
    pub labels: BTreeMap<String, String>,
    /// Whether it fetches images it lacks (for jobs naming a manifest).
    pub image_fetch: bool,
}

impl From<&CapabilityAdvert> for Capacity {
    fn from(a: &CapabilityAdvert) -> Self {
        Self {
            executors: a.executor_kinds(),
            memory_bytes: a.memory_bytes,
            cpu_cores: a.cpu_cores,
            labels: a.labels.clone(),
            image_fetch: a.image_fetch,
        }
    }
}

/// The first need of `spec` that `cap` does not meet, if any.
pub fn unmet(spec: &JobSpec, cap: &Capacity) -> Option<Requirement> {
    let kind = spec.executor.kind();
    let Some(images) = cap.executors.get(kind) else {
        return Some(Requirement::Executor(kind));
    };
    if let Some(digest) = spec.executor.pinned_image() {
        let fetchable = cap.image_fetch && spec.executor.image_manifest().is_some();
        if !fetchable && !images.iter().any(|i| i == digest) {
            return Some(Requirement::Image(digest.to_string()));
        }
    }
    if spec.resources.memory_bytes > cap.memory_bytes {
        return Some(Requirement::Memory(spec.resources.memory_bytes));
    }
    if u64::from(spec.resources.milli_cpus) > u64::from(cap.cpu_cores) * 1000 {
        return Some(Requirement::Cpu(spec.resources.milli_cpus));
    }
    unmet_label(spec, &cap.labels)
}

/// The first label `spec` requires that `labels` lacks or gives another
/// value, if any.
pub fn unmet_label(spec: &JobSpec, labels: &BTreeMap<String, String>) -> Option<Requirement> {
    spec.requires
        .iter()
        .find(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| Requirement::Label {
            key: k.clone(),
            value: v.clone(),
        })
}

/// Whether a node advertising `labels` has every label `spec` requires.
/// The submitter calls it on each bid with the bidder's advertised labels:
/// an honest node without them never bids, but selection must not rest
/// on that.
pub fn meets_requirements(spec: &JobSpec, labels: &BTreeMap<String, String>) -> bool {
    unmet_label(spec, labels).is_none()
}

/// Longest label key or value shown in a message: labels come from peers'
/// adverts and may be up to `MAX_STRING_BYTES` long.
const MAX_SHOWN_LABEL_CHARS: usize = 64;
/// Most distinct labels listed when none offers a required one.
const MAX_SHOWN_LABELS: usize = 8;

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_SHOWN_LABEL_CHARS {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX_SHOWN_LABEL_CHARS).collect();
        format!("{head}...")
    }
}

/// The labels the `online` nodes offer, most common first, for a message:
/// `region=eu (3 nodes), gpu=false (1 node)`.
fn labels_seen(online: &[Capacity]) -> String {
    let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (k, v) in online.iter().flat_map(|c| c.labels.iter()) {
        *count.entry((k.as_str(), v.as_str())).or_default() += 1;
    }
    if count.is_empty() {
        return "no online node has any label".to_owned();
    }
    let mut pairs: Vec<_> = count.into_iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let more = pairs.len().saturating_sub(MAX_SHOWN_LABELS);
    let mut shown: Vec<String> = pairs
        .iter()
        .take(MAX_SHOWN_LABELS)
        .map(|((k, v), n)| {
            let s = if *n == 1 { "" } else { "s" };
            format!("{}={} ({n} node{s})", clip(k), clip(v))
        })
        .collect();
    if more > 0 {
        shown.push(format!("and {more} more"));
    }
    format!("labels seen: {}", shown.join(", "))
}

/// Explains why no node can run `spec`, given the capacities of the
/// online nodes other than the submitter and how many nodes it knows.
/// `None` when at least one of them meets every need.
pub fn explain_no_capable(spec: &JobSpec, online: &[Capacity], known: usize) -> Option<String> {
    if online.iter().any(|c| unmet(spec, c).is_none()) {
        return None;
    }
    if online.is_empty() {
        return Some(format!(
            "no capable node: this node knows {known} other node(s) and none is online"
        ));
    }
    // A required label that no online node has at all is the answer
    // whatever else they lack: no amount of memory makes a node a GPU one.
    if let Some((key, value)) = spec
        .requires
        .iter()
        .find(|(k, v)| !online.iter().any(|c| c.labels.get(*k) == Some(*v)))
    {
        let label = Requirement::Label {
            key: key.clone(),
            value: value.clone(),
        };
        return Some(format!(
            "no capable node: {} online node(s) of {known} known, none offers {label} \
             (required by the job); {}",
            online.len(),
            labels_seen(online)
        ));
    }
    // Name the need of the node that came closest (unmet() checks in this
    // order): a node with Docker but not the image says more than one
    // without Docker at all.
    let first = online
        .iter()
        .filter_map(|c| unmet(spec, c))
        .max_by_key(|r| match r {
            Requirement::Executor(_) => 0,
            Requirement::Image(_) => 1,
            Requirement::Memory(_) => 2,
            Requirement::Cpu(_) => 3,
            // Every required label is offered somewhere (checked above),
            // but not all of them by one node that also has the rest.
            Requirement::Label { .. } => 4,
        })?;
    let detail = match &first {
        Requirement::Memory(_) => {
            let most = online.iter().map(|c| c.memory_bytes).max().unwrap_or(0);
            format!(" (the most any offers is {} MiB)", most / (1024 * 1024))
        }
        Requirement::Cpu(_) => {
            let most = online.iter().map(|c| c.cpu_cores).max().unwrap_or(0);
            format!(" (the most any offers is {most} CPUs)")
        }
        Requirement::Label { .. } => format!("; {}", labels_seen(online)),
        _ => String::new(),
    };
    let need = match &first {
        Requirement::Label { .. } => format!(
            "all of the labels {} with the job's other needs",
            spec.requires
                .iter()
                .map(|(k, v)| format!("{}={}", clip(k), clip(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    };
    Some(format!(
        "no capable node: {} online node(s) of {known} known, none offers {need}{detail}",
        online.len()
    ))
}

/// Why an offer, bid or assignment was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Bytes do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Signature does not check.
    #[error(transparent)]
    Signature(Box<SignError>),
    /// The spec breaks the rules.
    #[error("invalid job spec: {0}")]
    Spec(#[from] SpecError),
    /// Too old, from the future, or replayed.
    #[error(transparent)]
    Freshness(Box<FreshnessError>),
    /// Gossip without an author.
    #[error("message has no author")]
    NoAuthor,
    /// Signed by someone other than who sent it.
    #[error("signed by {signer}, sent by {sender}")]
    SignerMismatch {
        /// The signer (base58).
        signer: String,
        /// The sender (base58).
        sender: String,
    },
    /// Names another job or executor.
    #[error("{0}")]
    Mismatch(String),
}

impl From<SignError> for CheckError {
    fn from(e: SignError) -> Self {
        Self::Signature(Box::new(e))
    }
}

impl From<FreshnessError> for CheckError {
    fn from(e: FreshnessError) -> Self {
        Self::Freshness(Box::new(e))
    }
}

/// A checked job offer.
#[derive(Debug, Clone)]
pub struct CheckedOffer {
    /// The job id.
    pub job: ContentId,
    /// The submitter (signer of offer and spec).
    pub submitter: PeerId,
    /// The signed spec, to keep.
    pub spec: Signed<JobSpec>,
    /// The validated spec.
    pub validated: ValidatedSpec,
    /// Bids after this are ignored.
    pub bid_deadline_ms: u64,
}

/// Checks a gossiped offer: size, both signatures by the gossip author,
/// a valid spec, freshness and no replay (recorded in `guard`).
pub fn check_offer(
    data: &[u8],
    author: Option<PeerId>,
    now_ms: u64,
    guard: &mut ReplayGuard,
) -> Result<CheckedOffer, CheckError> {
    let (offer, checked) = read(data, author)?;
    guard.check_and_record(checked.submitter, offer.nonce, offer.timestamp_ms, now_ms)?;
    Ok(checked)
}

fn read(data: &[u8], author: Option<PeerId>) -> Result<(JobOffer, CheckedOffer), CheckError> {
    let signed = Signed::<JobOffer>::decode(data, MAX_GOSSIP_BYTES)?;
    let offer = signed.verify()?;
    let author = author.ok_or(CheckError::NoAuthor)?;
    same_signer(offer.signer, author)?;
    let spec = offer.value.spec.verify()?;
    same_signer(spec.signer, author)?;
    let validated = validate(spec.value)?;
    let checked = CheckedOffer {
        job: offer.value.spec.id(),
        submitter: author,
        spec: offer.value.spec.clone(),
        validated,
        bid_deadline_ms: offer.value.bid_deadline_ms,
    };
    Ok((offer.value, checked))
}

/// Checks a bid `sender` sent: its signature (the one check it gets) and
/// that `sender` signed it. The job it names is the caller's to look up.
pub fn read_bid(signed: &Signed<Bid>, sender: PeerId) -> Result<Bid, CheckError> {
    let bid = signed.verify()?;
    same_signer(bid.signer, sender)?;
    Ok(bid.value)
}

/// Checks a bid `sender` sent for `job`.
pub fn check_bid(signed: &Signed<Bid>, sender: PeerId, job: &ContentId) -> Result<Bid, CheckError> {
    let bid = read_bid(signed, sender)?;
    if bid.job != *job {
        return Err(CheckError::Mismatch(format!(
            "bid names job {}, not {}",
            bid.job.short(),
            job.short()
        )));
    }
    Ok(bid)
}

/// A checked assignment.
#[derive(Debug, Clone)]
pub struct CheckedAssignment {
    /// The job id.
    pub job: ContentId,
    /// The submitter.
    pub submitter: PeerId,
    /// The assignment.
    pub assignment: Assignment,
    /// The validated spec.
    pub validated: ValidatedSpec,
}

/// Checks an assignment `sender` sent to `me`: both signatures by the
/// sender, addressed to this node, a valid spec, a deadline still ahead.
pub fn check_assignment(
    signed: &Signed<Assignment>,
    sender: PeerId,
    me: PeerId,
    now_ms: u64,
) -> Result<CheckedAssignment, CheckError> {
    let a = signed.verify()?;
    same_signer(a.signer, sender)?;
    let spec = a.value.spec.verify()?;
    same_signer(spec.signer, sender)?;
    if a.value.executor != me {
        return Err(CheckError::Mismatch(format!(
            "assignment is for {}, not this node",
            a.value.executor
        )));
    }
    if a.value.deadline_ms <= now_ms {
        return Err(CheckError::Mismatch(
            "assignment deadline already passed".into(),
        ));
    }
    let validated = validate(spec.value)?;
    Ok(CheckedAssignment {
        job: a.value.spec.id(),
        submitter: sender,
        assignment: a.value,
        validated,
    })
}

fn same_signer(signer: PeerId, sender: PeerId) -> Result<(), CheckError> {
    if signer == sender {
        Ok(())
    } else {
        Err(CheckError::SignerMismatch {
            signer: signer.to_base58(),
            sender: sender.to_base58(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agora_protocol::{ExecutorSpec, NodeKey, Replication, Resources};

    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn wasm_spec(memory: u64) -> JobSpec {
        JobSpec {
            executor: ExecutorSpec::Wasm {
                module: ContentId::of(b"module"),
            },
            args: vec![],
            env: BTreeMap::new(),
            stdin: None,
            inputs: BTreeMap::new(),
            outputs: vec![],
            resources: Resources {
                memory_bytes: memory,
                ..Resources::default()
            },
            replication: Replication::default(),
            created_at_ms: 1_000,
            nonce: 7,
            requires: BTreeMap::new(),
        }
    }

    fn docker_spec(digest: &str) -> JobSpec {
        JobSpec {
            executor: ExecutorSpec::Docker {
                image: "busybox".into(),
                digest: digest.into(),
                manifest: None,
            },
            ..wasm_spec(64 * MIB)
        }
    }

    fn cap(images: Option<&[&str]>, memory: u64) -> Capacity {
        let mut executors = BTreeMap::from([("wasm".to_string(), Vec::new())]);
        if let Some(i) = images {
            executors.insert("docker".into(), i.iter().map(|s| s.to_string()).collect());
        }
        Capacity {
            executors,
            memory_bytes: memory,
            cpu_cores: 2,
            labels: BTreeMap::new(),
            image_fetch: false,
        }
    }

    fn labelled(pairs: &[(&str, &str)]) -> Capacity {
        Capacity {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..cap(None, 128 * MIB)
        }
    }

    fn requiring(pairs: &[(&str, &str)]) -> JobSpec {
        JobSpec {
            requires: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..wasm_spec(MIB)
        }
    }

    #[test]
    fn required_labels_must_be_offered_with_the_same_value() {
        let gpu = requiring(&[("gpu", "true")]);
        let label = Requirement::Label {
            key: "gpu".into(),
            value: "true".into(),
        };
        let want = Some(label.clone());
        assert_eq!(unmet(&gpu, &labelled(&[])), want);
        assert_eq!(unmet(&gpu, &labelled(&[("gpu", "false")])), want);
        assert_eq!(unmet(&gpu, &labelled(&[("region", "eu")])), want);
        assert_eq!(
            unmet(&gpu, &labelled(&[("gpu", "true"), ("region", "eu")])),
            None
        );
        assert_eq!(label.to_string(), "label gpu=true");
        let both = requiring(&[("gpu", "true"), ("model", "resnet50")]);
        assert!(!meets_requirements(
            &both,
            &labelled(&[("gpu", "true")]).labels
        ));
        assert!(meets_requirements(
            &both,
            &labelled(&[("gpu", "true"), ("model", "resnet50")]).labels
        ));
        // No requirement: any labels do.
        assert!(meets_requirements(&wasm_spec(MIB), &BTreeMap::new()));
        assert_eq!(unmet(&wasm_spec(MIB), &labelled(&[("gpu", "no")])), None);
    }

    #[test]
    fn the_explanation_names_the_label_nobody_offers_and_those_seen() {
        let nodes = [
            labelled(&[("region", "eu")]),
            labelled(&[("region", "eu"), ("gpu", "false")]),
            labelled(&[("region", "eu")]),
        ];
        let why = explain_no_capable(&requiring(&[("gpu", "true")]), &nodes, 3).unwrap();
        assert!(why.contains("none offers label gpu=true"), "{why}");
        assert!(why.contains("3 online node(s) of 3 known"), "{why}");
        assert!(
            why.contains("labels seen: region=eu (3 nodes), gpu=false (1 node)"),
            "{why}"
        );
        // The missing label is named even when memory is short too.
        let mut big = requiring(&[("gpu", "true")]);
        big.resources.memory_bytes = 1024 * MIB;
        let why = explain_no_capable(&big, &nodes, 3).unwrap();
        assert!(why.contains("label gpu=true"), "{why}");
        // Each label is offered, but never both by one node.
        let split = [labelled(&[("gpu", "true")]), labelled(&[("model", "x")])];
        let why =
            explain_no_capable(&requiring(&[("gpu", "true"), ("model", "x")]), &split, 2).unwrap();
        assert!(why.contains("gpu=true, model=x"), "{why}");
        assert_eq!(
            explain_no_capable(&requiring(&[("gpu", "false")]), &nodes, 3),
            None
        );
        let why = explain_no_capable(&requiring(&[("gpu", "true")]), &[labelled(&[])], 1).unwrap();
        assert!(why.contains("no online node has any label"), "{why}");
    }

    #[test]
    fn requirements_are_checked_in_order() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(unmet(&wasm_spec(64 * MIB), &cap(None, 128 * MIB)), None);
        assert_eq!(
            unmet(&wasm_spec(256 * MIB), &cap(None, 128 * MIB)),
            Some(Requirement::Memory(256 * MIB))
        );
        assert_eq!(
            unmet(&docker_spec(&d), &cap(None, 128 * MIB)),
            Some(Requirement::Executor("docker"))
        );
        assert_eq!(
            unmet(&docker_spec(&d), &cap(Some(&["sha256:other"]), 128 * MIB)),
            Some(Requirement::Image(d.clone()))
        );
        assert_eq!(unmet(&docker_spec(&d), &cap(Some(&[&d]), 128 * MIB)), None);
        let mut big_cpu = wasm_spec(MIB);
        big_cpu.resources.milli_cpus = 3000;
        assert_eq!(
            unmet(&big_cpu, &cap(None, 128 * MIB)),
            Some(Requirement::Cpu(3000))
        );
        let mut no_wasm = cap(None, 128 * MIB);
        no_wasm.executors.remove("wasm");
        assert_eq!(
            unmet(&wasm_spec(MIB), &no_wasm),
            Some(Requirement::Executor("wasm"))
        );
    }

    #[test]
    fn a_node_that_fetches_images_can_run_a_job_that_names_the_manifest() {
        let d = format!("sha256:{}", "c".repeat(64));
        let mut fetcher = cap(Some(&[]), 128 * MIB);
        fetcher.image_fetch = true;
        // Without a manifest there is nothing to fetch the image by.
        assert_eq!(
            unmet(&docker_spec(&d), &fetcher),
            Some(Requirement::Image(d.clone()))
        );
        let mut with_manifest = docker_spec(&d);
        if let ExecutorSpec::Docker { manifest, .. } = &mut with_manifest.executor {
            *manifest = Some(ContentId::of(b"manifest"));
        }
        assert_eq!(unmet(&with_manifest, &fetcher), None);
        // A node that does not fetch still needs the image itself.
        fetcher.image_fetch = false;
        assert_eq!(
            unmet(&with_manifest, &fetcher),
            Some(Requirement::Image(d.clone()))
        );
        // Docker itself is still required.
        let mut no_docker = cap(None, 128 * MIB);
        no_docker.image_fetch = true;
        assert_eq!(
            unmet(&with_manifest, &no_docker),
            Some(Requirement::Executor("docker"))
        );
    }

    #[test]
    fn the_explanation_names_the_requirement_nobody_meets() {
        let d = format!("sha256:{}", "b".repeat(64));
        let nodes = [cap(Some(&["sha256:x"]), 128 * MIB), cap(None, 128 * MIB)];
        let why = explain_no_capable(&docker_spec(&d), &nodes, 4).unwrap();
        assert!(why.contains(&d), "{why}");
        assert!(why.contains("2 online node(s) of 4 known"), "{why}");
        let why = explain_no_capable(&wasm_spec(1024 * MIB), &nodes, 2).unwrap();
        assert!(why.contains("1024 MiB of memory"), "{why}");
        assert!(why.contains("the most any offers is 128 MiB"), "{why}");
        assert_eq!(explain_no_capable(&wasm_spec(MIB), &nodes, 2), None);
        let why = explain_no_capable(&wasm_spec(MIB), &[], 3).unwrap();
        assert!(why.contains("knows 3 other node(s)"), "{why}");
    }

    fn offer(key: &NodeKey, spec_key: &NodeKey, ts: u64, nonce: u64) -> Vec<u8> {
        key.sign(&JobOffer {
            spec: spec_key.sign(&wasm_spec(MIB)),
            timestamp_ms: ts,
            nonce,
            bid_deadline_ms: ts + 1000,
        })
        .encode()
    }

    #[test]
    fn offers_are_checked_and_replays_refused() {
        let key = NodeKey::generate();
        let me = key.peer_id();
        let now = 10_000_000;
        let mut guard = ReplayGuard::new(16);
        let ok = offer(&key, &key, now, 1);
        let c = check_offer(&ok, Some(me), now, &mut guard).unwrap();
        assert_eq!(c.submitter, me);
        assert_eq!(c.job, c.spec.id());
        assert!(matches!(
            check_offer(&ok, Some(me), now, &mut guard),
            Err(CheckError::Freshness(f)) if matches!(*f, FreshnessError::Replayed { .. })
        ));
        let other = NodeKey::generate();
        assert!(matches!(
            check_offer(
                &offer(&key, &key, now, 2),
                Some(other.peer_id()),
                now,
                &mut guard
            ),
            Err(CheckError::SignerMismatch { .. })
        ));
        assert!(matches!(
            check_offer(&offer(&key, &other, now, 3), Some(me), now, &mut guard),
            Err(CheckError::SignerMismatch { .. })
        ));
        assert!(matches!(
            check_offer(&offer(&key, &key, now, 4), None, now, &mut guard),
            Err(CheckError::NoAuthor)
        ));
        assert!(matches!(
            check_offer(b"garbage", Some(me), now, &mut guard),
            Err(CheckError::Decode(_))
        ));
        assert!(matches!(
            check_offer(&offer(&key, &key, 1, 5), Some(me), now, &mut guard),
            Err(CheckError::Freshness(_))
        ));
    }

    #[test]
    fn bids_must_come_from_their_signer_for_this_job() {
        let key = NodeKey::generate();
        let job = ContentId::of(b"job");
        let bid = key.sign(&Bid {
            job,
            running_jobs: 0,
            max_jobs: 2,
            queue_len: 0,
            load_permille: 0,
        });
        assert!(check_bid(&bid, key.peer_id(), &job).is_ok());
        assert!(check_bid(&bid, PeerId::random(), &job).is_err());
        assert!(check_bid(&bid, key.peer_id(), &ContentId::of(b"other")).is_err());
    }

    #[test]
    fn assignments_must_be_for_this_node_and_not_expired() {
        let sub = NodeKey::generate();
        let me = PeerId::random();
        let now = 5_000;
        let make = |executor, deadline_ms| {
            sub.sign(&Assignment {
                spec: sub.sign(&wasm_spec(MIB)),
                executor,
                attempt: 0,
                deadline_ms,
            })
        };
        let ok = check_assignment(&make(me, now + 10), sub.peer_id(), me, now).unwrap();
        assert_eq!(ok.submitter, sub.peer_id());
        assert!(
            check_assignment(&make(PeerId::random(), now + 10), sub.peer_id(), me, now).is_err()
        );
        assert!(check_assignment(&make(me, now), sub.peer_id(), me, now).is_err());
        assert!(check_assignment(&make(me, now + 10), PeerId::random(), me, now).is_err());
    }
}
