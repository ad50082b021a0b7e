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
# CUDA tests first: where no GPU is usable they skip; ctest hides a skipped test's output, so
# the reasons are printed here from its log.
ctest --test-dir "$dir" -L cuda --output-on-failure | tail -n 4
grep -h "CUDA test.*skipped" "$dir/Testing/Temporary/LastTest.log" | sort -u || true
ctest --test-dir "$dir" -LE cuda --output-on-failure -j "$(nproc)"
