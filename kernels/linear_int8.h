// Weight-only INT8 projections (issue 23, `--weights int8`): a weight W[N, K] kept as int8 with one
// fp32 scale per output row (symmetric: scale = max |W[n, :]| / 127, q = round(W / scale)), so a
// projection reads a quarter of fp32's bytes; the product is computed in fp32 on the dequantized
// values (y = x (scale * q)^T). Per-row scales are what the quantized checkpoints of the
// compressed-tensors / vLLM "channel" strategy carry. Framework-free.
#pragma once

#include <cstdint>
#include <vector>

namespace gla::cpu {

struct Int8Weight {
  int64_t N = 0, K = 0;      // [out, in], PyTorch's layout
  std::vector<int8_t> q;     // [N, K]
  std::vector<float> scale;  // [N]; a row of zeros has scale 0
  int64_t bytes() const { return static_cast<int64_t>(q.size() + scale.size() * sizeof(float)); }
};

// False (and `out` unspecified) when a weight is not finite: no int8 stands for it.
bool QuantizeInt8PerRow(const float* w, int64_t N, int64_t K, Int8Weight* out);
// Rows [row0, row0 + rows) of scale * q, as fp32 [rows, K].
void DequantizeInt8Rows(const Int8Weight& w, int64_t row0, int64_t rows, float* out);

// y[M, N] = x[M, K] W^T + beta * y, W the dequantized weight. Few rows (decode) stream the int8
// weight once with fp32 accumulation; more rows dequantize blocks of W into a cache-sized fp32
// tile and multiply through BLAS, so main memory still moves only the int8 bytes.
void LinearInt8(const float* x, int64_t x_stride, const Int8Weight& w, float* y, int64_t y_stride, int64_t M,
                float beta = 0.0f);

// Tests: the few-rows path takes its portable form even where AVX2 + FMA are there (true), or the
// fastest the CPU has (false, the default).
void UsePortableInt8ForTesting(bool portable);

}  // namespace gla::cpu
