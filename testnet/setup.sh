#!/usr/bin/env bash
# Installs the system packages agora's build, tests and demos need on a fresh
# Debian machine (run as root, or with sudo available). Idempotent: does
# nothing when everything is already there.
set -euo pipefail

pkgs=(clang lld wasi-libc libclang-rt-14-dev-wasm32 busybox-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "setup: the Docker engine is not reachable (is dockerd running, and may this user use it?)" >&2; exit 1; }
