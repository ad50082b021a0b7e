// The GLA forward kernels against the CPU definition (cpu::GlaRecurrentNaive), through one harness
// (gla_op_harness.h): packed variable-length sequences (0, 1, 63, 65, 200, ...), states from
// scattered pool slots or from zero, GQA, odd head dimensions, and sequences long enough for the
// chunkwise kernel to cut them into segments run in parallel. Each kernel is held to its bound:
// the fused-recurrent kernel is fp32 throughout (1e-5); the chunkwise kernel's matmuls take bf16
// operands with fp32 accumulation (2e-2). Outputs are NaN-poisoned first (a row left unwritten
// fails); slots no sequence uses must stay bit-identical. The chunkwise kernel's forget gate made
// from its low-rank factors (GlaPrefillCudaParams::gate) must equal, to the bit, the same kernel
// reading what LowRankGate writes. Any plan a benchmark forces (segments, the prep's clusters) holds
// the same bound, and so does the plan made from a host copy of the offsets, also one that does not
// match the device's.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/activations.h"
#include "kernels/gla.h"
#include "tests/cuda/gla_op_harness.h"

namespace gla {
namespace {

using testing::GlaCase;
using testing::GlaDeviceProblem;
using testing::GlaProblem;

// A forward kernel as the tests see it: a launch on params filled by the harness (the kernel adds
// what only it needs, e.g. the chunkwise kernel's workspace), and the error it is held to.
struct ForwardKernel {
  const char* name;
  double bound;
  cudaError_t (*launch)(GlaPrefillCudaParams& p, testing::DeviceBuffers& buf);
};

const ForwardKernel kRecurrent{"recurrent", 1e-5, [](GlaPrefillCudaParams& p, testing::DeviceBuffers&) {
                                 return cuda::GlaPrefillRecurrent(p, nullptr);
                               }};
const ForwardKernel kChunk{"chunk", 2e-2, [](GlaPrefillCudaParams& p, testing::DeviceBuffers& buf) {
                             p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, p.total_tokens);
                             if (cudaError_t e = buf.Alloc(p.workspace_bytes, &p.workspace); e != cudaSuccess) return e;
                             return cuda::GlaPrefillChunk(p, nullptr);
                           }};

// The chunkwise kernel on plans of a benchmark's choosing (GlaPrefillCudaParams::plan_*): every
// sequence cut into 5 segments with the prep kernel in clusters, and no cut with the prep kernel in
// one block per (chunk, head). Any plan must compute the same operator to the same bound.
cudaError_t LaunchChunkPlan(GlaPrefillCudaParams& p, testing::DeviceBuffers& buf, int segments, int split_prep) {
  p.plan_segments = segments;
  p.plan_split_prep = split_prep;
  return kChunk.launch(p, buf);
}
const ForwardKernel kChunkCut5Split{"chunk_cut5_split", 2e-2, [](GlaPrefillCudaParams& p, testing::DeviceBuffers& buf) {
                                      return LaunchChunkPlan(p, buf, 5, 2);
                                    }};
const ForwardKernel kChunkUncutWhole{"chunk_uncut_whole", 2e-2, [](GlaPrefillCudaParams& p, testing::DeviceBuffers& buf) {
                                       return LaunchChunkPlan(p, buf, 1, 1);
                                     }};

// The chunkwise kernel given a host copy of the sequence offsets (GlaPrefillCudaParams::
// host_cu_seqlens, as the engine gives it): its plan may lengthen the segments of an uneven step.
// With `wrong`, a copy that does not match the device's: the same total, all of it in the first
// sequence but 16 tokens for each other one (an even step then looks uneven, so the plan lengthens
// segments the real lengths did not need): the plan may differ, the operator may not.
cudaError_t LaunchWithHostOffsets(GlaPrefillCudaParams& p, testing::DeviceBuffers& buf, bool wrong) {
  static thread_local std::vector<int32_t> cu;
  cu.assign(size_t(p.num_seqs) + 1, 0);
  if (cudaError_t e = cudaMemcpy(cu.data(), p.cu_seqlens, cu.size() * 4, cudaMemcpyDeviceToHost); e != cudaSuccess)
    return e;
  const int32_t total = cu.back(), others = 16 * (p.num_seqs - 1);
  if (wrong && total >= others) {
    cu[1] = total - others;
    for (int n = 1; n < p.num_seqs; ++n) cu[n + 1] = cu[n] + 16;
  }
  p.host_cu_seqlens = cu.data();
  return kChunk.launch(p, buf);
}
const ForwardKernel kChunkHostOffsets{"chunk_host_offsets", 2e-2, [](GlaPrefillCudaParams& p, testing::DeviceBuffers& buf) {
                                        return LaunchWithHostOffsets(p, buf, false);
                                      }};
const ForwardKernel kChunkWrongHostOffsets{
    "chunk_wrong_host_offsets", 2e-2,
    [](GlaPrefillCudaParams& p, testing::DeviceBuffers& buf) { return LaunchWithHostOffsets(p, buf, true); }};

using Param = std::tuple<ForwardKernel, GlaCase>;
class GlaForwardCuda : public ::testing::TestWithParam<Param> {};

TEST_P(GlaForwardCuda, PackedSequencesMatchTheDefinition) {
  GLA_REQUIRE_CUDA_DEVICE();
  const auto& [kernel, c] = GetParam();
  const GlaProblem p = testing::MakeProblem(c, 1234 + c.dk + c.dv + static_cast<uint32_t>(c.lengths.size()));
  GlaDeviceProblem d;
  GLA_CUDA_OK(d.Upload(p));
  float* o;
  GLA_CUDA_OK(d.Poisoned(size_t(p.T) * p.ow, &o));
  GlaPrefillCudaParams f = testing::ForwardParams(p, d, o);
  GLA_CUDA_OK(kernel.launch(f, d.buf));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> o_gpu(size_t(p.T) * p.ow), pool_gpu(p.pool.size());
  GLA_CUDA_OK(cudaMemcpy(o_gpu.data(), o, o_gpu.size() * 4, cudaMemcpyDeviceToHost));
  GLA_CUDA_OK(cudaMemcpy(pool_gpu.data(), d.pool, pool_gpu.size() * 4, cudaMemcpyDeviceToHost));

  const testing::GlaForwardAnswer ref = testing::ReferenceForward(p);
  const double worst_o = testing::ExpectRowsClose(p, o_gpu.data(), ref.o.data(), p.ow, kernel.bound, "o");
  // Final states: gathered from the pool's slots (with initial states); every other slot as it was.
  std::vector<float> ht(size_t(p.S) * p.state);
  std::vector<bool> used(p.pool_slots, false);
  for (int n = 0; n < p.S && c.with_h0; ++n) {
    used[p.slots[n]] = true;
    std::copy_n(pool_gpu.begin() + p.slots[n] * p.state, p.state, ht.begin() + n * p.state);
  }
  const double worst_state =
      c.with_h0 ? testing::ExpectStatesClose(p, ht.data(), ref.ht.data(), kernel.bound, "final state") : 0.0;
  for (int s = 0; s < p.pool_slots; ++s) {
    if (used[s]) continue;
    EXPECT_TRUE(std::equal(pool_gpu.begin() + s * p.state, pool_gpu.begin() + (s + 1) * p.state,
                           p.pool.begin() + s * p.state))
        << "slot " << s << " changed";
  }
  std::printf("[ %-9s] %-18s T=%-5d rel err: o %.2e, final states %.2e (workspace %.1f MB)\n", kernel.name, c.name,
              p.T, worst_o, worst_state, f.workspace_bytes / 1e6);
}

std::string Name(const ::testing::TestParamInfo<Param>& info) {
  return std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param).name;
}

