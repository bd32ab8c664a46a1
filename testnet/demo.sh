#!/usr/bin/env bash
# The README's first command: builds everything agora needs and runs a real
# Wasm job and a real Docker job.
#
# Today the jobs run locally through `agora exec` (the same sandboxes and
# limits an executor applies). When the network job lifecycle lands, this
# script starts a local testnet and submits the same jobs for 2-of-3
# verification instead.
set -euo pipefail
cd "$(dirname "$0")/.."

testnet/setup.sh
testnet/fixtures/build.sh >/dev/null
echo "== building agora" >&2
cargo build -q -p agora-cli
agora=target/debug/agora
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

echo
echo "== Wasm job: hello.wasm (compiled from C), with args, env and stdin"
printf 'some input\n' >"$data/stdin.txt"
"$agora" --data-dir "$data" exec wasm testnet/fixtures/build/hello.wasm \
  --stdin "$data/stdin.txt" -e GREETING=hello --timeout 10s --memory 32MiB -- demo-arg
"$agora" --data-dir "$data" exec wasm testnet/fixtures/build/hello.wasm --json \
  --stdin "$data/stdin.txt" -e GREETING=hello -- demo-arg | grep -E '"(exit_code|result_hash)"'

echo
echo "== Docker job: agora-busybox (no network, read-only root, non-root user)"
"$agora" --data-dir "$data" exec docker agora-busybox:latest --timeout 10s --memory 32MiB -- \
  sh -c 'echo "hello from $(uname -s) as uid $(id -u)"; if ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 || wget -q -T 1 -O - http://127.0.0.1 >/dev/null 2>&1; then echo network reachable; else echo "no network, as required"; fi'

echo
echo "== done. Both jobs ran in agora's sandboxes; see README.md for what the network adds."
