#!/usr/bin/env bash
# A test network of containers that stand in for separate hosts: a bootstrap
# container and N node containers on a private Docker network, each with its
# own IP address, data dir and Docker engine (one dockerd per node, started
# on this machine in its own network and mount namespace), so every executor
# of a Docker job runs it on its own engine. Nothing is pulled: the image is
# built FROM scratch from the workspace's release binaries.
#
# Usage: testnet/hosts.sh COMMAND [ARGS]
#   build [--no-cargo]      build the release binaries (unless --no-cargo),
#                           the fixtures and the agora-node:latest image
#   up N [--fault I=MODE]... start a bootstrap and N nodes (1..50) and wait
#                           until each sees the N-1 others online; --fault
#                           starts node I with `--testnet --fault MODE`
#   status                  per node: container, address, peers, nodes
#                           online, jobs, the containers of its engine
#   cli I ARGS...           the host's agora CLI against node I's API, e.g.
#                           `cli 1 run wasm ./prog.wasm --input x=./x`
#   engine I ARGS...        the docker CLI against node I's own engine
#   logs I|boot [FLAGS]     `docker logs` of a node (e.g. --tail 50 -f)
#   kill|stop|start|restart I|boot...
#                           docker kill/stop/start/restart of containers;
#                           a killed or stopped node comes back with `start`
#                           (same address, data dir and identity; its engine
#                           keeps running meanwhile); start and restart wait
#                           until it sees the reachable nodes online
#   partition I|boot...     cut these containers off the others (packet
#                           filters in their network namespaces; they still
#                           reach each other, so `partition 6 7 8` of 8
#                           splits 5|3; later calls join the same side).
#                           Nothing is reset: peers notice by silence,
#                           `agora nodes` marks them offline after 2 minutes
#   heal I|boot...          lift the cut for these containers
#   down [--image]          remove every container, network, engine and
#                           the state dir this script made (--image: also
#                           the agora-node image); safe to repeat
#
# Addresses: p2p on agora-hosts (PREFIX.0.0/24, --internal): bootstrap .2,
# node I .(10+I), TCP and QUIC port 7400, the same address as --listen and
# --external. The control API listens on a second internal network,
# agora-hosts-ctl (PREFIX.1.0/24, node I .(10+I), port 7401), which only the
# host uses, so `partition` cuts p2p and leaves the API reachable. Node I's
# data dir is testnet/.run/hosts/nI, mounted at the same path in its
# container; the CLI reads its api.addr and api.token from there. Engine I
# lives in testnet/.run/hosts/eI (socket sock/docker.sock, log dockerd.log).
#
# Env: HOSTS_NET_PREFIX (default 10.231): the first two octets.
#      HOSTS_IMAGES (default agora-busybox:latest): images copied from this
#        machine's engine into every node's engine ("" for none).
#      HOSTS_ENGINES=0: no per-node engines (Wasm-only nodes).
#      HOSTS_STORAGE_DRIVER (default vfs): the node engines' storage driver.
#      HOSTS_TIMEOUT (default 120): seconds to wait for a node to see its
#        peers online.
#      HOSTS_KEEP=1: leave a network that failed to come up running.
#      AGORA_DAEMON_ARGS: extra `agora daemon` flags for every node.
#      CARGO_TARGET_DIR: where the binaries are (default target/).
#      HOSTS_PROFILE (default release): the cargo profile whose binaries go
#        into the image and serve as the host's CLI; `debug` reuses what
#        `cargo test` built (CI does, to save a release build).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=$root/testnet/.run/hosts
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target=$PWD/$target ;; esac
profile=${HOSTS_PROFILE:-release}
case "$profile" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) echo "hosts.sh: HOSTS_PROFILE must be release or debug, got '$profile'" >&2; exit 2 ;;
esac
bin=$target/$profile
image=agora-node:latest
net=agora-hosts
ctl=agora-hosts-ctl
label=agora-hosts.testnet
prefix=${HOSTS_NET_PREFIX:-10.231}
# up moves to other names and the next subnet when docker will not remove
# an earlier network (an endpoint it leaked keeps one until dockerd
# restarts); its choice is kept here for the other commands.
netcfg=$state/netcfg
[ ! -f "$netcfg" ] || read -r net ctl prefix <"$netcfg"
boot_ip=$prefix.0.2
p2p_port=7400
api_port=7401
timeout_s=${HOSTS_TIMEOUT:-120}

