//! Host-side files of one Docker run: a per-run work directory holding
//! `in/` (the inputs, bind-mounted read-only at `/in`) and `out/`
//! (bind-mounted writable at `/out`), and the collection of declared
//! outputs once the container is gone.
//!
//! Everything here is synchronous file I/O; the executor calls it through
//! `spawn_blocking`. Nothing under `out/` is trusted: the job may have put
//! symlinks, FIFOs or huge files there, so collection never follows a
//! symlink, only reads regular files and never reads past the cap.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_bytes::ByteBuf;
use tempfile::TempDir;

use crate::executor::{ExecError, OutputStream};

fn io_err(context: impl Into<String>, source: io::Error) -> ExecError {
    ExecError::Io {
        context: context.into(),
        source,
    }
}

/// True if `name` is exactly one ordinary path component.
fn is_plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    ) && !name.contains('/')
}

/// The host directories of one run. Dropping it deletes them.
#[derive(Debug)]
pub(super) struct Workspace {
    /// Owns the directory tree; removal happens on drop.
    dir: TempDir,
    /// Host side of `/in`.
    in_dir: PathBuf,
    /// Host side of `/out`.
    out_dir: PathBuf,
}

impl Workspace {
    /// Creates the directories under `parent` and writes the inputs.
    ///
    /// `in/` and its files belong to the daemon's user and are only
    /// readable by others, so the job (running as `uid`) can read but never
    /// change them even if the mount were writable. `out/` is given to
    /// `uid:gid`; when the daemon may not chown (not root), it is made
    /// world-writable instead.
    pub(super) fn create(
        parent: &Path,
        inputs: &BTreeMap<String, Vec<u8>>,
        uid: u32,
        gid: u32,
    ) -> Result<Self, ExecError> {
        let dir = tempfile::Builder::new()
            .prefix("agora-docker-")
            .tempdir_in(parent)
            .map_err(|e| io_err(format!("create work dir in {}", parent.display()), e))?;
        let in_dir = dir.path().join("in");
        let out_dir = dir.path().join("out");
        fs::create_dir(&in_dir).map_err(|e| io_err("create input dir", e))?;
        fs::create_dir(&out_dir).map_err(|e| io_err("create output dir", e))?;

        for (name, bytes) in inputs {
            // A name may be a relative path (a reduce step's `i/<output>`);
            // each part must be a plain name. Its directories stay owned by
            // this process, so the container's user cannot write there.
            if !name.split('/').all(is_plain_name) {
                return Err(io_err(
                    format!("input name {name:?}"),
                    io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"),
                ));
            }
            if let Some((parent, _)) = name.rsplit_once('/') {
                fs::create_dir_all(in_dir.join(parent))
                    .map_err(|e| io_err(format!("create input dir {parent}"), e))?;
            }
            let path = in_dir.join(name);
            fs::write(&path, bytes).map_err(|e| io_err(format!("write input {name}"), e))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o444))
                .map_err(|e| io_err(format!("chmod input {name}"), e))?;
        }
        fs::set_permissions(&in_dir, fs::Permissions::from_mode(0o555))
            .map_err(|e| io_err("chmod input dir", e))?;

        match std::os::unix::fs::chown(&out_dir, Some(uid), Some(gid)) {
            Ok(()) => fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o755)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777))
            }
            Err(e) => Err(e),
        }
        .map_err(|e| io_err("prepare output dir", e))?;

        Ok(Self {
            dir,
            in_dir,
            out_dir,
        })
    }

    /// Host side of `/in`.
    pub(super) fn in_dir(&self) -> &Path {
        &self.in_dir
    }

    /// Host side of `/out`.
    pub(super) fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Deletes the tree now, reporting failure (drop would swallow it).
    pub(super) fn remove(self) -> io::Result<()> {
        // The input dir is read-only; removing its entries needs write
        // permission on it even for root under some security modules.
        let _ = fs::set_permissions(&self.in_dir, fs::Permissions::from_mode(0o755));
        self.dir.close()
    }
}

