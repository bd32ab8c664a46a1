#!/usr/bin/env bash
# Time to first execution of a Docker image fetched peer to peer, against
# `docker save | docker load` + `docker run` on the same machine, written to
# docs/benchmarks.md. Each round:
#  1. a fresh, empty Docker engine E (its own dockerd, as in
#     node/tests/engines_harness) and fresh data dirs; a submitter daemon on
#     the host's engine (which holds the images) and an executor daemon on E
#     that bootstraps from it;
#  2. `agora run docker agora-layers-a:latest -n 1 -k 1 -- true`, timed from
#     submit to verified result (export on the submitter, transfer, load,
#     container run, and the job's own bidding and result exchange), and the
#     executor's blob bytes received;
#  3. the baseline on a second fresh engine E2: `docker save IMAGE |
#     docker -H E2 load && docker -H E2 run --rm --network none IMAGE true`,
#     and the size of the save tar;
#  4. the same for agora-layers-b:latest, which shares a's 24 MiB base layer:
#     E and E2 already hold it.
# The images come from testnet/fixtures/docker/build-layered.sh. Needs root
# (dockerd, umount), setpriv and the host's Docker engine.
#
# Usage: testnet/bench-images.sh [ROUNDS]   (default 3)
# Env:   BENCH_IMAGES_KEEP=DIR: copy each round's logs and job records there.
set -euo pipefail
cd "$(dirname "$0")/.."
. testnet/lib/bench.sh

rounds=${1:-3}
[[ "$rounds" =~ ^[0-9]+$ ]] && [ "$rounds" -ge 1 ] || { echo "bench-images.sh: ROUNDS must be a positive number, got '$rounds'" >&2; exit 2; }
for c in dockerd docker setpriv umount python3 curl; do
  command -v "$c" >/dev/null || { echo "bench-images.sh: $c not found" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench-images.sh: run as root (it starts its own dockerd engines)" >&2; exit 1; }

testnet/setup.sh
testnet/fixtures/build.sh >/dev/null
cargo build --release -q -p agora-cli -p agora-node
agora=$PWD/target/release/agora
img_a=agora-layers-a:latest
img_b=agora-layers-b:latest

work=$(mktemp -d /tmp/agora-bench-images.XXXXXX)
keep=${BENCH_IMAGES_KEEP:-}

# Everything started here, stopped by pid on any exit.
daemon_pids=()
engine_pids=()
engine_dirs=()

# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS; reaps it.
stop_pid() {
  local pid=$1 secs=$2 st
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq $((secs * 10))); do
    st=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    case "$st" in ''|Z*) break ;; esac
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# pids_under DIR: processes other than this shell whose command line names
# a path inside DIR (the containerd and shims of an engine there).
pids_under() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    [ "$pid" = "$$" ] && continue
    tr '\0' ' ' <"$f" 2>/dev/null | grep -qF "$1/" && echo "$pid"
  done
  return 0
}

# stop_engine I: stops engine I (its containers, dockerd, whatever it left
# running), unmounts what it mounted and removes its directory.
stop_engine() {
  local i=$1 dir=${engine_dirs[$1]} pid=${engine_pids[$1]} sock left m
  [ -n "$dir" ] || return 0
  sock="unix://$dir/docker.sock"
  if kill -0 "$pid" 2>/dev/null; then
    left=$(docker -H "$sock" ps -q 2>/dev/null || true)
    [ -z "$left" ] || docker -H "$sock" kill $left >/dev/null 2>&1 || true
  fi
  stop_pid "$pid" 10
  for _ in $(seq 50); do
    left=$(pids_under "$dir")
    [ -z "$left" ] && break
    kill -KILL $left 2>/dev/null || true
    sleep 0.1
  done
  # Deepest mounts first (dockerd bind-mounts its data root onto itself).
  awk -v d="$dir" 'index($5, d) == 1 {print gsub("/", "/", $5), $5}' /proc/self/mountinfo \
    | sort -rn | cut -d' ' -f2- \
    | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -rf "$dir" || true
  engine_dirs[$i]=""
}

