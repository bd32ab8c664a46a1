//! What `agora exec`, `agora run` and `agora job` hand the user: the
//! program's stdout and stderr, the outputs written under `--output-dir`
//! (checked before a job starts), and how an executor's outcome reads.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Name of the file written and removed to prove `--output-dir` is
/// writable; dotted and tagged with the process id so it collides with
/// nothing a job writes.
const PROBE_PREFIX: &str = ".agora-probe-";

/// Makes sure outputs can be written to `dir` before a job runs: creates
/// it if missing, as writing an output would, and writes and removes a
/// probe file. A job on the network costs its executors' time, so an
/// unusable directory must be found before it is submitted, not after.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--output-dir {}: cannot create it", dir.display()))?;
    let probe = dir.join(format!("{PROBE_PREFIX}{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("--output-dir {}: cannot write in it", dir.display()))?;
    std::fs::remove_file(&probe).with_context(|| {
        format!(
            "--output-dir {}: cannot remove the probe file {}",
            dir.display(),
            probe.display()
        )
    })
}

/// Writes one declared output under `dir`, creating parent directories,
/// and returns where. Output paths are validated as relative without `..`
/// when the job is; this refuses any other path again, so a result can
/// never write outside `dir`.
pub fn write_output(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("refusing to write output {name:?}: not a plain relative path");
    }
    let target = dir.join(rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&target, data).with_context(|| format!("cannot write {}", target.display()))?;
    Ok(target)
}

/// Writes the program's stdout on stdout and its stderr on stderr, as if
/// it had run here. Stdout is flushed first so the two interleave no
/// worse than the program's own would.
pub fn write_streams(stdout: &[u8], stderr: &[u8]) -> Result<()> {
    std::io::stdout()
        .write_all(stdout)
        .and_then(|()| std::io::stdout().flush())
        .context("writing stdout")?;
    std::io::stderr()
        .write_all(stderr)
        .context("writing stderr")
}

/// How an executor's failure reads, for the kinds of events and executor
/// states that say an executor gave no result; `None` for anything else.
pub fn executor_failure(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "missed" => "missed",
        "crashed" => "crashed",
        "timed_out" => "timed out",
        "out_of_memory" => "ran out of memory",
        "out_of_fuel" => "ran out of fuel",
        "output_too_large" => "output too large",
        "unable" => "unable to run it",
        _ => return None,
    })
}

/// An executor state as `agora job status` shows it: failures in words,
/// the other states (`running`, `answered`, `released`) as they are.
pub fn executor_state(state: &str) -> &str {
    executor_failure(state).unwrap_or(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_output(dir.path(), "a/b.txt", b"hi").unwrap();
        assert_eq!(p, dir.path().join("a/b.txt"));
        assert_eq!(std::fs::read(&p).unwrap(), b"hi");
        for bad in ["../x", "/etc/x", "a/../../x", "", "./x"] {
            assert!(write_output(dir.path(), bad, b"no").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_output_dir_is_created_and_left_empty() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/sub");
        check_output_dir(&out).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        // A file where the directory should be: refused, naming the flag.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = format!("{:#}", check_output_dir(&file.join("sub")).unwrap_err());
        assert!(e.starts_with("--output-dir "), "{e}");
    }

    #[test]
    fn every_failure_kind_reads_as_words() {
        for kind in [
            "missed",
            "crashed",
            "timed_out",
            "out_of_memory",
            "out_of_fuel",
            "output_too_large",
            "unable",
        ] {
            let text = executor_failure(kind).unwrap();
            assert!(!text.contains('_'), "{kind}: {text}");
        }
        assert_eq!(executor_failure("attested"), None);
        assert_eq!(executor_state("answered"), "answered");
        assert_eq!(executor_state("out_of_fuel"), "ran out of fuel");
    }
}
