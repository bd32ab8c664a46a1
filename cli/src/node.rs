//! `agora daemon` (run a node in this process) and the commands that ask a
//! running daemon about itself and the network: `agora id`, `agora peers`,
//! `agora nodes`.
//!
//! The client finds its daemon from `--api`/`AGORA_API`, else from the
//! address the daemon wrote to `DATA_DIR/api.addr`, and reads the token
//! from `DATA_DIR/api.token`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_node::api::client::{ApiClient, ClientError, ADDR_FILE};
use agora_node::api::token::{read_token, TOKEN_FILE};
use agora_node::api::types::{IdInfo, NodeInfo, NodesInfo, PeersInfo};
use agora_node::config::{DaemonConfig, LogFormat, Overrides};
use agora_node::daemon;
/// Sizes read the same here as in the daemon's texts.
pub use agora_protocol::units::human_bytes;
use anyhow::{bail, Context, Result};
use clap::Args;

/// Flags of `agora daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// p2p listen address (repeatable); default TCP and QUIC on port 7400.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Peer to dial first to find the network, ideally ending in
    /// /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Address where other machines reach this node (public IP, port
    /// forward), repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    external: Vec<String>,
    /// Control API address; default 127.0.0.1:7401 (port 0: any free port).
    #[arg(long, env = "AGORA_API", value_name = "ADDR")]
    api: Option<String>,
    /// Label advertised to the network, e.g. region=eu (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Most jobs run at once; default one per core.
    #[arg(long, value_name = "N")]
    max_jobs: Option<u32>,
    /// Peer whose gossiped verdicts count from the start, e.g. another of
    /// your own nodes (repeatable). Others earn it by agreeing with this
    /// node's own jobs.
    #[arg(long = "trust", value_name = "PEER_ID")]
    trust: Vec<String>,
    /// This node is part of a test network (required by --fault).
    #[arg(long)]
    testnet: bool,
    /// Misbehave on purpose as executor, to test byzantine tolerance:
    /// lie, collude=GROUP, slow, drop, flaky, sleeper=N (honest for N
    /// results, then lies) or corrupt-blobs (serves flipped blob bytes).
    /// Needs --testnet.
    #[arg(long, value_name = "MODE", requires = "testnet")]
    fault: Option<String>,
    /// Do not fetch Docker images from peers: run only jobs whose image
    /// this node's engine already holds.
    #[arg(long)]
    no_image_fetch: bool,
    /// Disk the images this node keeps may take, as blobs for peers and
    /// (those agora fetched) loaded in Docker; the least recently used go
    /// first, and an image agora did not load never leaves Docker;
    /// default 8GiB.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    image_cache: Option<u64>,
}

/// How a client command finds its daemon.
#[derive(Debug, Args)]
pub struct ApiOpt {
    /// The daemon's control API address; default: the address in
    /// DATA_DIR/api.addr.
    #[arg(long, env = "AGORA_API", value_name = "ADDR")]
    api: Option<String>,
}

impl ApiOpt {
    /// A client of the daemon, with the token of `data_dir`.
    pub fn client(&self, data_dir: &Path) -> Result<ApiClient> {
        client(self.api.as_deref(), data_dir)
    }
}

/// Flags of the commands that query a daemon.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    api: ApiOpt,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Loads the daemon configuration (flags over `config.toml`).
pub fn daemon_config(
    args: &DaemonArgs,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<DaemonConfig> {
    Ok(DaemonConfig::load(Overrides {
        data_dir,
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
        external: args.external.clone(),
        api: args.api.clone(),
        labels: args.labels.clone(),
        max_jobs: args.max_jobs,
        log_format,
        testnet: args.testnet,
        fault: args.fault.clone(),
        trust: args.trust.clone(),
        no_image_fetch: args.no_image_fetch,
        image_cache_bytes: args.image_cache,
    })?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, Ctrl-C still works.
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        () = term => {}
    }
}

/// `agora daemon`: runs until SIGINT/SIGTERM.
pub async fn run_daemon(config: DaemonConfig) -> Result<i32> {
    let data_dir = config.data_dir.clone();
    let d = daemon::start(config)
        .await
        .with_context(|| format!("starting the daemon in {}", data_dir.display()))?;
    let listen = d.listen_addrs(Duration::from_secs(5)).await;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "peer id: {}", d.peer_id())?;
        for a in &listen {
            writeln!(out, "listening on: {a}/p2p/{}", d.peer_id())?;
        }
        writeln!(out, "control API: http://{}", d.api_addr())?;
        writeln!(out, "data dir: {}", data_dir.display())?;
        out.flush()?;
    }
    let stopped = d.stopped();
    tokio::select! {
        () = shutdown_signal() => tracing::info!("signal received"),
        () = stopped.cancelled() => tracing::warn!("a vital task stopped"),
    }
    d.shutdown().await?;
    Ok(0)
}

