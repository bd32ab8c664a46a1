#!/usr/bin/env bash
# Job arrays on a local network of real processes (a bootstrap and 5
# daemons on loopback), through the CLI:
#  1. `agora run wasm sweep.wasm --range 1..ITEMS --reduce sweep_reduce.wasm`
#     from node 1 while node 5 lies about every result (--fault lie); the
#     output must equal the same map and reduce run here with `agora exec`,
#     and node 1 must have seen node 5 disagree (it took part, outvoted);
#  2. an array of KILL_ITEMS items submitted from node 2 with --detach;
#     once some are verified node 2 is killed (SIGKILL) and restarted on
#     its data dir: every item verified before the kill keeps its job and
#     stdout, the array completes, and node 2 holds exactly one job per
#     item (none re-run).
# Env: ITEMS (200), KILL_ITEMS (120), PROFILE (release or debug: the
# build used, made here if needed; default release), BASE_PORT (19400).
set -euo pipefail
cd "$(dirname "$0")/.."

items=${ITEMS:-200}
kill_items=${KILL_ITEMS:-120}
profile=${PROFILE:-release}
testnet/fixtures/build-wasm.sh >/dev/null
case "$profile" in
  release) cargo build --locked --release -q -p agora-cli -p agora-bootstrap ;;
  debug) cargo build --locked -q -p agora-cli -p agora-bootstrap ;;
  *) echo "arrays.sh: PROFILE is release or debug, got '$profile'" >&2; exit 2 ;;
esac
bin=$PWD/target/$profile
fx=$PWD/testnet/fixtures/build
work=$(mktemp -d)
. testnet/lib/net.sh
trap net_cleanup EXIT

base=${BASE_PORT:-19400}
start_bootstrap "$base"
for i in 1 2 3 4; do start_daemon "$i" $((base + i)) $((base + 100 + i)); done
daemon_args=(--testnet --fault lie)
start_daemon 5 $((base + 5)) $((base + 105))
daemon_args=()
for i in 1 2 3 4 5; do wait_online "$i" 4 120; done
agora() { "$bin/agora" "$@"; }
fail() { echo "arrays.sh: FAIL: $*" >&2; exit 1; }

echo "== 1. $items-item array with a reduce step, node 5 lying"
t0=$(date +%s.%N)
agora --data-dir "$work/n1" run wasm "$fx/sweep.wasm" --range "1..$items" \
  --reduce "$fx/sweep_reduce.wasm" -n 3 -k 2 -- '{}' >"$work/net.out"
t1=$(date +%s.%N)
mkdir -p "$work/local"
inputs=()
for i in $(seq 1 "$items"); do
  agora exec wasm "$fx/sweep.wasm" -- "$i" >"$work/local/$((i - 1)).out"
  inputs+=(--input "$((i - 1)).out=$work/local/$((i - 1)).out")
done
agora exec wasm "$fx/sweep_reduce.wasm" "${inputs[@]}" >"$work/local.out"
echo "network ($(python3 -c "print(f'{$t1 - $t0:.1f}')") s):"; sed 's/^/  /' "$work/net.out"
echo "agora exec, $items maps and the reduce:"; sed 's/^/  /' "$work/local.out"
cmp -s "$work/net.out" "$work/local.out" || fail "the array's result differs from the local map and reduce"
liar=$(agora --data-dir "$work/n5" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
disagreed=$(agora --data-dir "$work/n1" reputation --json | python3 -c '
import json, sys
rows = [p for p in json.load(sys.stdin)["peers"] if p["peer_id"] == sys.argv[1]]
print(rows[0]["disagreed"] if rows else 0)' "$liar")
echo "the liar (node 5) disagreed $disagreed time(s) in node 1's jobs, outvoted each time"
[ "$disagreed" -gt 0 ] || fail "the liar never ran an item"

echo "== 2. $kill_items-item array; its submitting daemon killed and restarted"
array=$(agora --data-dir "$work/n2" run wasm "$fx/sweep.wasm" --range "1..$kill_items" \
  --parallel 4 -n 3 -k 2 --detach -- '{}')
echo "array $array"
status() { agora --data-dir "$work/n2" job status "$array" --json; }
for _ in $(seq 600); do
  v=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["verified"])')
  [ "$v" -ge $((kill_items / 5)) ] && break
  sleep 0.2
done
# Items as the API lists them: index, state, job, attempts, stdout blob.
items_of() {
  python3 - "$work/n2" "$array" <<'PY'
import json, sys, urllib.request
d, array = sys.argv[1], sys.argv[2]
addr = open(f"{d}/api.addr").read().strip()
token = open(f"{d}/api.token").read().strip()
start = 0
while start is not None:
    req = urllib.request.Request(f"http://{addr}/api/v1/arrays/{array}/items?from={start}&limit=1000",
                                 headers={"Authorization": f"Bearer {token}"})
    page = json.load(urllib.request.urlopen(req, timeout=30))
    for i in page["items"]:
        print(i["index"], i["state"], i["job"], i["attempts"], (i["stdout"] or {}).get("id"))
    start = page["next"]
PY
}
items_of >"$work/before"
kill -9 "${pids[2]}"
wait "${pids[2]}" 2>/dev/null || true
echo "killed node 2 with $(grep -c ' verified ' "$work/before") of $kill_items items verified, $(grep -c ' running ' "$work/before") running"
# A killed daemon leaves its api.addr behind; start_daemon waits for the
# new one's.
rm -f "$work/n2/api.addr"
start_daemon 2 $((base + 2)) $((base + 102))
st=unknown
for _ in $(seq 1200); do
  st=$(status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo unknown)
  [ "$st" != running ] && [ "$st" != unknown ] && break
  sleep 0.5
done
[ "$st" = verified ] || fail "the array ended $st after the restart"
items_of >"$work/after"
python3 - "$work/before" "$work/after" "$kill_items" <<'PY' || exit 1
import sys
def load(p):
    return {int(f[0]): f[1:] for f in (l.split() for l in open(p))}
before, after, total = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
lost = [i for i, b in before.items() if b[0] == "verified" and after[i][:2] != b[:2]]
lost += [i for i, b in before.items() if b[0] == "verified" and after[i][3] != b[3]]
moved = [i for i, b in before.items() if b[1] != "None" and after[i][1] != b[1]]
unverified = [i for i, a in after.items() if a[0] != "verified"]
kept = sum(1 for b in before.values() if b[0] == "verified")
print(f"after the restart: {total - len(unverified)} of {total} verified; "
      f"{kept} verified before the kill kept their job and stdout: {'yes' if not lost else 'NO ' + str(lost)}; "
      f"items that got another job: {len(moved)}")
sys.exit(1 if lost or moved or unverified else 0)
PY
jobs=$(agora --data-dir "$work/n2" job list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')
echo "node 2 holds $jobs jobs for $kill_items items"
[ "$jobs" -eq "$kill_items" ] || fail "$jobs jobs for $kill_items items: some item ran twice"
echo "arrays.sh: PASS"