// Shapes both kernels take: the published models' heads, mixed lengths, from slots and from zero.
INSTANTIATE_TEST_SUITE_P(Both, GlaForwardCuda,
                         ::testing::Combine(::testing::Values(kRecurrent, kChunk),
                                            ::testing::Values(GlaCase{"gla13B_mixed", 4, 4, 256, 512, {1, 63, 65, 200}, true},
                                                              GlaCase{"gla13B_from_zero", 4, 4, 256, 512, {130, 1}, false},
                                                              GlaCase{"gla340M_mixed", 4, 4, 128, 256, {130, 1, 64, 0, 37}, true},
                                                              GlaCase{"gla340M_from_zero", 4, 4, 128, 256, {77, 5, 200}, false},
                                                              GlaCase{"single_token", 4, 4, 128, 256, {1}, true},
                                                              GlaCase{"gqa_dv96", 4, 2, 64, 96, {9, 1, 33, 128}, true})),
                         Name);

// Head dimensions only the recurrent kernel takes (any dk <= 512, dv % 4 == 0).
INSTANTIATE_TEST_SUITE_P(RecurrentOnly, GlaForwardCuda,
                         ::testing::Combine(::testing::Values(kRecurrent),
                                            ::testing::Values(GlaCase{"gqa_odd", 4, 2, 40, 52, {9, 1, 33}, true},
                                                              GlaCase{"dk512", 2, 2, 512, 64, {20, 3}, true})),
                         Name);

