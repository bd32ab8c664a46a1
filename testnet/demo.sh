#!/usr/bin/env bash
# The README's first command: builds everything agora needs, starts a local
# network (a bootstrap node and 5 daemons on loopback, each given only the
# bootstrap's address), then submits a Wasm job and a Docker job from node 5
# for 2-of-3 verification: three other nodes run each job, and the output is
# accepted only when two of them signed the same result hash. Prints the
# verified outputs and the executors that agreed, then stops the network.
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
echo "== local network: 1 bootstrap + 5 nodes on 127.0.0.1"
start_bootstrap "$base"
echo "bootstrap: $boot"
for i in 1 2 3 4 5; do start_daemon "$i" $((base + i)) $((base + 100 + i)); done
for i in 1 2 3 4 5; do wait_online "$i" 4 120; done
"$agora" --data-dir "$work/n5" nodes

echo
echo "== Wasm job from node 5, verified 2-of-3: hello.wasm (compiled from C) with args, env and stdin"
printf 'some input\n' >"$work/stdin.txt"
"$agora" --data-dir "$work/n5" run wasm testnet/fixtures/build/hello.wasm -n 3 -k 2 \
  --stdin "$work/stdin.txt" -e GREETING=hello --timeout 10s --memory 32MiB -- demo-arg

echo
echo "== Docker job from node 5, verified 2-of-3: agora-busybox (no network, read-only root, non-root user)"
"$agora" --data-dir "$work/n5" run docker agora-busybox:latest -n 3 -k 2 --timeout 10s --memory 32MiB -- \
  sh -c 'echo "hello from $(uname -s) as uid $(id -u)"; if wget -q -T 1 -O - http://127.0.0.1 >/dev/null 2>&1; then echo network reachable; else echo "no network, as required"; fi'

echo
echo "== the jobs as node 5 recorded them"
"$agora" --data-dir "$work/n5" job list
last=$("$agora" --data-dir "$work/n5" job list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
"$agora" --data-dir "$work/n5" job status "$last"

echo
echo "== node 5's opinion of the executors, from its own verdicts"
"$agora" --data-dir "$work/n5" reputation
echo "== node 1's: node 5's gossiped verdicts change nothing there (yet): a publisher earns"
echo "   a say by agreeing with node 1's own jobs, or when node 1's operator pins it (--trust)"
"$agora" --data-dir "$work/n1" reputation

echo
echo "== done: both jobs ran on three other nodes and were accepted when two of them signed the same result."
