#!/usr/bin/env bash
# Builds here (CUDA enabled: nvcc present) what the GPU machine cannot build itself (it has no
# gRPC / Abseil / SentencePiece) and packs it into gpu-pack/ for the device tool's `carry`:
#   deploy/gpu-bundle.sh            then, through the device tool, with carry ["gpu-pack"]:
#   bash deploy/gpu-check.sh        (kernels built there with nvcc + this bundle's engine, server
#                                    and end-to-end binaries, the benchmarks)
# The bundle holds glad, gla-cli, gla-loadgen, the CUDA kernel and engine tests, the session test, the serving and fine-tune
# end-to-end tests, the engine benchmark, gla-random-model, spm_train, the SentencePiece shim and a
# copy of the reference data.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "gpu-bundle: nvcc not found" >&2; exit 1; }
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
targets=(glad gla-cli gla-eval gla-loadgen cuda_engine_test cuda_train_test gla_kernels_cuda_test session_test gla-finetune-bench server_e2e_test server_text_e2e_test fine_tune_e2e_test default_model_e2e_test session_e2e_test
         gla-engine-bench gla-n-bench gla-random-model gla_sentencepiece gla_decode_bench gla_prefill_bench gla_backward_bench linear_small_m_bench linear_medium_m_bench gemm_tuning_bench row_kernels_bench persistent_decode_bench grid_barrier_bench)
# A source edited while ninja compiles it can leave an object newer than the edit, which ninja then
# takes as current (it happened: a stale shape check, 2026-12-07). Sources changed during the build are
# touched and built again, until a build sees none change.
for round in 1 2 3; do
  stamp=$(mktemp)
  ninja -C build "${targets[@]}"
  changed=$(find CMakeLists.txt server engine kernels proto models clients tests -newer "$stamp" -type f \
    \( -name '*.cc' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name '*.proto' -o -name CMakeLists.txt \))
  rm -f "$stamp"
  [ -z "$changed" ] && break
  echo "gpu-bundle: sources changed during the build, building them again:" $changed >&2
  [ "$round" = 3 ] && { echo "gpu-bundle: sources still changing; stop editing during the build" >&2; exit 1; }
  touch $changed
done
grep -q "GLA_HAVE_CUDA" build/CMakeCache.txt || true
bins=(build/server/glad build/clients/gla-cli build/clients/gla-eval build/clients/gla-loadgen build/tests/cuda_engine_test
      build/tests/cuda_train_test build/tests/gla_kernels_cuda_test build/tests/session_test build/tests/gla-finetune-bench
      build/tests/server_e2e_test build/tests/server_text_e2e_test build/tests/fine_tune_e2e_test
      build/tests/default_model_e2e_test build/tests/session_e2e_test build/tests/gla-engine-bench build/tests/gla-n-bench
      build/tests/gla-random-model build/tests/gla_decode_bench build/tests/gla_prefill_bench build/tests/gla_backward_bench build/tests/linear_small_m_bench build/tests/linear_medium_m_bench build/tests/gemm_tuning_bench build/tests/row_kernels_bench build/tests/persistent_decode_bench build/tests/grid_barrier_bench
      "$(command -v spm_train)" "$(command -v redis-server)" "$(command -v redis-cli)")
# GLA_BUNDLE_EXTRA: more binaries to carry (e.g. an older build's gla-engine-bench for an A/B run).
# shellcheck disable=SC2206
[ -n "${GLA_BUNDLE_EXTRA:-}" ] && bins+=(${GLA_BUNDLE_EXTRA})
# GLA_BUNDLE_SDK=1: Node and the pinned openai npm SDK travel too (gpu-check.sh sdk runs the SDK suite
# against glad on the GPU; that machine has no Node and no registry).
[ "${GLA_BUNDLE_SDK:-0}" = 1 ] && bins+=("$(command -v node)")
../shared/tools/device-bundle gpu-bundle "${bins[@]}"
if [ "${GLA_BUNDLE_SDK:-0}" = 1 ]; then
  node tests/e2e/openai_sdk/fetch_sdk.mjs gpu-bundle/openai-sdk
  rm -f gpu-bundle/openai-sdk/*.tgz
fi
cp build/models/libgla_sentencepiece.so gpu-bundle/bin/
mkdir -p gpu-bundle/reference
cp -r ../shared/reference/gla-tiny gpu-bundle/reference/
strip --strip-unneeded gpu-bundle/bin/* 2> /dev/null || true
# OpenBLAS alone is 35 MiB: the bundle travels compressed (the device tool carries at most 64 MiB).
mkdir -p gpu-pack
# The commit the benchmarks stamp on their results (deploy/gpu-check.sh reads it).
{ git rev-parse --short=12 HEAD | tr -d '\n'; git diff --quiet HEAD -- . ':!gpu-bundle' ':!gpu-pack' || echo -n "+uncommitted"; echo; } \
  > gpu-pack/COMMIT 2> /dev/null || echo unknown > gpu-pack/COMMIT
# xz -9's 64 MiB dictionary spans the binaries, which share most of their static code: 25 MB
# where the default level's 8 MiB window made 42 (with the tree, past the 64 MiB carry limit).
XZ_OPT="-9 -T0" tar -C . -cJf gpu-pack/gpu-bundle.tar.xz gpu-bundle
du -sh gpu-bundle gpu-pack/gpu-bundle.tar.xz
