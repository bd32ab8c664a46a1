#!/usr/bin/env bash
# The project's test command: installs what the tests need, builds the
# fixtures, runs the whole workspace's tests, the job array check on a
# local network of processes (testnet/arrays.sh), then the short chaos
# scenarios (kill, partition, bootstraps gone) on the container host
# testnet, with the debug binaries the tests built. Docker tests fail
# (never skip) when Docker or the test image is missing.
# Env: AGORA_SKIP_HOSTS=1 leaves out the host scenarios (no root, or a
# quick run); CI never sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
testnet/setup.sh
testnet/fixtures/build.sh
cargo test --workspace --locked
PROFILE=debug testnet/arrays.sh
if [ "${AGORA_SKIP_HOSTS:-}" != 1 ]; then
  HOSTS_PROFILE=debug CHAOS_DOC= testnet/chaos.sh --short
fi
