//! What the harness does to a network, behind the [`Driver`] trait, and
//! the real thing: [`HostsDriver`] runs `testnet/hosts.sh` commands (the
//! container host testnet) and reads their JSON. Tests put a fake behind
//! the trait; the binary only ever uses `HostsDriver`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use agora_node::api::types::{IdInfo, JobList, JobRecord, NodesInfo, PeersInfo};
use serde::Deserialize;

use super::parse::{Network, NodeOp, Program, Target};

/// A command the driver ran that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// It could not be started.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited with an error.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// Its output was not what it should be.
    #[error("{cmd}: unexpected output: {why}")]
    Output {
        /// The command line.
        cmd: String,
        /// What was wrong with it.
        why: String,
    },
}

/// One job to submit.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// What it runs.
    pub program: Program,
    /// Executors.
    pub n: u8,
    /// Executors that must agree.
    pub k: u8,
    /// `--timeout`, if set.
    pub timeout: Option<String>,
}

/// Everything the harness does to a network. Methods take `&self`: the
/// harness calls them from several threads at once (submissions while a
/// node step runs).
pub trait Driver: Sync {
    /// Starts the network and waits until every node sees every other.
    fn up(&self, net: &Network) -> Result<(), DriverError>;
    /// Removes the network; safe to repeat.
    fn down(&self) -> Result<(), DriverError>;
    /// Kills, stops, starts, restarts, partitions or heals containers;
    /// returns when the command has (start and restart: when the node is
    /// back and sees its peers).
    fn node_op(&self, op: NodeOp, targets: &[Target]) -> Result<(), DriverError>;
    /// Submits a job through node `node` without waiting for it; returns
    /// the job id.
    fn submit(&self, node: usize, job: &JobRequest) -> Result<String, DriverError>;
    /// The jobs submitted through `node`, as it reports them.
    fn jobs(&self, node: usize) -> Result<Vec<JobRecord>, DriverError>;
    /// Node `node`'s peer id.
    fn peer_id(&self, node: usize) -> Result<String, DriverError>;
    /// The peer ids `node` lists online and is connected to now, itself
    /// excluded. Both: `agora nodes` keeps a node online for two minutes
    /// after it last heard from it (a restarted node lists its old peers
    /// online before it has dialled any), so it alone cannot show a rejoin.
    fn online(&self, node: usize) -> Result<Vec<String>, DriverError>;
    /// The result hash of `program` run locally with `agora exec`: the
    /// honest result every verified job of it must have.
    fn exec(&self, program: &Program) -> Result<String, DriverError>;
}

/// The container host testnet, through `testnet/hosts.sh`.
#[derive(Debug, Clone)]
pub struct HostsDriver {
    /// The script.
    script: PathBuf,
    /// The repository root: relative program paths start here.
    root: PathBuf,
    /// Whether nodes have their own Docker engines (`HOSTS_ENGINES=0`
    /// otherwise, for every command: they must agree on it).
    engines: bool,
}

impl HostsDriver {
    /// A driver for `root/testnet/hosts.sh`, for a network with or
    /// without per-node engines ([`Network::engines`]).
    pub fn new(root: &Path, engines: bool) -> Self {
        Self {
            script: root.join("testnet/hosts.sh"),
            root: root.to_owned(),
            engines,
        }
    }

    /// `hosts.sh build`: the release binaries, the fixtures, the image.
    pub fn build(&self) -> Result<(), DriverError> {
        self.run(&["build".to_owned()], true).map(|_| ())
    }

    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.script);
        c.args(args).current_dir(&self.root).stdin(Stdio::null());
        if !self.engines {
            c.env("HOSTS_ENGINES", "0");
        }
        c
    }

    /// Runs `hosts.sh ARGS`; `show` passes its output through to stderr
    /// (slow commands that print progress), otherwise it is captured.
    fn run(&self, args: &[String], show: bool) -> Result<Output, DriverError> {
        let cmd = format!("hosts.sh {}", args.join(" "));
        let mut c = self.command(args);
        if show {
            // Its stdout too goes to stderr: this program's stdout is the
            // summary.
            c.stdout(Stdio::piped()).stderr(Stdio::inherit());
            let out = c.output().map_err(|source| DriverError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                tracing::info!("  {line}");
            }
            if !out.status.success() {
                return Err(DriverError::Failed {
                    cmd,
                    status: out.status.to_string(),
                    stderr: "see above".into(),
                });
            }
            return Ok(out);
        }
        let out = c.output().map_err(|source| DriverError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(DriverError::Failed {
                cmd,
                status: out.status.to_string(),
                stderr: tail(&out.stderr),
            });
        }
        Ok(out)
    }

    /// `hosts.sh cli I ARGS` with its stdout parsed as JSON.
    fn cli_json<T: for<'de> Deserialize<'de>>(
        &self,
        node: usize,
        args: &[&str],
    ) -> Result<T, DriverError> {
        let mut all = vec!["cli".to_owned(), node.to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let out = self.run(&all, false)?;
        serde_json::from_slice(&out.stdout).map_err(|e| DriverError::Output {
            cmd: format!("hosts.sh {}", all.join(" ")),
            why: e.to_string(),
        })
    }

    /// A program's path as the CLI gets it: absolute, from the root.
    fn path(&self, p: &Path) -> String {
        self.root.join(p).display().to_string()
    }

    /// `run|exec wasm|docker ...` arguments for a program, with `flags`
    /// before the program's own arguments.
    fn program_args(&self, verb: &str, program: &Program, flags: &[String]) -> Vec<String> {
        let (kind, what, rest) = match program {
            Program::Wasm { module, args } => ("wasm", self.path(module), args),
            Program::Docker { image, cmd } => ("docker", image.clone(), cmd),
        };
        let mut v = vec![verb.to_owned(), kind.to_owned(), what];
        v.extend(flags.iter().cloned());
        v.push("--".into());
        v.extend(rest.iter().cloned());
        v
    }
}