/// Reads the declared outputs that exist under `out_dir` as regular
/// files. A path that is missing, passes through or ends at a symlink, or
/// is not a regular file is left out, the same way on every executor, so
/// honest nodes agree. A file larger than `cap` is an error.
pub(super) fn collect_outputs(
    out_dir: &Path,
    declared: &[String],
    cap: u64,
) -> Result<BTreeMap<String, ByteBuf>, ExecError> {
    let mut outputs = BTreeMap::new();
    for rel in declared {
        if let Some(bytes) = read_output(out_dir, rel, cap)? {
            outputs.insert(rel.clone(), ByteBuf::from(bytes));
        }
    }
    Ok(outputs)
}

fn read_output(out_dir: &Path, rel: &str, cap: u64) -> Result<Option<Vec<u8>>, ExecError> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.iter().any(|p| !is_plain_name(p)) {
        // The validator already refuses these; a request built around it
        // still must not read outside /out.
        tracing::warn!(path = rel, "output path is not relative to /out; skipped");
        return Ok(None);
    }
    let mut path = out_dir.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("inspect output /out/{rel}"), e)),
        };
        let last = i + 1 == parts.len();
        let usable = if last {
            meta.file_type().is_file()
        } else {
            meta.file_type().is_dir()
        };
        if !usable {
            tracing::debug!(path = rel, "output is not a regular file; left out");
            return Ok(None);
        }
        if last && meta.len() > cap {
            return Err(too_large(rel, cap));
        }
    }
    let file = fs::File::open(&path).map_err(|e| io_err(format!("open output /out/{rel}"), e))?;
    // The length check above is advisory; reading at most cap + 1 bytes is
    // what bounds memory.
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(format!("read output /out/{rel}"), e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(rel, cap));
    }
    Ok(Some(bytes))
}

/// Least disk an entry is charged, whatever its size: an inode and a
/// directory slot cost real space, so a million empty files are not free.
pub(super) const MIN_ENTRY_BYTES: u64 = 4096;

/// Disk use of `dir` in bytes: allocated blocks (so sparse files count
/// what they occupy), at least [`MIN_ENTRY_BYTES`] per entry. Symlinks are
/// not followed. Stops as soon as the total passes `max_bytes`, so a
/// hostile tree cannot make the walk itself long.
pub(super) fn usage(dir: &Path, max_bytes: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // An unreadable directory (possible only when the daemon is not
        // root) is skipped rather than failing the job; its entries were
        // still charged one by one where the parent listed them.
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let mut charge = MIN_ENTRY_BYTES;
            if let Ok(meta) = entry.metadata() {
                charge = charge.max(meta.blocks().saturating_mul(512));
                if meta.file_type().is_dir() {
                    stack.push(entry.path());
                }
            }
            total = total.saturating_add(charge);
            if total > max_bytes {
                return total;
            }
        }
    }
    total
}

