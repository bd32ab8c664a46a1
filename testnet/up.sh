#!/usr/bin/env bash
# Starts a local agora test network that keeps running in the background:
# a bootstrap node and N daemons (default 5) on 127.0.0.1, each with its
# own data dir and ports under testnet/.run/net/, building what is missing.
# Prints how to point the CLI at each node. Stop it with testnet/down.sh.
#
# Usage: testnet/up.sh [N]
# Env:   AGORA_TESTNET_BASE_PORT (default 37400): bootstrap on BASE, node i
#        on BASE+i (p2p) and BASE+100+i (API).
#        AGORA_DAEMON_ARGS: extra `agora daemon` flags for every node,
#        e.g. "--max-jobs 2".
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
n=${1:-5}
[[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 50 ] || { echo "up.sh: N must be 1..50, got '$n'" >&2; exit 2; }

state=testnet/.run/net
if [ -f "$state/pids" ] && xargs -r kill -0 <"$state/pids" 2>/dev/null; then
  echo "up.sh: a test network is already running (see $state); stop it with testnet/down.sh" >&2
  exit 1
fi
rm -rf "$state"; mkdir -p "$state"

base=${AGORA_TESTNET_BASE_PORT:-37400}
for p in "$base" $(seq $((base + 1)) $((base + n))) $(seq $((base + 101)) $((base + 100 + n))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "up.sh: port $p is in use; set AGORA_TESTNET_BASE_PORT to another base" >&2
    exit 1
  fi
done

testnet/setup.sh >/dev/null
testnet/fixtures/build.sh >/dev/null
echo "== building agora (release)" >&2
cargo build --release -q -p agora-cli -p agora-bootstrap
bin=$PWD/target/release
work=$PWD/$state
. testnet/lib/net.sh
# Detached: the network outlives this script.
net_launch=(setsid)
read -r -a daemon_args <<<"${AGORA_DAEMON_ARGS:-}"
failed() { echo "up.sh: the network did not come up; stopping it" >&2; testnet/down.sh >&2; exit 1; }

save_pids() { printf '%s\n' "${pids[@]}" >"$state/pids"; }
start_bootstrap "$base" || { save_pids; failed; }
save_pids
for i in $(seq 1 "$n"); do
  start_daemon "$i" $((base + i)) $((base + 100 + i)) || { save_pids; failed; }
  save_pids
done
if [ "$n" -gt 1 ]; then
  for i in $(seq 1 "$n"); do
    wait_online "$i" $((n - 1)) 120 || { tail -n 20 "$work/n$i.err" >&2; failed; }
  done
fi

echo "agora test network: bootstrap + $n nodes on 127.0.0.1 (state in $state)"
echo "bootstrap: $boot"
for i in $(seq 1 "$n"); do
  id=$("$bin/agora" --data-dir "$work/n$i" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
  echo "node $i: $id  api 127.0.0.1:$((base + 100 + i))  data $state/n$i"
done
echo
echo "Point the CLI at a node with its data dir, e.g.:"
echo "  $bin/agora --data-dir $state/n$n nodes"
echo "  $bin/agora --data-dir $state/n$n run wasm testnet/fixtures/build/hello.wasm -- hi"
echo "Logs: $state/nI.err. Stop everything: testnet/down.sh"
