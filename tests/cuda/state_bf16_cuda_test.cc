// bf16 states (kernels/state_slots.h, issue 23) on every kernel that reads or writes a pool's state:
// the decode step, both prefill kernels and the short convolution's tails. From states whose values
// are bf16 numbers, a kernel on a bf16 pool must give the same outputs as on an fp32 pool, to the bit
// (it computes in fp32 from the same values), and leave every slot holding the fp32 run's state
// rounded to nearest-even (FloatToBFloat16: the CPU pool's rounding, engine/state_storage.h), to the
// bit. Slots no sequence uses stay as they were in both (rounding a bf16 number changes nothing).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/gla.h"
#include "models/dtype.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/gla_op_harness.h"

namespace gla {
namespace {

using testing::DeviceBuffers;

std::vector<float> RoundedToBf16(std::vector<float> v) {
  for (float& x : v) x = BFloat16ToFloat(FloatToBFloat16(x));
  return v;
}

std::vector<uint16_t> Bf16Of(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = FloatToBFloat16(v[i]);
  return b;
}

template <typename T>
std::vector<T> Down(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// The bf16 pool holds exactly the fp32 pool's values rounded.
void ExpectRoundedEqual(const std::vector<float>& f32, const std::vector<uint16_t>& bf16, const std::string& what) {
  ASSERT_EQ(f32.size(), bf16.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < f32.size(); ++i)
    if (FloatToBFloat16(f32[i]) != bf16[i] && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << f32.size()
                     << " state values are not the fp32 run's rounded; the first at " << first << " ("
                     << BFloat16ToFloat(bf16[first]) << " vs " << f32[first] << ")";
}

void ExpectSameBits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what << " differ between the pools";
}

// ---- Decode step: rows per thread 0 (any dk: the loop), 2, 4 and 8; a partial column block; slots
// 4-value aligned (4 columns a thread) and 8-value aligned (8 columns a thread, 16-byte accesses). ----

class DecodeBf16 : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(DecodeBf16, SameOutputsAndStatesRoundedOnce) {
  GLA_REQUIRE_CUDA_DEVICE();
  const auto [dk, alignment] = GetParam();
  const int N = 5, H = 4, Hkv = 2, dv = 80, slots_in_pool = 8;
  // The slot stride a multiple of `alignment` values, not of twice it.
  const int64_t layer_offset = 8, head_state = int64_t{H} * dk * dv;
  const int64_t stride = (layer_offset + head_state + 12) / (2 * alignment) * (2 * alignment) + alignment;
  std::mt19937 rng(40 + dk + alignment);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const std::vector<float> pool = RoundedToBf16(random(size_t(slots_in_pool) * stride));
  const std::vector<int32_t> slots = {6, 1, 3, 0, 4};
  const auto q = random(size_t(N) * H * dk), k = random(size_t(N) * Hkv * dk), v = random(size_t(N) * Hkv * dv);
  const auto g = testing::RandomGates(size_t(N) * Hkv * dk, rng);
  DeviceBuffers buf;
  float *d_pool = nullptr, *d_q = nullptr, *d_k = nullptr, *d_v = nullptr, *d_g = nullptr;
  uint16_t* d_pool16 = nullptr;
  int32_t* d_slots = nullptr;
  GLA_CUDA_OK(buf.Upload(pool, &d_pool));
  GLA_CUDA_OK(buf.Upload(Bf16Of(pool), &d_pool16));
  for (auto [host, dev] : {std::pair{&q, &d_q}, {&k, &d_k}, {&v, &d_v}, {&g, &d_g}}) GLA_CUDA_OK(buf.Upload(*host, dev));
  GLA_CUDA_OK(buf.Upload(slots, &d_slots));
  const size_t on = size_t(N) * H * dv;
  std::vector<float> outs[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    float* d_o = nullptr;
    GLA_CUDA_OK(buf.Upload(std::vector<float>(on, NAN), &d_o));
    GlaDecodeCudaParams p;
    p.N = N, p.H = H, p.Hkv = Hkv, p.dk = dk, p.dv = dv;
    p.q = d_q, p.q_stride = int64_t{H} * dk;
    p.k = d_k, p.k_stride = int64_t{Hkv} * dk;
    p.g = d_g, p.g_stride = int64_t{Hkv} * dk;
    p.v = d_v, p.v_stride = int64_t{Hkv} * dv;
    p.o = d_o, p.o_stride = int64_t{H} * dv;
    p.state = CudaStateSlots{bf16 ? static_cast<void*>(d_pool16) : d_pool, stride, bf16 == 1}.At(layer_offset);
    p.slots = d_slots;
    p.scale = 1.0f / std::sqrt(float(dk));
    GLA_CUDA_OK(cuda::GlaDecodeStep(p, nullptr));
    GLA_CUDA_OK(cudaDeviceSynchronize());
    outs[bf16] = Down(d_o, on);
  }
  ExpectSameBits(outs[0], outs[1], "decode outputs");
  ExpectRoundedEqual(Down(d_pool, pool.size()), Down(d_pool16, pool.size()), "decode states");
}

INSTANTIATE_TEST_SUITE_P(RowsPerThread, DecodeBf16,
                         ::testing::Combine(::testing::Values(48, 64, 128, 256), ::testing::Values(4, 8)),
                         [](const auto& info) {
                           return "dk" + std::to_string(std::get<0>(info.param)) + "_aligned" +
                                  std::to_string(std::get<1>(info.param));
                         });

// ---- Prefill, both kernels: packed sequences from states in scattered slots. ----

using PrefillKernel = cudaError_t (*)(GlaPrefillCudaParams&, DeviceBuffers&);
cudaError_t RunRecurrent(GlaPrefillCudaParams& p, DeviceBuffers&) { return cuda::GlaPrefillRecurrent(p, nullptr); }
cudaError_t RunChunk(GlaPrefillCudaParams& p, DeviceBuffers& buf) {
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, p.total_tokens);
  if (cudaError_t e = buf.Alloc(p.workspace_bytes, &p.workspace); e != cudaSuccess) return e;
  return cuda::GlaPrefillChunk(p, nullptr);
}

class PrefillBf16 : public ::testing::TestWithParam<std::tuple<bool, testing::GlaCase>> {};

TEST_P(PrefillBf16, SameOutputsAndStatesRoundedOnce) {
  GLA_REQUIRE_CUDA_DEVICE();
  const auto& [chunk, c] = GetParam();
  testing::GlaProblem p = testing::MakeProblem(c, 77);
  p.pool = RoundedToBf16(p.pool);
  testing::GlaDeviceProblem d;
  GLA_CUDA_OK(d.Upload(p));
  uint16_t* pool16 = nullptr;
  GLA_CUDA_OK(d.buf.Upload(Bf16Of(p.pool), &pool16));
  const size_t on = size_t(p.T) * p.ow;
  std::vector<float> outs[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    float* o = nullptr;
    GLA_CUDA_OK(d.Poisoned(on, &o));
    GlaPrefillCudaParams f = testing::ForwardParams(p, d, o);
    if (bf16) f.state = {pool16, p.state, true};
    GLA_CUDA_OK((chunk ? RunChunk : RunRecurrent)(f, d.buf));
    GLA_CUDA_OK(cudaDeviceSynchronize());
    outs[bf16] = Down(o, on);
  }
  const std::string what = std::string(chunk ? "chunkwise" : "recurrent") + " prefill " + c.name;
  ExpectSameBits(outs[0], outs[1], what + " outputs");
  ExpectRoundedEqual(Down(d.pool, p.pool.size()), Down(pool16, p.pool.size()), what + " states");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PrefillBf16,
    ::testing::Combine(::testing::Bool(),
                       ::testing::Values(testing::GlaCase{"gla340M_mixed", 4, 4, 128, 256, {130, 1, 64, 0, 37}, true},
                                         testing::GlaCase{"gqa_dv96", 4, 2, 64, 96, {9, 1, 33, 128}, true},
                                         testing::GlaCase{"gla13B_segments", 4, 4, 256, 512, {3000}, true})),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) ? "chunk_" : "recurrent_") + std::get<1>(info.param).name;
    });

