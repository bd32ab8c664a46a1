#!/usr/bin/env bash
# Runs scenario files on the container host testnet (testnet/hosts.sh) with
# agora-scenario, one after the other, prints each summary and a last line
# per scenario, and exits 1 if any check failed (2 if one could not run).
# Builds first: the release binaries, the fixtures and the agora-node image
# (hosts.sh build), and the harness.
#
# Usage: testnet/chaos.sh [--no-build] [FILE...]
#        default FILEs: testnet/scenarios/*-short.toml (a minute or two each)
# Reports: testnet/.run/chaos/NAME.txt (summary), NAME.json, NAME.log
# (progress). Env: CARGO_TARGET_DIR as for cargo and hosts.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(testnet/scenarios/*-short.toml)
target=${CARGO_TARGET_DIR:-target}

if [ "$build" = 1 ]; then
  testnet/hosts.sh build >&2
  cargo build -q -p agora-testnet --bin agora-scenario
fi
scenario=$target/debug/agora-scenario
[ -x "$scenario" ] || { echo "chaos.sh: $scenario is missing; run without --no-build" >&2; exit 2; }
for f in "${files[@]}"; do "$scenario" --check "$f" >/dev/null; done

out=testnet/.run/chaos
mkdir -p "$out"
results=()
worst=0
for f in "${files[@]}"; do
  name=$(basename "$f" .toml)
  t0=$SECONDS
  echo "== $name" >&2
  rc=0
  "$scenario" "$f" --json "$out/$name.json" >"$out/$name.txt" 2>"$out/$name.log" || rc=$?
  cat "$out/$name.txt"
  if [ "$rc" -ne 0 ] && [ ! -s "$out/$name.txt" ]; then tail -n 5 "$out/$name.log" >&2; fi
  case "$rc" in
    0) verdict=PASS ;;
    1) verdict=FAIL ;;
    *) verdict="DID NOT RUN" ;;
  esac
  [ "$rc" -le "$worst" ] || worst=$rc
  results+=("$(printf '%-12s %-28s %4d s' "$verdict" "$name" $((SECONDS - t0)))")
  echo
done
printf '%s\n' "${results[@]}"
exit "$worst"