cleanup() {
  local p i
  set +e
  for p in ${daemon_pids[@]+"${daemon_pids[@]}"}; do stop_pid "$p" 10; done
  for i in "${!engine_dirs[@]}"; do stop_engine "$i"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_engine NAME: starts a fresh, empty dockerd with every path in a new
# short directory under /tmp (unix socket paths are limited to ~107 bytes)
# and waits until it answers; sets $engine (its unix:// address) and
# $engine_dir. Not in a subshell: --pdeathsig ties dockerd to this shell.
start_engine() {
  local dir pid
  dir=$(mktemp -d "/tmp/abi-$1-XXXX")
  printf '{}\n' >"$dir/c.json"   # instead of /etc/docker/daemon.json
  mkdir "$dir/d" "$dir/e"
  setpriv --pdeathsig KILL -- dockerd --config-file "$dir/c.json" --data-root "$dir/d" \
    --exec-root "$dir/e" -H "unix://$dir/docker.sock" --pidfile "$dir/docker.pid" \
    --bridge none --iptables=false --ip6tables=false </dev/null >"$dir/dockerd.log" 2>&1 &
  pid=$!
  engine_pids+=("$pid"); engine_dirs+=("$dir")
  engine="unix://$dir/docker.sock"; engine_dir=$dir
  for _ in $(seq 600); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "engine $1: dockerd exited before answering" >&2; tail -n 20 "$dir/dockerd.log" >&2; return 1
    fi
    docker -H "$engine" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "engine $1: no answer at $engine within 60 s" >&2; tail -n 20 "$dir/dockerd.log" >&2; return 1
}

# start_node NAME DOCKER_HOST [BOOTSTRAP]: starts a daemon with data dir
# $work/NAME on the given engine (empty: the host's) and waits for its API;
# sets $node_addr (its p2p address with /p2p/).
start_node() {
  local name=$1 host=$2 boot=${3:-} dir=$work/$1 args=()
  [ -z "$boot" ] || args=(--bootstrap "$boot")
  if [ -n "$host" ]; then
    DOCKER_HOST=$host AGORA_LOG=info "$agora" --data-dir "$dir" --log-format json daemon \
      --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 "${args[@]}" >"$work/$name.out" 2>"$work/$name.err" &
  else
    AGORA_LOG=info "$agora" --data-dir "$dir" --log-format json daemon \
      --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 "${args[@]}" >"$work/$name.out" 2>"$work/$name.err" &
  fi
  daemon_pids+=($!)
  for _ in $(seq 300); do
    node_addr=$(grep -o '/ip4/127.0.0.1/tcp/[0-9]*/p2p/[A-Za-z0-9]*' "$work/$name.out" 2>/dev/null | head -1 || true)
    [ -n "$node_addr" ] && [ -f "$dir/api.addr" ] && return 0
    sleep 0.1
  done
  echo "node $name did not start:" >&2; tail -n 20 "$work/$name.err" >&2; return 1
}

# wait_peer NAME: waits (60 s) until node NAME lists another node online.
wait_peer() {
  local n=0
  for _ in $(seq 120); do
    n=$("$agora" --data-dir "$work/$1" nodes --json 2>/dev/null | python3 -c \
      'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["state"] == "online" and not n["is_self"]))' \
      2>/dev/null || echo 0)
    [ "$n" -ge 1 ] && return 0
    sleep 0.5
  done
  echo "node $1 sees no other node online after 60 s" >&2; return 1
}

# blob_bytes_in NAME: the node's agora_blob_bytes_in_total.
blob_bytes_in() {
  curl -sf "http://$(cat "$work/$1/api.addr")/metrics" | awk '$1 == "agora_blob_bytes_in_total" {printf "%d\n", $2}'
}

now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }

