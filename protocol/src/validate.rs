//! Validation: turning a [`JobSpec`] into a [`ValidatedSpec`], and judging
//! whether a timestamped message is fresh or a replay.

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::PeerId;

use crate::job::{ExecutorSpec, JobSpec};
use crate::limits::{self, Bounded, LimitError};
use crate::units::{human_bytes, human_duration_ms};

/// Why a job spec is not acceptable. The text names the `agora` flag
/// that sets the part at fault (`--timeout`), in the flag's units, since
/// that is what the user typed; [`SpecField::spec_path`] has the wire name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A size, count or amount is over its protocol limit.
    #[error("{}", limit_text(.0))]
    Limit(#[from] LimitError),
    /// n and k break `1 <= k <= n <= 32` or `2k > n`.
    #[error("replication -k {k} of -n {n} is invalid: need 1 <= k <= n <= {max} and 2k > n (so two different results can never both reach quorum)", max = limits::MAX_REPLICATION)]
    Replication {
        /// Executors.
        n: u8,
        /// Agreement threshold.
        k: u8,
    },
    /// A resource value is out of range.
    #[error("{field} must be between {} and {}, got {}", .field.show(*.min), .field.show(*.max), .field.show(*.actual))]
    OutOfRange {
        /// Which resource.
        field: SpecField,
        /// Value given.
        actual: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A name or path is unusable.
    #[error("{field} '{value}' is invalid: {why}")]
    BadName {
        /// Which part of the spec.
        field: SpecField,
        /// The offending value (truncated for display).
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A part of a job spec a user chooses. Displayed as the `agora run` /
/// `agora exec` flag or argument that sets it, because spec field names
/// (`resources.timeout_ms`) mean nothing to someone who typed `--timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecField {
    /// `resources.timeout_ms`, set by `--timeout`.
    Timeout,
    /// `resources.memory_bytes`, set by `--memory`.
    Memory,
    /// `resources.milli_cpus`, set by `--cpus`.
    Cpus,
    /// `resources.max_output_bytes`, set by `--max-output`.
    MaxOutput,
    /// `resources.fuel`, set by `--fuel`.
    Fuel,
    /// `executor.image`, the IMAGE argument.
    Image,
    /// `executor.digest`, the image id IMAGE resolves to.
    Digest,
    /// `args`, the program arguments after `--`.
    Args,
    /// `env`, set by `--env`.
    Env,
    /// `inputs`, set by `--input`.
    Inputs,
    /// `outputs`, set by `--output`.
    Outputs,
    /// `requires`, set by `--require`.
    Requires,
}

impl SpecField {
    /// The flag or argument that sets this part.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Timeout => "--timeout",
            Self::Memory => "--memory",
            Self::Cpus => "--cpus",
            Self::MaxOutput => "--max-output",
            Self::Fuel => "--fuel",
            Self::Image => "IMAGE",
            Self::Digest => "the image id of IMAGE",
            Self::Args => "the program arguments (after --)",
            Self::Env => "--env",
            Self::Inputs => "--input",
            Self::Outputs => "--output",
            Self::Requires => "--require",
        }
    }

    /// The field's path in a [`JobSpec`], as [`LimitError`] names it.
    pub fn spec_path(self) -> &'static str {
        match self {
            Self::Timeout => "spec.resources.timeout_ms",
            Self::Memory => "spec.resources.memory_bytes",
            Self::Cpus => "spec.resources.milli_cpus",
            Self::MaxOutput => "spec.resources.max_output_bytes",
            Self::Fuel => "spec.resources.fuel",
            Self::Image => "spec.executor.image",
            Self::Digest => "spec.executor.digest",
            Self::Args => "spec.args",
            Self::Env => "spec.env",
            Self::Requires => "spec.requires",
            Self::Inputs => "spec.inputs",
            Self::Outputs => "spec.outputs",
        }
    }

    /// A value of this field in the unit its flag takes.
    pub fn show(self, v: u64) -> String {
        match self {
            Self::Timeout => human_duration_ms(v),
            Self::Memory | Self::MaxOutput => human_bytes(v),
            Self::Cpus => format!("{}", v as f64 / 1000.0),
            _ => v.to_string(),
        }
    }

    /// The field a [`LimitError`] is about, when a user sets it.
    fn of_spec_path(path: &str) -> Option<Self> {
        const ALL: [SpecField; 11] = [
            SpecField::Timeout,
            SpecField::Memory,
            SpecField::Cpus,
            SpecField::MaxOutput,
            SpecField::Fuel,
            SpecField::Image,
            SpecField::Digest,
            SpecField::Args,
            SpecField::Env,
            SpecField::Inputs,
            SpecField::Outputs,
        ];
        ALL.into_iter().find(|f| f.spec_path() == path)
    }
}

