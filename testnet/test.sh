#!/usr/bin/env bash
# The project's test command: installs what the tests need, builds the
# fixtures, then runs the whole workspace's tests. Docker tests fail (never
# skip) when Docker or the test image is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
testnet/setup.sh
testnet/fixtures/build.sh
cargo test --workspace --locked