# agora_job R IMAGE TAG: runs the 1-of-1 job from the submitter; appends a
# result line to $work/results.jsonl and keeps the job record.
agora_job() {
  local r=$1 image=$2 tag=$3 in0 in1 t0 t1 id
  in0=$(blob_bytes_in exec)
  t0=$(now)
  "$agora" --data-dir "$work/sub" run docker "$image" -n 1 -k 1 -- true \
    >"$work/r$r-$tag.run.out" 2>"$work/r$r-$tag.run.err" \
    || { echo "round $r: agora run docker $image failed:" >&2; cat "$work/r$r-$tag.run.err" >&2; return 1; }
  t1=$(now)
  in1=$(blob_bytes_in exec)
  id=$("$agora" --data-dir "$work/sub" job list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
  "$agora" --data-dir "$work/sub" job status "$id" --json >"$work/r$r-$tag.job.json"
  printf '{"round":%d,"image":"%s","side":"agora","t0":%s,"t1":%s,"bytes_in":%d}\n' \
    "$r" "$tag" "$t0" "$t1" $((in1 - in0)) >>"$work/results.jsonl"
  echo "round $r $tag: agora $(secs "$t0" "$t1") s, executor received $((in1 - in0)) bytes" >&2
}

# docker_job R IMAGE TAG ENGINE: the baseline into ENGINE, and the size of
# the save tar (measured after the timed part).
docker_job() {
  local r=$1 image=$2 tag=$3 e=$4 t0 t1 size
  t0=$(now)
  docker save "$image" | docker -H "$e" load >/dev/null
  docker -H "$e" run --rm --network none "$image" true
  t1=$(now)
  size=$(docker save "$image" | wc -c)
  printf '{"round":%d,"image":"%s","side":"docker","t0":%s,"t1":%s,"tar_bytes":%d}\n' \
    "$r" "$tag" "$t0" "$t1" "$size" >>"$work/results.jsonl"
  echo "round $r $tag: docker save|load+run $(secs "$t0" "$t1") s, save tar $size bytes" >&2
}

for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds" >&2
  start_engine "r${r}e"; e_idx=$((${#engine_dirs[@]} - 1)); e=$engine
  start_engine "r${r}b"; e2_idx=$((${#engine_dirs[@]} - 1)); e2=$engine
  rm -rf "$work/sub" "$work/exec"
  start_node sub ""
  sub_addr=$node_addr
  start_node exec "$e" "$sub_addr"
  wait_peer sub
  wait_peer exec

  agora_job "$r" "$img_a" a
  docker_job "$r" "$img_a" a "$e2"
  agora_job "$r" "$img_b" b
  docker_job "$r" "$img_b" b "$e2"

  if [ -n "$keep" ]; then
    mkdir -p "$keep"
    for f in sub.err exec.err r$r-a.job.json r$r-b.job.json r$r-a.run.err r$r-b.run.err; do
      cp "$work/$f" "$keep/r$r-${f#r$r-}" 2>/dev/null || true
    done
  fi
  # The breakdown reads the logs of this round's daemons.
  cp "$work/sub.err" "$work/r$r-sub.log"; cp "$work/exec.err" "$work/r$r-exec.log"
  for p in "${daemon_pids[@]}"; do stop_pid "$p" 10; done
  daemon_pids=()
  stop_engine "$e_idx"; stop_engine "$e2_idx"
done

out="$work/section.md"
python3 - "$work" "$rounds" "$out" "$(machine_line)" "$(docker version --format '{{.Server.Version}}')" <<'PY'
import json, statistics, sys
work, rounds, out, machine, docker_version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
res = {}
for line in open(f"{work}/results.jsonl"):
    x = json.loads(line)
    res[(x["round"], x["image"], x["side"])] = x
MB = 1e6
dur = lambda x: x["t1"] - x["t0"]

# Where agora's time went, from the job record and the daemons' JSON logs
# (all clocks are this machine's wall clock).
def log_events(path):
    ev = []
    for line in open(path):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        ts = j.get("timestamp")
        if not ts:
            continue
        from datetime import datetime
        t = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        ev.append((t, j.get("fields", {}).get("message", ""), j))
    return ev

def breakdown(r, tag):
    x = res[(r, tag, "agora")]
    rec = json.load(open(f"{work}/r{r}-{tag}.job.json"))
    sub = [e for e in log_events(f"{work}/r{r}-sub.log") if x["t0"] <= e[0] <= x["t1"]]
    exe = [e for e in log_events(f"{work}/r{r}-exec.log") if x["t0"] <= e[0] <= x["t1"]]
    def first(evs, msg):
        return next((t for t, m, _ in evs if m == msg), None)
    def last(evs, msg):
        ts = [t for t, m, _ in evs if m == msg]
        return ts[-1] if ts else None
    submitted = rec["submitted_at_ms"] / 1000
    finished = (rec.get("finished_at_ms") or 0) / 1000
    assigned = min((e["assigned_at_ms"] for e in rec["executors"]), default=0) / 1000
    stored = first(sub, "image stored as blobs")
    fetched = last(exe, "blob fetched")
    loaded = first(exe, "image fetched and loaded")
    done = first(exe, "job finished")
    run_ms = next((j["fields"].get("duration_ms") for t, m, j in exe if m == "job finished"), None)
    events = [(e.get("at_ms", 0) / 1000, e.get("kind", ""), e.get("detail", "")) for e in rec.get("events", [])]
    # The executor's last progress report ("image fetched and loaded"), as
    # the submitter recorded it: the executor starts the container after.
    reported = next((t for t, k, d in events if k == "image" and "loaded" in d), None)
    return dict(export_end=stored, assigned=assigned, fetched=fetched, loaded=loaded,
                reported=reported, done=done, run_ms=run_ms, finished=finished,
                t0=x["t0"], t1=x["t1"], submitted=submitted, events=events)

rows, bd = [], []
for tag in ("a", "b"):
    for r in range(1, rounds + 1):
        a, d = res[(r, tag, "agora")], res[(r, tag, "docker")]
        rows.append((tag, r, dur(a), dur(d), a["bytes_in"] / MB, d["tar_bytes"] / MB))
        try:
            bd.append((tag, r, breakdown(r, tag)))
        except Exception as e:  # the breakdown is a diagnosis, not the result
            print(f"breakdown of round {r} image {tag}: {e}", file=sys.stderr)

images = {"a": "agora-layers-a", "b": "agora-layers-b"}
lines = [
    "## Docker images fetched peer to peer",
    "",
    f"Command: `testnet/bench-images.sh {rounds}` ({machine}; Docker {docker_version}). Each round starts two fresh, empty Docker engines (their own dockerd) and two daemons with fresh data dirs: the submitter on the host's engine, which holds the images, and the executor on empty engine E, bootstrapped from the submitter. "
    "agora: wall clock of `agora run docker IMAGE -n 1 -k 1 -- true`, submit to verified result (export on the submitter, transfer, load, container run); executor bytes in is the executor's `agora_blob_bytes_in_total` delta. "
    "Baseline, in the same round on the second empty engine E2: `docker save IMAGE | docker -H E2 load && docker -H E2 run --rm --network none IMAGE true`. "
    "`agora-layers-a` is busybox + a 24 MiB base layer + a small layer; `agora-layers-b` is the same base + another small layer, run second, when E and E2 already hold the base. MB = 10^6 bytes.",
    "",
    "| image | round | agora cold (s) | docker save\\|load+run (s) | ratio | executor bytes in (MB) | save tar (MB) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]
summary = []
for tag in ("a", "b"):
    rs = [x for x in rows if x[0] == tag]
    for _, r, ag, dk, bi, tar in rs:
        lines.append(f"| {images[tag]} | {r} | {ag:.2f} | {dk:.2f} | {ag/dk:.2f}x | {bi:.2f} | {tar:.2f} |")
    ma, md = statistics.median(x[2] for x in rs), statistics.median(x[3] for x in rs)
    mb, mt = statistics.median(x[4] for x in rs), statistics.median(x[5] for x in rs)
    ok = "met" if ma / md <= 1.3 else "NOT met"
    lines.append(f"| {images[tag]} | **median** | **{ma:.2f}** | **{md:.2f}** | **{ma/md:.2f}x** (ratio of medians; goal <= 1.3x: {ok}) | {mb:.2f} | {mt:.2f} |")
    summary.append((tag, ma, md))

# Median phase durations (s) over the rounds, from the job records and logs.
def med(tag, f):
    v = [f(b) for t, _, b in bd if t == tag]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def span(a, b):
    return lambda x: (x[b] - x[a]) if x.get(a) and x.get(b) else None
phases = [
    ("CLI start to job submitted: mostly the export on the submitter (docker save through the engine API, every layer hashed and stored as blobs)", span("t0", "submitted")),
    ("submitted to assigned (offer, bid, assignment)", span("submitted", "assigned")),
    ("assigned to last blob fetched (manifest, config, missing layers)", span("assigned", "fetched")),
    ("last blob fetched to image loaded (docker load into E, id check)", span("fetched", "loaded")),
    ("image loaded to the executor's final progress report reaching the submitter (the run starts after it)", span("loaded", "reported")),
    ("that report to container finished (create, start, run, inspect, remove)", span("reported", "done")),
    ("container finished to verified (signed result, check, verdict)", span("done", "finished")),
    ("verified to CLI exit", span("finished", "t1")),
    ("**the executor's share: assigned to container finished** (against the whole baseline)", span("assigned", "done")),
]
if bd:
    lines += ["", "Where agora's time goes (median seconds over the rounds, from the job record and the daemons' logs):", "",
              "| phase | image a | image b |", "| --- | --- | --- |"]
    for name, f in phases:
        va, vb = med("a", f), med("b", f)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        lines.append(f"| {name} | {fmt(va)} | {fmt(vb)} |")
lines += [
    "",
    "The agora time includes what any 1-of-1 job costs on top of the image: the offer, the bidding window, the assignment, the signed result and its check, the verdict and the CLI's round trips to its daemon; `docker run` has none of that. "
    "The baseline's `docker load` skips layers the engine already holds, but its save tar still carries every layer; agora's executor fetches only the blobs it lacks.",
]
open(out, "w").write("\n".join(lines) + "\n")

# Detail for the operator (stderr): each round's phases and job events.
for tag, r, b in bd:
    t0 = b["t0"]
    rel = lambda t: "-" if not t else f"{t - t0:+.3f}"
    print(f"round {r} image {tag}: submitted {rel(b['submitted'])} stored-as-blobs {rel(b['export_end'])} assigned {rel(b['assigned'])} "
          f"last-blob {rel(b['fetched'])} loaded {rel(b['loaded'])} report {rel(b['reported'])} job-finished {rel(b['done'])} (container {b['run_ms']} ms) "
          f"verified {rel(b['finished'])} cli-exit {rel(b['t1'])}", file=sys.stderr)
    for t, kind, detail in b["events"]:
        print(f"    {rel(t)} {kind}: {detail}", file=sys.stderr)
PY
replace_section images "$out"
cat "$out"
