# Shared helpers for the benchmark scripts (sourced, not run).

# replace_section NAME FILE: replaces the text between
#   <!-- bench:NAME:start --> and <!-- bench:NAME:end -->
# in docs/benchmarks.md with FILE's contents (appending the section if new),
# so each benchmark script owns its own part of the page.
replace_section() {
  local name=$1 body=$2 doc=${BENCH_DOC:-docs/benchmarks.md}
  [ -f "$doc" ] || printf '# agora benchmarks\n\nEvery number here was produced by the command shown beside it, on the machine described. Re-run the command to refresh its section.\n' >"$doc"
  python3 - "$doc" "$name" "$body" <<'PY'
import sys
doc, name, body = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip("\n")
start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
text = open(doc).read()
block = f"{start}\n{body}\n{end}"
if start in text and end in text:
    pre, rest = text.split(start, 1)
    _, post = rest.split(end, 1)
    text = pre + block + post
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(doc, "w").write(text)
PY
}

# machine_line: one line describing the machine the numbers come from.
machine_line() {
  printf '%s, %s cores, %s, rustc %s' "$(uname -m)" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)" \
    "$(rustc --version | awk '{print $2}')"
}