/// The last lines of a command's stderr, on one line.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(3);
    lines[from..].join(" | ")
}

/// `hosts.sh` names the bootstrap `boot`.
fn target_arg(t: &Target) -> String {
    match t {
        Target::Bootstrap => "boot".into(),
        Target::Node(i) => i.to_string(),
    }
}

/// What `agora exec --json` prints (the part the harness reads).
#[derive(Deserialize)]
struct ExecSummary {
    result_hash: String,
}

impl Driver for HostsDriver {
    fn up(&self, net: &Network) -> Result<(), DriverError> {
        let mut args = vec!["up".to_owned(), net.nodes.to_string()];
        for (i, mode) in &net.faults {
            args.push("--fault".into());
            args.push(format!("{i}={mode}"));
        }
        self.run(&args, true).map(|_| ())
    }

    fn down(&self) -> Result<(), DriverError> {
        self.run(&["down".to_owned()], true).map(|_| ())
    }

    fn node_op(&self, op: NodeOp, targets: &[Target]) -> Result<(), DriverError> {
        let mut args = vec![op.as_str().to_owned()];
        args.extend(targets.iter().map(target_arg));
        self.run(&args, true).map(|_| ())
    }

    fn submit(&self, node: usize, job: &JobRequest) -> Result<String, DriverError> {
        let mut flags = vec![
            "-n".to_owned(),
            job.n.to_string(),
            "-k".into(),
            job.k.to_string(),
            "--detach".into(),
        ];
        if let Some(t) = &job.timeout {
            flags.push("--timeout".into());
            flags.push(t.clone());
        }
        let mut args = vec!["cli".to_owned(), node.to_string()];
        args.extend(self.program_args("run", &job.program, &flags));
        let out = self.run(&args, false)?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(id)
        } else {
            Err(DriverError::Output {
                cmd: format!("hosts.sh {}", args.join(" ")),
                why: format!("expected a job id, got {id:?}"),
            })
        }
    }

    fn jobs(&self, node: usize) -> Result<Vec<JobRecord>, DriverError> {
        let list: JobList = self.cli_json(node, &["job", "list", "--json"])?;
        Ok(list.jobs)
    }

    fn peer_id(&self, node: usize) -> Result<String, DriverError> {
        let id: IdInfo = self.cli_json(node, &["id", "--json"])?;
        Ok(id.peer_id)
    }

    fn online(&self, node: usize) -> Result<Vec<String>, DriverError> {
        let nodes: NodesInfo = self.cli_json(node, &["nodes", "--json"])?;
        let peers: PeersInfo = self.cli_json(node, &["peers", "--json"])?;
        let connected: BTreeSet<String> = peers.peers.into_iter().map(|p| p.peer_id).collect();
        Ok(nodes
            .nodes
            .into_iter()
            .filter(|n| n.state == "online" && !n.is_self && connected.contains(&n.peer_id))
            .map(|n| n.peer_id)
            .collect())
    }

    fn exec(&self, program: &Program) -> Result<String, DriverError> {
        // Through node 1's CLI: the same agora binary as the nodes, its
        // data dir only for the module cache. Docker programs run on this
        // machine's engine, which holds the image the nodes' engines got.
        let mut args = vec!["cli".to_owned(), "1".to_owned()];
        args.extend(self.program_args("exec", program, &["--json".to_owned()]));
        let cmd = format!("hosts.sh {}", args.join(" "));
        let out = self
            .command(&args)
            .output()
            .map_err(|source| DriverError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        // `exec` exits with the program's own code; only its JSON counts.
        match serde_json::from_slice::<ExecSummary>(&out.stdout) {
            Ok(s) => Ok(s.result_hash),
            Err(_) => Err(DriverError::Failed {
                cmd,
                status: out.status.to_string(),
                stderr: tail(&out.stderr),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let d = HostsDriver::new(Path::new("/repo"), true);
        let p = Program::Wasm {
            module: "testnet/fixtures/build/hello.wasm".into(),
            args: vec!["a".into()],
        };
        assert_eq!(
            d.program_args("run", &p, &["--detach".into()]),
            [
                "run",
                "wasm",
                "/repo/testnet/fixtures/build/hello.wasm",
                "--detach",
                "--",
                "a"
            ]
        );
        let p = Program::Docker {
            image: "agora-busybox:latest".into(),
            cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
        };
        assert_eq!(
            d.program_args("exec", &p, &["--json".into()]),
            [
                "exec",
                "docker",
                "agora-busybox:latest",
                "--json",
                "--",
                "sh",
                "-c",
                "echo hi"
            ]
        );
        assert_eq!(target_arg(&Target::Bootstrap), "boot");
        assert_eq!(tail(b"a\n\nb\nc\nd\n"), "b | c | d");
    }
}