impl std::fmt::Display for SpecField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.flag())
    }
}

/// A [`LimitError`] on a spec, led by the flag that set the field; the
/// spec path stays in brackets for API clients that built the JSON.
fn limit_text(e: &LimitError) -> String {
    match SpecField::of_spec_path(e.field) {
        Some(f) => format!(
            "{f}: {} exceeds the limit of {} ({})",
            f.show(e.actual),
            f.show(e.limit),
            e.field
        ),
        None => e.to_string(),
    }
}

/// A spec that passed [`validate`]. Only the validator builds one, so code
/// that holds a `ValidatedSpec` need not check again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSpec(JobSpec);

impl ValidatedSpec {
    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.0
    }

    /// Gives the spec back.
    pub fn into_inner(self) -> JobSpec {
        self.0
    }
}

fn range(field: SpecField, actual: u64, min: u64, max: u64) -> Result<(), SpecError> {
    if actual < min || actual > max {
        return Err(SpecError::OutOfRange {
            field,
            actual,
            min,
            max,
        });
    }
    Ok(())
}

fn bad(field: SpecField, value: &str, why: &'static str) -> SpecError {
    SpecError::BadName {
        field,
        value: value.chars().take(80).collect(),
        why,
    }
}

/// Checks a relative path (an input's place under `/in`, an output's
/// under `/out`): no leading `/`, no empty, `.` or `..` component, no NUL
/// or `\\`.
fn check_relative_path(field: SpecField, path: &str) -> Result<(), SpecError> {
    let under = match field {
        SpecField::Inputs => "must be a relative path under /in",
        _ => "must be a relative path under /out",
    };
    if path.is_empty() || path.starts_with('/') {
        return Err(bad(field, path, under));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(bad(field, path, "must not contain NUL or '\\'"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            field,
            path,
            "must not contain empty, '.' or '..' components",
        ));
    }
    Ok(())
}

/// Checks the input names: relative paths (a reduce step sees item i's
/// outputs under `i/`), none both a file and a directory.
fn check_inputs<'a>(names: impl Iterator<Item = &'a String> + Clone) -> Result<(), SpecError> {
    let all: BTreeSet<&str> = names.clone().map(String::as_str).collect();
    for name in names {
        check_relative_path(SpecField::Inputs, name)?;
        let dir = format!("{name}/");
        if all
            .range(dir.as_str()..)
            .next()
            .is_some_and(|n| n.starts_with(&dir))
        {
            return Err(bad(
                SpecField::Inputs,
                name,
                "is both a file and a directory of other inputs",
            ));
        }
    }
    Ok(())
}