// What only the chunkwise kernel does: GQA at dk 256, and one long sequence (too few blocks for the
// GPU, so it is cut into segments).
INSTANTIATE_TEST_SUITE_P(ChunkOnly, GlaForwardCuda,
                         ::testing::Combine(::testing::Values(kChunk),
                                            ::testing::Values(GlaCase{"gqa_dk256", 8, 2, 256, 64, {100, 29}, true},
                                                              GlaCase{"gla13B_segments", 4, 4, 256, 512, {3000}, true},
                                                              GlaCase{"gla340M_short_cut", 4, 4, 128, 256, {600}, true},
                                                              GlaCase{"gla340M_segments", 4, 4, 128, 256, {4100}, true},
                                                              GlaCase{"gla340M_segments0", 4, 4, 128, 256, {4100}, false})),
                         Name);

// The chunkwise kernel's plan overrides, on short and long sequences, from slots and from zero.
INSTANTIATE_TEST_SUITE_P(ChunkPlans, GlaForwardCuda,
                         ::testing::Combine(::testing::Values(kChunkCut5Split, kChunkUncutWhole),
                                            ::testing::Values(GlaCase{"gla13B_mixed", 4, 4, 256, 512, {1, 63, 65, 200}, true},
                                                              GlaCase{"gla13B_long", 4, 4, 256, 512, {3000}, true},
                                                              GlaCase{"gla340M_long", 4, 4, 128, 256, {4100, 70}, false})),
                         Name);

// The plan from the sequences' own lengths: uneven steps whose segments it lengthens (a long and a
// short prompt at both head shapes), an even one it leaves as it is, and a copy of the offsets that
// does not match the device's.
INSTANTIATE_TEST_SUITE_P(ChunkHostOffsets, GlaForwardCuda,
                         ::testing::Combine(::testing::Values(kChunkHostOffsets, kChunkWrongHostOffsets),
                                            ::testing::Values(GlaCase{"gla13B_uneven", 4, 4, 256, 512, {3000, 16}, true},
                                                              GlaCase{"gla340M_uneven", 4, 4, 128, 256, {2000, 5, 300}, true},
                                                              GlaCase{"gla13B_even", 4, 4, 256, 512, {1000, 1000}, false})),
                         Name);

// The gate made in the chunkwise prep kernel: a case, the gate's rank, a bias or none, a clamp or none.
struct GateCase {
  GlaCase c;
  int rank;
  bool bias, clamp;
};

class GlaForwardCudaGate : public ::testing::TestWithParam<GateCase> {};

