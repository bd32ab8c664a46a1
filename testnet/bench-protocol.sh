#!/usr/bin/env bash
# Micro-benchmarks of the wire protocol (criterion): JobOffer encode+decode,
# sign and verify. Writes its section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. testnet/lib/bench.sh

cargo bench -p agora-protocol --bench codec -- --noplot >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
python3 - "$out" "$(machine_line)" <<'PY'
import json, sys
out, machine = sys.argv[1], sys.argv[2]
rows = [
    ("offer_encode_decode", "encode + decode a JobOffer (with its signed spec)", 200_000),
    ("sign_bid", "sign a Bid", None),
    ("verify_bid", "verify a signed Bid (signature + PeerId + decode)", 20_000),
    ("verify_offer", "verify a signed JobOffer", 20_000),
]
lines = [
    "## Protocol micro-benchmarks",
    "",
    f"Command: `testnet/bench-protocol.sh` (criterion, `cargo bench -p agora-protocol --bench codec`), one core, {machine}.",
    "",
    "| operation | mean time | per second | target |",
    "| --- | --- | --- | --- |",
]
for name, what, target in rows:
    est = json.load(open(f"target/criterion/protocol/{name}/new/estimates.json"))
    ns = est["mean"]["point_estimate"]
    per_s = 1e9 / ns
    t = f">= {target:,}/s ({'met' if per_s >= target else 'NOT met'})" if target else "-"
    lines.append(f"| {what} | {ns/1000:.2f} µs | {per_s:,.0f} | {t} |")
open(out, "w").write("\n".join(lines) + "\n")
PY
replace_section protocol "$out"
cat "$out"