say() { echo "hosts.sh: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

node_ip() { echo "$prefix.0.$((10 + $1))"; }
ctl_ip() { echo "$prefix.1.$((10 + $1))"; }
node_dir() { echo "$state/n$1"; }
engine_dir() { echo "$state/e$1"; }
engine_sock() { echo "$state/e$1/sock/docker.sock"; }
nodes_up() { cat "$state/n" 2>/dev/null || echo 0; }

# in_range X LO HI: X is a whole number from LO to HI.
in_range() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

# cname I|boot: the container's name.
cname() {
  case "$1" in
    boot) echo agora-hosts-boot ;;
    *) echo "agora-hosts-n$1" ;;
  esac
}

# check_node I: I is a node of the running network.
check_node() {
  local n
  n=$(nodes_up)
  [ "$n" -gt 0 ] || die "no host testnet is up (testnet/hosts.sh up N)"
  in_range "$1" 1 "$n" || die "no node '$1' (nodes are 1..$n)"
}

# check_target I|boot: a node or the bootstrap.
check_target() { [ "$1" = boot ] || check_node "$1"; }

# agora_at I ARGS...: the host's CLI against node I.
agora_at() { env -u AGORA_API -u AGORA_DATA_DIR "$bin/agora" --data-dir "$(node_dir "$1")" "${@:2}"; }

# The cut-off side of a partition: the targets listed in $state/cut (one
# per line). Each of them drops, inside its own network namespace, every
# p2p packet to or from a container on the other side, so the cut-off
# nodes still reach each other: `partition 6 7 8` splits 8 nodes 5|3.
cut_file() { echo "$state/cut"; }
is_cut() { grep -qx "$1" "$(cut_file)" 2>/dev/null; }

# p2p_ip I|boot: the container's address on the p2p network.
p2p_ip() { if [ "$1" = boot ]; then echo "$boot_ip"; else node_ip "$1"; fi; }

# apply_cut I|boot: (re)writes the container's AGORA-CUT chain: drop
# everything to or from the other side when I is cut off, nothing else.
apply_cut() {
  local t=$1 pid j
  pid=$(docker inspect -f '{{.State.Pid}}' "$(cname "$t")" 2>/dev/null) || return 0
  [ "${pid:-0}" -gt 0 ] || return 0
  local ipt=(nsenter -t "$pid" -n iptables -w)
  "${ipt[@]}" -N AGORA-CUT 2>/dev/null || "${ipt[@]}" -F AGORA-CUT
  "${ipt[@]}" -C INPUT -j AGORA-CUT 2>/dev/null || "${ipt[@]}" -I INPUT -j AGORA-CUT
  "${ipt[@]}" -C OUTPUT -j AGORA-CUT 2>/dev/null || "${ipt[@]}" -I OUTPUT -j AGORA-CUT
  is_cut "$t" || return 0
  for j in boot $(seq 1 "$(nodes_up)"); do
    is_cut "$j" && continue
    "${ipt[@]}" -A AGORA-CUT -s "$(p2p_ip "$j")" -j DROP
    "${ipt[@]}" -A AGORA-CUT -d "$(p2p_ip "$j")" -j DROP
  done
}

# same_side A B: both cut off, or neither.
same_side() {
  if is_cut "$1"; then is_cut "$2"; elif is_cut "$2"; then return 1; fi
}

running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

# online_count I: how many other nodes node I lists as online.
online_count() {
  agora_at "$1" nodes --json 2>/dev/null | python3 -c \
    'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["state"] == "online" and not n["is_self"]))' \
    2>/dev/null || echo 0
}