// Two runs of the chunkwise kernel on the same rows and states: A reads g as LowRankGate wrote it
// (what the engine does with prefill_gate_in_prep off), B makes g from the factors (g poisoned with
// NaN, so a read of it fails). Outputs and final states must be equal to the bit, and A's finite.
TEST_P(GlaForwardCudaGate, MadeInPrepEqualsLowRankGateRows) {
  GLA_REQUIRE_CUDA_DEVICE();
  const GateCase& gc = GetParam();
  const GlaCase& c = gc.c;
  const GlaProblem p = testing::MakeProblem(c, 99 + c.dk + gc.rank);
  GlaDeviceProblem d;
  GLA_CUDA_OK(d.Upload(p));
  // The factors as the engine holds them: row t of a wider buffer (the fused projection's), at an
  // offset that is not 16-byte aligned; w1 [Hkv dk, rank]; scaled so some gates reach the clamp.
  std::mt19937 rng(7 + gc.rank);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t lr_stride = gc.rank + 3, kw = p.kw;
  std::vector<float> lr(size_t(std::max(p.T, 1)) * lr_stride), w1(size_t(kw) * gc.rank), bias(kw);
  for (auto& x : lr) x = 2.f * normal(rng);
  for (auto& x : w1) x = normal(rng) / std::sqrt(float(gc.rank));
  for (auto& x : bias) x = normal(rng);
  float *d_lr, *d_w1, *d_bias;
  GLA_CUDA_OK(d.buf.Upload(lr, &d_lr));
  GLA_CUDA_OK(d.buf.Upload(w1, &d_w1));
  GLA_CUDA_OK(d.buf.Upload(bias, &d_bias));
  ForgetGate gate;
  gate.has_clamp = gc.clamp;
  gate.clamp_min = -0.05f;
  GlaGateFactors factors;
  factors.lowrank = d_lr + 1;
  factors.lowrank_stride = lr_stride;
  factors.w1 = d_w1;
  factors.bias = gc.bias ? d_bias : nullptr;
  factors.rank = gc.rank;
  factors.inv_normalizer = 1.0f / gate.normalizer;
  factors.has_clamp = gate.has_clamp;
  factors.clamp_min = gate.clamp_min;

  float *o_a, *o_b, *pool_b;
  GLA_CUDA_OK(d.Poisoned(size_t(p.T) * p.ow, &o_a));
  GLA_CUDA_OK(d.Poisoned(size_t(p.T) * p.ow, &o_b));
  GLA_CUDA_OK(d.buf.Upload(p.pool, &pool_b));
  // A: LowRankGate writes g, the kernel reads it.
  GLA_CUDA_OK(cuda::LowRankGate(factors.lowrank, lr_stride, d_w1, gc.rank, factors.bias, d.g, kw, p.T, int(kw), gate,
                                nullptr));
  GlaPrefillCudaParams a = testing::ForwardParams(p, d, o_a);
  a.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(a, a.total_tokens);
  GLA_CUDA_OK(d.buf.Alloc(a.workspace_bytes, &a.workspace));
  GLA_CUDA_OK(cuda::GlaPrefillChunk(a, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());
  // B: g poisoned, the kernel makes it.
  GLA_CUDA_OK(cudaMemset(d.g, 0xFF, size_t(std::max(p.T, 1)) * kw * 4));
  GlaPrefillCudaParams b = a;
  b.o = o_b;
  b.state.base = pool_b;
  b.gate = factors;
  GLA_CUDA_OK(cuda::GlaPrefillChunk(b, nullptr));
  GLA_CUDA_OK(cudaDeviceSynchronize());

  auto down = [](const float* dev, size_t n) {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), dev, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  };
  const size_t on = size_t(p.T) * p.ow;
  const std::vector<float> oa = down(o_a, on), ob = down(o_b, on), sa = down(d.pool, p.pool.size()),
                           sb = down(pool_b, p.pool.size());
  int nonfinite = 0;
  for (float x : oa) nonfinite += !std::isfinite(x);
  EXPECT_EQ(nonfinite, 0) << "the run that reads g left rows unwritten or not finite";
  EXPECT_EQ(std::memcmp(oa.data(), ob.data(), on * 4), 0) << "outputs differ";
  EXPECT_EQ(std::memcmp(sa.data(), sb.data(), sa.size() * 4), 0) << "states differ";
  if (c.with_h0) {
    EXPECT_NE(std::memcmp(sa.data(), p.pool.data(), sa.size() * 4), 0) << "the runs changed no state";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Chunk, GlaForwardCudaGate,
    ::testing::Values(
        // Short prompts at dk 256: the prep kernel's cluster form; a long one: its one-block form.
        GateCase{GlaCase{"gla13B_short", 4, 4, 256, 512, {1, 63, 65, 200}, true}, 16, true, true},
        GateCase{GlaCase{"gla13B_long", 4, 4, 256, 512, {3000, 7}, true}, 16, true, false},
        GateCase{GlaCase{"gla340M_rank32", 4, 4, 128, 256, {130, 1, 64, 0, 37}, true}, 32, false, true},
        GateCase{GlaCase{"gqa_dk256_rank5", 8, 2, 256, 64, {100, 29}, false}, 5, true, true},
        GateCase{GlaCase{"gqa_dk64_rank1", 4, 2, 64, 96, {9, 1, 33, 128}, true}, 1, false, false}),
    [](const ::testing::TestParamInfo<GateCase>& info) { return std::string(info.param.c.name); });

// The refusal tests' valid starting point: one 4-token sequence from zero, every row array the same
// device buffer of rows 512 floats apart, a chunkwise workspace `extra` bytes larger than it needs.
GlaPrefillCudaParams SmallChunkParams(testing::DeviceBuffers& buf, int dk, size_t extra = 0) {
  GlaPrefillCudaParams p;
  int32_t* d_cu = nullptr;
  EXPECT_EQ(buf.Upload(std::vector<int32_t>{0, 4}, &d_cu), cudaSuccess);
  void* d_rows = nullptr;
  EXPECT_EQ(buf.Alloc(size_t(4) * 4 * 512 * 4, &d_rows), cudaSuccess);
  float* rows = static_cast<float*>(d_rows);
  p.num_seqs = 1;
  p.H = p.Hkv = 1;
  p.dk = dk;
  p.dv = 64;
  p.q = p.k = p.g = p.v = rows;
  p.o = rows;
  p.q_stride = p.k_stride = p.g_stride = p.v_stride = p.o_stride = 512;
  p.cu_seqlens = d_cu;
  p.total_tokens = 4;
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, 4);
  EXPECT_EQ(buf.Alloc(p.workspace_bytes + extra, &p.workspace), cudaSuccess);
  return p;
}

