//! The daemon's configuration: defaults, then `DATA_DIR/config.toml`, then
//! command-line flags (and their environment variables), the later winning.
//!
//! **Invariant:** the merge ([`DaemonConfig::merge`]) is pure; only
//! [`DaemonConfig::load`] touches the file system and the environment.
//! Unknown keys in the file are an error naming the key, so a typo never
//! silently leaves a default in place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::limits::{MAX_ADDRS, MAX_LABELS, MAX_STRING_BYTES};
use agora_protocol::PeerId;
use agora_verifier::AdaptivePolicy;
use libp2p::Multiaddr;
use serde::Deserialize;

use crate::jobs::fault::Fault;
use crate::network::adverts::DEFAULT_ADVERT_INTERVAL;

/// Name of the config file inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Default p2p port, for TCP and QUIC.
pub const DEFAULT_P2P_PORT: u16 = 7400;
/// Default control API address: loopback only.
pub const DEFAULT_API: &str = "127.0.0.1:7401";
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// How the daemon writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format '{other}' (use text or json)")),
        }
    }
}

/// Everything a daemon needs to start. Build with [`DaemonConfig::load`]
/// (binaries) or [`DaemonConfig::new`] and field changes (tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Keys, store, caches, the API token and address files.
    pub data_dir: PathBuf,
    /// p2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers dialed first to find the network (ideally with `/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses known to reach this node from outside (public IP, port
    /// forward); they make the node a DHT server at once.
    pub external: Vec<Multiaddr>,
    /// Where the control API listens (port 0: any free port; the actual
    /// address is written to `DATA_DIR/api.addr`).
    pub api: SocketAddr,
    /// Operator labels advertised to the network, e.g. `region=eu`.
    pub labels: BTreeMap<String, String>,
    /// Most jobs run at once.
    pub max_jobs: u32,
    /// Log format (the binary sets up logging; the library only logs).
    pub log_format: LogFormat,
    /// Whether to try the Docker executor at all.
    pub docker: bool,
    /// The Docker engine's socket (`unix:///path`); `None` uses
    /// `DOCKER_HOST`, else `/var/run/docker.sock`. Not a file key: tests
    /// give each in-process node its own engine.
    pub docker_host: Option<String>,
    /// Whether to fetch Docker images this node lacks from peers (flag
    /// `--no-image-fetch`, file key `image_fetch`).
    pub image_fetch: bool,
    /// Disk the images this node keeps may take, in bytes: as blobs for
    /// peers to fetch, and (those agora fetched) loaded in Docker. Beyond
    /// it the least recently used are forgotten and those agora loaded
    /// leave Docker; an image agora did not load never does (flag
    /// `--image-cache`, file key `image_cache_bytes`).
    pub image_cache_bytes: u64,
    /// Time between capability adverts (also heartbeats). Not a file key:
    /// tests shorten it.
    pub advert_interval: Duration,
    /// Disk the blob store may keep for blobs no job references, in bytes
    /// (file key `blob_budget_bytes`).
    pub blob_budget_bytes: u64,
    /// This node belongs to a test network (allows [`DaemonConfig::fault`]).
    pub testnet: bool,
    /// Deliberate misbehaviour as executor, for testing byzantine
    /// tolerance; refused unless `testnet`.
    pub fault: Option<Fault>,
    /// Choose executors ignoring reputation. Not a flag or file key: the
    /// collusion benchmark sets it to measure what reputation buys.
    pub uniform_selection: bool,
    /// When this node's adaptive jobs may run on one trusted executor
    /// (file keys `adaptive_min_clean_streak`, default 10, and
    /// `adaptive_spot_check_permille`, default 50).
    pub adaptive: AdaptivePolicy,
    /// Peers the operator vouches for (its own machines, say): their
    /// gossiped verdicts count from the start, as EigenTrust's pre-trusted
    /// peers. Everyone else earns that by agreeing with this node's own
    /// jobs.
    pub trust: Vec<PeerId>,
}

