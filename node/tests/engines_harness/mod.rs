//! Separate Docker engines for tests: one private `dockerd` per test node,
//! so that an engine really lacks an image until something puts it there.
//!
//! Each [`Engine`] runs its own `dockerd` (and the `containerd` that dockerd
//! starts) with every path in a fresh temporary directory under `/tmp`, no
//! bridge network and no iptables rules. Dropping the engine stops it and
//! removes the directory. Needs root and the `dockerd`, `docker`, `setpriv`
//! and `umount` binaries; fails (never skips) without them.

#![allow(dead_code)] // each test file uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::ListImagesOptionsBuilder;
use bollard::Docker;
use tempfile::TempDir;

/// How long a new engine may take to answer (it usually takes about 1 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopping engine gets after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A private Docker engine, stopped and deleted on drop.
pub struct Engine {
    /// The engine's API address, `unix:///tmp/.../docker.sock`: for
    /// `docker -H`, `DockerConfig::socket` or `Docker::connect_with_unix`.
    pub socket: String,
    /// The process id of the engine's `dockerd`.
    pub pid: u32,
    /// The name given to [`Engine::start`], for messages.
    name: String,
    /// The running `dockerd`, kept to stop and reap it.
    child: Child,
    /// A client of this engine, negotiated down to its API version; set
    /// once the engine answers.
    docker: Option<Docker>,
    /// Everything of this engine: config, data root, exec root, socket,
    /// pid file and log. `None` once removed.
    dirs: Option<TempDir>,
}

impl Engine {
    /// Starts a fresh engine and waits (up to [`START_TIMEOUT`]) until it
    /// answers a ping; panics with the tail of its log otherwise.
    ///
    /// `name` only labels the temporary directory and messages. The
    /// `dockerd` is started with `setpriv --pdeathsig KILL`, so that it
    /// does not outlive a test process killed hard: it also dies if the
    /// thread that called `start` ends, so call this from the test's own
    /// task, not from `spawn_blocking` or a short-lived thread.
    pub async fn start(name: &str) -> Engine {
        // Unix socket paths are limited to about 107 bytes, and dockerd puts
        // containerd's socket deep in the exec root: keep the prefix short.
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(10)
            .collect();
        let dirs = tempfile::Builder::new()
            .prefix(&format!("ae-{short}-"))
            .tempdir_in("/tmp")
            .expect("cannot create the engine's directory under /tmp");
        let root = dirs.path().to_path_buf();
        let config = root.join("c.json");
        let data = root.join("d");
        let exec = root.join("e");
        let sock = root.join("docker.sock");
        let pidfile = root.join("docker.pid");
        let log = root.join("dockerd.log");
        // /etc/docker/daemon.json names the host engine's data root (and
        // storage driver); an empty config file replaces it.
        std::fs::write(&config, "{}\n").unwrap();
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&exec).unwrap();
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();

