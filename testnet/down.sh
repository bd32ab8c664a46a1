#!/usr/bin/env bash
# Stops the test network testnet/up.sh started (TERM, then KILL after 10 s)
# and removes its state, so nothing keeps running. Safe when nothing is up.
set -euo pipefail
cd "$(dirname "$0")/.."
state=testnet/.run/net
if [ ! -f "$state/pids" ]; then
  echo "no test network is running"
  rm -rf "$state"
  exit 0
fi
mapfile -t pids <"$state/pids"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for _ in $(seq 100); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" -eq 0 ] && break
  sleep 0.1
done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
rm -rf "$state"
echo "test network stopped (${#pids[@]} processes)"
