//! Deliberate misbehaviour for testnets (`agora daemon --testnet --fault
//! MODE`): executors that lie, collude, stall or drop work, so the quorum
//! and reputation can be exercised against real byzantine nodes. Never
//! active outside a testnet: the daemon refuses the flag without
//! `--testnet`.

use std::str::FromStr;
use std::time::Duration;

use agora_protocol::rpc::Response;
use agora_protocol::{ContentId, PeerId, ResultBundle};
use serde_bytes::ByteBuf;

/// How long a `slow` executor sits on a finished result.
pub const SLOW_DELAY: Duration = Duration::from_secs(5);
/// Share of jobs a `flaky` executor answers wrongly, in thousandths.
pub const FLAKY_PERMILLE: u64 = 300;

/// A way to misbehave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every result is wrong, differently from any other liar.
    Lie,
    /// Every member of the group returns the same wrong result.
    Collude(String),
    /// Results are right but late.
    Slow,
    /// Assignments are accepted and never answered.
    Drop,
    /// Some results are wrong.
    Flaky,
    /// The first N results are right, every later one is wrong: a node
    /// that earns trust, then abuses it.
    Sleeper(u64),
    /// Runs jobs honestly but serves every blob chunk with its bytes
    /// flipped: a provider of corrupted (or substituted) image layers.
    CorruptBlobs,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lie" => Ok(Self::Lie),
            "slow" => Ok(Self::Slow),
            "drop" => Ok(Self::Drop),
            "flaky" => Ok(Self::Flaky),
            "corrupt-blobs" => Ok(Self::CorruptBlobs),
            other => {
                if let Some(g) = other.strip_prefix("collude=") {
                    if !g.is_empty() && g.len() <= 64 {
                        return Ok(Self::Collude(g.to_string()));
                    }
                }
                if let Some(n) = other.strip_prefix("sleeper=") {
                    if let Ok(n) = n.parse() {
                        return Ok(Self::Sleeper(n));
                    }
                }
                Err(format!(
                    "unknown fault mode {other:?}: lie, collude=GROUP, slow, drop, flaky, sleeper=N or corrupt-blobs"
                ))
            }
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lie => f.write_str("lie"),
            Self::Collude(g) => write!(f, "collude={g}"),
            Self::Slow => f.write_str("slow"),
            Self::Drop => f.write_str("drop"),
            Self::Flaky => f.write_str("flaky"),
            Self::Sleeper(n) => write!(f, "sleeper={n}"),
            Self::CorruptBlobs => f.write_str("corrupt-blobs"),
        }
    }
}

/// What a faulty executor does with an honest result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tampered {
    /// Report this bundle (possibly changed).
    Report(ResultBundle),
    /// Report it after a delay.
    Delay(ResultBundle, Duration),
    /// Never report.
    Withhold,
}

impl Fault {
    /// Applies the fault to the honest `bundle` of `job` run by `me` as
    /// its `nth` result (from 0) since start. Deterministic: the same job
    /// gives the same wrong answer.
    pub fn tamper(
        &self,
        job: &ContentId,
        me: &PeerId,
        nth: u64,
        mut bundle: ResultBundle,
    ) -> Tampered {
        let wrong = |b: &mut ResultBundle, tag: String| {
            b.stdout = ByteBuf::from(format!("agora fault: {tag}\n").into_bytes());
        };
        match self {
            Self::Lie => {
                wrong(&mut bundle, format!("lie by {me}"));
                Tampered::Report(bundle)
            }
            Self::Collude(group) => {
                wrong(&mut bundle, format!("collusion of {group}"));
                Tampered::Report(bundle)
            }
            Self::Slow => Tampered::Delay(bundle, SLOW_DELAY),
            Self::Drop => Tampered::Withhold,
            Self::Flaky => {
                let roll = u64::from_le_bytes(
                    ContentId::of(&[job.as_bytes().as_slice(), &me.to_bytes()].concat()).as_bytes()
                        [..8]
                        .try_into()
                        .unwrap_or([0; 8]),
                ) % 1000;
                if roll < FLAKY_PERMILLE {
                    wrong(&mut bundle, format!("flaky {me}"));
                }
                Tampered::Report(bundle)
            }
            Self::Sleeper(honest) => {
                if nth >= *honest {
                    wrong(&mut bundle, format!("sleeper {me}"));
                }
                Tampered::Report(bundle)
            }
            Self::CorruptBlobs => Tampered::Report(bundle),
        }
    }

