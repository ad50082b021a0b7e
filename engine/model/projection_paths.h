// Which kernel takes a projection of M rows on the CUDA backend, per weight format: the row
// thresholds between the decode-sized kernels, the medium-M kernel and the GEMMs, each set where
// it measured best (the measurements beside each). One struct, held by both CudaModelOptions and
// CudaBackendOptions, so that the two cannot disagree on a default; gla-engine-bench sets each
// (--byte_rows, --fp8_made_rows, --medium_rows, --warp_rows, --warp_rows_width, --gemm_tuning) for
// its A/B runs. No CUDA header: backend.h includes it.
#pragma once

namespace gla {

struct ProjectionPaths {
  // With FP8 / INT8 weights, projections of up to this many rows read the one-byte rows in the
  // tensor-core kernel (the weights widened in registers, inputs bf16; above 32 rows in row blocks
  // that share the weights through L2); larger ones the medium-M kernel or the GEMMs below. 16 to
  // cuda::kSmallMByteTensorCores (256). 16 because that is where it pays (H100, 2026-12-06,
  // gla-engine-bench --byte_rows N, docs/quantization.md): at 32 rows the kernel's input loads grow
  // with its row tiles and FP8's B = 32 step takes 3.78 ms against 3.11 through the FP8 GEMM (INT8:
  // 3.90 against 4.02 at gla-1.3B, 1.85 against 1.64 at gla-340M); at 128 rows 11.9 against 6.6.
  int byte_weight_kernel_rows = 16;
  // FP8 steps of at least this many rows (and above byte_weight_kernel_rows; no adapters): each
  // projection's input (a norm or the SwiGLU) made inside the kernel that quantizes it
  // (cuda::QuantizeMadeRowsFp8: the same bits as the separate kernels); smaller steps and 0: the
  // separate kernels. 512 because that is where it pays (H100, 2026-12-06): prompts of 512 and 4,096
  // tokens 1-4% faster, decode steps of 32 and 128 rows 2-5% slower (a block a row makes its row,
  // and the gated head norm's heads in turn, where the separate kernels spread a row's heads over
  // blocks). gla-engine-bench --fp8_made_rows N.
  int fp8_made_rows_from = 512;
  // Steps of at least this many rows run the row kernels (the RMSNorms, the gated head norm, FP8's
  // input quantizers, made rows included) on rows of at most warp_rows_max_width values a warp a
  // row (cuda::RowForm::kWarpPerRow: the same bits as a block a row, more rows in flight); smaller
  // steps, wider rows and 0: a block a row. Where that was measured (H100, 2026-12-06 23:17-23:23,
  // row_kernels_bench and gla-engine-bench --warp_rows N; docs/performance.md "The row kernels a
  // warp a row"): at 4,096 rows of gla-340M's 1,024 values the warp form is 1.10-1.39x faster
  // (RMSNorm, gated head norm, the FP8 quantizers; 340M's T = 4096 prefill 8.39 -> 8.23 ms), at
  // 2,048-wide rows it is slower but for the plain FP8 quantizer (1.3B RMSNorm 0.77x), on SwiGLU's
  // made rows much slower (0.39-0.69x: a warp makes a 5,632-value row alone), and at 512 rows or
  // fewer slower everywhere (0.15-0.68x). Hence 4,096 rows (the smallest count measured to win) and
  // 1,024 values. gla-engine-bench --warp_rows N --warp_rows_width W.
  int warp_rows_from = 4096;
  int warp_rows_max_width = 1024;
  // Projections of more rows than the decode-sized kernels take (kSmallM for bf16 weights,
  // byte_weight_kernel_rows for FP8 / INT8) and at most this many run cuda::LinearMediumM* (each
  // weight read once, bf16 inputs: no input quantization for FP8, no dequantizing pass for INT8)
  // instead of cuBLAS, the FP8 GEMM or INT8's dequantize-then-GEMM; 0: never; at most
  // cuda::kMediumMMaxRows (256). Per format because they measure differently (gla-engine-bench
  // --medium_rows N against 0, greedy, H100 2026-12-06 15:50, after the kernel's split was fitted
  // to the clusters the GPU holds; docs/quantization.md): FP8 B = 32 2.953 against the FP8 GEMM's
  // 3.108 ms at gla-1.3B (1.392 against 1.683 at gla-340M), B = 64 4.455 against 4.267; INT8 B = 32
  // 3.102 against 4.022 dequantizing, B = 64 4.949 against 5.219, B = 128 8.141 against 7.658; bf16
  // B = 32 3.154 against cuBLAS's 3.062 (1.497 against 1.390 at gla-340M).
  int medium_m_kernel_rows = 0;        // bf16 weights
  int fp8_medium_m_kernel_rows = 32;   // FP8 weights
  int int8_medium_m_kernel_rows = 64;  // INT8 weights
  // bf16 weights: the layers' projections that cuBLAS takes (more rows than the kernels above) run
  // cuBLASLt's algorithm that was fastest on this model's own matrices at that row count
  // (cuda::TunedBf16Gemm: the heuristic's first 16 and cublasGemmEx's default, each timed in a
  // CUDA graph, once per decode graph size before its capture and once per eager step size that is
  // a power of two or the full step budget; other sizes keep the default); false: cublasGemmEx's
  // default. On because it pays or is level (H100, 2026-12-06 23:21-23:26, gla-engine-bench
  // --gemm_tuning 0 against 1, three rounds alternating; docs/performance.md "The graph-timed,
  // exact-only form"): gla-340M prefill T=4096 8.39-8.46 -> 7.84-7.86 ms (-7%), decode B=32
  // 1.386-1.392 -> 1.365-1.379 ms; gla-1.3B level within the rounds' spread (prefill 21.86-21.98 ->
  // 21.56-22.45, B=32 3.069-3.093 -> 3.051-3.069). Its cost: each decode graph size and power-of-two
  // step size tunes once per process, all at load through the backend
  // (CudaModel::TuneBf16GemmsForEveryStepSize): +0.9 s to glad's start at gla-1.3B with 64 slots on an
  // H100 (2026-12-07, 32 shapes x row counts); glad --gemm_tuning_cache restores them instead (+0.2 s).
  // gla-engine-bench --gemm_tuning 0|1.
  bool tuned_bf16_gemms = true;
};

}  // namespace gla
