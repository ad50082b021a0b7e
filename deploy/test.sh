#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test through ctest.
#   deploy/test.sh                 release build in build/
#   GLA_SANITIZE=1 deploy/test.sh  ASan + UBSan build in build-asan/
# CUDA tests run only where a GPU is present; elsewhere they print that they were skipped and why.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
if [ "${GLA_SANITIZE:-0}" = 1 ]; then
  dir=build-asan
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLA_SANITIZE=ON -DGLA_ENABLE_CUDA=OFF
else
  dir=build
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$dir"
ctest --test-dir "$dir" --output-on-failure -j "$(nproc)"