/// Validates a spec against the protocol's rules.
pub fn validate(spec: JobSpec) -> Result<ValidatedSpec, SpecError> {
    let r = spec.replication;
    if r.k < 1 || r.k > r.n || r.n > limits::MAX_REPLICATION || 2 * u16::from(r.k) <= u16::from(r.n)
    {
        return Err(SpecError::Replication { n: r.n, k: r.k });
    }
    let res = &spec.resources;
    range(
        SpecField::Timeout,
        res.timeout_ms,
        limits::MIN_TIMEOUT_MS,
        limits::MAX_TIMEOUT_MS,
    )?;
    range(
        SpecField::Memory,
        res.memory_bytes,
        1024 * 1024,
        limits::MAX_MEMORY_BYTES,
    )?;
    range(
        SpecField::Cpus,
        res.milli_cpus.into(),
        10,
        limits::MAX_MILLI_CPUS.into(),
    )?;
    range(
        SpecField::MaxOutput,
        res.max_output_bytes,
        1,
        limits::MAX_OUTPUT_BYTES,
    )?;
    if let Some(fuel) = res.fuel {
        range(SpecField::Fuel, fuel, 1, u64::MAX)?;
    }
    // After the resource ranges, which are as strict, so a resource out of
    // range is reported in its flag's units rather than as a raw limit.
    spec.check_bounds()?;
    match &spec.executor {
        ExecutorSpec::Wasm { .. } => {}
        ExecutorSpec::Docker { image, digest, .. } => {
            if image.trim().is_empty() {
                return Err(bad(SpecField::Image, image, "must not be empty"));
            }
            let ok = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(bad(
                    SpecField::Digest,
                    digest,
                    "must be an image id of the form sha256:<64 hex digits>",
                ));
            }
            if res.fuel.is_some() {
                return Err(bad(
                    SpecField::Fuel,
                    "set",
                    "fuel applies to Wasm jobs only",
                ));
            }
        }
    }
    for a in &spec.args {
        if a.contains('\0') {
            return Err(bad(SpecField::Args, a, "must not contain NUL"));
        }
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(bad(
                SpecField::Env,
                k,
                "names must be non-empty without '=' or NUL",
            ));
        }
        if v.contains('\0') {
            return Err(bad(SpecField::Env, k, "values must not contain NUL"));
        }
    }
    check_inputs(spec.inputs.keys())?;
    // An empty key matches no label a node can advertise (the daemon
    // refuses one), so the job could never run anywhere.
    if spec.requires.contains_key("") {
        return Err(bad(SpecField::Requires, "", "label keys must not be empty"));
    }
    let mut seen = BTreeSet::new();
    for path in &spec.outputs {
        check_relative_path(SpecField::Outputs, path)?;
        if !seen.insert(path.as_str()) {
            return Err(bad(SpecField::Outputs, path, "is declared twice"));
        }
    }
    Ok(ValidatedSpec(spec))
}

/// How old a timestamped message may be before it is stale (5 minutes).
pub const MAX_MESSAGE_AGE_MS: u64 = 5 * 60 * 1000;
/// How far in the future a timestamp may be, for clock skew (30 s).
pub const MAX_CLOCK_SKEW_MS: u64 = 30 * 1000;

/// Why a timestamped message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshnessError {
    /// Older than the acceptance window.
    #[error("stale message: {age_ms} ms old (limit {limit_ms} ms)")]
    Stale {
        /// Age at receipt.
        age_ms: u64,
        /// The window.
        limit_ms: u64,
    },
    /// Further in the future than clock skew explains.
    #[error("message timestamp is {ahead_ms} ms in the future")]
    FromTheFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The same (signer, nonce) was already accepted.
    #[error("replayed message (nonce {nonce} from {signer} already seen)")]
    Replayed {
        /// Signer.
        signer: PeerId,
        /// Nonce seen before.
        nonce: u64,
    },
}

/// Checks that `timestamp_ms` is inside the acceptance window around `now_ms`.
pub fn check_fresh(timestamp_ms: u64, now_ms: u64) -> Result<(), FreshnessError> {
    if timestamp_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(FreshnessError::FromTheFuture {
            ahead_ms: timestamp_ms - now_ms,
        });
    }
    let age_ms = now_ms.saturating_sub(timestamp_ms);
    if age_ms > MAX_MESSAGE_AGE_MS {
        return Err(FreshnessError::Stale {
            age_ms,
            limit_ms: MAX_MESSAGE_AGE_MS,
        });
    }
    Ok(())
}