fn too_large(rel: &str, cap: u64) -> ExecError {
    ExecError::OutputTooLarge {
        stream: OutputStream::File(rel.to_string()),
        limit_bytes: cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid_gid() -> (u32, u32) {
        (65534, 65534)
    }

    fn workspace(inputs: &[(&str, &[u8])]) -> (TempDir, Workspace) {
        let parent = tempfile::tempdir().unwrap();
        let map = inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        let (u, g) = uid_gid();
        let ws = Workspace::create(parent.path(), &map, u, g).unwrap();
        (parent, ws)
    }

    #[test]
    fn inputs_are_written_read_only() {
        let (_p, ws) = workspace(&[("a.txt", b"hello"), ("b.bin", &[0, 1, 2])]);
        assert_eq!(fs::read(ws.in_dir().join("a.txt")).unwrap(), b"hello");
        assert_eq!(fs::read(ws.in_dir().join("b.bin")).unwrap(), [0, 1, 2]);
        let mode = fs::metadata(ws.in_dir().join("a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        let mode = fs::metadata(ws.in_dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
    }

    #[test]
    fn bad_input_names_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/../b", "a//b", "/a", "..", ".", ""] {
            let map = BTreeMap::from([(bad.to_string(), b"x".to_vec())]);
            let err = Workspace::create(parent.path(), &map, 65534, 65534).unwrap_err();
            assert!(matches!(err, ExecError::Io { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_nested_input_gets_its_directories() {
        let (_p, ws) = workspace(&[("0.out", b"a"), ("0/res/x.txt", b"b")]);
        assert_eq!(fs::read(ws.in_dir().join("0/res/x.txt")).unwrap(), b"b");
        assert!(ws.in_dir().join("0/res").is_dir());
        let root = ws.in_dir().parent().unwrap().to_path_buf();
        ws.remove().unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn removal_deletes_everything() {
        let (_p, ws) = workspace(&[("a", b"1")]);
        fs::write(ws.out_dir().join("o"), b"x").unwrap();
        let root = ws.in_dir().parent().unwrap().to_path_buf();
        ws.remove().unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn outputs_are_collected_and_missing_ones_left_out() {
        let (_p, ws) = workspace(&[]);
        fs::create_dir(ws.out_dir().join("sub")).unwrap();
        fs::write(ws.out_dir().join("sub/r.txt"), b"result").unwrap();
        fs::write(ws.out_dir().join("top"), b"").unwrap();
        let declared = vec!["sub/r.txt".into(), "top".into(), "missing".into()];
        let out = collect_outputs(ws.out_dir(), &declared, 100).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out["sub/r.txt"].as_ref(), b"result");
        assert_eq!(out["top"].as_ref(), b"");
    }

    #[test]
    fn symlinks_and_special_files_are_not_followed() {
        let (_p, ws) = workspace(&[]);
        let secret = ws.in_dir().parent().unwrap().join("secret");
        fs::write(&secret, b"host secret").unwrap();
        std::os::unix::fs::symlink(&secret, ws.out_dir().join("link")).unwrap();
        std::os::unix::fs::symlink(ws.in_dir().parent().unwrap(), ws.out_dir().join("dir"))
            .unwrap();
        fs::create_dir(ws.out_dir().join("adir")).unwrap();
        let declared = vec!["link".into(), "dir/secret".into(), "adir".into()];
        let out = collect_outputs(ws.out_dir(), &declared, 1 << 20).unwrap();
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn output_over_the_cap_is_an_error() {
        let (_p, ws) = workspace(&[]);
        fs::write(ws.out_dir().join("big"), vec![7u8; 11]).unwrap();
        fs::write(ws.out_dir().join("ok"), vec![7u8; 10]).unwrap();
        let out = collect_outputs(ws.out_dir(), &["ok".into()], 10).unwrap();
        assert_eq!(out["ok"].len(), 10);
        let err = collect_outputs(ws.out_dir(), &["big".into()], 10).unwrap_err();
        match err {
            ExecError::OutputTooLarge {
                stream: OutputStream::File(p),
                limit_bytes: 10,
            } => assert_eq!(p, "big"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn usage_counts_blocks_and_entries_without_following_links() {
        let (_p, ws) = workspace(&[]);
        let out = ws.out_dir();
        fs::create_dir(out.join("d")).unwrap();
        fs::write(out.join("d/f"), vec![1u8; 100_000]).unwrap();
        // Sparse: a huge size but almost nothing allocated.
        fs::File::create(out.join("sparse"))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        std::os::unix::fs::symlink("/", out.join("root")).unwrap();
        let u = usage(out, u64::MAX);
        // d, sparse and root at the minimum; f at its blocks.
        assert!(u >= 3 * MIN_ENTRY_BYTES + 100_000, "{u}");
        assert!(u < 1 << 20, "{u}");

        // Many empty files are charged too, and the walk stops early.
        for i in 0..100 {
            fs::write(out.join(format!("e{i}")), b"").unwrap();
        }
        assert!(usage(out, u64::MAX) >= 103 * MIN_ENTRY_BYTES);
        let capped = usage(out, 10 * MIN_ENTRY_BYTES);
        assert!(capped > 10 * MIN_ENTRY_BYTES && capped < 40 * MIN_ENTRY_BYTES);
    }

    #[test]
    fn escaping_output_paths_are_skipped() {
        let (_p, ws) = workspace(&[]);
        let declared = vec!["../in".into(), "/etc/passwd".into(), "a//b".into()];
        let out = collect_outputs(ws.out_dir(), &declared, 1 << 20).unwrap();
        assert!(out.is_empty());
    }
}
