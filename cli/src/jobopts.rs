//! The flags that describe a job, shared by `agora exec` (run it here) and
//! `agora run` (run it on the network), so both take the same flags with
//! the same meaning, and the helpers that read their files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::units::{parse_duration, parse_size};

/// Options shared by every way of running a job.
#[derive(Debug, Args)]
pub struct RunOpts {
    /// File whose bytes are fed to the program's stdin.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// An input file visible read-only as /in/NAME (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// A file the program writes under /out that is part of the result
    /// (repeatable). Only declared outputs are returned and hashed.
    #[arg(long = "output", value_name = "PATH")]
    pub outputs: Vec<String>,
    /// Directory where declared outputs are written (for an array run
    /// without --reduce, each item's as DIR/INDEX/NAME).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Environment variable for the program (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Wall-clock limit.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Memory limit (e.g. 64MiB, 1GiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Wasm fuel budget (roughly, instructions); unlimited if absent.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Cap on stdout, stderr and each output file.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_output: u64,
    /// Print JSON instead of the program's stdout: for `exec` a summary
    /// (exit code, result hash, sizes), for `run` the final job record (or
    /// the array's: exit code 0 if it is verified, else 125).
    #[arg(long)]
    pub json: bool,
}

impl RunOpts {
    /// The `--env` pairs.
    pub fn env_map(&self) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for pair in &self.env {
            let (k, v) = split_pair(pair, "--env")?;
            env.insert(k.to_owned(), v.to_owned());
        }
        Ok(env)
    }

    /// The `--input` pairs: name under /in -> local file.
    pub fn input_files(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut inputs = BTreeMap::new();
        for pair in &self.inputs {
            let (name, file) = split_pair(pair, "--input")?;
            if inputs
                .insert(name.to_owned(), PathBuf::from(file))
                .is_some()
            {
                bail!("--input {name} is given twice");
            }
        }
        Ok(inputs)
    }

    /// `--timeout` in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Splits `NAME=VALUE`; `flag` names the flag in the error.
pub fn split_pair<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    s.split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{flag} expects NAME=VALUE, got '{s}'"))
}

/// Reads a whole file; `what` names it in the error.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// `--cpus` as thousandths of a core.
pub fn milli_cpus(cpus: f64) -> Result<u32> {
    if !(cpus > 0.0 && cpus <= 256.0) {
        bail!("--cpus must be between 0.01 and 256, got {cpus}");
    }
    // In range, so the product fits.
    Ok((cpus * 1000.0).round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_become_milli_cpus() {
        assert_eq!(milli_cpus(0.5).unwrap(), 500);
        assert_eq!(milli_cpus(2.0).unwrap(), 2000);
        assert!(milli_cpus(0.0).is_err());
        assert!(milli_cpus(300.0).is_err());
        assert!(milli_cpus(f64::NAN).is_err());
    }

    #[test]
    fn pairs_are_split_once() {
        assert_eq!(split_pair("a=b=c", "--env").unwrap(), ("a", "b=c"));
        assert!(split_pair("novalue", "--env").is_err());
    }
}
