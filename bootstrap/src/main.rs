//! `agora-bootstrap`: a DHT-server-only agora node that seeds discovery.

use std::process::ExitCode;

use clap::Parser;

/// Bootstrap node for the agora peer-to-peer compute network.
///
/// A bootstrap node is a stable, publicly reachable Kademlia server that new
/// agora nodes dial first to find the rest of the network. It runs no jobs
/// and holds no authority: once a node knows a few peers it no longer needs
/// any bootstrap node.
#[derive(Debug, Parser)]
#[command(name = "agora-bootstrap", version, about, long_about)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    ExitCode::SUCCESS
}
