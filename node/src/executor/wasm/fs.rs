//! The per-run directories a Wasm job sees as `/in` and `/out`, and the
//! careful reading of its declared outputs afterwards.
//!
//! Everything lives in one temp dir per run, removed when the run ends
//! (also on error paths, by `Drop`). Output files are read without
//! following symlinks: a guest can create a symlink inside `/out` that
//! points anywhere, and the host must never read through it.

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tempfile::TempDir;

use super::determinism::WALL_CLOCK_START_NS;
use crate::executor::{ExecError, OutputStream};

/// Bytes charged per directory entry when totalling `/out`, so a job that
/// creates millions of empty files breaks the budget like a big one does.
pub const ENTRY_COST_BYTES: u64 = 4096;
/// Most entries a usage walk visits before declaring the budget broken.
pub const MAX_WALK_ENTRIES: u64 = 100_000;

/// The temp dir of one run, with its `in/` and `out/` subdirectories.
#[derive(Debug)]
pub struct RunDirs {
    /// The root; deleting it deletes everything the run wrote.
    root: TempDir,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExecError {
    let context = context.into();
    move |source| ExecError::Io { context, source }
}

impl RunDirs {
    /// Creates `<parent>/agora-wasm-XXXX/{in,out}`, writes the inputs into
    /// `in/` with fixed timestamps, and creates the parent directories of
    /// the declared outputs in `out/`.
    ///
    /// `inputs` are (name, bytes) pairs whose names the spec validator has
    /// already checked to be relative paths without `..`.
    pub fn create<'a>(
        parent: &Path,
        inputs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        outputs: &[String],
    ) -> Result<Self, ExecError> {
        fs::create_dir_all(parent)
            .map_err(io_err(format!("creating scratch dir {}", parent.display())))?;
        let root = tempfile::Builder::new()
            .prefix("agora-wasm-")
            .tempdir_in(parent)
            .map_err(io_err(format!("creating run dir in {}", parent.display())))?;
        let dirs = Self { root };
        fs::create_dir(dirs.input_dir()).map_err(io_err("creating /in"))?;
        fs::create_dir(dirs.output_dir()).map_err(io_err("creating /out"))?;
        let mut subdirs = std::collections::BTreeSet::new();
        for (name, bytes) in inputs {
            // A name may be a relative path (a reduce step's `i/<output>`).
            if let Some((parent, _)) = name.rsplit_once('/') {
                fs::create_dir_all(dirs.input_dir().join(parent))
                    .map_err(io_err(format!("creating /in/{parent}")))?;
                let mut at = parent;
                subdirs.insert(at.to_string());
                while let Some((up, _)) = at.rsplit_once('/') {
                    subdirs.insert(up.to_string());
                    at = up;
                }
            }
            let path = dirs.input_dir().join(name);
            fs::write(&path, bytes).map_err(io_err(format!("writing input {name}")))?;
            pin_times(&path).map_err(io_err(format!("setting times of input {name}")))?;
        }
        // Timestamps are visible through fd_filestat_get: honest executors
        // must show the same ones, not the moment each wrote its copy.
        for d in &subdirs {
            pin_times(&dirs.input_dir().join(d))
                .map_err(io_err(format!("setting times of /in/{d}")))?;
        }
        pin_times(&dirs.input_dir()).map_err(io_err("setting times of /in"))?;
        for path in outputs {
            if let Some((parent, _)) = path.rsplit_once('/') {
                fs::create_dir_all(dirs.output_dir().join(parent))
                    .map_err(io_err(format!("creating /out/{parent}")))?;
            }
        }
        Ok(dirs)
    }

    /// Host path preopened as `/in`.
    pub fn input_dir(&self) -> PathBuf {
        self.root.path().join("in")
    }

    /// Host path preopened as `/out`.
    pub fn output_dir(&self) -> PathBuf {
        self.root.path().join("out")
    }

