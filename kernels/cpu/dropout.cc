#include "kernels/dropout.h"

namespace gla::cpu {

void Dropout(const float* x, int64_t x_stride, int64_t rows, int64_t cols, float p, uint64_t seed, float* out,
             int64_t out_stride) {
  const float keep = 1.0f / (1.0f - p);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * out_stride + c] =
          DropoutKeeps(seed, static_cast<uint64_t>(r * cols + c), p) ? x[r * x_stride + c] * keep : 0.0f;
}

void DropoutBackwardAdd(const float* dy, int64_t dy_stride, int64_t rows, int64_t cols, float p, uint64_t seed,
                        float* dx, int64_t dx_stride) {
  const float keep = 1.0f / (1.0f - p);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (DropoutKeeps(seed, static_cast<uint64_t>(r * cols + c), p)) dx[r * dx_stride + c] += dy[r * dy_stride + c] * keep;
}

}  // namespace gla::cpu