/// Default [`DaemonConfig::image_cache_bytes`]: 8 GiB.
pub const DEFAULT_IMAGE_CACHE: u64 = 8 * 1024 * 1024 * 1024;

/// Default [`DaemonConfig::blob_budget_bytes`]: 10 GiB.
pub const DEFAULT_BLOB_BUDGET: u64 = 10 * 1024 * 1024 * 1024;

/// The keys `config.toml` may hold; all optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`DaemonConfig::listen`].
    pub listen: Option<Vec<String>>,
    /// See [`DaemonConfig::bootstrap`].
    pub bootstrap: Option<Vec<String>>,
    /// See [`DaemonConfig::external`].
    pub external: Option<Vec<String>>,
    /// See [`DaemonConfig::api`].
    pub api: Option<String>,
    /// See [`DaemonConfig::labels`].
    pub labels: Option<BTreeMap<String, String>>,
    /// See [`DaemonConfig::max_jobs`].
    pub max_jobs: Option<u32>,
    /// See [`DaemonConfig::log_format`].
    pub log_format: Option<LogFormat>,
    /// See [`DaemonConfig::docker`].
    pub docker: Option<bool>,
    /// See [`DaemonConfig::blob_budget_bytes`].
    pub blob_budget_bytes: Option<u64>,
    /// See [`DaemonConfig::image_fetch`].
    pub image_fetch: Option<bool>,
    /// See [`DaemonConfig::image_cache_bytes`].
    pub image_cache_bytes: Option<u64>,
    /// Agreements in a row that let a peer run adaptive jobs alone.
    pub adaptive_min_clean_streak: Option<u64>,
    /// Share of a trusted peer's adaptive jobs spot-checked at full
    /// replication, in thousandths.
    pub adaptive_spot_check_permille: Option<u32>,
    /// See [`DaemonConfig::trust`] (PeerIds).
    pub trust: Option<Vec<String>>,
}