    /// Removes the run dir now, reporting failure (drop would hide it).
    pub fn remove(self) -> Result<(), ExecError> {
        let shown = self.root.path().display().to_string();
        self.root
            .close()
            .map_err(io_err(format!("removing run dir {shown}")))
    }
}

/// Sets a file's or directory's access and modification times to the
/// instant the job's wall clock starts at.
fn pin_times(path: &Path) -> io::Result<()> {
    let t = UNIX_EPOCH + Duration::from_nanos(WALL_CLOCK_START_NS);
    File::open(path)?.set_times(FileTimes::new().set_accessed(t).set_modified(t))
}

/// Reads the declared outputs that exist as regular files, each at most
/// `cap` bytes. A declared path that is missing, a directory, a symlink or
/// lies under a symlinked directory is left out, as if never written.
pub fn collect_outputs(
    out_dir: &Path,
    declared: &[String],
    cap: u64,
) -> Result<BTreeMap<String, Vec<u8>>, ExecError> {
    let mut found = BTreeMap::new();
    for rel in declared {
        if let Some(bytes) = read_output(out_dir, rel, cap)? {
            found.insert(rel.clone(), bytes);
        }
    }
    Ok(found)
}

fn read_output(out_dir: &Path, rel: &str, cap: u64) -> Result<Option<Vec<u8>>, ExecError> {
    let mut path = out_dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    for d in dirs {
        path.push(d);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("inspecting /out/{rel}"))(e)),
        }
    }
    path.push(last);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("inspecting /out/{rel}"))(e)),
    };
    if !meta.is_file() {
        tracing::debug!(
            path = rel,
            "declared output is not a regular file; left out"
        );
        return Ok(None);
    }
    let too_large = || ExecError::OutputTooLarge {
        stream: OutputStream::File(rel.to_owned()),
        limit_bytes: cap,
    };
    if meta.len() > cap {
        return Err(too_large());
    }
    let file = File::open(&path).map_err(io_err(format!("opening /out/{rel}")))?;
    let mut bytes = Vec::new();
    // The guest has stopped, but read at most cap + 1 anyway: the size
    // check above and this read must agree even if something else writes.
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err(format!("reading /out/{rel}")))?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// What a walk of `/out` found over budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// The path (relative to `/out`) of the largest file seen, or of the
    /// declared output that broke the per-file cap.
    pub path: String,
}

