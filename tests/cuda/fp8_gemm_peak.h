// The FP8 GEMM ceiling, measured in the benchmark's run (issue 23): what prefill's projections can
// reach with --weights fp8 (FP8 inputs and weights, a scale per row of each, fp32 accumulation),
// through the same cuBLASLt path the engine runs (cuda::LinearFp8Gemm), so the FP8 prefill floor
// comes from this device and this library, not from a datasheet's 2x.
#pragma once

namespace gla::bench {

// FLOP/s of an 8192^3 cuda::LinearFp8Gemm (bf16 output), the best of 30 timed runs after two untimed
// ones; 0 with a line on stderr where it cannot run (no FP8 GEMM in the device or cuBLASLt: before
// Hopper, before 12.9; or no memory for its 0.3 GB of operands).
double MeasureFp8GemmPeak();

}  // namespace gla::bench
