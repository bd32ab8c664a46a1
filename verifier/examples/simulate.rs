//! The full-size verification simulation: 1,000 nodes with 10%, 20% and
//! 30% liars, fixed k-of-n with and without reputation, and adaptive
//! replication; two colluders among 8 nodes; and the adaptive trade-off
//! against liars that lie only sometimes or only once trusted. Prints the
//! `simulation` section of docs/benchmarks.md (markdown) on stdout. With
//! `--attacks` it prints the `attacks` section instead: framers and Sybils
//! gossiping verdicts into the submitter's book, beside a control run.
//!
//! ```text
//! cargo run --release -p agora-verifier --example simulate [-- --jobs N --nodes N --seeds N]
//! cargo run --release -p agora-verifier --example simulate -- --attacks [--jobs N --nodes N]
//! ```
//!
//! Every number is deterministic: the same flags print the same tables on
//! any machine; only the elapsed time differs.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use agora_verifier::sim::{
    self, Attack, Liars, Replication, Selection, SimConfig, SimReport, Strategy,
};
use agora_verifier::{AdaptivePolicy, SelectConfig};

/// Sizes, from the command line.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Executors in the large runs.
    nodes: usize,
    /// Jobs per large run.
    jobs: u64,
    /// Seeds (runs of `SMALL_JOBS` jobs) per 8-node row.
    seeds: u64,
    /// Whether to run the attack rows instead of the verification tables.
    attacks: bool,
}

/// Framers and Sybils in the attack rows.
const FRAMERS: usize = 10;
const SYBILS: usize = 50;
/// Verdicts the attackers gossip per job in the attack rows.
const ATTACK_VERDICTS_PER_JOB: u32 = 10;

/// Jobs per 8-node run.
const SMALL_JOBS: u64 = 1000;

/// One row to compute: a label and the runs whose counts are summed.
struct Experiment {
    /// Which table.
    table: Table,
    /// Cells before the measured ones.
    label: Vec<String>,
    /// Runs summed into the row.
    runs: Vec<SimConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// 1,000 nodes, liars that always lie.
    Main,
    /// 8 nodes, 2 colluders.
    Small,
    /// Adaptive policies against cleverer liars.
    TradeOff,
    /// One adaptive run four times as long, to show the start-up cost
    /// spreading out.
    Long,
    /// Reputation attacks.
    Attack,
}

/// The attack rows: a control run, then framers, Sybils and both
/// gossiping. Jobs run one second apart, so a run spans several gossip
/// windows.
fn attack_experiments(sizes: Sizes) -> Vec<Experiment> {
    let base = SimConfig {
        nodes: sizes.nodes,
        jobs: sizes.jobs,
        liar_permille: 0,
        ..SimConfig::default()
    };
    let rows = [
        (
            "control: 10 framers and 50 Sybils, no gossip",
            FRAMERS,
            SYBILS,
            0,
        ),
        ("10 framers gossip", FRAMERS, 0, ATTACK_VERDICTS_PER_JOB),
        ("50 Sybils gossip", 0, SYBILS, ATTACK_VERDICTS_PER_JOB),
        (
            "10 framers and 50 Sybils gossip",
            FRAMERS,
            SYBILS,
            ATTACK_VERDICTS_PER_JOB,
        ),
    ];
    rows.into_iter()
        .map(|(label, framers, sybils, verdicts_per_job)| Experiment {
            table: Table::Attack,
            label: vec![label.into()],
            runs: vec![SimConfig {
                attack: Attack {
                    framers,
                    sybils,
                    verdicts_per_job,
                },
                ..base
            }],
        })
        .collect()
}

fn weighted() -> Selection {
    Selection::Weighted(SelectConfig::default())
}

fn fixed(n: u8, k: u8) -> Replication {
    Replication::Fixed { n, k }
}

/// Adaptive replication over 2-of-3.
fn adaptive(policy: AdaptivePolicy) -> Replication {
    Replication::Adaptive { n: 3, k: 2, policy }
}

fn cap(rep: &Replication) -> u8 {
    match rep {
        Replication::Fixed { n, .. } | Replication::Adaptive { n, .. } => n * 2,
    }
}