/// Checks the disk a run has used under `out_dir`: every declared output
/// must be at most `cap` bytes, and everything together at most `budget`
/// bytes (each entry costs at least [`ENTRY_COST_BYTES`]). Symlinks are
/// counted as entries, never followed. The walk stops at the first breach.
pub fn check_usage(
    out_dir: &Path,
    declared: &[String],
    cap: u64,
    budget: u64,
) -> Result<(), OverBudget> {
    let mut total: u64 = 0;
    let mut entries: u64 = 0;
    let mut largest: Option<(u64, String)> = None;
    let mut stack: Vec<(PathBuf, String)> = vec![(out_dir.to_path_buf(), String::new())];
    let over = |largest: &Option<(u64, String)>| OverBudget {
        path: largest
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| ".".to_owned()),
    };
    while let Some((dir, rel)) = stack.pop() {
        // A directory that vanished or cannot be read mid-run is the
        // guest's business; the final output read reports real problems.
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            entries += 1;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let size = if meta.is_file() { meta.len() } else { 0 };
            if meta.is_file() && size > cap && declared.contains(&child_rel) {
                return Err(OverBudget { path: child_rel });
            }
            total = total.saturating_add(size.max(ENTRY_COST_BYTES));
            if largest.as_ref().is_none_or(|(s, _)| size > *s) {
                largest = Some((size, child_rel.clone()));
            }
            if total > budget || entries > MAX_WALK_ENTRIES {
                return Err(over(&largest));
            }
            if meta.is_dir() {
                stack.push((entry.path(), child_rel));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(inputs: &[(&str, &[u8])], outputs: &[&str]) -> (TempDir, RunDirs) {
        let parent = tempfile::tempdir().unwrap();
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        let d = RunDirs::create(parent.path(), inputs.iter().copied(), &outputs).unwrap();
        (parent, d)
    }

    #[test]
    fn inputs_are_written_with_pinned_times_and_output_parents_exist() {
        let (_p, d) = dirs(&[("a.txt", b"A")], &["sub/dir/x.bin", "top.txt"]);
        assert_eq!(fs::read(d.input_dir().join("a.txt")).unwrap(), b"A");
        let m = fs::metadata(d.input_dir().join("a.txt")).unwrap();
        assert_eq!(
            m.modified().unwrap(),
            UNIX_EPOCH + Duration::from_nanos(WALL_CLOCK_START_NS)
        );
        assert!(d.output_dir().join("sub/dir").is_dir());
    }

    #[test]
    fn a_nested_input_gets_its_directories_with_pinned_times() {
        let (_p, d) = dirs(&[("0.out", b"A"), ("0/res/x.txt", b"B")], &[]);
        assert_eq!(fs::read(d.input_dir().join("0/res/x.txt")).unwrap(), b"B");
        let pinned = UNIX_EPOCH + Duration::from_nanos(WALL_CLOCK_START_NS);
        for dir in ["0", "0/res"] {
            let m = fs::metadata(d.input_dir().join(dir)).unwrap();
            assert_eq!(m.modified().unwrap(), pinned, "{dir}");
        }
    }

    #[test]
    fn remove_deletes_everything() {
        let (_p, d) = dirs(&[("a", b"1")], &[]);
        let root = d.input_dir().parent().unwrap().to_path_buf();
        fs::write(d.output_dir().join("junk"), b"x").unwrap();
        d.remove().unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn outputs_are_read_capped_and_missing_ones_left_out() {
        let (_p, d) = dirs(&[], &["a.txt", "sub/b.txt", "gone.txt"]);
        fs::write(d.output_dir().join("a.txt"), b"hello").unwrap();
        fs::write(d.output_dir().join("sub/b.txt"), b"").unwrap();
        let decl = vec!["a.txt".into(), "sub/b.txt".into(), "gone.txt".into()];
        let got = collect_outputs(&d.output_dir(), &decl, 5).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["a.txt"], b"hello");
        assert_eq!(got["sub/b.txt"], b"");
        let err = collect_outputs(&d.output_dir(), &decl, 4).unwrap_err();
        assert!(matches!(
            err,
            ExecError::OutputTooLarge { stream: OutputStream::File(ref p), limit_bytes: 4 } if p == "a.txt"
        ));
    }

    #[test]
    fn symlinks_are_never_followed() {
        let (p, d) = dirs(&[], &[]);
        let secret = p.path().join("secret.txt");
        fs::write(&secret, b"host secret").unwrap();
        std::os::unix::fs::symlink(&secret, d.output_dir().join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(p.path(), d.output_dir().join("up")).unwrap();
        let decl = vec!["leak.txt".into(), "up/secret.txt".into()];
        let got = collect_outputs(&d.output_dir(), &decl, 1 << 20).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn usage_check_names_the_broken_limit() {
        let (_p, d) = dirs(&[], &["big.bin"]);
        let out = d.output_dir();
        let decl = vec!["big.bin".to_owned()];
        fs::write(out.join("big.bin"), vec![0u8; 100]).unwrap();
        assert_eq!(check_usage(&out, &decl, 100, 1 << 20), Ok(()));
        fs::write(out.join("big.bin"), vec![0u8; 101]).unwrap();
        assert_eq!(
            check_usage(&out, &decl, 100, 1 << 20),
            Err(OverBudget {
                path: "big.bin".into()
            })
        );
        fs::write(out.join("big.bin"), b"").unwrap();
        fs::write(out.join("scratch"), vec![0u8; 50_000]).unwrap();
        assert_eq!(
            check_usage(&out, &decl, 100, 20_000),
            Err(OverBudget {
                path: "scratch".into()
            })
        );
    }
}