# reachable_others I: the other nodes that are running and on I's side of
# any partition.
reachable_others() {
  local i=$1 j c=0
  for j in $(seq 1 "$(nodes_up)"); do
    [ "$j" = "$i" ] && continue
    running "$(cname "$j")" && same_side "$i" "$j" && c=$((c + 1))
  done
  echo "$c"
}

# log_tail I|boot: the last lines of a container's log, indented.
log_tail() {
  echo "--- last lines of $(cname "$1")'s log:" >&2
  docker logs --tail 25 "$(cname "$1")" 2>&1 | sed 's/^/  /' >&2 || true
}

# wait_api I: waits until node I's API answers.
wait_api() {
  local i=$1
  for _ in $(seq 300); do
    agora_at "$i" id >/dev/null 2>&1 && return 0
    running "$(cname "$i")" || break
    sleep 0.2
  done
  say "node $i's API did not come up"
  log_tail "$i"
  return 1
}

# wait_online I N: waits until node I lists N others online.
wait_online() {
  local i=$1 want=$2 got=0
  for _ in $(seq $((timeout_s * 2))); do
    got=$(online_count "$i")
    [ "$got" -ge "$want" ] && return 0
    sleep 0.5
  done
  say "node $i sees $got of $want other nodes online after ${timeout_s}s"
  log_tail "$i"
  return 1
}

# ---------------------------------------------------------------- build

cmd_build() {
  local cargo=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-cargo) cargo=0 ;;
      *) die "build: unknown argument '$1'" ;;
    esac
    shift
  done
  (cd "$root" && testnet/setup.sh >/dev/null && testnet/fixtures/build.sh >/dev/null)
  if [ "$cargo" = 1 ]; then
    say "building agora and agora-bootstrap ($profile)"
    (cd "$root" && cargo build ${cargo_profile[@]+"${cargo_profile[@]}"} -q -p agora-cli -p agora-bootstrap)
  fi
  local b
  for b in agora agora-bootstrap; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing; run without --no-cargo"
  done

  local ctx
  ctx=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $ctx is local
  trap "rm -rf '$ctx'" EXIT
  local rootfs=$ctx/rootfs
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  # Without the line tables (about 5x smaller); symbols stay for backtraces.
  for b in agora agora-bootstrap; do
    strip --strip-debug -o "$rootfs/usr/local/bin/$b" "$bin/$b"
  done
  # The shared libraries and the dynamic loader, at the paths ldd names.
  local lib libs=()
  mapfile -t libs < <(for b in agora agora-bootstrap; do ldd "$bin/$b" 2>/dev/null; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  for lib in ${libs[@]+"${libs[@]}"}; do
    cp -L --parents "$lib" "$rootfs"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  local sum
  sum=$(sha256sum "$bin/agora" | cut -c1-64)
  cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin HOME=/root
LABEL $label=1 $label.agora-sha256=$sum
CMD ["agora", "--help"]
EOF
  local out
  # The classic builder needs nothing from a registry for FROM scratch.
  if ! out=$(DOCKER_BUILDKIT=0 docker build --quiet --tag "$image" "$ctx" 2>&1); then
    echo "$out" >&2
    die "docker build failed"
  fi
  rm -rf "$ctx"
  trap - EXIT
  local size
  size=$(docker image inspect -f '{{.Size}}' "$image")
  echo "built $image ($((size / 1000000)) MB): agora, agora-bootstrap, ${libs[*]:-no shared libraries}"
}

# ---------------------------------------------------------------- engines

