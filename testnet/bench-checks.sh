#!/usr/bin/env bash
# Signature checks one verified 2-of-3 job costs the whole network: runs
# src/bin/bench-checks.rs (4 in-process daemons, JOBS trivial Wasm jobs,
# the protocol's process-wide check counter) and prints its JSON line.
# Usage: testnet/bench-checks.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
testnet/fixtures/build.sh >/dev/null
cargo run --quiet -p agora-testnet --bin bench-checks -- \
  testnet/fixtures/build/hello.wasm "${1:-50}" 4
