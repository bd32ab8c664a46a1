#!/usr/bin/env bash
# The README's first command: builds everything agora needs, starts a local
# network (a bootstrap node and 3 daemons on loopback, each given only the
# bootstrap's address), shows that the nodes found each other, and runs a
# real Wasm job and a real Docker job in agora's sandboxes.
#
# Today the jobs run through `agora exec` on this machine (the same sandbox
# and limits an executor applies). When the network job lifecycle lands,
# this script submits them to the network for 2-of-3 verification instead.
set -euo pipefail
cd "$(dirname "$0")/.."

testnet/setup.sh
testnet/fixtures/build.sh >/dev/null
echo "== building agora" >&2
cargo build -q -p agora-cli -p agora-bootstrap
bin=target/debug
agora=$bin/agora
work=$(mktemp -d)
. testnet/lib/net.sh
trap net_cleanup EXIT

base=${BASE_PORT:-27400}
echo
echo "== local network: 1 bootstrap + 3 nodes on 127.0.0.1"
start_bootstrap "$base"
echo "bootstrap: $boot"
for i in 1 2 3; do start_daemon "$i" $((base + i)) $((base + 100 + i)); done
wait_online 1 2 120
wait_online 3 2 60
"$agora" --data-dir "$work/n1" nodes

echo
echo "== Wasm job: hello.wasm (compiled from C), with args, env and stdin"
printf 'some input\n' >"$work/stdin.txt"
"$agora" --data-dir "$work/n1" exec wasm testnet/fixtures/build/hello.wasm \
  --stdin "$work/stdin.txt" -e GREETING=hello --timeout 10s --memory 32MiB -- demo-arg
"$agora" --data-dir "$work/n1" exec wasm testnet/fixtures/build/hello.wasm --json \
  --stdin "$work/stdin.txt" -e GREETING=hello -- demo-arg | grep -E '"(exit_code|result_hash)"'

echo
echo "== Docker job: agora-busybox (no network, read-only root, non-root user)"
"$agora" --data-dir "$work/n1" exec docker agora-busybox:latest --timeout 10s --memory 32MiB -- \
  sh -c 'echo "hello from $(uname -s) as uid $(id -u)"; if wget -q -T 1 -O - http://127.0.0.1 >/dev/null 2>&1; then echo network reachable; else echo "no network, as required"; fi'

echo
echo "== done: the network found itself from one bootstrap address, and both jobs ran in agora's sandboxes."