// ---- Short convolution: tails inside larger slots, at an odd offset. ----

TEST(ShortConvBf16, SameOutputsAndTailsRoundedOnce) {
  GLA_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(18);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
  };
  const int C = 96, K = 4, x_stride = 100, y_stride = 96;
  const std::vector<int32_t> cu = {0, 1, 6, 46}, slots = {2, 0, 3};
  const int rows = cu.back();
  const int64_t slot_stride = 1000, tail_offset = 123;
  const auto x = random(size_t(rows) * x_stride), w = random(size_t(C) * K);
  const auto states = RoundedToBf16(random(4 * slot_stride));
  DeviceBuffers buf;
  float *dx = nullptr, *dw = nullptr, *dst = nullptr;
  uint16_t* dst16 = nullptr;
  int32_t *dcu = nullptr, *dslots = nullptr;
  GLA_CUDA_OK(buf.Upload(x, &dx));
  GLA_CUDA_OK(buf.Upload(w, &dw));
  GLA_CUDA_OK(buf.Upload(states, &dst));
  GLA_CUDA_OK(buf.Upload(Bf16Of(states), &dst16));
  GLA_CUDA_OK(buf.Upload(cu, &dcu));
  GLA_CUDA_OK(buf.Upload(slots, &dslots));
  std::vector<float> outs[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    float* dy = nullptr;
    GLA_CUDA_OK(buf.Upload(std::vector<float>(size_t(rows) * y_stride, NAN), &dy));
    const CudaStateSlots tails =
        CudaStateSlots{bf16 ? static_cast<void*>(dst16) : dst, slot_stride, bf16 == 1}.At(tail_offset);
    GLA_CUDA_OK(cuda::ShortConvSilu(dx, x_stride, dcu, 3, rows, C, dw, K, tails, dslots, dy, y_stride, nullptr));
    GLA_CUDA_OK(cudaDeviceSynchronize());
    outs[bf16] = Down(dy, size_t(rows) * y_stride);
  }
  ExpectSameBits(outs[0], outs[1], "conv outputs");
  ExpectRoundedEqual(Down(dst, states.size()), Down(dst16, states.size()), "conv tails");
}

// A misaligned pool is refused before any launch (4-value accesses need 8-byte bf16 alignment).
TEST(DecodeBf16Shapes, MisalignedPoolsAreRefused) {
  GLA_REQUIRE_CUDA_DEVICE();
  DeviceBuffers buf;
  void* mem = nullptr;
  GLA_CUDA_OK(buf.Alloc(1 << 16, &mem));
  GlaDecodeCudaParams p;
  p.N = 1, p.H = 1, p.Hkv = 1, p.dk = 64, p.dv = 64;
  p.state = CudaStateSlots{mem, 4096, true}.At(2);  // 4-byte aligned: not enough
  EXPECT_EQ(cuda::GlaDecodeStep(p, nullptr), cudaErrorInvalidValue);
  p.state = CudaStateSlots{mem, 4098, true};  // slots 2 values apart from a multiple of 4
  EXPECT_EQ(cuda::GlaDecodeStep(p, nullptr), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace gla