/// Settings given on the command line (or by environment variables); each
/// one set replaces the file's value. Labels merge key by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    /// `--data-dir` / `AGORA_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` (replaces the file's list when any is given).
    pub listen: Vec<String>,
    /// `--bootstrap` (replaces the file's list when any is given).
    pub bootstrap: Vec<String>,
    /// `--external` (replaces the file's list when any is given).
    pub external: Vec<String>,
    /// `--api` / `AGORA_API`.
    pub api: Option<String>,
    /// `--label K=V`, each overriding the file's label of the same key.
    pub labels: Vec<String>,
    /// `--max-jobs`.
    pub max_jobs: Option<u32>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--testnet`.
    pub testnet: bool,
    /// `--fault MODE`.
    pub fault: Option<String>,
    /// `--trust PEER` (replaces the file's list when any is given).
    pub trust: Vec<String>,
    /// `--no-image-fetch`.
    pub no_image_fetch: bool,
    /// `--image-cache SIZE`, in bytes.
    pub image_cache_bytes: Option<u64>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No data directory was given and `HOME` is not set.
    #[error("HOME is not set; pass --data-dir or set AGORA_DATA_DIR")]
    NoHome,
    /// The config file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is too large to be a config file.
    #[error("{} is {len} bytes; a config file may be at most {MAX_CONFIG_BYTES}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The config file is not valid TOML or has an unknown key or a value
    /// of the wrong type (toml's message names the key).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's description, with line and key.
        message: String,
    },
    /// A value is malformed.
    #[error("invalid {key} {value:?}: {reason}")]
    Invalid {
        /// Which setting.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_addrs(key: &'static str, values: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    if values.len() > MAX_ADDRS {
        return Err(invalid(
            key,
            format!("{} addresses", values.len()),
            format!("at most {MAX_ADDRS} are allowed"),
        ));
    }
    values
        .iter()
        .map(|v| v.parse().map_err(|e| invalid(key, v, format!("{e}"))))
        .collect()
}

/// Parses one `KEY=VALUE` label.
pub fn parse_label(s: &str) -> Result<(String, String), ConfigError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| invalid("label", s, "expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(invalid("label", s, "the key is empty"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// CPU cores of this machine (1 if unknown).
pub fn available_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

impl DaemonConfig {
    /// The defaults for `data_dir`: p2p on TCP and QUIC port 7400 on all
    /// interfaces, API on 127.0.0.1:7401, one job per core, Docker if
    /// reachable.
    pub fn new(data_dir: PathBuf) -> Self {
        let listen = [
            format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
            format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
        ]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
        Self {
            data_dir,
            listen,
            bootstrap: Vec::new(),
            external: Vec::new(),
            api: SocketAddr::from(([127, 0, 0, 1], 7401)),
            labels: BTreeMap::new(),
            max_jobs: available_cores(),
            log_format: LogFormat::Text,
            docker: true,
            docker_host: None,
            image_fetch: true,
            image_cache_bytes: DEFAULT_IMAGE_CACHE,
            advert_interval: DEFAULT_ADVERT_INTERVAL,
            blob_budget_bytes: DEFAULT_BLOB_BUDGET,
            testnet: false,
            fault: None,
            uniform_selection: false,
            adaptive: AdaptivePolicy::default(),
            trust: Vec::new(),
        }
    }

    /// The default data directory, `~/.agora`.
    pub fn default_data_dir() -> Result<PathBuf, ConfigError> {
        let home = std::env::var_os("HOME").ok_or(ConfigError::NoHome)?;
        Ok(PathBuf::from(home).join(".agora"))
    }

    /// Resolves the data directory, reads its `config.toml` if there is
    /// one, and applies `flags` on top.
    pub fn load(flags: Overrides) -> Result<Self, ConfigError> {
        let data_dir = match &flags.data_dir {
            Some(d) => d.clone(),
            None => Self::default_data_dir()?,
        };
        let file = read_file_config(&data_dir.join(CONFIG_FILE))?;
        Self::merge(data_dir, file.unwrap_or_default(), flags)
    }

    /// Defaults, then `file`, then `flags`. Pure.
    pub fn merge(
        data_dir: PathBuf,
        file: FileConfig,
        flags: Overrides,
    ) -> Result<Self, ConfigError> {
        let mut c = Self::new(data_dir);
        let pick = |flag: Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() {
                file
            } else {
                Some(flag)
            }
        };
        if let Some(v) = pick(flags.listen, file.listen) {
            c.listen = parse_addrs("listen address", &v)?;
        }
        if let Some(v) = pick(flags.bootstrap, file.bootstrap) {
            c.bootstrap = parse_addrs("bootstrap address", &v)?;
        }
        if let Some(v) = pick(flags.external, file.external) {
            c.external = parse_addrs("external address", &v)?;
        }
        if let Some(v) = pick(flags.trust, file.trust) {
            c.trust = v
                .iter()
                .map(|p| {
                    p.parse::<PeerId>()
                        .map_err(|e| invalid("trusted peer", p, format!("{e} (expected a PeerId)")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(api) = flags.api.or(file.api) {
            c.api = api
                .parse()
                .map_err(|e| invalid("api address", &api, format!("{e} (expected IP:PORT)")))?;
        }
        if let Some(labels) = file.labels {
            c.labels = labels;
        }
        for l in &flags.labels {
            let (k, v) = parse_label(l)?;
            c.labels.insert(k, v);
        }
        if c.labels.len() > MAX_LABELS {
            return Err(invalid(
                "labels",
                format!("{} labels", c.labels.len()),
                format!("at most {MAX_LABELS} are allowed"),
            ));
        }
        if let Some((k, v)) = c
            .labels
            .iter()
            .find(|(k, v)| k.len() > MAX_STRING_BYTES || v.len() > MAX_STRING_BYTES)
        {
            return Err(invalid(
                "label",
                format!("{k}={v}"),
                format!("keys and values are at most {MAX_STRING_BYTES} bytes"),
            ));
        }
        if let Some(n) = flags.max_jobs.or(file.max_jobs) {
            if n == 0 {
                return Err(invalid("max_jobs", "0", "must be at least 1"));
            }
            c.max_jobs = n;
        }
        if let Some(f) = flags.log_format.or(file.log_format) {
            c.log_format = f;
        }
        if let Some(d) = file.docker {
            c.docker = d;
        }
        if let Some(b) = file.blob_budget_bytes {
            c.blob_budget_bytes = b;
        }
        if let Some(f) = file.image_fetch {
            c.image_fetch = f;
        }
        if flags.no_image_fetch {
            c.image_fetch = false;
        }
        if let Some(b) = flags.image_cache_bytes.or(file.image_cache_bytes) {
            c.image_cache_bytes = b;
        }
        if file.adaptive_min_clean_streak.is_some() || file.adaptive_spot_check_permille.is_some() {
            let streak = file
                .adaptive_min_clean_streak
                .unwrap_or(c.adaptive.min_clean_streak());
            let permille = file
                .adaptive_spot_check_permille
                .unwrap_or(c.adaptive.spot_check_permille());
            c.adaptive = AdaptivePolicy::new(streak, permille).map_err(|e| {
                invalid(
                    "adaptive_min_clean_streak / adaptive_spot_check_permille",
                    format!("{streak} / {permille}"),
                    e.to_string(),
                )
            })?;
        }
        c.testnet = flags.testnet;
        if let Some(f) = &flags.fault {
            let fault: Fault = f.parse().map_err(|e: String| invalid("fault", f, e))?;
            if !c.testnet {
                return Err(invalid(
                    "fault",
                    f,
                    "a fault mode makes this node misbehave on purpose; it is only accepted together with --testnet",
                ));
            }
            c.fault = Some(fault);
        }
        Ok(c)
    }
}

/// Reads and parses a config file; `None` if it does not exist.
pub fn read_file_config(path: &Path) -> Result<Option<FileConfig>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse_file_config(&text)
        .map(Some)
        .map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
}

/// Parses config-file text; the error is toml's message (with the key).
pub fn parse_file_config(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/data")
    }

    #[test]
    fn defaults_listen_on_7400_tcp_and_quic_and_api_on_loopback() {
        let c = DaemonConfig::merge(dir(), FileConfig::default(), Overrides::default()).unwrap();
        let listen: Vec<String> = c.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            listen,
            ["/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"]
        );
        assert_eq!(c.api.to_string(), DEFAULT_API);
        assert!(c.max_jobs >= 1);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let file = parse_file_config(
            r#"
            listen = ["/ip4/127.0.0.1/tcp/9000"]
            bootstrap = ["/ip4/10.0.0.1/tcp/7400"]
            api = "127.0.0.1:9001"
            max_jobs = 3
            log_format = "json"
            docker = false
            trust = ["12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"]
            [labels]
            region = "eu"
            gpu = "none"
            "#,
        )
        .unwrap();
        let only_file = DaemonConfig::merge(dir(), file.clone(), Overrides::default()).unwrap();
        assert_eq!(only_file.listen[0].to_string(), "/ip4/127.0.0.1/tcp/9000");
        assert_eq!(only_file.bootstrap.len(), 1);
        assert_eq!(only_file.api.port(), 9001);
        assert_eq!(only_file.max_jobs, 3);
        assert_eq!(only_file.log_format, LogFormat::Json);
        assert!(!only_file.docker);
        assert_eq!(only_file.labels["region"], "eu");
        assert_eq!(only_file.trust.len(), 1);

        let flags = Overrides {
            listen: vec!["/ip4/127.0.0.1/tcp/9100".into()],
            api: Some("127.0.0.1:9101".into()),
            labels: vec!["region=us".into()],
            max_jobs: Some(5),
            log_format: Some(LogFormat::Text),
            ..Overrides::default()
        };
        let c = DaemonConfig::merge(dir(), file, flags).unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/9100");
        // Not given as a flag: the file's value stays.
        assert_eq!(c.bootstrap[0].to_string(), "/ip4/10.0.0.1/tcp/7400");
        assert_eq!(c.api.port(), 9101);
        assert_eq!(c.max_jobs, 5);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.labels["region"], "us");
        assert_eq!(c.labels["gpu"], "none");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let err = parse_file_config("listen = []\nmax_jobz = 3\n").unwrap_err();
        assert!(err.contains("max_jobz"), "{err}");
    }

    #[test]
    fn a_wrongly_typed_value_is_an_error() {
        let err = parse_file_config("max_jobs = \"many\"\n").unwrap_err();
        assert!(err.contains("max_jobs"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let bad = |o: Overrides| {
            DaemonConfig::merge(dir(), FileConfig::default(), o)
                .unwrap_err()
                .to_string()
        };
        let e = bad(Overrides {
            listen: vec!["not-a-multiaddr".into()],
            ..Overrides::default()
        });
        assert!(e.contains("listen address"), "{e}");
        let e = bad(Overrides {
            api: Some("localhost".into()),
            ..Overrides::default()
        });
        assert!(e.contains("api address"), "{e}");
        let e = bad(Overrides {
            labels: vec!["novalue".into()],
            ..Overrides::default()
        });
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = bad(Overrides {
            max_jobs: Some(0),
            ..Overrides::default()
        });
        assert!(e.contains("max_jobs"), "{e}");
        let e = bad(Overrides {
            trust: vec!["not-a-peer".into()],
            ..Overrides::default()
        });
        assert!(e.contains("trusted peer"), "{e}");
        let e = bad(Overrides {
            fault: Some("lie".into()),
            ..Overrides::default()
        });
        assert!(e.contains("--testnet"), "{e}");
        let e = bad(Overrides {
            fault: Some("sulk".into()),
            testnet: true,
            ..Overrides::default()
        });
        assert!(e.contains("unknown fault mode"), "{e}");
        let ok = DaemonConfig::merge(
            PathBuf::from("/d"),
            FileConfig::default(),
            Overrides {
                fault: Some("collude=red".into()),
                testnet: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(ok.fault, Some(Fault::Collude("red".into())));
    }

    #[test]
    fn load_reads_the_data_dirs_file_and_reports_its_path_on_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CONFIG_FILE), "max_jobs = 7\n").unwrap();
        let c = DaemonConfig::load(Overrides {
            data_dir: Some(d.path().to_owned()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.max_jobs, 7);
        std::fs::write(d.path().join(CONFIG_FILE), "colour = 1\n").unwrap();
        let e = DaemonConfig::load(Overrides {
            data_dir: Some(d.path().to_owned()),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("config.toml") && e.contains("colour"), "{e}");
    }

    #[test]
    fn adaptive_keys_set_the_policy_and_bad_values_are_refused() {
        let merge = |text: &str| {
            DaemonConfig::merge(
                dir(),
                parse_file_config(text).unwrap(),
                Overrides::default(),
            )
        };
        let c = merge("").unwrap();
        assert_eq!(c.adaptive, AdaptivePolicy::default());
        let c = merge("adaptive_spot_check_permille = 200\n").unwrap();
        assert_eq!(c.adaptive.spot_check_permille(), 200);
        assert_eq!(c.adaptive.min_clean_streak(), 10);
        let c = merge("adaptive_min_clean_streak = 30\n").unwrap();
        assert_eq!(c.adaptive, AdaptivePolicy::new(30, 50).unwrap());
        for bad in [
            "adaptive_min_clean_streak = 0\n",
            "adaptive_spot_check_permille = 1001\n",
        ] {
            let e = merge(bad).unwrap_err().to_string();
            assert!(e.contains("adaptive"), "{e}");
        }
    }
}