TEST(GlaForwardCudaShapes, GateFactorsRefusedWhereTheyCannotBeUsed) {
  GLA_REQUIRE_CUDA_DEVICE();
  testing::DeviceBuffers buf;
  GlaPrefillCudaParams p = SmallChunkParams(buf, 64);
  ASSERT_NE(p.workspace, nullptr);
  float* rows = p.o;
  p.gate.lowrank = rows;
  p.gate.lowrank_stride = 512;
  p.gate.w1 = rows;
  p.gate.rank = cuda::kChunkPrepMaxGateRank + 1;  // over what the prep stages
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.gate.rank = 0;
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.gate.rank = 16;
  p.gate.w1 = nullptr;  // no second factor
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.gate.w1 = rows;
  p.gate.inv_normalizer = std::nanf("");  // a NaN normalizer would make every gate NaN
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.gate.inv_normalizer = 1.0f / 16;
  p.gate.lowrank_stride = -16;  // rows before the first
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.gate.lowrank_stride = 512;
  EXPECT_EQ(cuda::GlaPrefillRecurrent(p, nullptr), cudaErrorInvalidValue) << "the recurrent kernel reads g";
  GlaBackwardCudaParams bw;  // otherwise valid: outputs where they can be written, a workspace that fits
  static_cast<GlaPrefillCudaParams&>(bw) = p;
  bw.d_o = bw.d_q = bw.d_k = bw.d_v = bw.d_g = rows;
  bw.d_o_stride = bw.d_q_stride = bw.d_k_stride = bw.d_v_stride = bw.d_g_stride = 512;
  bw.workspace_bytes = cuda::GlaBackwardChunkWorkspaceBytes(bw, 4);
  GLA_CUDA_OK(buf.Alloc(bw.workspace_bytes, &bw.workspace));
  EXPECT_EQ(cuda::GlaBackwardChunk(bw, nullptr), cudaErrorInvalidValue) << "the backward reads g";
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaSuccess);  // the same params are otherwise valid
  GLA_CUDA_OK(cudaDeviceSynchronize());
}

// Params for the chunkwise plan's host arithmetic alone (no arrays): 4 heads of dk x dv.
GlaPrefillCudaParams HostPlanParams(int dk, int dv) {
  GlaPrefillCudaParams p;
  p.H = p.Hkv = 4;
  p.dk = dk;
  p.dv = dv;
  return p;
}

// The engine sizes the chunkwise workspace once, for its step's token budget N, and then runs steps
// of any t <= N tokens on it: the workspace a step needs must never shrink as its tokens grow (a
// sequence cut into segments holds a state per segment id). Host arithmetic only (the plan reads
// the device's SM count, 132 where there is no device), so this runs with or without a GPU.
TEST(GlaForwardCudaShapes, WorkspaceForATokenBudgetCoversEveryStepWithinIt) {
  for (const auto& [dk, dv] : {std::pair{256, 512}, std::pair{128, 256}}) {
    GlaPrefillCudaParams p = HostPlanParams(dk, dv);
    for (int seqs = 1; seqs <= 4; ++seqs) {
      p.num_seqs = seqs;
      for (int budget : {512, 520, 1000, 2100, 4096, 4100}) {
        const size_t at_budget = cuda::GlaPrefillChunkWorkspaceBytes(p, budget);
        for (int t = 0; t <= budget; ++t) {
          const size_t need = cuda::GlaPrefillChunkWorkspaceBytes(p, t);
          ASSERT_LE(need, at_budget) << "dk " << dk << ", " << seqs << " sequences: " << t << " tokens need more than "
                                     << budget << " (the budget's workspace)";
        }
      }
    }
  }
}