    /// Applies the fault to a blob chunk this node serves.
    pub fn tamper_chunk(&self, chunk: Response) -> Response {
        match (self, chunk) {
            (Self::CorruptBlobs, Response::BlobChunk { total, mut data }) => {
                data.iter_mut().for_each(|b| *b ^= 0xff);
                Response::BlobChunk { total, data }
            }
            (_, chunk) => chunk,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn honest() -> ResultBundle {
        ResultBundle {
            exit_code: 0,
            stdout: ByteBuf::from(b"42\n".to_vec()),
            stderr: ByteBuf::new(),
            outputs: BTreeMap::new(),
            duration_ms: 1,
        }
    }

    fn hash(t: Tampered) -> ContentId {
        match t {
            Tampered::Report(b) | Tampered::Delay(b, _) => b.result_hash(),
            Tampered::Withhold => panic!("withheld"),
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [
            "lie",
            "slow",
            "drop",
            "flaky",
            "collude=red",
            "sleeper=3",
            "corrupt-blobs",
        ] {
            assert_eq!(m.parse::<Fault>().unwrap().to_string(), m);
        }
        assert!("collude=".parse::<Fault>().is_err());
        assert!("honest".parse::<Fault>().is_err());
        assert!("sleeper=".parse::<Fault>().is_err());
        assert!("sleeper=-1".parse::<Fault>().is_err());
    }

    #[test]
    fn liars_disagree_with_the_truth_and_each_other_colluders_agree() {
        let job = ContentId::of(b"job");
        let (a, b) = (PeerId::random(), PeerId::random());
        let truth = honest().result_hash();
        let la = hash(Fault::Lie.tamper(&job, &a, 0, honest()));
        let lb = hash(Fault::Lie.tamper(&job, &b, 0, honest()));
        assert!(la != truth && lb != truth && la != lb);
        let c = Fault::Collude("g".into());
        let ca = hash(c.tamper(&job, &a, 0, honest()));
        assert_eq!(ca, hash(c.tamper(&job, &b, 0, honest())));
        assert_ne!(ca, truth);
        assert_eq!(hash(Fault::Slow.tamper(&job, &a, 0, honest())), truth);
        assert_eq!(
            Fault::Drop.tamper(&job, &a, 0, honest()),
            Tampered::Withhold
        );
    }

    #[test]
    fn flaky_is_wrong_sometimes() {
        let me = PeerId::random();
        let truth = honest().result_hash();
        let wrong = (0..1000u32)
            .filter(|i| {
                hash(Fault::Flaky.tamper(&ContentId::of(&i.to_le_bytes()), &me, 0, honest()))
                    != truth
            })
            .count();
        assert!((150..450).contains(&wrong), "{wrong} of 1000 wrong");
    }

    #[test]
    fn a_sleeper_is_honest_for_its_first_results_only() {
        let (job, me) = (ContentId::of(b"job"), PeerId::random());
        let truth = honest().result_hash();
        let s = Fault::Sleeper(2);
        assert_eq!(hash(s.tamper(&job, &me, 0, honest())), truth);
        assert_eq!(hash(s.tamper(&job, &me, 1, honest())), truth);
        assert_ne!(hash(s.tamper(&job, &me, 2, honest())), truth);
        assert_ne!(hash(s.tamper(&job, &me, 50, honest())), truth);
    }

    #[test]
    fn a_corrupting_provider_flips_chunks_but_runs_jobs_honestly() {
        let f = Fault::CorruptBlobs;
        let job = ContentId::of(b"j");
        let me = PeerId::random();
        assert_eq!(
            hash(f.tamper(&job, &me, 0, honest())),
            honest().result_hash()
        );
        let chunk = Response::BlobChunk {
            total: 2,
            data: ByteBuf::from(vec![0x00, 0x0f]),
        };
        match f.tamper_chunk(chunk) {
            Response::BlobChunk { total, data } => {
                assert_eq!(total, 2);
                assert_eq!(data.as_slice(), &[0xff, 0xf0]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Fault::Lie.tamper_chunk(Response::Ack), Response::Ack);
    }
}
