#!/usr/bin/env bash
# Configures and builds ucrfs into ./build (or $UCRFS_BUILD_DIR).
# Extra arguments go to cmake's configure step, e.g. -DUCRFS_ENABLE_ASAN=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${UCRFS_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