fn rep_name(rep: &Replication) -> String {
    match rep {
        Replication::Fixed { n, k } => format!("fixed {k}-of-{n}"),
        Replication::Adaptive { n, k, policy } => format!(
            "adaptive over {k}-of-{n}: streak {}, spot checks {}%{}",
            policy.min_clean_streak(),
            f64::from(policy.spot_check_permille()) / 10.0,
            if policy.backoff() {
                ", backoff"
            } else {
                ", no backoff"
            }
        ),
    }
}

fn sel_name(sel: &Selection) -> &'static str {
    match sel {
        Selection::Weighted(_) => "reputation",
        Selection::Uniform => "uniform",
    }
}

fn experiments(sizes: Sizes) -> Result<Vec<Experiment>, agora_verifier::AdaptiveConfigError> {
    if sizes.attacks {
        return Ok(attack_experiments(sizes));
    }
    let default_policy = AdaptivePolicy::default();
    let large = SimConfig {
        nodes: sizes.nodes,
        jobs: sizes.jobs,
        ..SimConfig::default()
    };
    let mut out = Vec::new();
    for liar_permille in [100, 200, 300] {
        for liars in [Liars::Independent, Liars::Colluding] {
            let modes = [
                (fixed(3, 2), weighted()),
                (fixed(3, 2), Selection::Uniform),
                (fixed(5, 3), weighted()),
                (fixed(5, 3), Selection::Uniform),
                (adaptive(default_policy), weighted()),
            ];
            for (replication, selection) in modes {
                out.push(Experiment {
                    table: Table::Main,
                    label: vec![
                        format!("{}% {}", liar_permille / 10, liars_name(liars)),
                        rep_name(&replication),
                        sel_name(&selection).into(),
                    ],
                    runs: vec![SimConfig {
                        liar_permille,
                        liars,
                        replication,
                        selection,
                        escalation_cap: cap(&replication),
                        ..large
                    }],
                });
            }
        }
    }
    out.push(Experiment {
        table: Table::Long,
        label: vec![
            "10% independent".into(),
            rep_name(&adaptive(default_policy)),
            "reputation".into(),
        ],
        runs: vec![SimConfig {
            jobs: sizes.jobs * 4,
            replication: adaptive(default_policy),
            ..large
        }],
    });
    let small = SimConfig {
        nodes: 8,
        liar_permille: 250,
        liars: Liars::Colluding,
        jobs: SMALL_JOBS,
        nodes_per_subnet: 0,
        ..SimConfig::default()
    };
    let small_rows = [
        (fixed(3, 2), weighted(), false),
        (fixed(3, 2), Selection::Uniform, false),
        (fixed(5, 3), weighted(), false),
        (fixed(5, 3), Selection::Uniform, false),
        (adaptive(default_policy), weighted(), false),
        (fixed(3, 2), weighted(), true),
        (fixed(3, 2), Selection::Uniform, true),
    ];
    for (replication, selection, shared) in small_rows {
        out.push(Experiment {
            table: Table::Small,
            label: vec![
                rep_name(&replication),
                sel_name(&selection).into(),
                if shared {
                    "colluders share a subnet (4 subnets of 2)".into()
                } else {
                    "none known".into()
                },
            ],
            runs: (1..=sizes.seeds)
                .map(|seed| SimConfig {
                    replication,
                    selection,
                    escalation_cap: cap(&replication),
                    nodes_per_subnet: if shared { 2 } else { 0 },
                    liars_share_subnets: shared,
                    seed,
                    ..small
                })
                .collect(),
        });
    }
    let policies = [
        fixed(3, 2),
        adaptive(AdaptivePolicy::new(10, 50)?.with_backoff(false)),
        adaptive(default_policy),
        adaptive(AdaptivePolicy::new(10, 200)?),
        adaptive(AdaptivePolicy::new(30, 50)?),
    ];
    let strategies = [
        (Strategy::Always, "always lie"),
        (Strategy::Flaky { lie_permille: 100 }, "lie on 10% of jobs"),
        (Strategy::Sleeper, "honest until trusted, then always lie"),
    ];
    for (strategy, name) in strategies {
        for replication in policies {
            out.push(Experiment {
                table: Table::TradeOff,
                label: vec![name.into(), rep_name(&replication)],
                runs: vec![SimConfig {
                    liar_permille: 100,
                    liars: Liars::Colluding,
                    strategy,
                    replication,
                    escalation_cap: cap(&replication),
                    ..large
                }],
            });
        }
    }
    Ok(out)
}