fn not_running(addr: &str, data_dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no agora daemon is running at {addr}; start one with `agora daemon --data-dir {}`",
        data_dir.display()
    )
}

/// A client of the daemon for `data_dir`.
fn client(api: Option<&str>, data_dir: &Path) -> Result<ApiClient> {
    let addr: SocketAddr = match api {
        Some(a) => a
            .parse()
            .with_context(|| format!("invalid --api address {a:?} (expected IP:PORT)"))?,
        None => {
            let path = data_dir.join(ADDR_FILE);
            match std::fs::read_to_string(&path) {
                Ok(s) => s.trim().parse().with_context(|| {
                    format!("{} does not hold an address; is it from an agora daemon?", path.display())
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "no agora daemon is running for {} (no {ADDR_FILE}); start one with `agora daemon --data-dir {}`",
                    data_dir.display(),
                    data_dir.display()
                ),
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
    };
    let token = read_token(&data_dir.join(TOKEN_FILE))?;
    if token.is_none() {
        bail!(
            "no API token in {}; start the daemon once with `agora daemon --data-dir {}` to create it",
            data_dir.join(TOKEN_FILE).display(),
            data_dir.display()
        );
    }
    Ok(ApiClient::new(addr, token))
}

/// `e` for a human: a refused connection means no daemon runs there.
pub fn explain(e: ClientError, data_dir: &Path) -> anyhow::Error {
    match e {
        ClientError::Connect { addr, .. } => not_running(&addr.to_string(), data_dir),
        e => e.into(),
    }
}

async fn fetch<T: serde::de::DeserializeOwned>(
    args: &QueryArgs,
    data_dir: &Path,
    path: &str,
) -> Result<T> {
    let c = args.api.client(data_dir)?;
    c.get_json(path).await.map_err(|e| explain(e, data_dir))
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// `agora id`.
pub async fn id(args: QueryArgs, data_dir: &Path) -> Result<i32> {
    let info: IdInfo = fetch(&args, data_dir, "/api/v1/id").await?;
    if args.json {
        print_json(&info)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "peer id: {}", info.peer_id)?;
    writeln!(out, "agent:   {}", info.agent_version)?;
    for a in &info.listen_addrs {
        writeln!(out, "listen:  {a}/p2p/{}", info.peer_id)?;
    }
    for a in &info.external_addrs {
        writeln!(out, "external: {a}/p2p/{}", info.peer_id)?;
    }
    for e in &info.executors {
        match (&e.version, &e.images) {
            (Some(v), _) => writeln!(out, "executor: {} ({v})", e.kind)?,
            (None, Some(i)) => writeln!(out, "executor: {} ({} images)", e.kind, i.len())?,
            (None, None) => writeln!(out, "executor: {}", e.kind)?,
        }
    }
    Ok(0)
}

/// `agora peers`.
pub async fn peers(args: QueryArgs, data_dir: &Path) -> Result<i32> {
    let info: PeersInfo = fetch(&args, data_dir, "/api/v1/peers").await?;
    if args.json {
        print_json(&info)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = info
        .peers
        .iter()
        .map(|p| {
            vec![
                p.peer_id.clone(),
                p.addr.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["PEER", "ADDRESS"], &rows)?;
    Ok(0)
}

/// `agora nodes`.
pub async fn nodes(args: QueryArgs, data_dir: &Path) -> Result<i32> {
    let info: NodesInfo = fetch(&args, data_dir, "/api/v1/nodes").await?;
    if args.json {
        print_json(&info)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = info.nodes.iter().map(node_row).collect();
    print_table(
        &[
            "PEER",
            "STATE",
            "EXECUTORS",
            "CORES",
            "MEMORY",
            "LOAD",
            "LABELS",
            "LAST SEEN",
        ],
        &rows,
    )?;
    Ok(0)
}

/// `12D3Koo…abcdef`: enough to tell peers apart in a table.
pub fn short_peer(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 16 {
        return id.to_owned();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

fn node_row(n: &NodeInfo) -> Vec<String> {
    let mut peer = short_peer(&n.peer_id);
    if n.is_self {
        peer.push_str(" (self)");
    }
    let labels = if n.labels.is_empty() {
        "-".to_owned()
    } else {
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        peer,
        n.state.clone(),
        if n.executors.is_empty() {
            "-".into()
        } else {
            n.executors.join(",")
        },
        n.cpu_cores.to_string(),
        human_bytes(n.memory_bytes),
        format!("{}/{}", n.running_jobs, n.max_jobs),
        labels,
        format!("{}s ago", n.last_seen_secs_ago),
    ]
}

/// Prints an aligned table with a header row on stdout.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_shortened_for_tables() {
        let id = "12D3KooWGzBk9qzxRkQbWQy5a8Jm6wW1yfgvYVRz3Q8uMNbRbJmA";
        assert_eq!(short_peer(id), "12D3KooW…bRbJmA");
        assert_eq!(short_peer("short"), "short");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
