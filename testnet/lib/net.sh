# Starting a local agora network of real processes on loopback (sourced).
# Callers set: bin (dir with agora and agora-bootstrap) and work (scratch
# dir), and install `trap net_cleanup EXIT`.
#
# Optional, for callers that keep the network running after they exit
# (testnet/up.sh): net_launch (array) prefixes every command, e.g. setsid;
# daemon_args (array) adds `agora daemon` flags; node_dir and node_log may
# be redefined after sourcing to place data dirs and logs elsewhere.

pids=()
net_launch=()
daemon_args=()

# node_dir I: node I's data dir.
node_dir() { echo "$work/n$1"; }

# node_log I: the stem of node I's log files (.out and .err are appended).
node_log() { echo "$work/n$1"; }

# net_cleanup: stops every process started here and removes $work.
net_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# start_bootstrap PORT: starts agora-bootstrap on 127.0.0.1:PORT and sets
# $boot to its dialable multiaddr.
start_bootstrap() {
  local port=$1
  ${net_launch[@]+"${net_launch[@]}"} "$bin/agora-bootstrap" --key-file "$work/boot.key" --listen "/ip4/127.0.0.1/tcp/$port" \
    >"$work/boot.out" 2>"$work/boot.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q "/p2p/" "$work/boot.out" && break; sleep 0.1; done
  boot=$(grep -o "/ip4/127.0.0.1/tcp/$port/p2p/[A-Za-z0-9]*" "$work/boot.out" | head -1)
  [ -n "$boot" ] || { echo "bootstrap did not start:" >&2; cat "$work/boot.err" >&2; return 1; }
}

# start_daemon I P2P_PORT API_PORT: starts node I with data dir
# $(node_dir I), given only $boot; waits for its API to come up. Sets
# $last_pid.
start_daemon() {
  local i=$1 p2p=$2 api=$3 dir log
  dir=$(node_dir "$i"); log=$(node_log "$i")
  ${net_launch[@]+"${net_launch[@]}"} "$bin/agora" --data-dir "$dir" daemon \
    --listen "/ip4/127.0.0.1/tcp/$p2p" --api "127.0.0.1:$api" --bootstrap "$boot" \
    ${daemon_args[@]+"${daemon_args[@]}"} >"$log.out" 2>"$log.err" &
  last_pid=$!
  pids+=($!)
  for _ in $(seq 300); do [ -f "$dir/api.addr" ] && return 0; sleep 0.1; done
  echo "node $i did not start:" >&2; cat "$log.err" >&2; return 1
}

# online_count I: how many other nodes node I lists as online.
online_count() {
  "$bin/agora" --data-dir "$(node_dir "$1")" nodes --json 2>/dev/null | python3 -c \
    'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["state"] == "online" and not n["is_self"]))' \
    2>/dev/null || echo 0
}

# wait_online I N SECONDS: waits until node I lists N others online.
wait_online() {
  local i=$1 n=$2 secs=$3 got=0
  for _ in $(seq $((secs * 2))); do
    got=$(online_count "$i")
    [ "$got" -ge "$n" ] && return 0
    sleep 0.5
  done
  echo "node $i sees $got of $n other nodes online after ${secs}s" >&2
  return 1
}