fn liars_name(l: Liars) -> &'static str {
    match l {
        Liars::Independent => "independent",
        Liars::Colluding => "colluding",
    }
}

/// Runs every experiment on `threads` threads, results in input order.
fn run_all(exps: &[Experiment], threads: usize) -> Result<Vec<SimReport>, sim::SimError> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<SimReport, sim::SimError>>>> =
        Mutex::new((0..exps.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = {
                    let Ok(mut n) = next.lock() else { return };
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(exp) = exps.get(i) else { return };
                let mut total = SimReport::default();
                let mut outcome = Ok(());
                for cfg in &exp.runs {
                    match sim::run(cfg) {
                        Ok(r) => total.add(&r),
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    }
                }
                eprintln!("done {}/{}: {}", i + 1, exps.len(), exp.label.join(", "));
                if let Ok(mut res) = results.lock() {
                    res[i] = Some(outcome.map(|()| total));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    results
        .into_iter()
        .map(|r| r.unwrap_or(Ok(SimReport::default())))
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

fn parse_args() -> Result<(Sizes, usize), String> {
    let mut sizes = Sizes {
        nodes: 1000,
        jobs: 50_000,
        seeds: 50,
        attacks: false,
    };
    let mut threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--attacks" {
            sizes.attacks = true;
            if !args.iter().any(|a| a == "--jobs") {
                sizes.jobs = 10_000;
            }
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--nodes" => sizes.nodes = num(value)? as usize,
            "--jobs" => sizes.jobs = num(value)?,
            "--seeds" => sizes.seeds = num(value)?,
            "--threads" => threads = (num(value)? as usize).clamp(1, 64),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((sizes, threads))
}

fn main() -> ExitCode {
    let (sizes, threads) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    let exps = match experiments(sizes) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let reports = match run_all(&exps, threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let render = if sizes.attacks {
        render_attacks
    } else {
        render
    };
    let text = render(
        &exps,
        &reports,
        sizes,
        started.elapsed().as_secs_f64(),
        threads,
    );
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn render(
    exps: &[Experiment],
    reports: &[SimReport],
    sizes: Sizes,
    secs: f64,
    threads: usize,
) -> String {
    let rows = |table: Table| {
        exps.iter()
            .zip(reports)
            .filter(move |(e, _)| e.table == table)
            .map(|(e, r)| (e.label.clone(), *r))
    };
    let mut s = String::new();
    s += "## Verification simulation: fixed and adaptive replication\n\n";
    s += &format!(
        "Command: `cargo run --release -p agora-verifier --example simulate` ({} nodes, {} jobs per large run, {} seeds of {} jobs per 8-node row; {:.0} s on {} threads). The simulation is deterministic: the same command prints the same numbers on any machine.\n\n",
        sizes.nodes, sizes.jobs, sizes.seeds, SMALL_JOBS, secs, threads
    );
    s += "No network: one submitter runs the jobs one after another through the real selection (`select_executors_with`), `AdaptivePolicy`, `Quorum` (every answer a signed attestation) and `ReputationBook` (every verdict applied locally, except solo verdicts). Honest executors always return the right hash; an *independent* liar returns a wrong hash of its own, *colluding* liars all return the same wrong hash. Answers arrive in random order; the quorum accepts a hash once it leads every other answer by k and no executor still running could change that (`verifier/src/quorum.rs`), so at 2-of-3 every assigned executor is judged, and a dispute escalates until one answer leads by k, capped at 2n executors. *reputation* selection is the default `SelectConfig` over the submitter's book (weighted by score, excluded peers never, at most one newcomer — fewer than 5 agreements — per job while established peers remain, distinct subnets preferred; nodes sit 8 to a subnet, liars scattered); *uniform* is the same draw over an empty book (every node equally likely, nobody excluded). Adaptive replication uses `AdaptivePolicy::default()` over 2-of-3 unless a row says otherwise: a node runs a job alone once the submitter's own verdicts saw it agree 10 times in a row (times one plus its past disagreements: the backoff), 5% of such jobs are spot-checked at 2-of-3 with the checked node's answer fed first.\n\n";
    s += "Columns: *wrong accepted* = jobs verified with a wrong hash, as a share of all jobs (count); *2nd half* = the same over the second half of the jobs only, after reputations have formed; *last wrong job* = index (from 0) of the last job whose wrong result was accepted; *executions / job* = executor assignments per verified job (every assigned executor runs the job); *failed jobs* = jobs where no answer led by k within the cap; *liars excluded* = liars below the exclusion threshold at the end.\n\n";

    s += &format!("### {} nodes, liars that always lie\n\n", sizes.nodes);
    s += "| liars | replication | selection | wrong accepted | wrong, 2nd half | last wrong job | executions / job | executions / job, 2nd half | failed jobs | liars excluded |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (label, r) in rows(Table::Main) {
        let mut cells = label;
        cells.push(format!("{} ({})", pct(r.wrong_rate()), r.wrong));
        cells.push(format!(
            "{} ({})",
            pct(r.second_half.wrong_rate()),
            r.second_half.wrong
        ));
        cells.push(last_wrong(&r));
        cells.push(format!("{:.3}", r.executions_per_verified()));
        cells.push(format!("{:.3}", r.second_half.executions_per_verified()));
        cells.push(r.failed.to_string());
        cells.push(format!("{} of {}", r.liars_excluded, r.liars));
        s += &row(&cells);
    }

    s += "\n### Two colluders among 8 nodes\n\n";
    s += &format!("8 executors (plus the submitter), 2 of them colluding liars; each row sums {} runs (seeds 1 to {}) of {} jobs. *last wrong job* is the latest job index, over all runs, at which a wrong result was accepted.\n\n", sizes.seeds, sizes.seeds, SMALL_JOBS);
    s += "| replication | selection | subnets | wrong accepted | last wrong job | executions / job |\n";
    s += "| --- | --- | --- | --- | --- | --- |\n";
    for (label, r) in rows(Table::Small) {
        let mut cells = label;
        cells.push(format!(
            "{} ({} of {})",
            pct(r.wrong_rate()),
            r.wrong,
            r.jobs
        ));
        cells.push(last_wrong(&r));
        cells.push(format!("{:.3}", r.executions_per_verified()));
        s += &row(&cells);
    }

    s += &format!("\n### Adaptive replication against cleverer liars\n\n{} nodes, 10% colluding liars, {} jobs, reputation selection. *solo* = jobs run by one node alone; *wrong from solo* = wrong results accepted from a solo run; *caught* = spot checks in which the checked node disagreed.\n\n", sizes.nodes, sizes.jobs);
    s += "| liars | replication | wrong accepted | wrong, 2nd half | wrong from solo | executions / job | executions / job, 2nd half | solo | spot checks (caught) |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (label, r) in rows(Table::TradeOff) {
        let mut cells = label;
        cells.push(format!("{} ({})", pct(r.wrong_rate()), r.wrong));
        cells.push(format!(
            "{} ({})",
            pct(r.second_half.wrong_rate()),
            r.second_half.wrong
        ));
        cells.push(r.solo_wrong.to_string());
        cells.push(format!("{:.3}", r.executions_per_verified()));
        cells.push(format!("{:.3}", r.second_half.executions_per_verified()));
        cells.push(r.solo.to_string());
        cells.push(format!("{} ({})", r.spot_checks, r.spot_checks_caught));
        s += &row(&cells);
    }
    s += &reading(exps, reports, sizes);
    s
}

/// The `attacks` section of docs/benchmarks.md.
fn render_attacks(
    exps: &[Experiment],
    reports: &[SimReport],
    sizes: Sizes,
    secs: f64,
    threads: usize,
) -> String {
    let mut s = String::new();
    s += "## Reputation attacks simulation: framers and Sybils\n\n";
    s += &format!(
        "Command: `cargo run --release -p agora-verifier --example simulate -- --attacks` ({} honest nodes, {} jobs one second apart, {} verdicts gossiped per job; {:.0} s on {} threads). Deterministic, like the tables above.\n\n",
        sizes.nodes, sizes.jobs, ATTACK_VERDICTS_PER_JOB, secs, threads
    );
    s += "The simulated submitter of the verification tables, fixed 2-of-3 with reputation selection, among honest nodes and the attacker's identities (each on a subnet of its own). *Framers* answer every job right, so the submitter's own jobs establish them and their word counts; *Sybils* are fresh identities that always return the one wrong hash the attacker wants accepted. After every job the attackers gossip verdicts signed by one of them with the strongest evidence they can get: a victim's signed acceptance of a job the attacker submitted, claimed missed; the victim's right answer against three attackers' attestations of a wrong hash (a claimed disagreement; three, as the accepted hash must lead by k = 2); Sybils' attestations beside two framers' (praise); and a quarter plain forgeries (an acceptance of another submitter's job). *taken from honest* and *given to Sybils* sum the score points gossip moved; standings are the submitter's at the end (`ReputationBook::standing`); *Sybils trusted* counts Sybils `AdaptivePolicy::default()` would let run jobs alone.\n\n";
    s += "| attack | wrong accepted | wrong, 2nd half | verdicts gossiped | refused as forged | points taken from honest | points given to Sybils | honest excluded | honest on probation | honest established | Sybils established | Sybils trusted |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (e, r) in exps.iter().zip(reports) {
        let a = r.attack;
        let mut cells = e.label.clone();
        cells.push(format!("{} ({})", pct(r.wrong_rate()), r.wrong));
        cells.push(format!(
            "{} ({})",
            pct(r.second_half.wrong_rate()),
            r.second_half.wrong
        ));
        for v in [
            a.gossiped,
            a.refused,
            a.taken_from_honest,
            a.given_to_sybils,
            a.honest_excluded,
            a.honest_on_probation,
            a.honest_established,
            a.sybils_established,
            a.sybils_trusted,
        ] {
            cells.push(v.to_string());
        }
        s += &row(&cells);
    }
    let worst = exps
        .iter()
        .zip(reports)
        .filter(|(e, _)| e.runs.iter().all(|c| c.attack.verdicts_per_job > 0))
        .map(|(_, r)| *r);
    let excluded: u64 = worst.clone().map(|r| r.attack.honest_excluded).sum();
    let sybils: u64 = worst
        .clone()
        .map(|r| r.attack.sybils_established + r.attack.sybils_trusted)
        .sum();
    let probation = worst
        .clone()
        .map(|r| r.attack.honest_on_probation)
        .max()
        .unwrap_or(0);
    let second: u64 = worst.map(|r| r.second_half.wrong).sum();
    s += &format!(
        "\nUnder attack, {excluded} honest nodes were excluded and {sybils} Sybils were established or trusted, over all rows; {second} wrong results were accepted in any second half. Gossip can only move the scores of honest nodes this node has not established itself yet (at most {probation} of them stood on probation at the end, and were still drawn as newcomers), within 100 points per peer per hour for all publishers together. Forgeries are refused; praise reaches only Sybils this node's own jobs saw agree (two Sybils drawn for one job while everyone was a newcomer), and gossip never establishes anyone. Wrong results accepted under attack are those of the start-up phase that the control run shows too.\n"
    );
    s
}

fn last_wrong(r: &SimReport) -> String {
    r.last_wrong_job.map_or("-".into(), |j| j.to_string())
}

/// The reading of the tables and the targets, from the numbers.
fn reading(exps: &[Experiment], reports: &[SimReport], sizes: Sizes) -> String {
    let get = |table: Table, labels: &[&str]| {
        exps.iter()
            .zip(reports)
            .find(|(e, _)| {
                e.table == table && labels.iter().zip(&e.label).all(|(want, have)| want == have)
            })
            .map(|(_, r)| *r)
            .unwrap_or_default()
    };
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let x = |r: SimReport| format!("{:.3}", r.executions_per_verified());
    let x2 = |r: SimReport| format!("{:.3}", r.second_half.executions_per_verified());
    let w = |r: SimReport| pct(r.wrong_rate());
    let w2 = |r: SimReport| pct(r.second_half.wrong_rate());
    let adaptive_default = rep_name(&adaptive(AdaptivePolicy::default()));
    let ad = adaptive_default.as_str();
    let main = |liars: &str, rep: &str, sel: &str| get(Table::Main, &[liars, rep, sel]);
    let a = main("10% independent", ad, "reputation");
    let f = main("10% independent", "fixed 2-of-3", "reputation");
    let long = get(Table::Long, &["10% independent"]);
    let mut s = String::new();

    s += "\n### Reading\n\n";
    let u30 = main("30% independent", "fixed 2-of-3", "uniform");
    let r30 = main("30% independent", "fixed 2-of-3", "reputation");
    s += &format!(
        "- **Independent liars** had no wrong result accepted in any row: a quorum needs k >= 2 equal hashes and no two independent lies are equal. They cost escalations instead: at 30% liars, fixed 2-of-3 without reputation needed {} executions per verified job and {} jobs failed (no answer leading by 2 within 6 executors); with reputation {} and {} failed, because the liars are soon excluded.\n",
        x(u30), u30.failed, x(r30), r30.failed
    );
    let cu = |share: &str, rep: &str| w(main(&format!("{share} colluding"), rep, "uniform"));
    s += &format!(
        "- **Colluding liars without reputation** win only where they outnumber a job's honest answers by k, counting the executors its disputes add: {}, {} and {} of jobs at 10%, 20% and 30% liars with 2-of-3; {}, {} and {} with 3-of-5. It stays there in the second half of the run. (Before the quorum asked for a lead of k, they won whenever k of a job's first n executors were colluders: the binomial rate, 2.8%, 10.4% and 21.6% at 2-of-3.)\n",
        cu("10%", "fixed 2-of-3"), cu("20%", "fixed 2-of-3"), cu("30%", "fixed 2-of-3"),
        cu("10%", "fixed 3-of-5"), cu("20%", "fixed 3-of-5"), cu("30%", "fixed 3-of-5")
    );
    let rep_rows: Vec<SimReport> = exps
        .iter()
        .zip(reports)
        .filter(|(e, _)| e.table == Table::Main && e.label[2] == "reputation")
        .map(|(_, r)| *r)
        .collect();
    let last = rep_rows.iter().filter_map(|r| r.last_wrong_job).max();
    let second: u64 = rep_rows.iter().map(|r| r.second_half.wrong).sum();
    let cr = |share: &str, rep: &str| w(main(&format!("{share} colluding"), rep, "reputation"));
    s += &format!(
        "- **Colluding liars with reputation** had {}, {} and {} of jobs accepted wrong at 2-of-3 ({}, {}, {} at 3-of-5), every one of them by job {} and {} in any second half. A liar that always lies never agrees with anyone, so it stays a newcomer (fewer than 5 agreements); once established peers exist a job takes at most one newcomer, so two colluders never meet on a job again. They win only at the start, while everyone is a newcomer. Liars that first behave long enough to become established get past this bound and can meet on a job again; at fixed 2-of-3 they still need a lead of 2 (the last table: {} accepted wrong).\n",
        cr("10%", "fixed 2-of-3"), cr("20%", "fixed 2-of-3"), cr("30%", "fixed 2-of-3"),
        cr("10%", "fixed 3-of-5"), cr("20%", "fixed 3-of-5"), cr("30%", "fixed 3-of-5"),
        last.map_or("-".into(), |j| j.to_string()),
        if second == 0 { "none".to_string() } else { second.to_string() },
        w(get(Table::TradeOff, &["honest until trusted, then always lie", "fixed 2-of-3"])),
    );
    let ac = main("10% colluding", ad, "reputation");
    let fc = main("10% colluding", "fixed 2-of-3", "reputation");
    s += &format!(
        "- **Adaptive replication** cost {} executions per verified job over {} jobs but {} over their second half: before a node may run alone it must agree 10 times in a row in full 2-of-3 jobs, and {} fresh honest nodes take a while to get there. Over {} jobs the average falls to {}. At 10% colluding liars that always lie it accepted {} wrong results against {} for fixed 2-of-3, {} of them from a solo run: such liars never become trusted, so what gets through is the start-up phase of full replication.\n",
        x(a), a.jobs, x2(a), (sizes.nodes as u64).saturating_sub(a.liars), long.jobs, x(long),
        ac.wrong, fc.wrong, ac.solo_wrong
    );
    let small = |rep: &str, sel: &str, sub: &str| get(Table::Small, &[rep, sel, sub]);
    let su = small("fixed 2-of-3", "uniform", "none known");
    let sr = small("fixed 2-of-3", "reputation", "none known");
    let sa = small(ad, "reputation", "none known");
    s += &format!(
        "- **Two colluders among 8 nodes**: at 2-of-3 without reputation {} of jobs were accepted wrong (before the lead rule: any draw of 3 of the 8 that holds both colluders, 6/56 = 10.7%); with reputation {}, all by job {} of a run; adaptive replication {} at {} executions per job. Two colluders cannot lead an honest answer by 2, so they win only when the honest executors of a job fail to answer. When the colluders share a subnet that the network knows, subnet spreading keeps them apart: {} with reputation and {} without.\n",
        w(su), w(sr), last_wrong(&sr), w(sa), x(sa),
        w(small("fixed 2-of-3", "reputation", "colluders share a subnet (4 subnets of 2)")),
        w(small("fixed 2-of-3", "uniform", "colluders share a subnet (4 subnets of 2)")),
    );

    s += "\n### Adaptive replication: the trade-off\n\n";
    let t = |strategy: &str, rep: &str| get(Table::TradeOff, &[strategy, rep]);
    let flaky = "lie on 10% of jobs";
    let sleeper = "honest until trusted, then always lie";
    let no_backoff = rep_name(&adaptive(AdaptivePolicy::default().with_backoff(false)));
    let p20 = rep_name(&adaptive(AdaptivePolicy::new(10, 200).unwrap_or_default()));
    let s30 = rep_name(&adaptive(AdaptivePolicy::new(30, 50).unwrap_or_default()));
    let saving = (1.0 - a.second_half.executions_per_verified() / 3.0) * 100.0;
    s += &format!(
        "With the default policy (trusted after 10 clean jobs in a row, 5% spot checks, backoff) a settled network spends {} executions per job where fixed 2-of-3 spends {} ({:.0}% less; BOINC's fixed replication needs at least 2). The price is that a trusted node decides a result alone, and only 5% of its jobs are checked. Liars that always lie never become trusted, so against them the saving is free. Against 10% of nodes that lie on 10% of their jobs (a faulty machine), {} of jobs were accepted wrong ({} in the second half) against {} at fixed 2-of-3. Against 10% of nodes that behave until trusted and then always lie — the attack adaptive replication invites — {} of jobs were accepted wrong ({} in the second half) against {} at fixed 2-of-3. The knobs, in second-half numbers: 20% spot checks give {} wrong at {} executions per job; a 30-job streak gives {} at {} ({} over the whole run, as trust takes longer to earn); without the backoff (each disagreement on record adds another streak's worth of clean jobs) it is {} at {}. So adaptive replication is for jobs where a rare wrong result is tolerable or the submitter can check results itself; fixed k-of-n stays the default.\n",
        x2(a), x(f), saving,
        w(t(flaky, ad)), w2(t(flaky, ad)), w(t(flaky, "fixed 2-of-3")),
        w(t(sleeper, ad)), w2(t(sleeper, ad)), w(t(sleeper, "fixed 2-of-3")),
        w2(t(sleeper, &p20)), x2(t(sleeper, &p20)),
        w2(t(sleeper, &s30)), x2(t(sleeper, &s30)), x(t(sleeper, &s30)),
        w2(t(sleeper, &no_backoff)),
        x2(t(sleeper, &no_backoff)),
    );

    s += "\n### Targets\n\n";
    s += &format!(
        "- Adaptive replication at 10% independent liars, executions per verified job < 1.2: {} over the whole run of {} jobs ({}), {} over its second half ({}), {} over a run of {} jobs ({}); fixed 2-of-3 costs {}.\n",
        x(a), a.jobs, met(a.executions_per_verified() < 1.2),
        x2(a), met(a.second_half.executions_per_verified() < 1.2),
        x(long), long.jobs, met(long.executions_per_verified() < 1.2),
        x(f)
    );
    s += &format!(
        "- Wrong acceptance < 0.1% at 10% independent liars with adaptive replication: {} over {} jobs and {} over {} jobs ({}). Not met against liars that behave until trusted (table above).\n",
        w(a), a.jobs, w(long), long.jobs,
        met(a.wrong_rate() < 0.001 && long.wrong_rate() < 0.001)
    );
    s
}
