//! `agora reputation [PEER]`: the running daemon's opinion of its peers,
//! built from signed evidence (its own jobs' verdicts and gossiped ones).

use std::path::Path;

use agora_node::api::types::ReputationList;
use agora_node::clock::unix_now_ms;
use anyhow::Result;
use clap::Args;

use crate::node::{explain, print_json, print_table, short_peer, ApiOpt};

/// Flags of `agora reputation`.
#[derive(Debug, Args)]
pub struct ReputationArgs {
    /// Only peers whose id starts with this.
    #[arg(value_name = "PEER")]
    peer: Option<String>,
    /// Print JSON (with every piece of evidence) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpt,
}

/// Runs `agora reputation`.
pub async fn run(args: ReputationArgs, data_dir: &Path) -> Result<i32> {
    let c = args.api.client(data_dir)?;
    let path = match &args.peer {
        // Base58 only: nothing else can reach the URL.
        Some(p) if p.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("/api/v1/reputation/{p}")
        }
        Some(p) => anyhow::bail!("{p:?} is not a peer id (base58)"),
        None => "/api/v1/reputation".into(),
    };
    let list: ReputationList = c.get_json(&path).await.map_err(|e| explain(e, data_dir))?;
    if args.json {
        print_json(&list)?;
        return Ok(0);
    }
    let now = unix_now_ms();
    let rows: Vec<Vec<String>> = list
        .peers
        .iter()
        .map(|p| {
            let source = match p.evidence.last() {
                None => "-".to_string(),
                Some(e) if e.source == "own" => "own jobs".to_string(),
                Some(e) => format!("verdict of {}", short_peer(&e.source)),
            };
            vec![
                short_peer(&p.peer_id),
                p.score.to_string(),
                p.agreed.to_string(),
                p.disagreed.to_string(),
                p.missed.to_string(),
                p.standing.clone(),
                // Clean jobs in a row here; "trusted": may run adaptive
                // jobs alone.
                if p.trusted {
                    format!("{} trusted", p.clean_streak)
                } else {
                    p.clean_streak.to_string()
                },
                format!("{}s ago", now.saturating_sub(p.last_seen_ms) / 1000),
                source,
            ]
        })
        .collect();
    print_table(
        &[
            "PEER",
            "SCORE",
            "AGREED",
            "DISAGREED",
            "MISSED",
            "STANDING",
            "STREAK",
            "LAST SEEN",
            "EVIDENCE",
        ],
        &rows,
    )?;
    Ok(0)
}
