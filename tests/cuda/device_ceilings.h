// The device's own ceilings, measured in the benchmark's run (issue 19): every GPU benchmark
// computes its floors from these, never from another GPU's constants, so "of floor" means the
// same thing on an H100, an H200 or whatever the device tool lends.
#pragma once

#include <string>

namespace gla::bench {

struct DeviceCeilings {
  std::string device;           // name, SMs, memory, compute capability
  double copy_bytes_per_s = 0;  // device-to-device cudaMemcpy of 1 GiB, bytes read + written, best of 10
  double bf16_gemm_flops = 0;   // cuBLAS bf16 GEMM (fp32 accumulate), 8192^3, best of 10
  double tf32_gemm_flops = 0;   // cuBLAS fp32 GEMM on TF32 tensor cores, 8192^3, best of 10 (training)
  // Floors for work of `bytes` moved and `flops` done (seconds).
  double BytesSeconds(double bytes) const { return bytes / copy_bytes_per_s; }
  double FlopsSeconds(double flops) const { return flops / bf16_gemm_flops; }
};

// Measures both on the current device (~1 s); prints the error and exits on failure (benchmarks
// are standalone programs).
DeviceCeilings MeasureDeviceCeilings();

}  // namespace gla::bench
