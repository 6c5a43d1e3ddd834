#!/usr/bin/env bash
# Installs everything ucrfs needs to build, test and run its demo on Debian 12.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

# Libraries and build tools.
BUILD_PKGS=(
  build-essential cmake ninja-build pkg-config git
  libfuse3-dev libcurl4-openssl-dev libssl-dev libarchive-dev liblmdb-dev
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev nlohmann-json3-dev libsimdjson-dev
  libcli11-dev zlib1g-dev libzstd-dev libisal-dev
)
# Real tools the tests and the demo use as peers and oracles.
TOOL_PKGS=(
  docker-registry skopeo umoci containerd stargz-snapshotter crun runc
  fuse3 openssl apache2-utils busybox-static python3 curl ca-certificates
  iproute2 procps zstd
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${BUILD_PKGS[@]}" "${TOOL_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# docker-registry and containerd ship services; never start them on install:
# the tests start their own instances on loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
