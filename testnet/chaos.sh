#!/usr/bin/env bash
# Runs the chaos scenarios on the container host testnet and rewrites the
# results section of docs/chaos.md: date, machine, and per scenario its
# checks, jobs (submitted, verified, failed, lost, wrong), recovery times
# and the harness's own summary. Every scenario runs even when one fails;
# the exit code is 1 when any failed.
#
# Usage: testnet/chaos.sh [--short] [SCENARIO...]
#   (default: the five full scenarios in testnet/scenarios/; --short: the
#   CI versions; or the named files)
# Env:   HOSTS_PROFILE (release): binaries for the image and the CLI.
#        CHAOS_DOC (docs/chaos.md): the page to rewrite ("" for none).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
scenarios=()
if [ "${1:-}" = --short ]; then
  shift
  scenarios=(kill-30pct-short partition-5-3-short bootstraps-gone-short)
fi
if [ $# -gt 0 ]; then
  scenarios+=("$@")
elif [ ${#scenarios[@]} -eq 0 ]; then
  scenarios=(kill-30pct partition-5-3 rolling-restart liars bootstraps-gone)
fi
files=()
for s in "${scenarios[@]}"; do
  f=$s
  [ -f "$f" ] || f=testnet/scenarios/$s.toml
  [ -f "$f" ] || { echo "chaos.sh: no scenario '$s' (looked for $f)" >&2; exit 2; }
  files+=("$f")
done

. testnet/lib/bench.sh
profile=${HOSTS_PROFILE:-release}
flags=()
[ "$profile" = release ] && flags=(--release)
echo "== building ($profile)" >&2
cargo build ${flags[@]+"${flags[@]}"} -q -p agora-cli -p agora-bootstrap
cargo build ${flags[@]+"${flags[@]}"} -q -p agora-testnet --bin agora-scenario
HOSTS_PROFILE=$profile testnet/hosts.sh build --no-cargo >&2
target=${CARGO_TARGET_DIR:-target}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for f in "${files[@]}"; do
  name=$(basename "$f" .toml)
  echo "== $name" >&2
  rc=0
  HOSTS_PROFILE=$profile "$target/$profile/agora-scenario" "$f" --json "$work/$name.json" \
    >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  cat "$work/$name.out" >&2
  if [ "$rc" -ne 0 ]; then
    failed=1
    tail -n 20 "$work/$name.err" >&2
    # A scenario that could not run leaves no report: say so in the page.
    [ -f "$work/$name.json" ] || printf '{"scenario": "%s", "error": "exit %s: %s"}\n' \
      "$f" "$rc" "$(tail -n 1 "$work/$name.err" | tr -d '"\\')" >"$work/$name.json"
  fi
done

doc=${CHAOS_DOC-docs/chaos.md}
if [ -n "$doc" ]; then
  python3 - "$work" "$(machine_line)" "${files[@]}" <<'PY'
import datetime, json, os, sys
work, machine, files = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = [
    "## Results",
    "",
    f"Command: `testnet/chaos.sh` ({machine}), {datetime.date.today().isoformat()}. "
    "*lost* = submissions never seen or never final at their submitter; "
    "*recovery* = after each fault step, the time until the next job submitted "
    "after it verified, and (after start, restart and heal) until every running "
    "node listed every other online and connected.",
    "",
    "| scenario | checks | jobs | verified | failed | lost | wrong results accepted | recovery (s) | run time |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
details = []
for f in files:
    name = os.path.basename(f)[:-5]
    r = json.load(open(os.path.join(work, name + ".json")))
    if "error" in r:
        lines.append(f"| `{name}` | could not run: {r['error']} | - | - | - | - | - | - | - |")
        continue
    j = r["jobs"]
    checks = r["checks"]
    passed = sum(1 for c in checks if c["pass"])
    verdict = "PASS" if r["pass"] else "FAIL"
    rec = []
    for s in r["steps"]:
        parts = []
        if s.get("next_verified_s") is not None:
            parts.append(f"job {s['next_verified_s']:.1f}")
        if s.get("mesh_s") is not None:
            parts.append(f"mesh {s['mesh_s']:.1f}")
        if parts:
            rec.append(f"{s['action']}: {', '.join(parts)}")
    lost = j["unseen"] + j["not_final"]
    lines.append(
        f"| `{name}` | {verdict} ({passed} of {len(checks)}) | {j['submitted']} | {j['verified']} | {j['failed']} | {lost} "
        f"| {j['wrong_results']} | {'; '.join(rec) or '-'} | {r['duration_s']:.0f} s |"
    )
    out = open(os.path.join(work, name + ".out")).read().rstrip("\n")
    details += ["", f"### {name}", "", "```text", out, "```"]
open(os.path.join(work, "results.md"), "w").write("\n".join(lines + details) + "\n")
PY
  BENCH_DOC=$doc replace_section chaos-results "$work/results.md"
  echo "== rewrote the results in $doc" >&2
fi
exit "$failed"