/// Remembers the (signer, nonce) of every fresh message it accepted, so a
/// replay inside the freshness window is caught; anything older is caught
/// by [`check_fresh`]. Bounded: when full it forgets the oldest entry and
/// from then on treats anything no newer than it as stale, so forgetting
/// never lets a replay through.
#[derive(Debug)]
pub struct ReplayGuard {
    /// Accepted (signer, nonce) -> timestamp.
    seen: BTreeMap<(PeerId, u64), u64>,
    /// The same entries ordered by timestamp, for expiry.
    by_time: BTreeSet<(u64, PeerId, u64)>,
    /// Timestamps at or below this are refused (raised by eviction).
    floor_ms: u64,
    /// Most entries kept.
    capacity: usize,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: BTreeMap::new(),
            by_time: BTreeSet::new(),
            floor_ms: 0,
            capacity: capacity.max(1),
        }
    }

    /// Number of messages remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Accepts a message once: fresh and never seen before.
    pub fn check_and_record(
        &mut self,
        signer: PeerId,
        nonce: u64,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), FreshnessError> {
        check_fresh(timestamp_ms, now_ms)?;
        if timestamp_ms <= self.floor_ms {
            return Err(FreshnessError::Stale {
                age_ms: now_ms.saturating_sub(timestamp_ms),
                limit_ms: now_ms.saturating_sub(self.floor_ms),
            });
        }
        if self.seen.contains_key(&(signer, nonce)) {
            return Err(FreshnessError::Replayed { signer, nonce });
        }
        self.expire(now_ms);
        while self.seen.len() >= self.capacity {
            let Some(oldest) = self.by_time.pop_first() else {
                break;
            };
            self.seen.remove(&(oldest.1, oldest.2));
            self.floor_ms = self.floor_ms.max(oldest.0);
        }
        if timestamp_ms <= self.floor_ms {
            // Eviction just raised the floor past this message.
            return Err(FreshnessError::Stale {
                age_ms: now_ms.saturating_sub(timestamp_ms),
                limit_ms: now_ms.saturating_sub(self.floor_ms),
            });
        }
        self.seen.insert((signer, nonce), timestamp_ms);
        self.by_time.insert((timestamp_ms, signer, nonce));
        Ok(())
    }

    /// Drops entries that [`check_fresh`] would refuse anyway.
    fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(MAX_MESSAGE_AGE_MS);
        while let Some(&(ts, p, n)) = self.by_time.first() {
            if ts >= cutoff {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&(p, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContentId, NodeKey, Replication, Resources};

    fn spec() -> JobSpec {
        JobSpec {
            executor: ExecutorSpec::Wasm {
                module: ContentId::of(b"module"),
            },
            args: vec!["a".into()],
            env: BTreeMap::new(),
            stdin: None,
            inputs: BTreeMap::new(),
            outputs: vec!["result.txt".into()],
            resources: Resources::default(),
            replication: Replication::default(),
            created_at_ms: 1,
            nonce: 2,
            requires: BTreeMap::new(),
        }
    }

    #[test]
    fn replication_rule_is_exactly_1_le_k_le_n_le_32_and_2k_gt_n() {
        for n in 0..=40u8 {
            for k in 0..=40u8 {
                let mut s = spec();
                s.replication = Replication { n, k };
                let expected = 1 <= k && k <= n && n <= 32 && 2 * u16::from(k) > u16::from(n);
                let got = validate(s);
                assert_eq!(got.is_ok(), expected, "n={n} k={k}: {got:?}");
                if !expected && n <= 32 {
                    assert_eq!(got, Err(SpecError::Replication { n, k }));
                }
            }
        }
    }

    #[test]
    fn output_paths_must_stay_under_out() {
        for bad_path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            let mut s = spec();
            s.outputs = vec![bad_path.into()];
            assert!(
                matches!(validate(s), Err(SpecError::BadName { .. })),
                "{bad_path:?} accepted"
            );
        }
        let mut s = spec();
        s.outputs = vec!["dir/file.txt".into(), "x".into()];
        assert!(validate(s).is_ok());
        let mut s = spec();
        s.outputs = vec!["x".into(), "x".into()];
        assert!(validate(s).is_err(), "duplicate output accepted");
    }

    #[test]
    fn input_names_env_and_args() {
        for bad_name in ["../x", "/x", "a//b", "a/./b", "", "a\\b", "x/"] {
            let mut s = spec();
            s.inputs.insert(bad_name.into(), ContentId::of(b""));
            assert!(validate(s).is_err(), "{bad_name:?} accepted");
        }
        let mut s = spec();
        for ok in ["0.out", "0/res/a.txt", "0/b", "10.out"] {
            s.inputs.insert(ok.into(), ContentId::of(b""));
        }
        assert!(validate(s).is_ok());
        // A name may not be a file and hold other inputs at once.
        let mut s = spec();
        s.inputs.insert("0".into(), ContentId::of(b""));
        s.inputs.insert("0/a".into(), ContentId::of(b""));
        assert!(validate(s).is_err());
        let mut s = spec();
        s.env.insert("A=B".into(), "v".into());
        assert!(validate(s).is_err());
        let mut s = spec();
        s.args.push("nul\0".into());
        assert!(validate(s).is_err());
        let mut s = spec();
        s.args = vec!["x".into(); limits::MAX_ARGS + 1];
        assert!(matches!(validate(s), Err(SpecError::Limit(_))));
    }

    #[test]
    fn required_labels_are_bounded_with_non_empty_keys() {
        let mut s = spec();
        s.requires.insert("gpu".into(), "true".into());
        s.requires.insert("model".into(), String::new());
        assert!(validate(s).is_ok());
        let mut s = spec();
        s.requires.insert(String::new(), "true".into());
        assert!(
            matches!(
                validate(s),
                Err(SpecError::BadName {
                    field: SpecField::Requires,
                    ..
                })
            ),
            "empty key accepted"
        );
        let mut s = spec();
        s.requires = (0..=limits::MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(matches!(validate(s), Err(SpecError::Limit(_))));
        let mut s = spec();
        s.requires
            .insert("gpu".into(), "x".repeat(limits::MAX_STRING_BYTES + 1));
        assert!(matches!(validate(s), Err(SpecError::Limit(_))));
        let mut s = spec();
        s.requires
            .insert("k".repeat(limits::MAX_STRING_BYTES + 1), "v".into());
        assert!(matches!(validate(s), Err(SpecError::Limit(_))));
    }

    #[test]
    fn a_spec_without_requirements_encodes_as_before() {
        // The field is left out when empty, so job ids made before it
        // existed stay the same; with requirements it is carried.
        let plain = crate::codec::encode(&spec());
        assert!(!plain.windows(8).any(|w| w == b"requires"));
        let mut s = spec();
        s.requires.insert("gpu".into(), "true".into());
        let bytes = crate::codec::encode(&s);
        let back: JobSpec = crate::codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!(back, s);
        let old: JobSpec = crate::codec::decode(&plain, 1 << 20).unwrap();
        assert_eq!(old, spec());
    }

    #[test]
    fn resources_in_range() {
        let cases: [fn(&mut Resources); 5] = [
            |r| r.timeout_ms = 0,
            |r| r.timeout_ms = limits::MAX_TIMEOUT_MS + 1,
            |r| r.memory_bytes = 1000,
            |r| r.max_output_bytes = 0,
            |r| r.fuel = Some(0),
        ];
        for f in cases {
            let mut s = spec();
            f(&mut s.resources);
            assert!(validate(s).is_err());
        }
    }

    #[test]
    fn errors_name_the_flag_in_its_units() {
        let mut s = spec();
        s.resources.timeout_ms = 30 * 86_400_000 + 3_600_000;
        let e = validate(s).unwrap_err().to_string();
        assert!(e.contains("--timeout"), "{e}");
        assert!(e.contains("30d 1h") && e.contains("1d"), "{e}");
        assert!(!e.contains("timeout_ms"), "{e}");
        let mut s = spec();
        s.resources.memory_bytes = 1000;
        let e = validate(s).unwrap_err().to_string();
        assert!(e.contains("--memory") && e.contains("1.0 MiB"), "{e}");
        assert!(!e.contains("memory_bytes"), "{e}");
        let mut s = spec();
        s.env.insert("A=B".into(), "v".into());
        assert!(validate(s).unwrap_err().to_string().starts_with("--env"));
        let mut s = spec();
        s.replication = Replication { n: 4, k: 2 };
        let e = validate(s).unwrap_err().to_string();
        assert!(e.contains("-k 2 of -n 4"), "{e}");
        let mut s = spec();
        s.env = (0..=limits::MAX_ENV)
            .map(|i| (format!("K{i}"), String::new()))
            .collect();
        let e = validate(s).unwrap_err().to_string();
        assert!(e.starts_with("--env: "), "{e}");
    }

    #[test]
    fn docker_needs_a_pinned_digest_and_no_fuel() {
        let digest = format!("sha256:{}", ContentId::of(b"img").to_hex());
        let mut s = spec();
        s.executor = ExecutorSpec::Docker {
            image: "busybox".into(),
            digest: digest.clone(),
            manifest: None,
        };
        assert!(validate(s.clone()).is_ok());
        s.resources.fuel = Some(10);
        assert!(validate(s).is_err());
        for bad_digest in ["", "busybox", "sha256:abc", &digest[..70]] {
            let mut s = spec();
            s.executor = ExecutorSpec::Docker {
                image: "busybox".into(),
                digest: bad_digest.into(),
                manifest: None,
            };
            assert!(validate(s).is_err(), "{bad_digest} accepted");
        }
    }

    #[test]
    fn freshness_window() {
        let now = 10_000_000;
        assert!(check_fresh(now, now).is_ok());
        assert!(check_fresh(now - MAX_MESSAGE_AGE_MS, now).is_ok());
        assert!(matches!(
            check_fresh(now - MAX_MESSAGE_AGE_MS - 1, now),
            Err(FreshnessError::Stale { .. })
        ));
        assert!(check_fresh(now + MAX_CLOCK_SKEW_MS, now).is_ok());
        assert!(matches!(
            check_fresh(now + MAX_CLOCK_SKEW_MS + 1, now),
            Err(FreshnessError::FromTheFuture { .. })
        ));
    }

    #[test]
    fn replay_guard_refuses_repeats_and_stays_bounded() {
        let a = NodeKey::from_secret([1; 32]).peer_id();
        let b = NodeKey::from_secret([2; 32]).peer_id();
        let now = 10_000_000;
        let mut g = ReplayGuard::new(3);
        g.check_and_record(a, 1, now, now).unwrap();
        assert!(matches!(
            g.check_and_record(a, 1, now, now),
            Err(FreshnessError::Replayed { .. })
        ));
        // Same nonce from another signer is a different message.
        g.check_and_record(b, 1, now, now).unwrap();
        g.check_and_record(a, 2, now + 1, now + 1).unwrap();
        // Full: the oldest entries are forgotten, and the floor rises so
        // that forgetting cannot readmit them.
        g.check_and_record(a, 3, now + 2, now + 2).unwrap();
        assert!(g.len() <= 3);
        assert!(g.check_and_record(a, 1, now, now + 3).is_err());
        assert!(g.check_and_record(b, 1, now, now + 3).is_err());
        // Entries expire with the freshness window.
        let later = now + MAX_MESSAGE_AGE_MS + 10;
        g.check_and_record(b, 9, later, later).unwrap();
        assert!(g.len() <= 3);
    }
}