        let socket = format!("unix://{}", sock.display());
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "dockerd"])
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(&exec)
            .arg("-H")
            .arg(&socket)
            .arg("--pidfile")
            .arg(&pidfile)
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("engine {name}: cannot run setpriv/dockerd: {e}"));
        let pid = child.id();
        // From here on, a panic drops the engine, which stops the dockerd.
        let mut engine = Engine {
            socket,
            pid,
            name: name.to_string(),
            child,
            docker: None,
            dirs: Some(dirs),
        };

        let started = Instant::now();
        let docker = loop {
            if let Some(status) = engine.child.try_wait().unwrap() {
                panic!(
                    "engine {name}: dockerd exited with {status} before answering\n{}",
                    engine.log_tail()
                );
            }
            // Connecting fails until the socket exists.
            if let Ok(docker) =
                Docker::connect_with_unix(&engine.socket, 120, bollard::API_DEFAULT_VERSION)
            {
                let ping = tokio::time::timeout(Duration::from_secs(5), docker.ping()).await;
                if matches!(ping, Ok(Ok(_))) {
                    break docker;
                }
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "engine {name}: no answer at {} within {START_TIMEOUT:?}\n{}",
                    engine.socket,
                    engine.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        engine.docker = Some(
            docker
                .negotiate_version()
                .await
                .unwrap_or_else(|e| panic!("engine {name}: version negotiation failed: {e}")),
        );
        engine
    }

    /// A client of this engine, already negotiated down to its API version.
    pub fn docker(&self) -> &Docker {
        self.docker.as_ref().expect("the engine is started")
    }

    /// The engine's temporary directory (holding `dockerd.log`).
    pub fn dir(&self) -> &Path {
        self.dirs
            .as_ref()
            .expect("the engine is already removed")
            .path()
    }

    /// The last 40 lines of this engine's `dockerd` log.
    pub fn log_tail(&self) -> String {
        let log = self.dir().join("dockerd.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- {} (tail) ---\n{}",
            log.display(),
            lines[from..].join("\n")
        )
    }

    /// Copies `image` (a name or id) from the host's default engine into
    /// this one: `docker save IMAGE | docker -H SOCKET load`. Panics if
    /// either side fails.
    pub async fn load_from_host(&self, image: &str) {
        let image = image.to_string();
        let socket = self.socket.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut save = Command::new("docker")
                .args(["save", &image])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot run docker save");
            let load = Command::new("docker")
                .args(["-H", &socket, "load", "--quiet"])
                .stdin(save.stdout.take().unwrap())
                .output()
                .expect("cannot run docker load");
            let saved = save.wait_with_output().unwrap();
            assert!(
                saved.status.success(),
                "docker save {image} failed: {}",
                String::from_utf8_lossy(&saved.stderr)
            );
            assert!(
                load.status.success(),
                "engine {name}: docker load of {image} failed: {}",
                String::from_utf8_lossy(&load.stderr)
            );
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }

    /// Whether this engine holds `id` (an image id, `sha256:...` or a
    /// unique prefix of one, or a `name:tag`).
    pub async fn has_image(&self, id: &str) -> bool {
        match self.docker().inspect_image(id).await {
            Ok(_) => true,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Err(e) => panic!("engine {}: inspecting {id} failed: {e}", self.name),
        }
    }

    /// The ids (`sha256:...`) of this engine's top-level images, sorted.
    pub async fn image_ids(&self) -> Vec<String> {
        let images = self
            .docker()
            .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
            .await
            .unwrap_or_else(|e| panic!("engine {}: listing images failed: {e}", self.name));
        let mut ids: Vec<String> = images.into_iter().map(|i| i.id).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Stops the dockerd: kills its running containers (on SIGTERM it would
    /// give each one 10 s to stop), SIGTERM, then SIGKILL after
    /// [`STOP_TIMEOUT`]. Then kills whatever it left running under this
    /// engine's directory (containerd, shims), by pid.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_containers();
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match self.child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(None) => {
                        eprintln!(
                            "engine {}: dockerd {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                            self.name, self.pid
                        );
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                    _ => break,
                }
            }
        }
        let Some(dir) = self.dirs.as_ref().map(|d| d.path().to_path_buf()) else {
            return;
        };
        // containerd exits with dockerd (it has a parent-death signal), but
        // check: nothing started for this engine may outlive it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_under(&dir);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "engine {}: processes {left:?} under {} would not die",
                    self.name,
                    dir.display()
                );
                break;
            }
            for pid in left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Engine {
    /// Best effort: SIGKILL to every running container of this engine.
    fn kill_containers(&self) {
        let Ok(ps) = Command::new("docker")
            .args(["-H", &self.socket, "ps", "--quiet"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            return;
        };
        let running = String::from_utf8_lossy(&ps.stdout);
        let ids: Vec<&str> = running.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["-H", &self.socket, "kill"])
                .args(&ids)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        let Some(dirs) = self.dirs.take() else {
            return;
        };
        // dockerd bind-mounts its data root onto itself and unmounts it on a
        // clean exit; after a kill, it and any overlay mounts remain.
        for mount in mounts_under(dirs.path()) {
            let ok = Command::new("umount")
                .arg(&mount)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&mount).status();
            }
        }
        let path = dirs.path().to_path_buf();
        if let Err(e) = dirs.close() {
            eprintln!(
                "engine {}: cannot remove {}: {e}",
                self.name,
                path.display()
            );
        }
    }
}

/// Pids of the processes (other than this one) whose command line names a
/// path inside `dir`.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Mount points at or inside `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
