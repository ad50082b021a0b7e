#!/usr/bin/env bash
# Builds, checks and times the CUDA paths in one call on the GPU machine (the device tool):
#   deploy/gpu-check.sh            results in $OUT (the device tool's folder) or /tmp/gla-gpu
# That machine has CUDA, g++ and GoogleTest but no gRPC/Abseil/SentencePiece, so the CUDA kernels,
# their CPU references, tests and benchmarks are built with nvcc directly (they need nothing else).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gla-gpu}
mkdir -p "$out" build-gpu
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; nvcc --version | tail -n 2; } | tee "$out/device.txt"
nvcc_flags=(-O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I. -DGLA_HAVE_CUDA=1 -Xcompiler -Wall)
kernels=(kernels/cuda/gla_decode.cu kernels/cuda/gla_prefill_recurrent.cu)
for k in "${kernels[@]}"; do nvcc "${nvcc_flags[@]}" -Xptxas -v -c "$k" -o build-gpu/kernel.o 2>> "$out/ptxas.txt"; done
grep -E "registers|spill" "$out/ptxas.txt" || true
nvcc "${nvcc_flags[@]}" -o build-gpu/gla_kernels_cuda_test tests/cuda/gla_decode_cuda_test.cc \
  tests/cuda/gla_prefill_cuda_test.cc "${kernels[@]}" \
  kernels/cpu/gla_recurrent.cc -lgtest -lgtest_main -lpthread
nvcc "${nvcc_flags[@]}" -o build-gpu/gla_decode_bench tests/cuda/gla_decode_bench.cc "${kernels[@]}"
nvcc "${nvcc_flags[@]}" -o build-gpu/gla_prefill_bench tests/cuda/gla_prefill_bench.cc "${kernels[@]}"
set +e
build-gpu/gla_kernels_cuda_test 2>&1 | tee "$out/test.txt" | tail -n 25
test_rc=${PIPESTATUS[0]}
build-gpu/gla_decode_bench 2>&1 | tee "$out/bench.txt"
bench_rc=${PIPESTATUS[0]}
build-gpu/gla_prefill_bench 2>&1 | tee -a "$out/bench.txt"
bench_rc=$((bench_rc + PIPESTATUS[0]))
echo "test exit $test_rc, bench exit $bench_rc"
exit $((test_rc != 0 || bench_rc != 0))
