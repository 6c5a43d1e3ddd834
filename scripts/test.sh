#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it
# needs, builds, runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
ctest --test-dir "${UCRFS_BUILD_DIR:-build}" --output-on-failure --timeout 900 -j2 "$@"
