#include "kernels/linear_int8.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/linear.h"

namespace gla::cpu {
namespace {

// Rows of x at or below which the int8 weight is streamed row by row (each weight row read from
// memory once and used for every row of x, kGroup rows at a time from cache); above, BLAS on
// dequantized tiles wins.
constexpr int64_t kStreamRows = 16;
constexpr int kGroup = 4;  // rows of x per pass over a weight row (registers: two accumulators each)
// A dequantized tile: 4 MiB of fp32, large enough for BLAS to run efficiently on it and small
// enough to stay in the last-level cache while BLAS reads it M times.
constexpr int64_t kTileFloats = int64_t{1} << 20;

// Rows of the weight per ParallelFor part: enough work to be worth a thread's wake-up.
constexpr int64_t kRowsPerPart = 16;

// out[m] = sum_k x[m][k] * q[k] for M <= kStreamRows rows of x: the weight row converted once,
// used M times. Portable form, eight partial sums each.
void DotsInt8Portable(const float* const* x, int M, const int8_t* q, int64_t K, float* out) {
  for (int m = 0; m < M; ++m) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
      for (int j = 0; j < 8; ++j) acc[j] += x[m][k + j] * static_cast<float>(q[k + j]);
    float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; k < K; ++k) sum += x[m][k] * static_cast<float>(q[k]);
    out[m] = sum;
  }
}

#if defined(__x86_64__)
// The same with AVX2 and FMA (chosen at run time): 16 weights widened to fp32 per step, two
// accumulators per row.
__attribute__((target("avx2,fma"))) void DotsInt8Avx2(const float* const* x, int M, const int8_t* q, int64_t K,
                                                       float* out) {
  __m256 acc0[kGroup], acc1[kGroup];
  for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k));
    const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)));
    for (int m = 0; m < M; ++m) {
      acc0[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x[m] + k), w0, acc0[m]);
      acc1[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x[m] + k + 8), w1, acc1[m]);
    }
  }
  for (int m = 0; m < M; ++m) {
    const __m256 a = _mm256_add_ps(acc0[m], acc1[m]);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float sum = _mm_cvtss_f32(h);
    for (int64_t j = k; j < K; ++j) sum += x[m][j] * static_cast<float>(q[j]);
    out[m] = sum;
  }
}

#endif  // __x86_64__

using DotsFn = void (*)(const float* const*, int, const int8_t*, int64_t, float*);
std::atomic<bool> force_portable{false};
DotsFn PickDots() {
#if defined(__x86_64__)
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  if (avx2 && !force_portable.load(std::memory_order_relaxed)) return DotsInt8Avx2;
#endif
  return DotsInt8Portable;
}

}  // namespace

void UsePortableInt8ForTesting(bool portable) { force_portable.store(portable); }

bool QuantizeInt8PerRow(const float* w, int64_t N, int64_t K, Int8Weight* result) {
  Int8Weight& out = *result;
  out.N = N;
  out.K = K;
  out.q.resize(static_cast<size_t>(N * K));
  out.scale.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    const float* row = w + n * K;
    float most = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      if (!std::isfinite(row[k])) return false;  // (a NaN would also make the cast below undefined)
      most = std::max(most, std::fabs(row[k]));
    }
    const float scale = most / 127.0f;
    out.scale[static_cast<size_t>(n)] = scale;
    int8_t* q = out.q.data() + n * K;
    if (scale == 0.0f) {
      std::fill(q, q + K, int8_t{0});
      continue;
    }
    // Divided, not multiplied by 1 / scale: a row of subnormal weights has a scale whose inverse
    // overflows to infinity (and 0 * inf is a NaN). |row[k]| <= 127 * scale, so the quotient is finite.
    for (int64_t k = 0; k < K; ++k)
      q[k] = static_cast<int8_t>(std::clamp(std::nearbyint(row[k] / scale), -127.0f, 127.0f));
  }
  return true;
}

void DequantizeInt8Rows(const Int8Weight& w, int64_t row0, int64_t rows, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* q = w.q.data() + (row0 + r) * w.K;
    const float s = w.scale[static_cast<size_t>(row0 + r)];
    float* o = out + r * w.K;
    for (int64_t k = 0; k < w.K; ++k) o[k] = s * static_cast<float>(q[k]);
  }
}

void LinearInt8(const float* x, int64_t x_stride, const Int8Weight& w, float* y, int64_t y_stride, int64_t M,
                float beta) {
  if (M == 0 || w.N == 0) return;
  const int64_t N = w.N, K = w.K;
  if (M <= kStreamRows) {
    const DotsFn dots = PickDots();
    const float* rows[kStreamRows];
    for (int64_t m = 0; m < M; ++m) rows[m] = x + m * x_stride;
    ParallelFor(N, kRowsPerPart, [&](int64_t begin, int64_t end) {
      float d[kGroup];
      for (int64_t n = begin; n < end; ++n) {
        const float s = w.scale[static_cast<size_t>(n)];
        for (int64_t m0 = 0; m0 < M; m0 += kGroup) {
          const int g = static_cast<int>(std::min<int64_t>(kGroup, M - m0));
          dots(rows + m0, g, w.q.data() + n * K, K, d);
          for (int j = 0; j < g; ++j) {
            float& out = y[(m0 + j) * y_stride + n];
            out = beta == 0.0f ? s * d[j] : s * d[j] + beta * out;  // beta 0 never reads y (it may be uninitialised)
          }
        }
      }
    });
    return;
  }
  const int64_t tile_rows = std::max<int64_t>(1, std::min(N, kTileFloats / std::max<int64_t>(K, 1)));
  std::vector<float> tile(static_cast<size_t>(tile_rows * K));
  for (int64_t n0 = 0; n0 < N; n0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, N - n0);
    ParallelFor(rows, kRowsPerPart, [&](int64_t begin, int64_t end) {
      DequantizeInt8Rows(w, n0 + begin, end - begin, tile.data() + begin * K);
    });
    Linear(x, x_stride, tile.data(), rows, K, y + n0, y_stride, M, beta);
  }
}

}  // namespace gla::cpu