// The kernel's own plan cuts a sequence only into whole chunks of at least 128 tokens, and only
// into two or more of them (shorter segments lost to their state-only pass in the sweep of
// gla_prefill_bench plans). Host arithmetic only, as above.
TEST(GlaForwardCudaShapes, OwnPlanCutsIntoSegmentsOfAtLeast128Tokens) {
  int cut = 0;
  for (const auto& [dk, dv] : {std::pair{256, 512}, std::pair{128, 256}, std::pair{64, 64}}) {
    GlaPrefillCudaParams p = HostPlanParams(dk, dv);
    for (int seqs = 1; seqs <= 8; ++seqs) {
      p.num_seqs = seqs;
      for (int total = 0; total <= 20000; total += 13) {
        const cuda::GlaChunkPlanInfo plan = cuda::GlaPrefillChunkPlan(p, total);
        if (plan.segment_tokens == 0) continue;
        ++cut;
        const int avg = (total + seqs - 1) / seqs;
        EXPECT_GE(plan.segment_tokens, 128) << dk << " / " << seqs << " / " << total;
        EXPECT_EQ(plan.segment_tokens % 64, 0) << dk << " / " << seqs << " / " << total;
        EXPECT_LT(plan.segment_tokens, avg) << "a cut into one segment: " << dk << " / " << seqs << " / " << total;
      }
    }
  }
  EXPECT_GT(cut, 0) << "no shape was cut at all";
}

// Main blocks of a plan's working segments (a sequence is one segment when the plan does not cut).
int64_t MainBlocks(const GlaPrefillCudaParams& p, const std::vector<int32_t>& len, int64_t seg) {
  int64_t segments = 0;
  for (int32_t l : len) segments += seg == 0 ? (l > 0) : (l + seg - 1) / seg;
  return segments * p.H * ((p.dv + 63) / 64);
}