# start_engine I: starts node I's dockerd in new network and mount
# namespaces (it cannot touch this machine's interfaces, and its mounts
# vanish with it) and waits until it answers.
start_engine() {
  local i=$1 d sock pid=""
  d=$(engine_dir "$i")
  sock=$(engine_sock "$i")
  mkdir -p "$d/root" "$d/exec" "$d/sock"
  [ ${#sock} -lt 100 ] || die "engine socket path too long for a unix socket: $sock"
  # --config-file: an empty one, since /etc/docker/daemon.json may set a
  # data root. No bridge, no iptables: jobs run with --network none.
  setsid unshare --net --mount --propagation slave -- \
    sh -c 'ip link set lo up 2>/dev/null; exec "$@"' sh \
    dockerd --config-file "$state/engine.json" --data-root "$d/root" --exec-root "$d/exec" \
    -H "unix://$sock" --pidfile "$d/dockerd.pid" --storage-driver "${HOSTS_STORAGE_DRIVER:-vfs}" \
    --cgroup-parent "/agora-hosts-e$i" \
    --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    </dev/null >"$d/dockerd.log" 2>&1 &
  echo $! >"$d/pid"
  for _ in $(seq 150); do
    if docker -H "unix://$sock" version >/dev/null 2>&1; then
      pid=$(cat "$d/dockerd.pid")
      break
    fi
    kill -0 "$(cat "$d/pid")" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$pid" ]; then
    say "node $i's engine did not start; the end of $d/dockerd.log:"
    tail -n 15 "$d/dockerd.log" | sed 's/^/  /' >&2
    return 1
  fi
  echo "$pid" >"$d/pid"
  # The namespaces identify its containerd and shims at `down`.
  echo "$(readlink "/proc/$pid/ns/net") $(readlink "/proc/$pid/ns/mnt")" >"$d/ns"
}

# engine_cgroups DIR: the cgroup dirs holding the containers of the engine
# whose state is in DIR (cgroup v1: one per controller; v2: one).
engine_cgroups() {
  local c
  for c in /sys/fs/cgroup/*/"agora-hosts-$(basename "$1")" /sys/fs/cgroup/"agora-hosts-$(basename "$1")"; do
    [ -d "$c" ] && echo "$c"
  done
  return 0
}

# stop_engine DIR: stops the engine whose state is in DIR, the processes of
# its containers and every process left in its namespaces (containerd,
# shims), and removes its cgroups.
stop_engine() {
  local d=$1 pid="" ns="" c
  [ -f "$d/pid" ] && pid=$(cat "$d/pid")
  [ -f "$d/ns" ] && ns=$(cat "$d/ns")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "dockerd .*--data-root $d/root"; then
    if [ -S "$d/sock/docker.sock" ]; then
      local ids
      ids=$(timeout 20 docker -H "unix://$d/sock/docker.sock" ps -aq 2>/dev/null || true)
      # shellcheck disable=SC2086 # one id per word
      [ -z "$ids" ] || timeout 30 docker -H "unix://$d/sock/docker.sock" rm -f $ids >/dev/null 2>&1 || true
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Containers an engine that died (or was killed) left running.
  local q
  for c in $(engine_cgroups "$d"); do
    while read -r q; do
      kill -KILL "$q" 2>/dev/null || true
    done < <(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null)
  done
  if [ -n "$ns" ]; then
    sweep_ns "$ns"
  fi
  for _ in $(seq 25); do
    for c in $(engine_cgroups "$d"); do
      find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    [ -z "$(engine_cgroups "$d")" ] && break
    sleep 0.2
  done
  return 0
}

# sweep_ns "NET MNT": ends every process in these namespaces.
sweep_ns() {
  local ns=$1 p alive
  for _ in $(seq 50); do
    alive=0
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/net" 2>/dev/null) $(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
      alive=1
      kill -TERM "${p#/proc/}" 2>/dev/null || true
    done
    [ "$alive" = 0 ] && return 0
    sleep 0.2
  done
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/net" 2>/dev/null) $(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] &&
      kill -KILL "${p#/proc/}" 2>/dev/null
  done
  return 0
}

# ---------------------------------------------------------------- up

# create_node I BOOT FAULT: creates and starts node I's container.
create_node() {
  local i=$1 boot=$2 fault=$3 ip cip dir name
  ip=$(node_ip "$i"); cip=$(ctl_ip "$i"); dir=$(node_dir "$i"); name=$(cname "$i")
  mkdir -p "$dir"
  local run=(--name "$name" --hostname "n$i" --label "$label=1" --label "$label.node=$i"
    --network "$net" --ip "$ip" --stop-timeout 20 -v "$dir:$dir" -e NO_COLOR=1)
  if [ "${HOSTS_ENGINES:-1}" != 0 ]; then
    local sockdir
    sockdir=$(dirname "$(engine_sock "$i")")
    run+=(-v "$sockdir:$sockdir" -e "DOCKER_HOST=unix://$sockdir/docker.sock")
  fi
  [ -z "${AGORA_LOG:-}" ] || run+=(-e "AGORA_LOG=$AGORA_LOG")
  local args=(agora --data-dir "$dir" daemon
    --listen "/ip4/$ip/tcp/$p2p_port" --listen "/ip4/$ip/udp/$p2p_port/quic-v1"
    --external "/ip4/$ip/tcp/$p2p_port" --external "/ip4/$ip/udp/$p2p_port/quic-v1"
    --api "$cip:$api_port" --bootstrap "$boot" --label "host=n$i")
  [ -z "$fault" ] || args+=(--testnet --fault "$fault")
  local extra=()
  read -r -a extra <<<"${AGORA_DAEMON_ARGS:-}"
  args+=(${extra[@]+"${extra[@]}"})
  docker create "${run[@]}" "$image" "${args[@]}" >/dev/null
  docker network connect --ip "$cip" "$ctl" "$name"
  docker start "$name" >/dev/null
}

cmd_up() {
  local n=${1:-}
  [ $# -gt 0 ] && shift
  in_range "$n" 1 50 || die "up: N must be 1..50, got '$n'"
  local -A faults=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --fault)
        [ $# -ge 2 ] || die "up: --fault needs I=MODE"
        [[ "$2" =~ ^([0-9]+)=(.+)$ ]] || die "up: --fault wants I=MODE, got '$2'"
        local fidx=${BASH_REMATCH[1]} fm=${BASH_REMATCH[2]}
        in_range "$fidx" 1 "$n" || die "up: --fault: no node $fidx (nodes are 1..$n)"
        faults[$fidx]=$fm
        shift 2 ;;
      *) die "up: unknown argument '$1'" ;;
    esac
  done
  [ ! -e "$state" ] || die "a host testnet is already up or was not removed ($state); run testnet/hosts.sh down"
  [ -z "$(docker ps -aq --filter "label=$label=1")" ] || die "containers of an earlier host testnet exist; run testnet/hosts.sh down"
  remove_networks
  local x alt=0 base=$prefix
  while docker network inspect "$net" >/dev/null 2>&1 || docker network inspect "$ctl" >/dev/null 2>&1; do
    alt=$((alt + 1))
    [ "$alt" -le 8 ] || die "docker networks $net and $ctl exist and cannot be removed; run testnet/hosts.sh down, or restart dockerd"
    net=agora-hosts-$alt ctl=agora-hosts-ctl-$alt prefix=${base%.*}.$((${base#*.} + alt))
  done
  boot_ip=$prefix.0.2
  [ "$alt" = 0 ] || say "an earlier network is still there; using $net ($prefix.0.0/24) and $ctl instead"
  docker image inspect "$image" >/dev/null 2>&1 || die "no $image image; run testnet/hosts.sh build"
  [ -x "$bin/agora" ] || die "$bin/agora is missing; run testnet/hosts.sh build"
  local want have
  want=$(docker image inspect -f "{{index .Config.Labels \"$label.agora-sha256\"}}" "$image")
  have=$(sha256sum "$bin/agora" | cut -c1-64)
  [ "$want" = "$have" ] || say "warning: $image holds another agora than $bin/agora; run testnet/hosts.sh build"
  local images=()
  read -r -a images <<<"${HOSTS_IMAGES-agora-busybox:latest}"
  [ "${HOSTS_ENGINES:-1}" != 0 ] || images=()
  for x in ${images[@]+"${images[@]}"}; do
    docker image inspect "$x" >/dev/null 2>&1 || die "image $x is not on this machine's engine (testnet/fixtures/build.sh builds agora-busybox)"
  done

  local t0=$SECONDS
  mkdir -p "$state/boot"
  echo "$net $ctl $prefix" >"$netcfg"
  echo '{}' >"$state/engine.json"
  echo "$n" >"$state/n"
  failed() {
    say "the host testnet did not come up"
    if [ "${HOSTS_KEEP:-0}" = 1 ]; then
      say "left running (HOSTS_KEEP=1); remove it with testnet/hosts.sh down"
    else
      cmd_down >&2
    fi
    exit 1
  }

  docker network create --internal --subnet "$prefix.0.0/24" --gateway "$prefix.0.1" --label "$label=1" "$net" >/dev/null || failed
  docker network create --internal --subnet "$prefix.1.0/24" --gateway "$prefix.1.1" --label "$label=1" "$ctl" >/dev/null || failed

  local i
  if [ "${HOSTS_ENGINES:-1}" != 0 ]; then
    for i in $(seq 1 "$n"); do start_engine "$i" || failed; done
    if [ ${#images[@]} -gt 0 ]; then
      docker save -o "$state/images.tar" "${images[@]}" || failed
      for i in $(seq 1 "$n"); do
        docker -H "unix://$(engine_sock "$i")" load -q -i "$state/images.tar" >/dev/null || failed
      done
      rm -f "$state/images.tar"
    fi
    echo "engines: $n dockerd started in $((SECONDS - t0)) s, each loaded with: ${images[*]:-nothing}" >&2
  fi

  docker run -d --name "$(cname boot)" --hostname boot --label "$label=1" --network "$net" --ip "$boot_ip" -e NO_COLOR=1 \
    -v "$state/boot:$state/boot" "$image" agora-bootstrap --key-file "$state/boot/identity.key" \
    --listen "/ip4/$boot_ip/tcp/$p2p_port" --listen "/ip4/$boot_ip/udp/$p2p_port/quic-v1" \
    --external "/ip4/$boot_ip/tcp/$p2p_port" --external "/ip4/$boot_ip/udp/$p2p_port/quic-v1" >/dev/null || failed
  local boot=""
  for _ in $(seq 100); do
    boot=$(docker logs "$(cname boot)" 2>/dev/null | grep -o "/ip4/$boot_ip/tcp/$p2p_port/p2p/[A-Za-z0-9]*" | head -1 || true)
    [ -n "$boot" ] && break
    sleep 0.1
  done
  [ -n "$boot" ] || { say "the bootstrap did not start"; log_tail boot; failed; }
  echo "$boot" >"$state/boot.addr"

  for i in $(seq 1 "$n"); do
    create_node "$i" "$boot" "${faults[$i]:-}" || failed
  done
  for i in $(seq 1 "$n"); do wait_api "$i" || failed; done
  if [ "$n" -gt 1 ]; then
    for i in $(seq 1 "$n"); do wait_online "$i" $((n - 1)) || failed; done
  fi

  echo "agora host testnet: bootstrap + $n nodes, up in $((SECONDS - t0)) s (state in ${state#"$root"/})"
  echo "bootstrap: $boot"
  for i in $(seq 1 "$n"); do
    local id
    id=$(agora_at "$i" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
    echo "node $i: $id  p2p $(node_ip "$i"):$p2p_port  api $(ctl_ip "$i"):$api_port${faults[$i]:+  fault ${faults[$i]}}"
  done
  echo
  echo "  testnet/hosts.sh cli 1 run wasm testnet/fixtures/build/hello.wasm -- hi"
  echo "  testnet/hosts.sh status | logs I | engine I ps | kill I | start I | partition I | heal I"
  echo "  testnet/hosts.sh down"
}

# ---------------------------------------------------------------- down

# remove_networks: removes the docker networks hosts.sh made (by label),
# adding each to `did`. Docker can take a moment to release the endpoint of
# a container just removed, so it retries for up to 10 s; a network it
# still refuses (an endpoint it leaked, until dockerd restarts) is reported
# and left, and up then uses other names.
remove_networks() {
  local x try left
  for try in $(seq 10); do
    left=()
    for x in $(docker network ls -q --filter "label=$label=1"); do
      local name
      name=$(docker network inspect -f '{{.Name}}' "$x" 2>/dev/null) || continue
      if docker network rm "$x" >/dev/null 2>&1; then
        did+=("network $name")
      else
        left+=("$name")
      fi
    done
    [ ${#left[@]} -gt 0 ] || return 0
    [ "$try" = 10 ] || sleep 1
  done
  say "docker will not remove network(s) ${left[*]} (an endpoint it leaked stays until dockerd restarts); up uses other names meanwhile"
}

cmd_down() {
  local rmimage=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --image) rmimage=1 ;;
      *) die "down: unknown argument '$1'" ;;
    esac
    shift
  done
  local ids did=()
  ids=$(docker ps -aq --filter "label=$label=1")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $ids >/dev/null
    did+=("$(echo "$ids" | wc -l) containers")
  fi
  remove_networks
  local d engines=0
  for d in "$state"/e[0-9]*; do
    [ -d "$d" ] || continue
    # In parallel: each takes a few seconds to stop its containerd.
    stop_engine "$d" &
    engines=$((engines + 1))
  done
  wait
  [ "$engines" = 0 ] || did+=("$engines engines")
  # The engines mount only in their own namespaces; this is a safety net.
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null && did+=("mount $m")
  done < <(awk -v s="$state/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  if [ -e "$state" ]; then
    rm -rf "$state"
    did+=("${state#"$root"/}")
  fi
  if [ "$rmimage" = 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    docker rmi "$image" >/dev/null
    did+=("image $image")
  fi
  if [ ${#did[@]} -eq 0 ]; then
    echo "no host testnet to remove"
  else
    local IFS=,
    echo "removed: ${did[*]}" | sed 's/,/, /g'
  fi
}

# ---------------------------------------------------------------- the rest

cmd_status() {
  local n i name st where
  n=$(nodes_up)
  [ "$n" -gt 0 ] || { echo "no host testnet is up"; return 0; }
  printf '%-5s %-9s %-13s %-14s %5s %7s  %-26s %s\n' NODE STATE P2P PEER PEERS ONLINE JOBS ENGINE
  for i in boot $(seq 1 "$n"); do
    name=$(cname "$i")
    st=$(docker inspect -f '{{.State.Status}}' "$name" 2>/dev/null || echo missing)
    where=$(p2p_ip "$i")
    is_cut "$i" && where="$where(cut)"
    if [ "$i" = boot ]; then
      printf '%-5s %-9s %-13s\n' boot "$st" "$where"
      continue
    fi
    local info="- - - -" eng="-"
    if [ "$st" = running ]; then
      info=$({ agora_at "$i" id --json; agora_at "$i" peers --json; agora_at "$i" nodes --json
        agora_at "$i" job list --json; } 2>/dev/null | python3 -c '
import json, sys
text, docs, pos, dec = sys.stdin.read(), [], 0, json.JSONDecoder()
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    doc, pos = dec.raw_decode(text, pos)
    docs.append(doc)
me, peers, nodes, jobs = docs
online = sum(1 for x in nodes["nodes"] if x["state"] == "online" and not x["is_self"])
others = len(nodes["nodes"]) - 1
states = {}
for j in jobs["jobs"]:
    states[j["state"]] = states.get(j["state"], 0) + 1
js = ",".join(f"{v}_{k}" for k, v in sorted(states.items())) or "none"
print(me["peer_id"][-12:], len(peers["peers"]), f"{online}/{others}", js)
' 2>/dev/null || echo "? ? ? api-unreachable")
    fi
    if [ "${HOSTS_ENGINES:-1}" != 0 ] && [ -S "$(engine_sock "$i")" ]; then
      eng=$(docker -H "unix://$(engine_sock "$i")" info -f '{{.ContainersRunning}} running/{{.Containers}} containers, {{.Images}} images' 2>/dev/null || echo down)
    fi
    local peer peers online jobs
    read -r peer peers online jobs <<<"$info"
    printf '%-5s %-9s %-13s %-14s %5s %7s  %-26s %s\n' "$i" "$st" "$where" "$peer" "$peers" "$online" "${jobs//_/ }" "$eng"
  done
}

cmd_container() {
  local op=$1 t name
  shift
  [ $# -gt 0 ] || die "$op: which nodes? (numbers, or boot)"
  for t in "$@"; do check_target "$t"; done
  for t in "$@"; do
    name=$(cname "$t")
    case "$op" in
      kill) docker kill "$name" >/dev/null && echo "killed $name (SIGKILL; bring it back with: testnet/hosts.sh start $t)" ;;
      stop) docker stop -t 20 "$name" >/dev/null && echo "stopped $name" ;;
      start | restart)
        if [ "$op" = start ]; then docker start "$name" >/dev/null; else docker restart -t 20 "$name" >/dev/null; fi
        # A new network namespace: a cut-off node stays cut off.
        is_cut "$t" && apply_cut "$t"
        echo "${op}ed $name"
        if [ "$t" != boot ]; then
          wait_api "$t" || exit 1
          local want
          want=$(reachable_others "$t")
          wait_online "$t" "$want" || exit 1
          echo "node $t is back: sees $want other nodes online"
        fi ;;
    esac
  done
}

cmd_partition() {
  local t j
  [ $# -gt 0 ] || die "partition: which nodes? (numbers, or boot)"
  for t in "$@"; do check_target "$t"; done
  for t in "$@"; do
    if is_cut "$t"; then echo "$(cname "$t") is already cut off"; else echo "$t" >>"$(cut_file)"; fi
  done
  # Every cut-off node's rules name the other side, which just changed.
  for j in boot $(seq 1 "$(nodes_up)"); do is_cut "$j" && apply_cut "$j"; done
  echo "cut off: $(tr '\n' ' ' <"$(cut_file)")(they reach each other, not the rest; APIs stay reachable on $ctl)"
}

cmd_heal() {
  local t j
  [ $# -gt 0 ] || die "heal: which nodes? (numbers, or boot)"
  for t in "$@"; do check_target "$t"; done
  for t in "$@"; do
    if ! is_cut "$t"; then echo "$(cname "$t") is not cut off"; continue; fi
    grep -vx "$t" "$(cut_file)" >"$(cut_file).new" || true
    mv "$(cut_file).new" "$(cut_file)"
    echo "healed $(cname "$t")"
  done
  for j in boot $(seq 1 "$(nodes_up)"); do apply_cut "$j"; done
  for t in "$@"; do
    [ "$t" = boot ] && continue
    running "$(cname "$t")" || continue
    local want
    want=$(reachable_others "$t")
    wait_online "$t" "$want" || exit 1
    echo "node $t sees $want other nodes online"
  done
}

case "${1:-}" in
  -h | --help | help | "") usage; [ -n "${1:-}" ] || exit 2; exit 0 ;;
esac
cmd=$1
shift
case "$cmd" in
  build) cmd_build "$@" ;;
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status ;;
  cli)
    [ $# -ge 1 ] || die "cli: usage: cli I ARGS..."
    check_node "$1"
    agora_at "$@" ;;
  engine)
    [ $# -ge 1 ] || die "engine: usage: engine I ARGS..."
    check_node "$1"
    [ -S "$(engine_sock "$1")" ] || die "node $1 has no engine"
    DOCKER_HOST="unix://$(engine_sock "$1")" docker "${@:2}" ;;
  logs)
    [ $# -ge 1 ] || die "logs: usage: logs I|boot [FLAGS]"
    check_target "$1"
    docker logs "${@:2}" "$(cname "$1")" ;;
  kill | stop | start | restart) cmd_container "$cmd" "$@" ;;
  partition) cmd_partition "$@" ;;
  heal) cmd_heal "$@" ;;
  *) say "unknown command '$cmd'"; usage >&2; exit 2 ;;
esac
