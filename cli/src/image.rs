//! `agora image push|ls`: seed the network with a local Docker image
//! before any job needs it, and list the images this node serves to
//! peers. Executors that lack a job's image fetch it from such nodes.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use agora_node::api::types::{ImageInfo, ImageList, PushImage};
use anyhow::Result;
use clap::Subcommand;

use crate::node::{explain, human_bytes, print_json, print_table, ApiOpt};

/// Bound on `agora image push`.
const PUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// `agora image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Store a local image (by name or id) as content-addressed blobs
    /// (config and each layer) that peers can fetch, and advertise it.
    ///
    /// Submitting a Docker job does the same for its image; push seeds
    /// the network ahead of time.
    Push {
        /// Image name or id in this node's Docker engine.
        image: String,
        #[command(flatten)]
        api: ApiOpt,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// List the images this node serves to peers, with sizes and layers.
    Ls {
        #[command(flatten)]
        api: ApiOpt,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `agora image` subcommand.
pub async fn run(cmd: ImageCommand, data_dir: &Path) -> Result<i32> {
    match cmd {
        ImageCommand::Push { image, api, json } => {
            // Exporting a large image takes a while.
            let c = api.client(data_dir)?.with_timeout(PUSH_TIMEOUT);
            let info: ImageInfo = c
                .post_json("/api/v1/images", &PushImage { image })
                .await
                .map_err(|e| explain(e, data_dir))?;
            if json {
                print_json(&info)?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "{}: {} in {} layer(s), manifest {}",
                    info.id,
                    human_bytes(info.size),
                    info.layers.len(),
                    info.manifest
                )?;
            }
        }
        ImageCommand::Ls { api, json } => {
            let c = api.client(data_dir)?;
            let list: ImageList = c
                .get_json("/api/v1/images")
                .await
                .map_err(|e| explain(e, data_dir))?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list.images.iter().map(row).collect();
            print_table(&["IMAGE", "SIZE", "LAYERS", "FETCHED", "MANIFEST"], &rows)?;
        }
    }
    Ok(0)
}

fn row(i: &ImageInfo) -> Vec<String> {
    let short = |s: &str| s.chars().take(19).collect::<String>();
    vec![
        short(&i.id),
        human_bytes(i.size),
        i.layers.len().to_string(),
        if i.loaded { "yes" } else { "no" }.to_string(),
        short(&i.manifest),
    ]
}
