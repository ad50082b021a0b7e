// The tensor-core chunkwise backward (cuda::GlaBackwardChunk) against the CPU definition's backward
// (cpu::GlaBackwardNaive, itself checked against fla's float64 gradients and finite differences in
// tests/unit/gla_backward_test.cc): packed variable-length sequences (0, 1, 63, 64, 65, 200, ...),
// with and without initial states and final-state gradients, GQA, every supported dk, and one long
// sequence. Each gradient is compared by relative error ||got - ref|| / ||ref|| per sequence;
// outputs are NaN-poisoned first, so a row left unwritten fails. Unsupported shapes and a short
// workspace are refused with no launch. Some cases run the forward first and let the backward
// reuse its prep (a training step).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/gla.h"
#include "tests/cuda/gla_op_harness.h"

namespace gla {
namespace {

using testing::DeviceBuffers;

// bf16 operands with fp32 accumulation, as the forward (tests/cuda/gla_forward_cuda_test.cc:
// 2e-2). dg is a reverse cumsum of q.dq - k.dk, whose terms cancel: its bound is looser.
constexpr double kBound = 2e-2, kGateBound = 4e-2;

using testing::GlaCase;
using testing::GlaDeviceProblem;
using testing::GlaProblem;

class GlaBackwardChunkCuda : public ::testing::TestWithParam<GlaCase> {};

TEST_P(GlaBackwardChunkCuda, PackedSequencesMatchTheDefinition) {
  GLA_REQUIRE_CUDA_DEVICE();
  const GlaCase& c = GetParam();
  const GlaProblem p = testing::MakeProblem(c, 77 + c.dk + c.dv + c.H + static_cast<uint32_t>(c.lengths.size()));
  GlaDeviceProblem d;
  GLA_CUDA_OK(d.Upload(p));
  const size_t sizes[5] = {size_t(p.T) * p.qw, size_t(p.T) * p.kw, size_t(p.T) * p.vw, size_t(p.T) * p.kw,
                           size_t(p.S) * p.state};
  float* out[5];
  for (int i = 0; i < 5; ++i) GLA_CUDA_OK(d.Poisoned(sizes[i], &out[i]));
  GlaBackwardCudaParams b = testing::BackwardParams(p, d, out);
  b.workspace_bytes = cuda::GlaBackwardChunkWorkspaceBytes(b, p.T);
  GlaPrefillCudaParams f = testing::ForwardParams(p, d, nullptr);  // the step's forward, when reused
  f.state = {};  // training owns its states: this forward starts from zero and keeps none
  f.slots = nullptr;
  if (c.reuse_forward_prep) b.workspace_bytes = std::max(b.workspace_bytes, cuda::GlaPrefillChunkWorkspaceBytes(f, p.T));
  GLA_CUDA_OK(d.buf.Alloc(b.workspace_bytes, &b.workspace));
  GLA_CUDA_OK(cudaMemset(b.workspace, 0xFF, b.workspace_bytes));  // nothing may be read before it is written
  if (c.reuse_forward_prep) {
    GLA_CUDA_OK(d.Poisoned(size_t(p.T) * p.ow, &f.o));
    f.workspace = b.workspace;
    f.workspace_bytes = b.workspace_bytes;
    GLA_CUDA_OK(cuda::GlaPrefillChunk(f, nullptr));
    b.reuse_forward_prep = true;
  }
  GLA_CUDA_OK(cuda::GlaBackwardChunk(b, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> got[5];
  for (int i = 0; i < 5; ++i) {
    got[i].resize(sizes[i]);
    GLA_CUDA_OK(cudaMemcpy(got[i].data(), out[i], sizes[i] * 4, cudaMemcpyDeviceToHost));
  }

  const testing::GlaGradients ref = testing::ReferenceBackward(p);
  const int64_t widths[4] = {p.qw, p.kw, p.vw, p.kw};
  double worst[5];
  for (int i = 0; i < 4; ++i)
    worst[i] = testing::ExpectRowsClose(p, got[i].data(), ref.d[i].data(), widths[i], i == 3 ? kGateBound : kBound,
                                        testing::GlaGradients::kNames[i]);
  worst[4] = testing::ExpectStatesClose(p, got[4].data(), ref.d[4].data(), kBound, "dh0");
  std::printf("[ backward ] %-16s T=%-5d rel err: dq %.2e dk %.2e dv %.2e dg %.2e dh0 %.2e (workspace %.1f MB)\n",
              c.name, p.T, worst[0], worst[1], worst[2], worst[3], worst[4], b.workspace_bytes / 1e6);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GlaBackwardChunkCuda,
    ::testing::Values(GlaCase{"small_mixed", 2, 2, 64, 64, {1, 63, 64, 65, 0, 200}, true, true},
                      GlaCase{"small_from_zero", 2, 2, 64, 64, {130, 7}, false, false},
                      GlaCase{"gla340M", 4, 4, 128, 256, {300, 1, 129}, true, true},
                      GlaCase{"gla13B", 4, 4, 256, 512, {200, 64}, true, true},
                      GlaCase{"gqa", 4, 2, 128, 64, {100, 33, 250}, true, true},
                      GlaCase{"gqa_dk256_no_dht", 8, 2, 256, 128, {77, 150}, true, false},
                      GlaCase{"long", 2, 2, 128, 128, {3000}, true, true},
                      GlaCase{"after_forward", 4, 4, 256, 512, {700, 33}, true, true, true},
                      GlaCase{"after_forward_gqa", 4, 2, 128, 128, {5, 64, 400}, true, true, true}),
    [](const ::testing::TestParamInfo<GlaCase>& info) { return std::string(info.param.name); });

TEST(GlaBackwardChunkCuda, RefusesUnsupportedShapesAndShortWorkspaces) {
  GLA_REQUIRE_CUDA_DEVICE();
  DeviceBuffers buf;
  void* mem;
  GLA_CUDA_OK(buf.Alloc(1 << 20, &mem));
  float* f = static_cast<float*>(mem);
  GlaBackwardCudaParams p;
  p.num_seqs = 1;
  p.H = p.Hkv = 1;
  p.dk = 64;
  p.dv = 64;
  p.cu_seqlens = reinterpret_cast<const int32_t*>(f);
  p.q = p.k = p.v = p.g = p.d_o = f;
  p.d_q = p.d_k = p.d_v = p.d_g = f;
  p.q_stride = p.k_stride = p.v_stride = p.g_stride = p.d_o_stride = 64;
  p.d_q_stride = p.d_k_stride = p.d_v_stride = p.d_g_stride = 64;
  p.total_tokens = 10;
  p.workspace = f;
  p.workspace_bytes = cuda::GlaBackwardChunkWorkspaceBytes(p, 10) - 1;
  EXPECT_EQ(cuda::GlaBackwardChunk(p, nullptr), cudaErrorInvalidValue) << "workspace one byte short";
  p.workspace_bytes = 1 << 20;
  GlaBackwardCudaParams bad = p;
  bad.dk = 32;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "dk 32";
  bad = p;
  bad.dv = 96;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "dv 96";
  bad = p;
  bad.H = 3;
  bad.Hkv = 2;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "H % Hkv != 0";
  bad = p;
  bad.q_stride = 66;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "stride not a multiple of 4";
  bad = p;
  bad.d_g = nullptr;
  EXPECT_EQ(cuda::GlaBackwardChunk(bad, nullptr), cudaErrorInvalidValue) << "missing output";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a refusal must not launch";
}

}  // namespace
}  // namespace gla
