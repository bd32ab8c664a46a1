#!/usr/bin/env bash
# Sandbox benchmarks, each a ratio measured side by side in one run:
#  1. a CPU-bound Wasm program (compiled from C) under `agora exec wasm`
#     against the `wasmtime` CLI (installed from crates.io) on the same module;
#  2. a trivial Wasm job in-process with a warm module cache (criterion);
#  3. `agora exec docker` against `docker run --rm --network none` on the
#     same image and command.
# Writes its section of docs/benchmarks.md. Takes a while the first time
# (release builds, wasmtime-cli install).
set -euo pipefail
cd "$(dirname "$0")/.."
. testnet/lib/bench.sh

testnet/setup.sh
command -v hyperfine >/dev/null || {
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get install -y -qq hyperfine >/dev/null
}
testnet/fixtures/build.sh >/dev/null
cargo build --release -q -p agora-cli
agora=target/release/agora

tools=testnet/.run/tools
wasmtime_version=$(cargo tree -p agora-node -i wasmtime --depth 0 -e normal 2>/dev/null | awk 'NR==1 {print $2}' | tr -d v)
if [ ! -x "$tools/bin/wasmtime" ] || ! "$tools/bin/wasmtime" --version | grep -q "$wasmtime_version"; then
  echo "installing wasmtime-cli $wasmtime_version from crates.io (once)" >&2
  cargo install -q wasmtime-cli --version "=$wasmtime_version" --locked --root "$tools"
fi
wasmtime="$tools/bin/wasmtime"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data="$work/data"
cpu=testnet/fixtures/build/cpu.wasm
# Primes below N: large enough that the run, not process start-up, dominates.
n=${CPU_N:-3000000}

# Both sides get their compiled-module caches warmed by hyperfine's warm-up
# runs; agora runs with its defaults (deterministic mode, limits on).
hyperfine -N --warmup 3 --runs 15 --export-json "$work/cpu.json" \
  -n wasmtime "$wasmtime run $cpu $n" \
  -n agora "$agora --data-dir $data exec wasm $cpu --timeout 120s --memory 256MiB -- $n" >&2

cargo bench -q -p agora-node --bench wasm_warm -- --noplot >&2

hyperfine -N --warmup 2 --runs 15 --export-json "$work/docker.json" \
  -n docker "docker run --rm --network none agora-busybox:latest true" \
  -n agora "$agora --data-dir $data exec docker agora-busybox:latest -- true" >&2

out="$work/section.md"
python3 - "$work" "$out" "$(machine_line)" "$("$wasmtime" --version)" "$n" <<'PY'
import json, sys
work, out, machine, wt, n = sys.argv[1:6]
def means(f):
    r = {x["command"]: x for x in json.load(open(f"{work}/{f}"))["results"]}
    return r
cpu, dock = means("cpu.json"), means("docker.json")
warm = json.load(open("target/criterion/wasm_trivial_job_warm_cache/new/estimates.json"))["mean"]["point_estimate"] / 1e6
r_cpu = cpu["agora"]["mean"] / cpu["wasmtime"]["mean"]
r_dock = dock["agora"]["mean"] / dock["docker"]["mean"]
ok = lambda c: "met" if c else "NOT met"
lines = [
    "## Sandboxes",
    "",
    f"Command: `testnet/bench-exec.sh`, {machine}; {wt}; hyperfine means over 15 runs after warm-up.",
    "",
    "| what | agora | peer | ratio | target |",
    "| --- | --- | --- | --- | --- |",
    f"| CPU-bound Wasm (`cpu.wasm {n}`, primes below {int(n):,}, from C): `agora exec wasm` vs `wasmtime run` | {cpu['agora']['mean']*1000:.1f} ms | {cpu['wasmtime']['mean']*1000:.1f} ms | {r_cpu:.3f}x | <= 1.05x ({ok(r_cpu <= 1.05)}) |",
    f"| trivial Wasm job, warm module cache, in-process (criterion) | {warm:.3f} ms | - | - | <= 2 ms ({ok(warm <= 2)}) |",
    f"| `agora exec docker ... true` vs `docker run --rm --network none ... true` | {dock['agora']['mean']*1000:.0f} ms | {dock['docker']['mean']*1000:.0f} ms | {r_dock:.3f}x | <= 1.10x ({ok(r_dock <= 1.10)}) |",
    "",
    "The Wasm comparison is whole-process time for both (process start, module load from each tool's compilation cache, run). agora's Docker run adds what its sandbox requires and `docker run` does not do: image id check, read-only root, capability drop, pids/memory/CPU limits, a tmpfs, `/in` and `/out` mounts, and capped log streaming.",
]
open(out, "w").write("\n".join(lines) + "\n")
PY
replace_section exec "$out"
cat "$out"
