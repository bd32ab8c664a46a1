#!/usr/bin/env bash
# Job array benchmark, written to docs/benchmarks.md: a 5-node local
# testnet (a bootstrap and 5 daemons on loopback, release build). From
# node 1, in one run:
#  - an ITEMS-item array `agora run wasm hello.wasm --range 1..ITEMS
#    --parallel P -- {}`, each item verified 2-of-3, while the submitting
#    daemon's RSS is sampled every 0.5 s: items/s, and RSS at 10%, 50% and
#    100% of the items;
#  - the same number of single jobs of the same module (bench-jobs, P in
#    flight from node 1 alone): jobs/s, and the daemon's RSS after them.
# Env: ITEMS (10000), PARALLEL (32), BASE_PORT (18600).
set -euo pipefail
cd "$(dirname "$0")/.."
. testnet/lib/bench.sh

testnet/fixtures/build.sh >/dev/null
cargo build --release -q -p agora-cli -p agora-bootstrap -p agora-testnet
bin=$PWD/target/release
module=testnet/fixtures/build/hello.wasm
items=${ITEMS:-10000}
parallel=${PARALLEL:-32}

work=$(mktemp -d)
. testnet/lib/net.sh
trap net_cleanup EXIT
base=${BASE_PORT:-18600}
start_bootstrap "$base"
for i in 1 2 3 4 5; do start_daemon "$i" $((base + i)) $((base + 100 + i)); done
for i in 1 2 3 4 5; do wait_online "$i" 4 120; done
sub_pid=${pids[1]}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rss_start=$(rss_kib "$sub_pid")

# The array, sampled every 0.5 s: "seconds verified rss_kib" per line.
t0=$(date +%s.%N)
array=$("$bin/agora" --data-dir "$work/n1" run wasm "$module" --range "1..$items" \
  --parallel "$parallel" -n 3 -k 2 --detach -- '{}')
: >"$work/samples"
while :; do
  "$bin/agora" --data-dir "$work/n1" job status "$array" --json >"$work/array.json"
  read -r st v < <(python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))
print(a["state"], a["counts"]["verified"])' "$work/array.json")
  echo "$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')") $v $(rss_kib "$sub_pid")" >>"$work/samples"
  [ "$st" = running ] || break
  sleep 0.5
done
t1=$(date +%s.%N)
"$bin/agora" --data-dir "$work/n1" job result "$array" >"$work/stdout"
t2=$(date +%s.%N)
[ "$(wc -l <"$work/stdout")" -gt 0 ] || { echo "bench-arrays.sh: no output" >&2; exit 1; }
rss_array_end=$(rss_kib "$sub_pid")

# Single jobs of the same module from the same node, as many, as many in
# flight.
"$bin/bench-jobs" "$module" 1 "$items" "$parallel" "$work/n1" >"$work/jobs.json"
rss_jobs_end=$(rss_kib "$sub_pid")

out="$work/section.md"
python3 - "$work/array.json" "$work/samples" "$work/jobs.json" "$out" "$(machine_line)" \
  "$items" "$parallel" "$t0" "$t1" "$t2" "$rss_start" "$rss_array_end" "$rss_jobs_end" <<'PY'
import json, sys
(array, samples, jobs, out, machine, items, parallel, t0, t1, t2,
 rss_start, rss_array_end, rss_jobs_end) = sys.argv[1:]
items, parallel = int(items), int(parallel)
a = json.load(open(array))
j = json.load(open(jobs))
rows = [tuple(float(x) for x in l.split()) for l in open(samples) if len(l.split()) == 3]
assert a["state"] == "verified" and a["counts"]["verified"] == items, a
secs = float(t1) - float(t0)
def rss_at(frac):
    for t, v, r in rows:
        if v >= frac * items:
            return r / 1024
    return rows[-1][2] / 1024
peak = max(r for _, _, r in rows) / 1024
mib = lambda k: int(k) / 1024
lines = [
    "## Job arrays",
    "",
    f"Command: `testnet/bench-arrays.sh` ({machine}). A bootstrap and 5 daemons on loopback (release build); from node 1, an array `agora run wasm testnet/fixtures/build/hello.wasm --range 1..{items} --parallel {parallel} -n 3 -k 2 --detach -- {{}}` (each item verified 2-of-3 by three other nodes), then {items} single jobs of the same module from the same node with {parallel} in flight (`bench-jobs`).",
    "",
    "| what | measured |",
    "| --- | --- |",
    f"| array of {items} items, submit (`agora run --detach`) to every item verified | {secs:.1f} s, **{items / secs:.0f} items/s** |",
    f"| then `agora job result` printing the {items} verified stdouts in index order | {float(t2) - float(t1):.1f} s |",
    f"| {items} single jobs, {parallel} in flight, submit to verified | {j['throughput_seconds']:.1f} s, **{j['jobs_per_second']:.0f} jobs/s** |",
    f"| ratio items/s : jobs/s | {(items / secs) / j['jobs_per_second']:.2f} |",
    f"| submitting daemon's RSS: before / at 10% / 50% / 100% of the items verified / peak | {mib(rss_start):.0f} / {rss_at(0.1):.0f} / {rss_at(0.5):.0f} / {rss_at(1.0):.0f} / {peak:.0f} MiB |",
    f"| its RSS after the array / after the {items} single jobs | {mib(rss_array_end):.0f} / {mib(rss_jobs_end):.0f} MiB |",
    "",
    "The array keeps only the items in flight in memory; the others are records in sled, read by range when their turn comes.",
]
open(out, "w").write("\n".join(lines) + "\n")
PY
replace_section arrays "$out"
cat "$out"