// With the sequences' own lengths on the host, the plan keeps an uneven step's main blocks within one
// wave of the SMs (132 where there is no device) at the shortest segments that do, never cuts shorter
// than from the totals alone (the workspace is sized from those), and leaves even steps as they were.
// Host arithmetic only.
TEST(GlaForwardCudaShapes, HostOffsetsKeepAnUnevenStepWithinOneWave) {
  int sms = 132, dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    sms = 132;
  cudaGetLastError();  // no device: the plan falls back the same way
  int lengthened = 0;
  for (const auto& [dk, dv] : {std::pair{256, 512}, std::pair{128, 256}}) {
    GlaPrefillCudaParams p = HostPlanParams(dk, dv);
    std::vector<std::vector<int32_t>> steps;
    for (int32_t a : {300, 600, 1000, 2000, 4096, 8000})
      for (int32_t b : {0, 1, 16, 100, 700, 4096}) {
        steps.push_back({a, b});
        steps.push_back({a, b, 16});
        steps.push_back({a, a});  // even
      }
    for (const std::vector<int32_t>& len : steps) {
      std::vector<int32_t> cu(len.size() + 1, 0);
      for (size_t n = 0; n < len.size(); ++n) cu[n + 1] = cu[n] + len[n];
      p.num_seqs = static_cast<int>(len.size());
      p.host_cu_seqlens = nullptr;
      const int64_t from_totals = cuda::GlaPrefillChunkPlan(p, cu.back()).segment_tokens;
      p.host_cu_seqlens = cu.data();
      const int64_t from_lengths = cuda::GlaPrefillChunkPlan(p, cu.back()).segment_tokens;
      const std::string what = "dk " + std::to_string(dk) + ", lengths " + std::to_string(len[0]) + " / " +
                               std::to_string(len[1]) + (len.size() > 2 ? " / 16" : "");
      if (from_totals == 0) {
        EXPECT_EQ(from_lengths, 0) << what << ": a cut the totals did not make";
        continue;
      }
      if (from_lengths != 0) {
        EXPECT_GE(from_lengths, from_totals) << what << ": shorter segments than the workspace was sized for";
        EXPECT_LE(MainBlocks(p, len, from_lengths), sms) << what;
      }
      if (len.size() == 2 && len[0] == len[1]) {
        EXPECT_EQ(from_lengths, from_totals) << what << ": an even step changed";
      }
      if (from_lengths != from_totals) {
        ++lengthened;
        EXPECT_GT(MainBlocks(p, len, from_totals), sms) << what << ": lengthened though it fitted";
        if (from_lengths != 0) {  // the shortest that fits: a chunk less does not
          EXPECT_GT(MainBlocks(p, len, from_lengths - 64), sms) << what << ": longer than needed";
        }
      }
    }
  }
  EXPECT_GT(lengthened, 0) << "no uneven step was changed";
  // The case that found it: 4,096 + 16 tokens at gla-1.3B heads, 1,088-token segments (4 + 1 of them,
  // 160 main blocks) from the totals; within one wave of 132 SMs from the lengths.
  if (sms == 132) {
    GlaPrefillCudaParams p = HostPlanParams(256, 512);
    p.num_seqs = 2;
    const std::vector<int32_t> cu{0, 4096, 4112};
    EXPECT_EQ(cuda::GlaPrefillChunkPlan(p, 4112).segment_tokens, 1088);
    p.host_cu_seqlens = cu.data();
    const int64_t seg = cuda::GlaPrefillChunkPlan(p, 4112).segment_tokens;
    EXPECT_EQ(MainBlocks(p, {4096, 16}, seg), 128) << seg;
  } else {
    std::printf("[ note ] the 4,096 + 16 case's numbers are for 132 SMs; this device has %d (the checks above ran)\n",
                sms);
  }
  // A host copy that is not offsets at all (a length far past the total, offsets that go back): the
  // plan stays within what the totals allow and answers at once.
  GlaPrefillCudaParams p = HostPlanParams(256, 512);
  p.num_seqs = 2;
  const int64_t from_totals = cuda::GlaPrefillChunkPlan(p, 4112).segment_tokens;
  for (const std::vector<int32_t>& cu : {std::vector<int32_t>{0, 1 << 30, (1 << 30) + 16}, {0, 5000, 16},
                                         {0, -7, 4112}}) {
    p.host_cu_seqlens = cu.data();
    const int64_t seg = cuda::GlaPrefillChunkPlan(p, 4112).segment_tokens;
    EXPECT_TRUE(seg == 0 || seg >= from_totals) << cu[1] << ": " << seg;
  }
}

TEST(GlaForwardCudaShapes, ChunkRefusesUnsupportedShapesWithInvalidValue) {
  GLA_REQUIRE_CUDA_DEVICE();
  testing::DeviceBuffers buf;
  GlaPrefillCudaParams p = SmallChunkParams(buf, 96, 1 << 20);  // dk 96: not in {64, 128, 256}
  ASSERT_NE(p.workspace, nullptr);
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.dk = 64;
  p.dv = 30;  // not a multiple of 4
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.dv = 64;
  p.H = 3;
  p.Hkv = 2;  // H % Hkv != 0
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.H = p.Hkv = 1;
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, 4) - 1;  // too small
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.workspace_bytes = cuda::GlaPrefillChunkWorkspaceBytes(p, 4);
  p.q_stride = 511;  // rows not 16-byte aligned
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue);
  p.q_stride = 512;
  for (const auto& [segments, split] : {std::pair{-1, 0}, std::pair{kChunkMaxSegments + 1, 0}, std::pair{0, 3},
                                         std::pair{0, -1}}) {
    p.plan_segments = segments;  // plan overrides out of range
    p.plan_split_prep = split;
    EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaErrorInvalidValue) << segments << " " << split;
  }
  p.plan_segments = 2;
  EXPECT_EQ(cuda::GlaPrefillRecurrent(p, nullptr), cudaErrorInvalidValue) << "a chunkwise plan given to the recurrent kernel";
  p.plan_segments = p.plan_split_prep = 0;
  EXPECT_EQ(cuda::GlaPrefillChunk(p, nullptr), cudaSuccess);
  GLA_CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace gla
