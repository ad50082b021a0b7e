// The CUDA engine on the GPU: the full model against fla's float64 answers for gla-tiny (bf16
// bound 2e-2 from shared/reference/README.md), against the CPU model on a random model that uses
// every option (short conv, GQA, clamp, tied embeddings) in mixed packed steps, the decode graphs,
// the GPU state pool (fork, zero, budget, a full GPU), bad input, greedy text CUDA == CPU, LoRA
// adapters per sequence in mixed steps (against the CPU model; the device cache of adapters), prompt
// scores against fla's log-softmax, and n > 1 from one prefill through the scheduler; bf16 states
// (--state_dtype bf16) in mixed steps, the persistent kernel and the backend against the CPU's; FP8
// weights (--weights fp8) against the CPU's same FP8 weights, and their perplexity.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <utility>

#include "engine/backend.h"
#include "engine/model/cpu_model.h"
#include "engine/model/cuda_model.h"
#include "engine/model/quantized_checkpoint.h"
#include "engine/cuda_state_pool.h"
#include "engine/scheduler.h"
#include "engine/state_storage.h"
#include "tests/support/scheduler_util.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/support/random_adapter.h"
#include "tests/support/random_model.h"
#include "tests/support/reference_data.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::RelErr;
constexpr double kBf16Bound = 2e-2;  // shared/reference/README.md: a bf16 GPU path

using Expected = testing::TinyExpected;
Expected LoadExpected() { return testing::LoadTinyExpected(); }

// A CudaModel with its own GPU pool.
struct Gpu {
  std::unique_ptr<CudaModel> model;
  std::unique_ptr<GpuStatePool> pool;
  CudaModel::States states() const { return {pool->device_slots(), pool->scratch_slot()}; }
  std::vector<float> Logits(int rows) const {
    std::vector<float> h(static_cast<size_t>(rows) * model->config().vocab_size);
    EXPECT_EQ(cudaMemcpyAsync(h.data(), model->logits(), h.size() * sizeof(float), cudaMemcpyDeviceToHost,
                              model->stream()),
              cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(model->stream()), cudaSuccess);
    return h;
  }
  // The slot's state values (a bf16 pool's widened to fp32).
  std::vector<float> State(int slot) const {
    auto host = pool->NewHostState();
    EXPECT_TRUE(host.ok()) << host.status();
    EXPECT_TRUE(pool->SaveToHost(slot, **host).ok());
    EXPECT_TRUE((*host)->Wait().ok());
    std::vector<float> values(static_cast<size_t>(pool->state_values()));
    if (pool->state_dtype() == StateDType::kBF16) UnpackBf16State((*host)->data(), pool->state_values(), values.data());
    else std::copy_n((*host)->data(), values.size(), values.begin());
    return values;
  }
};

Gpu MakeGpu(const std::string& dir, CudaModelOptions o, int slots = 8, StateDType dtype = StateDType::kF32) {
  Gpu g;
  auto ck = LoadCheckpoint(dir);
  EXPECT_TRUE(ck.ok()) << ck.status();
  auto m = CudaModel::FromCheckpoint(std::move(*ck), o);
  EXPECT_TRUE(m.ok()) << m.status();
  g.model = std::move(*m);
  auto p = GpuStatePool::Create(slots, g.model->state_layout().floats(), dtype, g.model->stream());
  EXPECT_TRUE(p.ok()) << p.status();
  g.pool = std::move(*p);
  return g;
}

CudaModelOptions Options(int max_tokens = 512, bool chunked = true) {
  CudaModelOptions o;
  o.max_tokens = max_tokens;
  o.max_logit_rows = max_tokens;
  o.chunked_prefill = chunked;
  return o;
}

TEST(TinyReference, LogitsOfAllSequencesWithinBf16Bound) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  Gpu g = MakeGpu(testing::TinyModelDir(), Options());
  if (!g.model) return;
  for (int j = 0; j < 3; ++j) {
    const int slot = *g.pool->Acquire();
    const CudaModel::Segment seg{e.seq_ids[j], slot, CudaModel::Logits::kAll};
    std::vector<int> first;
    ASSERT_TRUE(g.model->Forward({&seg, 1}, g.states(), &first).ok());
    const double err = RelErr(g.Logits(static_cast<int>(e.seq_ids[j].size())), e.seq_logits[j]);
    EXPECT_LT(err, kBf16Bound) << "sequence " << j << " (T=" << e.seq_ids[j].size() << ")";
    std::printf("[ measure ] gla-tiny seq%d T=%zu: rel err %.2e\n", j, e.seq_ids[j].size(), err);
    g.pool->Release(slot);
  }
}

// A pre-quantized INT8 checkpoint (compressed-tensors, gla-eval quantize) on the GPU under --weights
// native: its own INT8 rows (weight-only, widened exactly), within the bf16 bound of the CPU model
// serving the same checkpoint as INT8 (the same values in fp32).
TEST(TinyReference, APreQuantizedInt8CheckpointRunsWithinBf16BoundOfTheCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  const std::string dir = testing::MakeTempDir("cuda_int8_checkpoint") + "/int8";
  ASSERT_TRUE(WriteQuantizedCheckpoint(testing::TinyModelDir(), dir).ok());
  const Expected e = LoadExpected();
  auto cpu = CpuModel::Load(dir);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_EQ((*cpu)->weights(), WeightFormat::kInt8);
  Gpu g = MakeGpu(dir, Options());
  if (!g.model) return;
  const int slot = *g.pool->Acquire();
  const CudaModel::Segment seg{e.seq_ids[1], slot, CudaModel::Logits::kAll};
  std::vector<int> first;
  ASSERT_TRUE(g.model->Forward({&seg, 1}, g.states(), &first).ok());
  SequenceState s = (*cpu)->NewState();
  auto want = (*cpu)->Run(e.seq_ids[1], s, /*all_logits=*/true);
  ASSERT_TRUE(want.ok());
  const double err = RelErr(g.Logits(static_cast<int>(e.seq_ids[1].size())),
                            std::vector<double>(want->begin(), want->end()));
  EXPECT_LT(err, kBf16Bound);
  std::printf("[ measure ] gla-tiny INT8 checkpoint on the GPU (its own INT8 rows) vs the CPU's INT8: rel err %.2e\n",
              err);
  g.pool->Release(slot);
  auto backend = MakeCudaBackend(dir, {});  // and ModelInfo.device says what the GPU made of it
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_NE((*backend)->device().find(", int8 weights from an int8 checkpoint"), std::string::npos)
      << (*backend)->device();
  EXPECT_EQ((*backend)->weight_format(), WeightFormat::kInt8);
}

// Prefill 65 tokens, then decode the rest one token per step (the graph path: padded buckets,
// scratch slot), each step's logits against the reference row.
TEST(TinyReference, PrefillThenGraphDecodeWithinBf16Bound) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  Gpu g = MakeGpu(testing::TinyModelDir(), Options());
  if (!g.model) return;
  const auto& ids = e.seq_ids[2];
  const int V = g.model->config().vocab_size, split = 65;
  const int slot = *g.pool->Acquire();
  std::vector<float> got;
  std::vector<int> first;
  const CudaModel::Segment pre{std::span<const int32_t>(ids).first(split), slot, CudaModel::Logits::kAll};
  ASSERT_TRUE(g.model->Forward({&pre, 1}, g.states(), &first).ok());
  got = g.Logits(split);
  for (size_t t = split; t < ids.size(); ++t) {
    const CudaModel::Segment one{std::span<const int32_t>(ids).subspan(t, 1), slot, CudaModel::Logits::kLast};
    ASSERT_TRUE(g.model->Forward({&one, 1}, g.states(), &first).ok());
    ASSERT_EQ(first[0], 0);
    const auto row = g.Logits(1);
    got.insert(got.end(), row.begin(), row.begin() + V);
  }
  const double err = RelErr(got, e.seq_logits[2]);
  EXPECT_LT(err, kBf16Bound);
  std::printf("[ measure ] gla-tiny prefill 65 + %zu graph decode steps: rel err %.2e\n", ids.size() - split, err);
}

// Every option at once: short conv, GQA (H=4, Hkv=2), clamp_min, tied embeddings, no output gate
// on one variant; dk = 64, so prefill takes the chunkwise kernel (and, switched off, the recurrent one).
std::string OptionsModelDir(bool output_gate) {
  const std::string dir = testing::MakeTempDir(output_gate ? "cuda_options_model" : "cuda_options_model_nogate");
  const std::string config = std::string(R"({"model_type": "gla", "hidden_size": 512, "num_hidden_layers": 2,
    "num_heads": 4, "num_kv_heads": 2, "expand_k": 0.5, "expand_v": 1, "hidden_ratio": 4, "intermediate_size": null,
    "use_short_conv": true, "conv_size": 4, "clamp_min": -2.0, "tie_word_embeddings": true, "vocab_size": 1000,
    "use_output_gate": )") + (output_gate ? "true" : "false") + R"(, "norm_eps": 1e-6})";
  const auto s = testing::WriteRandomModel(dir, {config, DType::kBF16, 5, 1});
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

class OptionsModel : public ::testing::TestWithParam<bool> {};

// The CPU model that keeps what a pool of `dtype` keeps (bf16 rounds every state at a step's end),
// with the GPU's weight format (kFp8: the same FP8 values, computed in fp32).
absl::StatusOr<std::unique_ptr<CpuModel>> CpuModelWithStates(const std::string& dir, StateDType dtype,
                                                              WeightFormat weights = WeightFormat::kNative) {
  CpuModelOptions o;
  if (dtype == StateDType::kBF16) o.state_dtype = CpuModelOptions::StateDType::kBF16;
  o.weights = weights;
  return CpuModel::Load(dir, o);
}

// FP8 weights (--weights fp8): projections of more than 16 rows quantize their inputs to FP8 as
// well (the FP8 tensor cores take two FP8 operands), which the CPU model does not: up to 2^-4 of
// each input value. Measured on an H100 (2026-12-06) on this random two-layer model: up to 0.176
// in the logits and 0.194 in a state (four steps, both prefill kernels, with and without the output
// gate); bound 0.25. The accuracy that matters is the trained model's: the held-out perplexity
// test below holds FP8 to the issue's 1% (measured +0.32%).
constexpr double kFp8InputsBound = 0.25;
// INT8 weights in steps of more than 16 rows: each matrix is dequantized to bf16 (scale x q
// rounded to bf16: up to 2^-9 of each weight, which the CPU's fp32 scale x q does not lose) for the
// bf16 GEMM; the random test checkpoints are bf16, so their native weights lose nothing there.
// Measured on an H100 (2026-12-06): up to 0.023 in the logits and 0.030 in a state; bound 0.05.
// (Held-out perplexity of the trained model: +0.004%.)
constexpr double kInt8DequantizedBound = 5e-2;

// Steps mixing decode tokens and prefill chunks of different lengths, from non-zero states,
// against the CPU model running the same steps: logits and states after every step. With bf16
// states both round at each step's end (the GPU from its own fp32 values: a value near a rounding
// boundary may round the other way, one bf16 step, well inside the bound).
// tuned_gemms: the bf16 GEMMs through the cuBLASLt algorithms timed per row count
// (ProjectionPaths::tuned_bf16_gemms), which must then have run.
void MixedPackedStepsMatchCpu(bool output_gate, StateDType dtype, WeightFormat weights = WeightFormat::kNative,
                              bool tuned_gemms = false) {
  const std::string dir = OptionsModelDir(output_gate);
  auto cpu = CpuModelWithStates(dir, dtype, weights);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const double bound = weights == WeightFormat::kFp8    ? kFp8InputsBound
                       : weights == WeightFormat::kInt8 ? kInt8DequantizedBound
                                                        : kBf16Bound;
  for (bool chunked : {true, false}) {
    CudaModelOptions o = Options(512, chunked);
    o.weights = weights;
    o.paths.tuned_bf16_gemms = tuned_gemms;
    Gpu g = MakeGpu(dir, o, 8, dtype);
    if (!g.model) return;
    ASSERT_EQ(g.model->uses_fp8_weights(), weights == WeightFormat::kFp8);
    ASSERT_EQ(g.model->uses_chunked_prefill(), chunked);
    const int V = g.model->config().vocab_size;
    std::mt19937 rng(21);
    std::uniform_int_distribution<int> tok(0, V - 1);
    auto tokens = [&](int n) {
      std::vector<int32_t> v(n);
      for (auto& t : v) t = tok(rng);
      return v;
    };
    const int kSeqs = 4;
    std::vector<SequenceState> cpu_states;
    std::vector<int> slots;
    for (int s = 0; s < kSeqs; ++s) {
      cpu_states.push_back((*cpu)->NewState());
      slots.push_back(*g.pool->Acquire());
    }
    // Step lengths per sequence; 1 = a decode token. The first step starts everyone from zero. With
    // tuned GEMMs, steps of 128, 128 and 256 rows (eager steps tune at powers of two).
    const std::vector<std::vector<int>> steps =
        tuned_gemms ? std::vector<std::vector<int>>{{7, 64, 1, 56}, {1, 1, 62, 64}, {65, 1, 62, 128}, {1, 1, 1, 1}}
                    : std::vector<std::vector<int>>{{7, 64, 1, 130}, {1, 1, 63, 1}, {65, 1, 1, 200}, {1, 1, 1, 1}};
    for (size_t k = 0; k < steps.size(); ++k) {
      std::vector<std::vector<int32_t>> toks;
      for (int n : steps[k]) toks.push_back(tokens(n));
      std::vector<CpuModel::Segment> cs;
      std::vector<CudaModel::Segment> gs;
      for (int s = 0; s < kSeqs; ++s) {
        cs.push_back({toks[s], cpu_states[s].data.data(), false});
        gs.push_back({toks[s], slots[s], CudaModel::Logits::kLast});
      }
      std::vector<float> want;
      ASSERT_TRUE((*cpu)->Forward(cs, &want).ok());
      std::vector<int> first;
      ASSERT_TRUE(g.model->Forward(gs, g.states(), &first).ok());
      const auto got = g.Logits(kSeqs);
      for (int s = 0; s < kSeqs; ++s) ASSERT_EQ(first[s], s);
      const double err = RelErr(got, want);
      EXPECT_LT(err, bound) << "step " << k;
      for (int s = 0; s < kSeqs; ++s)
        EXPECT_LT(RelErr(g.State(slots[s]), cpu_states[s].data), bound) << "step " << k << " sequence " << s;
      std::printf("[ measure ] options model (output gate %d, %s prefill, %s states, %s weights%s) step %zu: logits "
                  "rel err %.2e\n",
                  output_gate, chunked ? "chunkwise" : "recurrent", StateDTypeName(dtype), WeightFormatName(weights),
                  tuned_gemms ? ", tuned GEMMs" : "", k, err);
    }
    if (tuned_gemms) {
      EXPECT_GT(g.model->tuned_gemm_runs(), 0) << "no projection ran a tuned cuBLASLt algorithm";
      std::printf("[ measure ] tuned GEMMs: %d plans, %lld runs through them\n", g.model->tuned_gemm_plans(),
                  static_cast<long long>(g.model->tuned_gemm_runs()));
    } else {
      EXPECT_EQ(g.model->tuned_gemm_plans(), 0);
    }
  }
}

TEST_P(OptionsModel, MixedPackedStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  MixedPackedStepsMatchCpu(GetParam(), StateDType::kF32);
}

TEST_P(OptionsModel, Bf16StatesMixedPackedStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  MixedPackedStepsMatchCpu(GetParam(), StateDType::kBF16);
}

// Mixed steps of 128, 128 and 256 rows with the bf16 GEMMs through timed cuBLASLt algorithms,
// against the same CPU and bound.
TEST_P(OptionsModel, TunedGemmsMixedPackedStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  MixedPackedStepsMatchCpu(GetParam(), StateDType::kF32, WeightFormat::kNative, /*tuned_gemms=*/true);
}

TEST_P(OptionsModel, Fp8WeightsMixedPackedStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  MixedPackedStepsMatchCpu(GetParam(), StateDType::kF32, WeightFormat::kFp8);
}

// Two engines on the same model that differ only in a path that must not change a bit: the logits
// and states of mixed steps (prefills and decodes, with and without the output gate) equal to the
// bit. Both with cuBLAS's default GEMM algorithms: the tuned ones are chosen by timing, so two
// engines may choose differently (ProjectionPaths::tuned_bf16_gemms).
// `after`, when given, looks at both models once the steps have run (which paths they took).
void ExpectMixedStepsEqualToTheBit(const std::string& dir, CudaModelOptions a_options, CudaModelOptions b_options,
                                   const std::function<void(const CudaModel&, const CudaModel&)>& after = nullptr) {
  a_options.paths.tuned_bf16_gemms = b_options.paths.tuned_bf16_gemms = false;
  Gpu a_gpu = MakeGpu(dir, a_options, 4), b_gpu = MakeGpu(dir, b_options, 4);
  if (!a_gpu.model || !b_gpu.model) return;
  const int V = a_gpu.model->config().vocab_size;
  std::mt19937 rng(43);
  std::uniform_int_distribution<int> tok(0, V - 1);
  std::vector<int> slots;
  for (int s = 0; s < 3; ++s) {
    slots.push_back(*a_gpu.pool->Acquire());
    ASSERT_EQ(*b_gpu.pool->Acquire(), slots.back());
  }
  for (const std::vector<int>& lengths : std::vector<std::vector<int>>{{70, 5, 1}, {1, 40, 1}, {1, 1, 33}}) {
    std::vector<std::vector<int32_t>> toks;
    std::vector<CudaModel::Segment> segs;
    for (size_t s = 0; s < lengths.size(); ++s) {
      toks.emplace_back(lengths[s]);
      for (auto& t : toks.back()) t = tok(rng);
    }
    for (size_t s = 0; s < lengths.size(); ++s) segs.push_back({toks[s], slots[s], CudaModel::Logits::kLast});
    std::vector<int> first_a, first_b;
    ASSERT_TRUE(a_gpu.model->Forward(segs, a_gpu.states(), &first_a).ok());
    ASSERT_TRUE(b_gpu.model->Forward(segs, b_gpu.states(), &first_b).ok());
    const auto a = a_gpu.Logits(3), b = b_gpu.Logits(3);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "step of " << lengths[0] << ", "
                                                                              << lengths[1] << ", " << lengths[2];
    for (int slot : slots) EXPECT_EQ(a_gpu.State(slot), b_gpu.State(slot)) << "slot " << slot;
  }
  if (after) after(*a_gpu.model, *b_gpu.model);
}

// The prefill rows' forget gates made inside the chunkwise prep kernel (prefill_gate_in_prep) against LowRankGate's rows read back by it: the same bits, in steps with no decode rows,
// with a few (whose gates the decode step makes) and with prefill rows after them.
TEST_P(OptionsModel, PrefillGateInPrepChangesNoBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  CudaModelOptions in_prep = Options(512, true), separate = in_prep;
  in_prep.prefill_gate_in_prep = true;
  separate.prefill_gate_in_prep = false;
  ExpectMixedStepsEqualToTheBit(OptionsModelDir(GetParam()), in_prep, separate,
                                [](const CudaModel& a, const CudaModel& b) {
                                  EXPECT_GT(a.prep_gate_layers(), 0) << "no layer made its gates in the prep kernel";
                                  EXPECT_EQ(b.prep_gate_layers(), 0);
                                });
}

// FP8 steps above the one-byte kernel's rows may make each projection's input inside the quantizing
// kernel (ProjectionPaths::fp8_made_rows_from; by default only from 512 rows, here from 1 against
// never; cuda::QuantizeMadeRowsFp8): the same bits as the separate norm, SwiGLU and quantizing
// kernels.
TEST_P(OptionsModel, Fp8MadeRowsChangeNoBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  CudaModelOptions made = Options(512, true), separate = made;
  made.weights = separate.weights = WeightFormat::kFp8;
  made.paths.fp8_made_rows_from = 1;
  separate.paths.fp8_made_rows_from = 0;
  ExpectMixedStepsEqualToTheBit(OptionsModelDir(GetParam()), made, separate);
}

// The row kernels a warp a row (ProjectionPaths::warp_rows_from, here from 1 row and at every
// width against never; cuda::RowForm): the same bits as a block a row, with bf16 weights (the norms
// and the gated head norm) and FP8 weights (the input quantizers, made rows from 1 row and separate).
TEST_P(OptionsModel, WarpRowsChangeNoBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  for (WeightFormat weights : {WeightFormat::kNative, WeightFormat::kFp8}) {
    for (int made_from : {1, 0}) {
      if (weights == WeightFormat::kNative && made_from == 0) continue;  // made rows are FP8's only
      CudaModelOptions warp = Options(512, true), block = warp;
      warp.weights = block.weights = weights;
      warp.paths.fp8_made_rows_from = block.paths.fp8_made_rows_from = made_from;
      warp.paths.warp_rows_from = 1;
      warp.paths.warp_rows_max_width = std::numeric_limits<int>::max();
      block.paths.warp_rows_from = 0;
      SCOPED_TRACE(std::string(WeightFormatName(weights)) + " made rows from " + std::to_string(made_from));
      ExpectMixedStepsEqualToTheBit(OptionsModelDir(GetParam()), warp, block);
    }
  }
}

// INT8 weights are weight-only on the GPU too (the inputs stay bf16 at every step size); against the
// CPU's same INT8 rows within kInt8DequantizedBound (the bf16 rounding of the dequantized matrix).
TEST_P(OptionsModel, Int8WeightsMixedPackedStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  MixedPackedStepsMatchCpu(GetParam(), StateDType::kF32, WeightFormat::kInt8);
}

// Decode-sized steps with each weight format (FP8 and INT8 rows widened in registers against bf16
// inputs, as the bf16 path reads bf16 rows) against the CPU model with the same weights and the
// GPU's bf16 activations (CpuModelOptions::activations: rounded where the engine rounds them).
// Batches of 4, 12, 24 and 40 (the tensor-core kernel at one, two and three of its 8-row tiles,
// and for 40 in two row blocks of 32: the one-byte rows read there up to 64 rows here, with
// byte_weight_kernel_rows raised from its default 16; bf16 rows through cuBLAS from 17) through
// the decode graphs, then one sequence alone (the one-row kernels that make their input: the persistent kernel
// is off here, PersistentDecode below holds its one-byte stream), every step's logits and, at the
// end, the states.
//
// Why that reference: against fp32 activations this random two-layer model measured up to 5.5% at
// a batch-1 step with bf16 weights and 14.4% at one FP8 step (H100, 2026-12-06) — and the CPU with
// bf16 activations reproduces those numbers to three digits (0.053, 0.144, 0.022, ... at the same
// steps): the model amplifies the activations' rounding, the GPU computes what the CPU does. What
// is left against the bf16-activation CPU is the order of the sums, which can round a value the
// other way: estimated on the CPU by perturbing every rounded value by 1e-6 relative, 2e-3 to 6e-3
// on this model; bound 2e-2. Measured (H100, 2026-12-06): 3.3e-3 to 8.4e-3 worst per format and
// model, but 1.42e-2 at one step (FP8, no output gate, batch 1, step 0: a fresh state, where the GPU
// is as far from the fp32 CPU, 1.29e-2; native weights 5.7e-3 there). Checked on the CPU
// (docs/quantization.md): with a zero state a head's output is (q.k) v, and at that step this
// model's gated head norm runs where eps dominates (eps 1e-6 -> 1e-7 moves its step-0 logits by
// 7.4e-2, later steps' by 2e-3, the trained model's by 6e-5), so q.k's rounding, which a norm
// away from eps divides out, reaches the logits. The error against fp32 activations is printed
// beside it: what bf16 activations cost this model.
constexpr double kDecodeStepsVsBf16ActivationsBound = 2e-2;
// medium_rows > 0: the one-byte kernel to its default 16 rows and every projection of 17 (bf16: 9)
// to medium_rows rows through cuda::LinearMediumM* (ProjectionPaths::*medium_m_kernel_rows).
void DecodeStepsMatchCpu(bool output_gate, WeightFormat weights, int medium_rows = 0, bool tuned_gemms = false) {
  const std::string dir = OptionsModelDir(output_gate);
  auto cpu = CpuModelWithStates(dir, StateDType::kF32, weights);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  CpuModelOptions ao = (*cpu)->options();
  ao.activations = CpuModelOptions::ActivationDType::kBF16;
  auto cpu_bf16 = CpuModel::Load(dir, ao);
  ASSERT_TRUE(cpu_bf16.ok()) << cpu_bf16.status();
  CudaModelOptions o = Options();
  o.weights = weights;
  o.persistent_decode = false;
  o.paths.byte_weight_kernel_rows = medium_rows > 0 ? 16 : 64;
  o.paths.medium_m_kernel_rows = o.paths.fp8_medium_m_kernel_rows = o.paths.int8_medium_m_kernel_rows = medium_rows;
  o.paths.tuned_bf16_gemms = tuned_gemms;
  Gpu g = MakeGpu(dir, o, 48);
  if (!g.model) return;
  ASSERT_EQ(g.model->uses_fp8_weights(), weights == WeightFormat::kFp8);
  ASSERT_EQ(g.model->uses_int8_weights(), weights == WeightFormat::kInt8);
  ASSERT_FALSE(g.model->uses_persistent_decode());
  const int V = g.model->config().vocab_size;
  std::mt19937 rng(37);
  std::uniform_int_distribution<int> tok(0, V - 1);
  double worst = 0, worst_f32 = 0;
  for (int batch : {4, 12, 24, 40, 1}) {
    std::vector<SequenceState> cpu_states, f32_states;
    std::vector<int> slots;
    for (int s = 0; s < batch; ++s) {
      cpu_states.push_back((*cpu_bf16)->NewState());
      f32_states.push_back((*cpu)->NewState());
      slots.push_back(*g.pool->Acquire());
    }
    for (int step = 0; step < 12; ++step) {
      std::vector<std::vector<int32_t>> toks(batch);
      std::vector<CpuModel::Segment> cs, fs;
      std::vector<CudaModel::Segment> gs;
      for (int s = 0; s < batch; ++s) {
        toks[s] = {tok(rng)};
        cs.push_back({toks[s], cpu_states[s].data.data(), false});
        fs.push_back({toks[s], f32_states[s].data.data(), false});
        gs.push_back({toks[s], slots[s], CudaModel::Logits::kLast});
      }
      std::vector<float> want, want_f32;
      ASSERT_TRUE((*cpu_bf16)->Forward(cs, &want).ok());
      ASSERT_TRUE((*cpu)->Forward(fs, &want_f32).ok());
      std::vector<int> first;
      ASSERT_TRUE(g.model->Forward(gs, g.states(), &first).ok());
      const auto got = g.Logits(batch);
      const double err = RelErr(got, want), err_f32 = RelErr(got, want_f32);
      EXPECT_LT(err, kDecodeStepsVsBf16ActivationsBound) << "batch " << batch << " step " << step;
      std::printf("[ measure ] options model (output gate %d), %s weights%s, batch %d step %d: logits rel err %.2e "
                  "(against fp32 activations %.2e)\n",
                  output_gate, WeightFormatName(weights), medium_rows > 0 ? " (medium-M kernel)" : "", batch, step, err,
                  err_f32);
      worst = std::max(worst, err);
      worst_f32 = std::max(worst_f32, err_f32);
    }
    for (int s = 0; s < batch; ++s) {
      EXPECT_LT(RelErr(g.State(slots[s]), cpu_states[s].data), kDecodeStepsVsBf16ActivationsBound)
          << "batch " << batch << " sequence " << s;
      g.pool->Release(slots[s]);
    }
  }
  std::printf("[ measure ] options model (output gate %d), %s weights%s, decode steps of 4, 12, 24, 40, 1: worst logits "
              "rel err %.2e (against fp32 activations %.2e)\n",
              output_gate, WeightFormatName(weights),
              medium_rows > 0 ? " (medium-M kernel)" : tuned_gemms ? " (tuned GEMMs)" : "", worst, worst_f32);
  // Batches 24 and 40 (graphs of 24 and 48 rows) run their projections as GEMMs.
  if (tuned_gemms) {
    EXPECT_GT(g.model->tuned_gemm_runs(), 0) << "no projection ran a tuned cuBLASLt algorithm";
  }
}

TEST_P(OptionsModel, ByteWeightsDecodeStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  for (WeightFormat weights : {WeightFormat::kFp8, WeightFormat::kInt8}) DecodeStepsMatchCpu(GetParam(), weights);
}

// The same steps with the 17-256-row projections in the medium-M kernel (batches 12 for bf16, 24
// and 40 for every format), against the same CPU and bound.
TEST_P(OptionsModel, MediumMKernelDecodeStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  for (WeightFormat weights : {WeightFormat::kNative, WeightFormat::kFp8, WeightFormat::kInt8})
    DecodeStepsMatchCpu(GetParam(), weights, cuda::kMediumMMaxRows);
}

// The same steps with the model's own bf16 weights: what the one-byte forms are to be compared with.
TEST_P(OptionsModel, NativeWeightsDecodeStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  DecodeStepsMatchCpu(GetParam(), WeightFormat::kNative);
}

// glad --gemm_tuning_cache: a first engine tunes its GEMMs (prefill steps of 64 rows, a power of two:
// tuned) and records the choices in the file; a second engine on the same file takes them without
// timing and gives the same logits and states to the bit, which two engines that each time their own
// need not (ExpectMixedStepsEqualToTheBit runs without tuning for that reason).
TEST_P(OptionsModel, TunedGemmsFromACacheGiveTheSameBits) {
  GLA_REQUIRE_CUDA_DEVICE();
  const std::string dir = OptionsModelDir(GetParam());
  const std::string cache = testing::MakeTempDir("cuda_gemm_cache") + "/gemms.cache";
  CudaModelOptions o = Options(512, true);
  o.paths.tuned_bf16_gemms = true;
  o.gemm_tuning_cache = cache;
  Gpu first = MakeGpu(dir, o, 4);
  if (!first.model) return;
  std::mt19937 rng(47);
  std::uniform_int_distribution<int> tok(0, first.model->config().vocab_size - 1);
  const std::vector<std::vector<int>> steps = {{40, 16, 8}, {32, 31, 1}};
  std::vector<std::vector<std::vector<int32_t>>> tokens;
  for (const auto& lengths : steps) {
    tokens.emplace_back();
    for (int n : lengths) {
      tokens.back().emplace_back(n);
      for (auto& t : tokens.back().back()) t = tok(rng);
    }
  }
  // Runs the steps on `g` (slots 0-2 from zero states); the logits of each step and the final states.
  auto run = [&](Gpu& g) {
    std::vector<std::vector<float>> out;
    std::vector<int> slots;
    for (int s = 0; s < 3; ++s) slots.push_back(*g.pool->Acquire());
    for (const auto& step : tokens) {
      std::vector<CudaModel::Segment> segs;
      for (size_t s = 0; s < step.size(); ++s) segs.push_back({step[s], slots[s], CudaModel::Logits::kLast});
      std::vector<int> first_row;
      EXPECT_TRUE(g.model->Forward(segs, g.states(), &first_row).ok());
      out.push_back(g.Logits(3));
    }
    for (int slot : slots) out.push_back(g.State(slot));
    return out;
  };
  const auto a = run(first);
  EXPECT_GT(first.model->tuned_gemm_plans(), 0);
  EXPECT_EQ(first.model->gemm_choices_from_cache(), 0);
  auto records = GemmTuningCache::Open(cache, cuda::TunedBf16Gemm::DeviceKey(0));
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(records->size(), first.model->tuned_gemm_plans()) << "every choice recorded";

  Gpu second = MakeGpu(dir, o, 4);
  ASSERT_TRUE(second.model);
  const auto b = run(second);
  EXPECT_EQ(second.model->gemm_choices_from_cache(), first.model->tuned_gemm_plans()) << "none timed again";
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(0, std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float))) << "output " << i;

  // A file that is not a cache is a load error, and is left as it was.
  const std::string other = testing::MakeTempDir("cuda_gemm_cache_other") + "/notes";
  { std::ofstream(other) << "notes\n"; }
  o.gemm_tuning_cache = other;
  auto ck = LoadCheckpoint(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto refused = CudaModel::FromCheckpoint(std::move(*ck), o);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  std::ifstream in(other);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "notes");
}

// The backend tunes every step size at load (CudaModel::TuneBf16GemmsForEveryStepSize): the decode
// buckets to the slots and the eager steps' powers of two and budget; a step afterwards tunes nothing.
TEST_P(OptionsModel, EveryStepSizeTunedAtLoad) {
  GLA_REQUIRE_CUDA_DEVICE();
  CudaModelOptions o = Options(512, true);
  o.paths.tuned_bf16_gemms = true;
  Gpu g = MakeGpu(OptionsModelDir(GetParam()), o, 24);
  if (!g.model) return;
  EXPECT_EQ(g.model->tuned_gemm_plans(), 0);
  ASSERT_TRUE(g.model->TuneBf16GemmsForEveryStepSize(24).ok());
  // Sizes above kSmallM (8) that a step tunes: buckets 16 and 24; 16, 32, 64, 128, 256 and 512;
  // four projections each (fewer where cuBLASLt does not take a projection's widths).
  const int sizes = 7, tuned = g.model->tuned_gemm_plans();
  EXPECT_GE(tuned, sizes);
  EXPECT_LE(tuned, 4 * sizes);
  std::mt19937 rng(53);
  std::uniform_int_distribution<int> tok(0, g.model->config().vocab_size - 1);
  std::vector<int> slots;
  std::vector<std::vector<int32_t>> toks(24);
  std::vector<CudaModel::Segment> segs;
  for (int s = 0; s < 24; ++s) {
    slots.push_back(*g.pool->Acquire());
    toks[s] = {tok(rng)};
    segs.push_back({toks[s], slots[s], CudaModel::Logits::kLast});
  }
  std::vector<int> first;
  ASSERT_TRUE(g.model->Forward(segs, g.states(), &first).ok());  // a decode graph of 24 rows
  EXPECT_EQ(g.model->tuned_gemm_plans(), tuned) << "nothing tuned at the step";
  // Without tuning it does nothing.
  CudaModelOptions plain = Options(512, true);
  plain.paths.tuned_bf16_gemms = false;
  Gpu p = MakeGpu(OptionsModelDir(GetParam()), plain, 4);
  ASSERT_TRUE(p.model->TuneBf16GemmsForEveryStepSize(4).ok());
  EXPECT_EQ(p.model->tuned_gemm_plans(), 0);
}

// And with the GEMMs of the graphs of 24 and 48 rows through cuBLASLt algorithms timed at those sizes.
TEST_P(OptionsModel, TunedGemmsDecodeStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  DecodeStepsMatchCpu(GetParam(), WeightFormat::kNative, 0, /*tuned_gemms=*/true);
}

INSTANTIATE_TEST_SUITE_P(OutputGate, OptionsModel, ::testing::Bool());

// The issue's accuracy bound on the GPU: --weights fp8 and int8 score the default model's held-out
// sample (models/gla-brown, 6,370 scored tokens) within 1% of the perplexity of its bf16 weights.
// Windows of 512 tokens: every projection of a window runs through the FP8 GEMM with FP8 inputs
// (INT8: the dequantized matrix's bf16 GEMM), the form prefill takes. (The CPU's numbers: 153.9014
// fp32, 154.0423 FP8 weights in fp32, 153.8935 INT8.)
TEST(ByteWeights, DefaultModelPerplexityWithinOnePercentOfBf16) {
  GLA_REQUIRE_CUDA_DEVICE();
  const std::string dir = std::string(GLA_SOURCE_DIR) + "/models/gla-brown";
  std::ifstream in(dir + "/heldout_sample.txt", std::ios::binary);
  ASSERT_TRUE(in.good()) << dir;
  std::stringstream text;
  text << in.rdbuf();
  auto perplexity = [&](WeightFormat weights) -> double {
    CudaModelOptions o = Options();
    o.weights = weights;
    Gpu g = MakeGpu(dir, o, 1);
    if (!g.model || g.model->tokenizer() == nullptr) {
      ADD_FAILURE() << "no model or tokenizer";
      return 0;
    }
    auto ids = g.model->tokenizer()->Encode(text.str(), /*add_bos=*/true);
    EXPECT_TRUE(ids.ok()) << ids.status();
    if (!ids.ok()) return 0;
    const int V = g.model->config().vocab_size, slot = *g.pool->Acquire();
    constexpr size_t kWindow = 512;
    double nll = 0;
    for (size_t begin = 0; begin + 1 < ids->size(); begin += kWindow) {
      const size_t end = std::min(begin + kWindow, ids->size() - 1);
      const CudaModel::Segment seg{std::span<const int32_t>(*ids).subspan(begin, end - begin), slot,
                                   CudaModel::Logits::kAll};
      std::vector<int> first;
      EXPECT_TRUE(g.model->Forward({&seg, 1}, g.states(), &first).ok());
      const auto logits = g.Logits(static_cast<int>(end - begin));
      for (size_t t = begin; t < end; ++t) {
        const float* row = logits.data() + (t - begin) * V;
        const float mx = *std::max_element(row, row + V);
        double z = 0;
        for (int i = 0; i < V; ++i) z += std::exp(static_cast<double>(row[i]) - mx);
        nll -= static_cast<double>(row[(*ids)[t + 1]]) - mx - std::log(z);
      }
    }
    return std::exp(nll / static_cast<double>(ids->size() - 1));
  };
  const double bf16 = perplexity(WeightFormat::kNative), fp8 = perplexity(WeightFormat::kFp8),
               int8 = perplexity(WeightFormat::kInt8);
  std::printf("[ measure ] gla-brown held-out perplexity on the GPU: bf16 weights %.4f, fp8 %.4f (%+.3f%%), int8 %.4f "
              "(%+.3f%%)\n",
              bf16, fp8, 100.0 * (fp8 / bf16 - 1.0), int8, 100.0 * (int8 / bf16 - 1.0));
  EXPECT_GT(bf16, 20.0);
  EXPECT_LT(bf16, 200.0);
  EXPECT_LE(std::fabs(fp8 / bf16 - 1.0), 0.01);
  EXPECT_LE(std::fabs(int8 / bf16 - 1.0), 0.01);
}

// What one-byte weights on the GPU refuse by name: an INT8 checkpoint under fp8 (its values would be
// rounded twice), a model whose projection inputs are not multiples of 16 values (hidden 72).
TEST(ByteWeights, RefusalsNameTheirReason) {
  GLA_REQUIRE_CUDA_DEVICE();
  auto load = [](const std::string& dir, WeightFormat w) {
    auto ck = LoadCheckpoint(dir);
    EXPECT_TRUE(ck.ok()) << ck.status();
    CudaModelOptions o = Options();
    o.weights = w;
    return CudaModel::FromCheckpoint(std::move(*ck), o).status();
  };
  // The one-byte kernel's row limit is 16 to 256 (kernels/linear.h).
  for (int rows : {15, 257}) {
    auto ck = LoadCheckpoint(testing::TinyModelDir());
    ASSERT_TRUE(ck.ok()) << ck.status();
    CudaModelOptions o = Options();
    o.weights = WeightFormat::kInt8;
    o.paths.byte_weight_kernel_rows = rows;
    const absl::Status st = CudaModel::FromCheckpoint(std::move(*ck), o).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("byte_weight_kernel_rows must be in [16, 256]"), std::string::npos) << st;
  }
  for (const char* format : {"", "fp8_", "int8_"})
    for (int rows : {-1, 257}) {  // the medium-M kernel's rows: 0 (never) to 256
      auto ck = LoadCheckpoint(testing::TinyModelDir());
      ASSERT_TRUE(ck.ok()) << ck.status();
      CudaModelOptions o = Options();
      const std::string f = format;
      ProjectionPaths& p = o.paths;
      int& field = f == "int8_" ? p.int8_medium_m_kernel_rows
                   : f == "fp8_"  ? p.fp8_medium_m_kernel_rows
                                  : p.medium_m_kernel_rows;
      field = rows;
      const absl::Status st = CudaModel::FromCheckpoint(std::move(*ck), o).status();
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
      EXPECT_NE(st.message().find(f + "medium_m_kernel_rows must be in [0, 256], not " + std::to_string(rows)),
                std::string::npos)
          << st;
    }
  {  // FP8's made rows: 0 (never) or a row count
    auto ck = LoadCheckpoint(testing::TinyModelDir());
    ASSERT_TRUE(ck.ok()) << ck.status();
    CudaModelOptions o = Options();
    o.weights = WeightFormat::kFp8;
    o.paths.fp8_made_rows_from = -1;
    const absl::Status st = CudaModel::FromCheckpoint(std::move(*ck), o).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("fp8_made_rows_from must be 0 (never) or a row count, not -1"), std::string::npos)
        << st;
  }
  const std::string q8 = testing::MakeTempDir("cuda_fp8_refusals") + "/int8";
  ASSERT_TRUE(WriteQuantizedCheckpoint(testing::TinyModelDir(), q8).ok());
  const absl::Status twice = load(q8, WeightFormat::kFp8);
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument) << twice;
  EXPECT_NE(twice.message().find("round them twice"), std::string::npos) << twice;
  const std::string odd = testing::MakeTempDir("cuda_fp8_odd_width");
  const auto s = testing::WriteRandomModel(odd, {R"({"model_type": "gla", "hidden_size": 72, "num_hidden_layers": 1,
    "num_heads": 1, "expand_k": 0.5, "expand_v": 1, "hidden_ratio": 4, "intermediate_size": 200, "vocab_size": 100,
    "norm_eps": 1e-6})", DType::kBF16, 3, 1});
  ASSERT_TRUE(s.ok()) << s;
  for (WeightFormat weights : {WeightFormat::kFp8, WeightFormat::kInt8}) {
    const absl::Status width = load(odd, weights);
    EXPECT_EQ(width.code(), absl::StatusCode::kInvalidArgument) << width;
    EXPECT_NE(width.message().find("multiple of 16"), std::string::npos) << width;
  }
  // A pre-quantized checkpoint of those widths is not refused under --weights native: it runs as
  // bf16 of its values, and the device line says so and why.
  const std::string odd_q8 = testing::MakeTempDir("cuda_int8_odd_width") + "/int8";
  ASSERT_TRUE(WriteQuantizedCheckpoint(odd, odd_q8).ok());
  auto backend = MakeCudaBackend(odd_q8, {});
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->weight_format(), WeightFormat::kNative);
  EXPECT_NE((*backend)->device().find(", bf16 weights from an int8 checkpoint (--weights int8 on the GPU needs every "
                                      "projection's input width to be a multiple of 16"),
            std::string::npos)
      << (*backend)->device();
}

// A LoRA adapter with random B (B = 0, PEFT's init, would be a no-op) of a trained adapter's
// strength: scale 1, logits moved by tens of percent. (Adapters that move them by 100% or more make
// this random model chaotic: rounding A alone to bf16 then moves the CPU's logits by up to 3%.)
std::shared_ptr<const LoraAdapter> RandomAdapter(const GlaConfig& config, const std::vector<std::string>& targets,
                                                 unsigned seed, int r = 4) {
  return std::make_shared<const LoraAdapter>(testing::RandomLoraAdapter(config, targets, seed, r, /*alpha=*/r, 0.2f));
}

// The CPU reference of what the GPU stores: A in bf16 (as the base weights are).
std::shared_ptr<const LoraAdapter> WithBf16A(const LoraAdapter& a) {
  auto q = std::make_shared<LoraAdapter>(a);
  for (auto& layer : q->layers)
    for (auto& pair : layer)
      if (pair.has_value())
        for (float& v : pair->a.data) v = __bfloat162float(__float2bfloat16(v));
  return q;
}

// Per-sequence adapters in mixed packed steps (two adapters, the base model, one adapter on two
// non-adjacent sequences; every target including both gate factors) against the CPU model, which
// is checked against the merged weights in adapter_serving_test; then more adapters than the
// cache holds, and an adapter of another model refused.
TEST_P(OptionsModel, AdaptersInMixedStepsMatchCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  const std::string dir = OptionsModelDir(GetParam());
  auto cpu = CpuModel::Load(dir);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  Gpu g = MakeGpu(dir, Options(512, true));
  if (!g.model) return;
  const GlaConfig& c = g.model->config();
  std::vector<std::string> all = {"q_proj", "k_proj", "v_proj", "o_proj", "gk_proj", "gate_proj", "up_proj", "down_proj"};
  if (c.use_output_gate) all.push_back("g_proj");
  const auto a = RandomAdapter(c, all, 1, 8), b = RandomAdapter(c, {"v_proj", "down_proj"}, 2, 5);
  const std::vector<std::shared_ptr<const LoraAdapter>> per_seq = {a, nullptr, b, a};
  const auto a_ref = WithBf16A(*a), b_ref = WithBf16A(*b);
  const std::vector<const LoraAdapter*> per_seq_ref = {a_ref.get(), nullptr, b_ref.get(), a_ref.get()};
  const int V = c.vocab_size, kSeqs = 4;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> tok(0, V - 1);
  std::vector<SequenceState> cpu_states, base_states;
  std::vector<int> slots;
  for (int s = 0; s < kSeqs; ++s) {
    cpu_states.push_back((*cpu)->NewState());
    base_states.push_back((*cpu)->NewState());
    slots.push_back(*g.pool->Acquire());
  }
  const std::vector<std::vector<int>> steps = {{7, 64, 1, 130}, {1, 1, 63, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}};
  double worst = 0, base_gap = 1;
  for (size_t k = 0; k < steps.size(); ++k) {
    std::vector<std::vector<int32_t>> toks;
    for (int n : steps[k]) {
      toks.emplace_back(n);
      for (auto& t : toks.back()) t = tok(rng);
    }
    std::vector<CpuModel::Segment> cs, base;
    std::vector<CudaModel::Segment> gs;
    for (int s = 0; s < kSeqs; ++s) {
      cs.push_back({toks[s], cpu_states[s].data.data(), false, per_seq_ref[s]});
      base.push_back({toks[s], base_states[s].data.data(), false, nullptr});
      gs.push_back({toks[s], slots[s], CudaModel::Logits::kLast, per_seq[s]});
    }
    std::vector<float> want, want_base;
    ASSERT_TRUE((*cpu)->Forward(cs, &want).ok());
    ASSERT_TRUE((*cpu)->Forward(base, &want_base).ok());
    std::vector<int> first;
    ASSERT_TRUE(g.model->Forward(gs, g.states(), &first).ok());
    const auto got = g.Logits(kSeqs);
    for (int s = 0; s < kSeqs; ++s) {
      const std::vector<float> gs_row(got.begin() + s * V, got.begin() + (s + 1) * V),
          want_row(want.begin() + s * V, want.begin() + (s + 1) * V),
          base_row(want_base.begin() + s * V, want_base.begin() + (s + 1) * V);
      const double err = RelErr(gs_row, want_row);
      worst = std::max(worst, err);
      EXPECT_LT(err, kBf16Bound) << "step " << k << " sequence " << s;
      EXPECT_LT(RelErr(g.State(slots[s]), cpu_states[s].data), kBf16Bound) << "step " << k << " sequence " << s;
      if (per_seq[s] != nullptr) base_gap = std::min(base_gap, RelErr(want_row, base_row));
    }
  }
  EXPECT_GT(base_gap, 5 * kBf16Bound) << "the adapters must change the logits for this test to mean anything";
  std::printf("[ measure ] adapters (output gate %d): logits rel err %.2e (adapters move them by >= %.2e)\n",
              GetParam(), worst, base_gap);

  // More adapters than the cache keeps, one step each, twice: the second pass re-uploads the
  // evicted ones and must give bit-identical logits (same data, same kernels); the first pass is
  // also checked against the CPU, loosely: a random adapter can make this random model amplify the
  // bf16 rounding (up to 6% measured on some of these 40 adapters; the bound above is for the
  // adapters in mixed steps), and what this loop adds is the cache.
  std::vector<std::shared_ptr<const LoraAdapter>> many;
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<float>> first_pass;
  double worst_loop = 0;
  for (int i = 0; i < 20; ++i) {
    many.push_back(RandomAdapter(c, {"q_proj", "gk_proj"}, 100 + i, 1 + i % 5));
    inputs.push_back({static_cast<int32_t>(tok(rng)), static_cast<int32_t>(tok(rng))});
  }
  for (int pass = 0; pass < 2; ++pass)
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(g.pool->Zero(slots[0]).ok());
      const CudaModel::Segment gseg{inputs[i], slots[0], CudaModel::Logits::kLast, many[i]};
      std::vector<int> first;
      ASSERT_TRUE(g.model->Forward(std::span<const CudaModel::Segment>(&gseg, 1), g.states(), &first).ok());
      const std::vector<float> got = g.Logits(1);
      if (pass == 1) {
        EXPECT_EQ(got, first_pass[i]) << "adapter " << i << " after the cache evicted and re-uploaded it";
        continue;
      }
      first_pass.push_back(got);
      SequenceState st = (*cpu)->NewState();
      const auto ref = WithBf16A(*many[i]);
      const CpuModel::Segment cseg{inputs[i], st.data.data(), false, ref.get()};
      std::vector<float> want;
      ASSERT_TRUE((*cpu)->Forward(std::span<const CpuModel::Segment>(&cseg, 1), &want).ok());
      const double err = RelErr(got, want);
      worst_loop = std::max(worst_loop, err);
      EXPECT_LT(err, 0.1) << "adapter " << i;
    }
  EXPECT_EQ(g.model->cached_adapters(), 16);
  std::printf("[ measure ] 20 adapters in turn (ranks 1-5): logits rel err <= %.2e; the same after re-upload\n",
              worst_loop);

  // An adapter for a model with another layer count is refused by the step, which enqueues nothing.
  auto other = std::make_shared<LoraAdapter>(*a);
  other->layers.pop_back();
  const std::vector<int32_t> t = {1, 2};
  const CudaModel::Segment bad{t, slots[1], CudaModel::Logits::kLast, other};
  std::vector<int> first;
  const absl::Status st = g.model->Forward(std::span<const CudaModel::Segment>(&bad, 1), g.states(), &first);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("layers"), std::string::npos) << st;
}

// The persistent batch-1 decode kernel (kernels/persistent_decode.h) against the kernel-per-operation
// path and the CPU model, on the three head sizes it takes (dk 64 / 128 / 256), with GQA, the
// clamp and no output gate on one shape: a prompt prefilled on each (the same path), then decode
// steps one token at a time, logits and states after each. Both GPU paths round activations to bf16
// at the same points and differ in the order of the sums, which moves a bf16 rounding now and then
// (on the H200, 2026-12-04: states within 2e-3, logits within 6e-3 of each other): bound 1e-2,
// half the bf16 bound; against the CPU model (fp32), the bf16 bound. A step without logits (no
// head) advances the state the same way.
std::string PersistentShapeDir(int variant) {
  const std::string dir = testing::MakeTempDir("persistent_decode_model_" + std::to_string(variant));
  const char* shapes[] = {
      R"("hidden_size": 512, "num_heads": 4, "expand_k": 0.5, "expand_v": 1, "use_output_gate": true)",
      R"("hidden_size": 512, "num_heads": 2, "expand_k": 0.5, "expand_v": 1, "use_output_gate": true)",
      R"("hidden_size": 1024, "num_heads": 4, "num_kv_heads": 2, "expand_k": 1, "expand_v": 1, "use_output_gate": false,
          "clamp_min": -3.0)"};
  const std::string config = std::string(R"({"model_type": "gla", "num_hidden_layers": 3, "hidden_ratio": 4,
    "intermediate_size": null, "use_short_conv": false, "vocab_size": 1000, "norm_eps": 1e-6, )") + shapes[variant] + "}";
  const auto s = testing::WriteRandomModel(dir, {config, DType::kBF16, 7u + variant, 1});
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

// With bf16 states (the second parameter) both GPU paths and the CPU round the states at each
// step's end, each from its own fp32 values, which already differ by up to the bf16 bound (these
// random models are sensitive: fp32 states reach 1.7e-2 against the CPU): a value on either side of
// a rounding boundary lands a bf16 step (2^-8) apart, and that difference is carried into the next
// steps. Against the CPU the bound is then 3e-2 (H100, 2026-12-05: worst 2.3e-2 over the three
// shapes); the two GPU paths stay within kPathsBound of each other as with fp32 states (5.8e-3).
// With FP8 or INT8 weights (the third parameter) both GPU paths and the CPU model hold the same
// one-byte rows; the kernel streams them as they lie and scales each row's sum once, as the
// per-operation path's one-row kernels do: the same bounds.
class PersistentDecode : public ::testing::TestWithParam<std::tuple<int, StateDType, WeightFormat>> {};
constexpr double kPathsBound = 1e-2;
constexpr double kBf16StatesVsCpuBound = 3e-2;

TEST_P(PersistentDecode, StepsMatchTheKernelPerOperationPathAndTheCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  const auto [shape, dtype, weights] = GetParam();
  const std::string dir = PersistentShapeDir(shape);
  auto cpu = CpuModelWithStates(dir, dtype, weights);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  CudaModelOptions on = Options(), off = Options();
  on.weights = off.weights = weights;
  off.persistent_decode = false;
  Gpu a = MakeGpu(dir, on, 8, dtype), b = MakeGpu(dir, off, 8, dtype);
  if (!a.model || !b.model) return;
  ASSERT_TRUE(a.model->uses_persistent_decode()) << "dk " << a.model->config().head_k_dim << " on " << a.model->device_name();
  ASSERT_FALSE(b.model->uses_persistent_decode());
  const int V = a.model->config().vocab_size;
  std::mt19937 rng(5 + shape);
  std::uniform_int_distribution<int> tok(0, V - 1);
  // FP8: a prompt of 16 tokens, prefilled by the decode-sized projections (bf16 inputs, as the
  // CPU's fp32), not the FP8 GEMM, whose FP8 inputs OptionsModel.Fp8WeightsMixedPackedStepsMatchCpu
  // bounds on its own.
  std::vector<int32_t> prompt(weights == WeightFormat::kFp8 ? 16 : 37);
  for (auto& t : prompt) t = tok(rng);
  const int sa = *a.pool->Acquire(), sb = *b.pool->Acquire();
  SequenceState cs = (*cpu)->NewState();
  std::vector<int> first;
  std::vector<float> want;
  const CudaModel::Segment pa{prompt, sa, CudaModel::Logits::kLast}, pb{prompt, sb, CudaModel::Logits::kLast};
  ASSERT_TRUE(a.model->Forward({&pa, 1}, a.states(), &first).ok());
  ASSERT_TRUE(b.model->Forward({&pb, 1}, b.states(), &first).ok());
  const CpuModel::Segment pc{prompt, cs.data.data(), false};
  ASSERT_TRUE((*cpu)->Forward({&pc, 1}, &want).ok());
  // One-byte weights against the CPU with the same weights: 2.15-2.30% measured on the H100
  // (2026-12-06) where bf16 weights measured 1.06-1.71% on their models (other weights, other
  // conditioning; the per-operation path, which holds the kernel to 1e-2, measured the same).
  const double cpu_bound = dtype == StateDType::kBF16 || weights != WeightFormat::kNative ? kBf16StatesVsCpuBound
                                                                                          : kBf16Bound;
  double worst_gpu = 0, worst_cpu = 0;
  for (int step = 0; step < 12; ++step) {
    const std::vector<int32_t> one = {tok(rng)};
    const auto logits = step == 5 ? CudaModel::Logits::kNone : CudaModel::Logits::kLast;
    const CudaModel::Segment ga{one, sa, logits}, gb{one, sb, logits};
    ASSERT_TRUE(a.model->Forward({&ga, 1}, a.states(), &first).ok());
    ASSERT_TRUE(b.model->Forward({&gb, 1}, b.states(), &first).ok());
    const CpuModel::Segment c1{one, cs.data.data(), false};
    want.clear();  // Forward appends
    ASSERT_TRUE((*cpu)->Forward({&c1, 1}, &want).ok());
    const auto sa_now = a.State(sa), sb_now = b.State(sb);
    const double state_gpu = RelErr(sa_now, sb_now), state_cpu = RelErr(sa_now, cs.data);
    EXPECT_LT(state_gpu, kPathsBound) << "step " << step;
    EXPECT_LT(state_cpu, cpu_bound) << "step " << step;
    worst_gpu = std::max(worst_gpu, state_gpu);
    worst_cpu = std::max(worst_cpu, state_cpu);
    if (logits == CudaModel::Logits::kNone) continue;
    const auto la = a.Logits(1), lb = b.Logits(1);
    const double gpu = RelErr(la, lb), vs_cpu = RelErr(la, want);
    EXPECT_LT(gpu, kPathsBound) << "step " << step;
    EXPECT_LT(vs_cpu, cpu_bound) << "step " << step;
    worst_gpu = std::max(worst_gpu, gpu);
    worst_cpu = std::max(worst_cpu, vs_cpu);
  }
  std::printf("[ measure ] persistent decode, shape %d (dk %d, %s states, %s weights): worst rel err vs the "
              "per-operation path %.2e, vs the CPU %.2e\n",
              shape, a.model->config().head_k_dim, StateDTypeName(dtype), WeightFormatName(weights), worst_gpu,
              worst_cpu);
}

INSTANTIATE_TEST_SUITE_P(HeadShapes, PersistentDecode,
                         ::testing::Combine(::testing::Values(0, 1, 2),
                                            ::testing::Values(StateDType::kF32, StateDType::kBF16),
                                            ::testing::Values(WeightFormat::kNative)));
INSTANTIATE_TEST_SUITE_P(ByteWeights, PersistentDecode,
                         ::testing::Combine(::testing::Values(0, 1, 2), ::testing::Values(StateDType::kF32),
                                            ::testing::Values(WeightFormat::kFp8, WeightFormat::kInt8)));

// The batched persistent kernel (kernels/cuda/persistent_decode_batched.cu: 2-8 sequences, the
// projections on tensor cores) against the kernel-per-operation path (a captured graph) and the CPU
// model: B sequences with prompts of different lengths, then decode steps of all B at once, every
// sequence's logits and state after each; one step without logits. Against the per-operation path
// the batch-1 bound (the same rounding points, the sums in another order: worst 7.5e-3 over the 12
// cases on an H100, 2026-12-07). Against the CPU the bound of bf16 states and one-byte weights on
// these sensitive random models (a bf16 rounding that flips is carried into the next steps): with
// 2-8 sequences per model the worst of them came to 2.00e-2 and 2.03e-2 at batch 5 (fp32 states,
// native weights), over the 2e-2 the batch-1 test keeps, while the same steps stayed within 6.4e-3
// of the per-operation path. The steps must have taken the kernel.
class PersistentDecodeBatched
    : public ::testing::TestWithParam<std::tuple<int, int, StateDType, WeightFormat>> {};

// The body of the batched tests: tile_bytes / tiles_in_flight -1 keep the engine's defaults; blocks
// 0 is one block per SM (CudaModelOptions::persistent_blocks); early_state -1 the engine's default,
// 0 / 1 CudaModelOptions::persistent_early_state_loads off / on.
void BatchedStepsMatch(int shape, int batch, StateDType dtype, WeightFormat weights, int tile_bytes,
                       int tiles_in_flight, int blocks = 0, int early_state = -1, int tagged = 0) {
  GLA_REQUIRE_CUDA_DEVICE();
  const std::string dir = PersistentShapeDir(shape);
  auto cpu = CpuModelWithStates(dir, dtype, weights);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  CudaModelOptions on = Options(), off = Options();
  on.weights = off.weights = weights;
  on.persistent_decode_max_batch = cuda::kPersistentMaxBatch;
  if (tile_bytes >= 0) on.persistent_tile_bytes = tile_bytes;
  if (tiles_in_flight >= 0) on.persistent_tiles_in_flight = tiles_in_flight;
  on.persistent_blocks = blocks;
  if (early_state >= 0) on.persistent_early_state_loads = early_state == 1;
  on.persistent_tagged_exchange = tagged;
  on.persistent_tagged_batched = tagged > 0;
  off.persistent_decode = false;
  Gpu a = MakeGpu(dir, on, 8, dtype), b = MakeGpu(dir, off, 8, dtype);
  if (!a.model || !b.model) return;
  ASSERT_EQ(a.model->persistent_decode_batch(), cuda::kPersistentMaxBatch)
      << "dk " << a.model->config().head_k_dim << " on " << a.model->device_name();
  ASSERT_EQ(b.model->persistent_decode_batch(), 0);
  ASSERT_EQ(a.model->tagged_exchange(), tagged) << "the shapes should allow tagged exchanges";
  const int V = a.model->config().vocab_size;
  std::mt19937 rng(11 + shape + 100 * batch);
  std::uniform_int_distribution<int> tok(0, V - 1);
  std::vector<int> sa(batch), sb(batch);
  std::vector<SequenceState> cs;
  std::vector<int> first;
  std::vector<float> want;
  for (int i = 0; i < batch; ++i) {  // prompts of 9 + 5 i tokens (16 with FP8: see PersistentDecode)
    std::vector<int32_t> prompt(weights == WeightFormat::kFp8 ? 16 : 9 + 5 * i);
    for (auto& t : prompt) t = tok(rng);
    sa[i] = *a.pool->Acquire();
    sb[i] = *b.pool->Acquire();
    cs.push_back((*cpu)->NewState());
    const CudaModel::Segment pa{prompt, sa[i], CudaModel::Logits::kLast}, pb{prompt, sb[i], CudaModel::Logits::kLast};
    ASSERT_TRUE(a.model->Forward({&pa, 1}, a.states(), &first).ok());
    ASSERT_TRUE(b.model->Forward({&pb, 1}, b.states(), &first).ok());
    const CpuModel::Segment pc{prompt, cs[i].data.data(), false};
    ASSERT_TRUE((*cpu)->Forward({&pc, 1}, &want).ok());
  }
  const double cpu_bound = kBf16StatesVsCpuBound;
  const int64_t steps_before = a.model->persistent_steps(), tagged_before = a.model->tagged_steps();
  constexpr int kSteps = 8;
  double worst_gpu = 0, worst_cpu = 0;
  for (int step = 0; step < kSteps; ++step) {
    const auto logits = step == 3 ? CudaModel::Logits::kNone : CudaModel::Logits::kLast;
    std::vector<std::vector<int32_t>> tokens(batch);
    std::vector<CudaModel::Segment> ga, gb;
    std::vector<CpuModel::Segment> gc;
    for (int i = 0; i < batch; ++i) {
      tokens[i] = {tok(rng)};
      ga.push_back({tokens[i], sa[i], logits});
      gb.push_back({tokens[i], sb[i], logits});
      gc.push_back({tokens[i], cs[i].data.data(), false});
    }
    ASSERT_TRUE(a.model->Forward(ga, a.states(), &first).ok());
    ASSERT_TRUE(b.model->Forward(gb, b.states(), &first).ok());
    want.clear();  // Forward appends: a row per segment
    ASSERT_TRUE((*cpu)->Forward(gc, &want).ok());
    for (int i = 0; i < batch; ++i) {
      const auto sa_now = a.State(sa[i]), sb_now = b.State(sb[i]);
      const double state_gpu = RelErr(sa_now, sb_now), state_cpu = RelErr(sa_now, cs[i].data);
      EXPECT_LT(state_gpu, kPathsBound) << "step " << step << " sequence " << i;
      EXPECT_LT(state_cpu, cpu_bound) << "step " << step << " sequence " << i;
      worst_gpu = std::max(worst_gpu, state_gpu);
      worst_cpu = std::max(worst_cpu, state_cpu);
    }
    if (logits == CudaModel::Logits::kNone) continue;
    const auto la = a.Logits(batch), lb = b.Logits(batch);
    for (int i = 0; i < batch; ++i) {
      const auto row = [&](const std::vector<float>& l) {
        return std::vector<float>(l.begin() + static_cast<int64_t>(i) * V, l.begin() + static_cast<int64_t>(i + 1) * V);
      };
      const double gpu = RelErr(row(la), row(lb)), vs_cpu = RelErr(row(la), row(want));
      EXPECT_LT(gpu, kPathsBound) << "step " << step << " sequence " << i;
      EXPECT_LT(vs_cpu, cpu_bound) << "step " << step << " sequence " << i;
      worst_gpu = std::max(worst_gpu, gpu);
      worst_cpu = std::max(worst_cpu, vs_cpu);
    }
  }
  EXPECT_EQ(a.model->persistent_steps() - steps_before, kSteps) << "the decode steps did not take the kernel";
  // Tagged steps: every one at batch 1; batched ones with x and act as tagged words (not at level 3).
  const bool tagged_steps = tagged > 0 && (batch == 1 || tagged != 3);
  EXPECT_EQ(a.model->tagged_steps() - tagged_before, tagged_steps ? kSteps : 0) << "which kernel the steps took";
  std::printf("[ measure ] batched persistent decode, shape %d (dk %d), batch %d, %s states, %s weights, tiles %d B "
              "x %d in flight, blocks %d, early state loads %d, tagged %d: worst rel err vs the per-operation path %.2e, "
              "vs the CPU %.2e\n",
              shape, a.model->config().head_k_dim, batch, StateDTypeName(dtype), WeightFormatName(weights),
              on.persistent_tile_bytes, on.persistent_tiles_in_flight, blocks, int{on.persistent_early_state_loads},
              tagged, worst_gpu, worst_cpu);
}

TEST_P(PersistentDecodeBatched, StepsMatchTheKernelPerOperationPathAndTheCpu) {
  const auto [shape, batch, dtype, weights] = GetParam();
  BatchedStepsMatch(shape, batch, dtype, weights, -1, -1);
}

INSTANTIATE_TEST_SUITE_P(HeadShapes, PersistentDecodeBatched,
                         ::testing::Combine(::testing::Values(0, 1, 2), ::testing::Values(2, 5, 8),
                                            ::testing::Values(StateDType::kF32), ::testing::Values(WeightFormat::kNative)));
INSTANTIATE_TEST_SUITE_P(Bf16StatesAndByteWeights, PersistentDecodeBatched,
                         ::testing::Values(std::make_tuple(0, 8, StateDType::kBF16, WeightFormat::kNative),
                                           std::make_tuple(2, 3, StateDType::kF32, WeightFormat::kFp8),
                                           std::make_tuple(1, 8, StateDType::kF32, WeightFormat::kInt8)));

// Both persistent kernels with other weight tiles than the engine's (PersistentDecodeParams::
// tile_bytes: finer tiles, so more warps a row and more segments a row; tiles_in_flight: 0 is the
// whole ring): the same bounds. Parameters: shape, batch (1: the batch-1 kernel), tile bytes, in flight.
class PersistentDecodeTiles : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(PersistentDecodeTiles, StepsMatchTheKernelPerOperationPathAndTheCpu) {
  const auto [shape, batch, tile_bytes, in_flight] = GetParam();
  BatchedStepsMatch(shape, batch, StateDType::kF32, WeightFormat::kNative, tile_bytes, in_flight);
}

// Out-of-range tile options are refused when the model is made, not at each step.
TEST(PersistentDecodeTilesOptions, OutOfRangeAreRefusedAtLoad) {
  GLA_REQUIRE_CUDA_DEVICE();
  const std::string dir = PersistentShapeDir(0);
  struct Bad {
    int tile_bytes, in_flight, blocks, tagged = 0;
  };
  for (const Bad& bad : {Bad{1000, 1, 0}, Bad{2560, 1, 0}, Bad{99328, 1, 0}, Bad{0, -1, 0}, Bad{0, 17, 0},
                         Bad{0, 1, -1}, Bad{0, 1, cuda::kPersistentMaxBlocks + 1}, Bad{0, 1, 0, -1}, Bad{0, 1, 0, 4}}) {
    CudaModelOptions o = Options();
    o.persistent_tile_bytes = bad.tile_bytes;
    o.persistent_tiles_in_flight = bad.in_flight;
    o.persistent_blocks = bad.blocks;
    o.persistent_tagged_exchange = bad.tagged;
    auto ck = LoadCheckpoint(dir);
    ASSERT_TRUE(ck.ok()) << ck.status();
    const auto m = CudaModel::FromCheckpoint(std::move(*ck), o);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << bad.tile_bytes << " / " << bad.in_flight << " / " << bad.blocks << " / " << bad.tagged;
  }
}

// A forced chunkwise prefill plan out of range (CudaModelOptions::prefill_chunk_segments /
// prefill_chunk_split_prep, a benchmark's knobs) is refused when the model is made.
TEST(ChunkPlanOptions, OutOfRangeAreRefusedAtLoad) {
  GLA_REQUIRE_CUDA_DEVICE();
  for (const auto& [segments, split] : {std::pair{-1, 0}, std::pair{kChunkMaxSegments + 1, 0}, std::pair{0, -1},
                                         std::pair{0, 3}}) {
    CudaModelOptions o = Options();
    o.prefill_chunk_segments = segments;
    o.prefill_chunk_split_prep = split;
    auto ck = LoadCheckpoint(PersistentShapeDir(0));
    ASSERT_TRUE(ck.ok()) << ck.status();
    const auto m = CudaModel::FromCheckpoint(std::move(*ck), o);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << segments << " / " << split;
  }
}

// Both persistent kernels on grids smaller than one block per SM (CudaModelOptions::persistent_blocks):
// a block then takes several state items a layer (these models have 32-64 items), which one block
// per SM never does, and owns more rows of each matrix. Parameters: shape, batch, blocks.
class PersistentDecodeGrids : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(PersistentDecodeGrids, StepsMatchTheKernelPerOperationPathAndTheCpu) {
  const auto [shape, batch, blocks] = GetParam();
  BatchedStepsMatch(shape, batch, StateDType::kF32, WeightFormat::kNative, -1, -1, blocks);
}

// Both kernels with the first state item's loads where they were before early_state_loads (after
// in_proj), on the three head shapes and on a grid where blocks take several items (the later
// items' loads are the same either way). Parameters: shape, batch, blocks.
class PersistentDecodeLateStateLoads : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(PersistentDecodeLateStateLoads, StepsMatchTheKernelPerOperationPathAndTheCpu) {
  const auto [shape, batch, blocks] = GetParam();
  BatchedStepsMatch(shape, batch, StateDType::kF32, WeightFormat::kNative, -1, -1, blocks, 0);
}

INSTANTIATE_TEST_SUITE_P(ThreeShapes, PersistentDecodeLateStateLoads,
                         ::testing::Values(std::make_tuple(0, 1, 0), std::make_tuple(1, 1, 0), std::make_tuple(2, 1, 0),
                                           std::make_tuple(0, 1, 16), std::make_tuple(2, 4, 0),
                                           std::make_tuple(1, 3, 16)));

// The residual stream and activations exchanged as tagged words instead of through three of the five
// grid barriers a layer (CudaModelOptions::persistent_tagged_exchange 1), and at batch 1 in_proj's
// values too (2: four of five) or alone (3: one of five; the batched kernel, with
// persistent_tagged_batched, takes 2 as 1 and 3 as 0), on the three head shapes, on a grid
// of 16 blocks (each block writing more of each exchange, and taking two state items) and through the
// batched kernel; eight steps, each with new tags over the words the step before left, one of them
// without logits (no final norm: the last exchange waited on by nobody). Parameters: shape, blocks,
// level (1-3), batch.
class PersistentDecodeTagged : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(PersistentDecodeTagged, StepsMatchTheKernelPerOperationPathAndTheCpu) {
  const auto [shape, blocks, level, batch] = GetParam();
  BatchedStepsMatch(shape, batch, StateDType::kF32, WeightFormat::kNative, -1, -1, blocks, -1, level);
}

// The tagged words carry the very floats the barrier kernel reads from p.x and p.act (x as stored,
// act as the bf16 it rounds to), and the norms add the same products in the same order: the two
// kernels' logits and states are equal to the bit, step after step, for every sequence of the batch.
TEST_P(PersistentDecodeTagged, EqualsTheBarrierKernelToTheBit) {
  GLA_REQUIRE_CUDA_DEVICE();
  const auto [shape, blocks, level, batch] = GetParam();
  const std::string dir = PersistentShapeDir(shape);
  CudaModelOptions on = Options(), off = Options();
  on.persistent_tagged_exchange = level;
  on.persistent_tagged_batched = true;
  off.persistent_tagged_exchange = 0;
  on.persistent_blocks = off.persistent_blocks = blocks;
  on.persistent_decode_max_batch = off.persistent_decode_max_batch = cuda::kPersistentMaxBatch;
  Gpu a = MakeGpu(dir, on, 8, StateDType::kF32), b = MakeGpu(dir, off, 8, StateDType::kF32);
  if (!a.model || !b.model) return;
  ASSERT_EQ(a.model->tagged_exchange(), level) << "on " << a.model->device_name();
  ASSERT_TRUE(b.model->uses_persistent_decode());
  ASSERT_GE(b.model->persistent_decode_batch(), batch);
  ASSERT_EQ(b.model->tagged_exchange(), 0);
  const int V = a.model->config().vocab_size;
  std::mt19937 rng(29 + shape + 100 * batch);
  std::uniform_int_distribution<int> tok(0, V - 1);
  std::vector<int> sa(batch), sb(batch);
  std::vector<int> first;
  for (int i = 0; i < batch; ++i) {
    std::vector<int32_t> prompt(13 + 3 * i);
    for (auto& t : prompt) t = tok(rng);
    sa[i] = *a.pool->Acquire();
    sb[i] = *b.pool->Acquire();
    const CudaModel::Segment pa{prompt, sa[i], CudaModel::Logits::kLast}, pb{prompt, sb[i], CudaModel::Logits::kLast};
    ASSERT_TRUE(a.model->Forward({&pa, 1}, a.states(), &first).ok());
    ASSERT_TRUE(b.model->Forward({&pb, 1}, b.states(), &first).ok());
  }
  const int64_t before = a.model->persistent_steps(), tagged_before = a.model->tagged_steps();
  ASSERT_EQ(b.model->tagged_steps(), 0);
  constexpr int kSteps = 6;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<std::vector<int32_t>> tokens(batch);
    std::vector<CudaModel::Segment> ga, gb;
    for (int i = 0; i < batch; ++i) {
      tokens[i] = {tok(rng)};
      ga.push_back({tokens[i], sa[i], CudaModel::Logits::kLast});
      gb.push_back({tokens[i], sb[i], CudaModel::Logits::kLast});
    }
    ASSERT_TRUE(a.model->Forward(ga, a.states(), &first).ok());
    ASSERT_TRUE(b.model->Forward(gb, b.states(), &first).ok());
    EXPECT_EQ(a.Logits(batch), b.Logits(batch)) << "step " << step;
    for (int i = 0; i < batch; ++i) EXPECT_EQ(a.State(sa[i]), b.State(sb[i])) << "step " << step << " sequence " << i;
  }
  EXPECT_EQ(a.model->persistent_steps() - before, kSteps) << "the decode steps did not take the kernel";
  EXPECT_EQ(a.model->tagged_steps() - tagged_before, batch == 1 || level != 3 ? kSteps : 0)
      << "the steps did not take the tagged kernel";
  EXPECT_EQ(b.model->tagged_steps(), 0) << "the barrier model's steps took the tagged kernel";
}

INSTANTIATE_TEST_SUITE_P(ThreeShapes, PersistentDecodeTagged,
                         ::testing::Values(std::make_tuple(0, 0, 1, 1), std::make_tuple(1, 0, 1, 1),
                                           std::make_tuple(2, 0, 1, 1), std::make_tuple(2, 16, 1, 1),
                                           std::make_tuple(0, 0, 2, 1), std::make_tuple(1, 0, 2, 1),
                                           std::make_tuple(2, 0, 2, 1), std::make_tuple(2, 16, 2, 1),
                                           std::make_tuple(0, 0, 3, 1), std::make_tuple(1, 0, 3, 1),
                                           std::make_tuple(2, 0, 3, 1), std::make_tuple(2, 16, 3, 1)));
INSTANTIATE_TEST_SUITE_P(Batched, PersistentDecodeTagged,
                         ::testing::Values(std::make_tuple(0, 0, 1, 2), std::make_tuple(1, 0, 1, 4),
                                           std::make_tuple(2, 0, 1, 8), std::make_tuple(2, 16, 1, 3),
                                           std::make_tuple(1, 0, 2, 5)));

INSTANTIATE_TEST_SUITE_P(Smaller, PersistentDecodeGrids,
                         ::testing::Values(std::make_tuple(0, 1, 16), std::make_tuple(2, 1, 20),
                                           std::make_tuple(1, 4, 16), std::make_tuple(2, 8, 24),
                                           std::make_tuple(0, 3, 66)));

INSTANTIATE_TEST_SUITE_P(FinerAndWhole, PersistentDecodeTiles,
                         ::testing::Values(std::make_tuple(2, 1, 8192, 2), std::make_tuple(0, 1, 2048, 3),
                                           std::make_tuple(1, 1, 0, 0), std::make_tuple(2, 4, 16384, 3),
                                           std::make_tuple(0, 5, 2048, 1), std::make_tuple(1, 8, 0, 0)));
// Larger than the kernels' own: batch 1's ring in 3 stages of 64 KiB (up to 32 rows a tile), 2 of 96
// KiB, 5 of 33 KiB; the batched kernel keeps its own segments.
INSTANTIATE_TEST_SUITE_P(Larger, PersistentDecodeTiles,
                         ::testing::Values(std::make_tuple(2, 1, 65536, 1), std::make_tuple(0, 1, 98304, 2),
                                           std::make_tuple(1, 1, 33792, 0), std::make_tuple(2, 4, 65536, 1)));

TEST(CudaModel, BadInputIsRejectedAndChangesNothing) {
  GLA_REQUIRE_CUDA_DEVICE();
  Gpu g = MakeGpu(testing::TinyModelDir(), Options(64));
  if (!g.model) return;
  const int slot = *g.pool->Acquire();
  const std::vector<int32_t> warm = {1, 2, 3};
  std::vector<int> first;
  const CudaModel::Segment w{warm, slot, CudaModel::Logits::kLast};
  ASSERT_TRUE(g.model->Forward({&w, 1}, g.states(), &first).ok());
  const auto before = g.State(slot);
  const std::vector<int32_t> bad = {1, 512}, empty, long_prompt(65, 1);
  const int other = *g.pool->Acquire();
  const std::vector<std::vector<CudaModel::Segment>> cases = {
      {{bad, slot, CudaModel::Logits::kLast}},                                      // id outside the vocabulary
      {{empty, slot, CudaModel::Logits::kLast}},                                    // empty segment
      {{warm, slot, CudaModel::Logits::kLast}, {warm, slot, CudaModel::Logits::kLast}},  // one slot twice
      {{long_prompt, slot, CudaModel::Logits::kLast}},                              // larger than max_tokens
      {{warm, other, CudaModel::Logits::kLast}, {bad, slot, CudaModel::Logits::kLast}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto s = g.model->Forward(cases[i], g.states(), &first);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "case " << i << ": " << s;
  }
  EXPECT_EQ(g.State(slot), before);
}

TEST(GpuStatePool, ForkZeroAndBudget) {
  GLA_REQUIRE_CUDA_DEVICE();
  Gpu g = MakeGpu(testing::TinyModelDir(), Options(64), 3);
  if (!g.model) return;
  const Expected e = LoadExpected();
  const int a = *g.pool->Acquire(), b = *g.pool->Acquire();
  std::vector<int> first;
  const CudaModel::Segment pre{e.prompt, a, CudaModel::Logits::kLast};
  ASSERT_TRUE(g.model->Forward({&pre, 1}, g.states(), &first).ok());
  ASSERT_TRUE(g.pool->Copy(a, b).ok());  // fork: both continue identically
  const std::vector<int32_t> next = {7};
  const CudaModel::Segment two[] = {{next, a, CudaModel::Logits::kLast}, {next, b, CudaModel::Logits::kLast}};
  ASSERT_TRUE(g.model->Forward(two, g.states(), &first).ok());
  const auto rows = g.Logits(2);
  const size_t V = g.model->config().vocab_size;
  EXPECT_TRUE(std::equal(rows.begin(), rows.begin() + V, rows.begin() + V));
  EXPECT_EQ(g.State(a), g.State(b));
  g.pool->Release(a);
  const int c = *g.pool->Acquire();  // a recycled slot comes back zeroed
  const auto z = g.State(c);
  EXPECT_TRUE(std::all_of(z.begin(), z.end(), [](float v) { return v == 0.f; }));
  EXPECT_EQ(g.pool->Copy(0, 7).code(), absl::StatusCode::kOutOfRange);

  // Swapping through host memory on the copy stream: b's state out, its slot reused at once (the
  // copy is ordered before the reuse), the state back into another slot, equal to the bit.
  const std::vector<float> before = g.State(b);
  auto host = g.pool->NewHostState();
  ASSERT_TRUE(host.ok()) << host.status();
  ASSERT_TRUE(g.pool->SaveToHost(b, **host).ok());
  g.pool->Release(b);
  const int d = *g.pool->Acquire();  // zeroes a slot while the save may still run
  ASSERT_TRUE(g.pool->LoadFromHost(**host, d).ok());
  ASSERT_TRUE(g.pool->OrderBeforeUse(d).ok());
  EXPECT_EQ(g.State(d), before);
  ASSERT_TRUE((*host)->Wait().ok());
  EXPECT_TRUE(std::equal(before.begin(), before.end(), (*host)->data()));

  // A budget no GPU holds is RESOURCE_EXHAUSTED, not a crash.
  auto huge = GpuStatePool::Create(1 << 20, int64_t{1} << 28, StateDType::kF32, g.model->stream());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  CudaBackendOptions bo;
  bo.state_memory_bytes = 10 * int64_t{g.pool->state_bytes()} + 5;  // a budget of 10.x states: 10 slots
  auto backend = MakeCudaBackend(testing::TinyModelDir(), bo);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->pool().capacity(), 10);
  EXPECT_GT((*backend)->state_pool_bytes(), 10 * (*backend)->pool().state_bytes());  // + the scratch slot
  EXPECT_GT((*backend)->workspace_bytes(), 0);
  EXPECT_GT((*backend)->weight_bytes(), 0);
}

// The reference prompt's greedy continuation through a backend, as long as fla's.
std::vector<int32_t> GreedyText(Backend& b, const Expected& e) {
  const int slot = *b.pool().Acquire();
  SamplingParams params;  // greedy
  TokenHistory history;
  history.AddPrompt(e.prompt);
  std::vector<int32_t> out, feed = e.prompt;
  for (size_t i = 0; i < e.greedy.size(); ++i) {
    const StepItem item{feed, slot, true, &params, &history, i};
    std::vector<SampledToken> sampled;
    const absl::Status st = b.Step({&item, 1}, &sampled);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) break;
    out.push_back(sampled[0].token);
    history.AddOutput(sampled[0].token);
    feed = {sampled[0].token};
  }
  b.pool().Release(slot);
  return out;
}

// Greedy generation through the backends: the CUDA backend's tokens equal the CPU backend's and
// fla's on the reference prompt (its smallest top-2 margin is printed: a tiny one could flip in bf16).
TEST(CudaBackend, GreedyTextEqualsCpuBackend) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  auto cuda = MakeCudaBackend(testing::TinyModelDir(), {});
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  auto cpu = MakeCpuBackend(testing::TinyModelDir(), {});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const std::vector<int32_t> on_cuda = GreedyText(**cuda, e), on_cpu = GreedyText(**cpu, e);
  std::printf("[ measure ] smallest top-2 margin on the greedy path: %.3g\n",
              *std::min_element(e.margins.begin(), e.margins.end()));
  EXPECT_EQ(on_cuda, on_cpu) << "CUDA vs CPU backend";
  EXPECT_EQ(on_cuda, e.greedy) << "CUDA backend vs fla";
}

// --state_dtype bf16 on the CUDA backend: a state budget holds twice the sequences, and greedy text
// equals the CPU backend's with bf16 states (each rounding its states at every step's end).
TEST(CudaBackend, Bf16StatesHoldTwiceTheSequencesAndGreedyTextEqualsCpu) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  CudaBackendOptions f32, bf16;
  bf16.state_dtype = StateDType::kBF16;
  auto probe = MakeCudaBackend(testing::TinyModelDir(), f32);
  ASSERT_TRUE(probe.ok()) << probe.status();
  const int64_t budget = 10 * (*probe)->pool().state_bytes() + 5;  // 10.x fp32 states
  probe->reset();
  f32.state_memory_bytes = bf16.state_memory_bytes = budget;
  auto a = MakeCudaBackend(testing::TinyModelDir(), f32), b = MakeCudaBackend(testing::TinyModelDir(), bf16);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
  EXPECT_EQ((*a)->pool().capacity(), 10);
  EXPECT_EQ((*b)->pool().capacity(), 20);
  EXPECT_EQ((*b)->pool().state_dtype(), StateDType::kBF16);
  EXPECT_EQ(2 * (*b)->pool().state_bytes(), (*a)->pool().state_bytes());
  EXPECT_NE((*b)->device().find("bf16 states"), std::string::npos) << (*b)->device();
  CpuBackendOptions co;
  co.state_dtype = StateDType::kBF16;
  auto cpu = MakeCpuBackend(testing::TinyModelDir(), co);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const std::vector<int32_t> on_cuda = GreedyText(**b, e), on_cpu = GreedyText(**cpu, e);
  EXPECT_EQ(on_cuda, on_cpu) << "CUDA vs CPU backend, bf16 states";
  size_t same_as_fla = 0;
  while (same_as_fla < on_cuda.size() && on_cuda[same_as_fla] == e.greedy[same_as_fla]) ++same_as_fla;
  std::printf("[ measure ] bf16 states: greedy text equals fla's (fp32 states) for %zu of %zu tokens\n", same_as_fla,
              e.greedy.size());
}

// --weights fp8 through the backend: the device line says so, the weights take fewer bytes than
// bf16's, and greedy text against the CPU backend's with the same FP8 weights (the reference prompt
// runs as one prefill of more than 16 rows, through the FP8 GEMM, and then decodes token by token).
// An FP8 checkpoint under --weights fp8 says where its weights came from. Then --weights int8 (and
// an INT8 checkpoint's own rows) the same way: weight-only, so greedy text equals the CPU's INT8.
TEST(CudaBackend, ByteWeightsServeAndSaySo) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  CudaBackendOptions fp8;
  fp8.weights = WeightFormat::kFp8;
  auto native = MakeCudaBackend(testing::TinyModelDir(), {}), b = MakeCudaBackend(testing::TinyModelDir(), fp8);
  ASSERT_TRUE(native.ok() && b.ok()) << native.status() << " " << b.status();
  EXPECT_NE((*b)->device().find(", fp8 weights"), std::string::npos) << (*b)->device();
  EXPECT_EQ((*native)->device().find("fp8"), std::string::npos) << (*native)->device();
  EXPECT_LT((*b)->weight_bytes(), (*native)->weight_bytes());
  CpuBackendOptions co;
  co.weights = WeightFormat::kFp8;
  auto cpu = MakeCpuBackend(testing::TinyModelDir(), co);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const std::vector<int32_t> on_cuda = GreedyText(**b, e), on_cpu = GreedyText(**cpu, e);
  size_t same = 0;
  while (same < on_cuda.size() && same < on_cpu.size() && on_cuda[same] == on_cpu[same]) ++same;
  std::printf("[ measure ] fp8 weights: greedy text on the GPU equals the CPU's (same FP8 weights, fp32 inputs) for "
              "%zu of %zu tokens\n",
              same, on_cpu.size());
  EXPECT_FALSE(on_cuda.empty());
  const std::string dir = testing::MakeTempDir("cuda_fp8_backend") + "/fp8";
  ASSERT_TRUE(WriteQuantizedCheckpoint(testing::TinyModelDir(), dir, CheckpointQuantization::Kind::kFp8E4M3).ok());
  auto from_checkpoint = MakeCudaBackend(dir, fp8);
  ASSERT_TRUE(from_checkpoint.ok()) << from_checkpoint.status();
  EXPECT_NE((*from_checkpoint)->device().find(", fp8 weights from an fp8 checkpoint"), std::string::npos)
      << (*from_checkpoint)->device();
  // Under --weights native the FP8 checkpoint runs in its own form too (its codes, as --weights fp8
  // takes them): the same text, and the same line.
  auto own_form = MakeCudaBackend(dir, {});
  ASSERT_TRUE(own_form.ok()) << own_form.status();
  EXPECT_NE((*own_form)->device().find(", fp8 weights from an fp8 checkpoint"), std::string::npos)
      << (*own_form)->device();
  EXPECT_EQ((*own_form)->weight_format(), WeightFormat::kFp8);
  EXPECT_EQ(GreedyText(**own_form, e), GreedyText(**from_checkpoint, e));
  // The checkpoint's codes are the ones --weights fp8 makes at load from the source: the same text.
  EXPECT_EQ(GreedyText(**from_checkpoint, e), on_cuda);

  CudaBackendOptions int8;
  int8.weights = WeightFormat::kInt8;
  auto i8 = MakeCudaBackend(testing::TinyModelDir(), int8);
  ASSERT_TRUE(i8.ok()) << i8.status();
  EXPECT_NE((*i8)->device().find(", int8 weights"), std::string::npos) << (*i8)->device();
  EXPECT_LT((*i8)->weight_bytes(), (*native)->weight_bytes());
  auto cpu8 = MakeCpuBackend(testing::TinyModelDir(), {.weights = WeightFormat::kInt8});
  ASSERT_TRUE(cpu8.ok()) << cpu8.status();
  EXPECT_EQ(GreedyText(**i8, e), GreedyText(**cpu8, e)) << "INT8 weights: CUDA vs CPU backend";
  const std::string q8 = testing::MakeTempDir("cuda_int8_backend") + "/int8";
  ASSERT_TRUE(WriteQuantizedCheckpoint(testing::TinyModelDir(), q8).ok());
  auto own_rows = MakeCudaBackend(q8, int8);
  ASSERT_TRUE(own_rows.ok()) << own_rows.status();
  EXPECT_NE((*own_rows)->device().find(", int8 weights from an int8 checkpoint"), std::string::npos)
      << (*own_rows)->device();
}

// Structured output's masks on the CUDA backend: a masked item (greedy or sampled, beside an
// unmasked one in the same step) only ever gets an allowed token, and a one-token mask forces it.
TEST(CudaBackend, MaskedItemsSampleOnlyAllowedTokens) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  auto cuda = MakeCudaBackend(testing::TinyModelDir(), {});
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  Backend& b = **cuda;
  const int V = b.vocab_limit();
  std::mt19937 rng(21);
  for (int round = 0; round < 8; ++round) {
    std::vector<uint64_t> mask((V + 63) / 64, 0);
    std::vector<int32_t> allowed;
    const int count = round == 0 ? 1 : 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < count; ++k) allowed.push_back(static_cast<int32_t>(rng() % V));
    for (int32_t t : allowed) mask[t >> 6] |= uint64_t{1} << (t & 63);
    SamplingParams params;
    params.temperature = round % 2 == 0 ? 0.0f : 1.0f;
    params.seed = static_cast<uint64_t>(round);
    params.logprobs = 3;
    TokenHistory history;
    history.AddPrompt(e.prompt);
    const int a = *b.pool().Acquire(), c = *b.pool().Acquire();
    StepItem masked{e.prompt, a, true, &params, &history, 0};
    masked.allowed = mask.data();
    const StepItem free{e.prompt, c, true, &params, &history, 0};
    const StepItem items[] = {free, masked};
    std::vector<SampledToken> out;
    ASSERT_TRUE(b.Step(items, &out).ok());
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), out[1].token), allowed.end()) << "round " << round;
    for (const auto& [id, lp] : out[1].top) EXPECT_TRUE(std::isfinite(lp) && ((mask[id >> 6] >> (id & 63)) & 1)) << id;
    if (count == 1) {
      EXPECT_EQ(out[1].logprob, 0.0f) << "the only candidate";
    }
    b.pool().Release(a);
    b.pool().Release(c);
  }
}

// n > 1 with structured output: siblings (sample_from) sample their leader's row on the device,
// each under its own mask (or none), beside a masked leader with an unmasked sibling. A greedy
// sibling whose mask holds the unmasked argmax picks it; two siblings with the same params and
// mask get the same token.
TEST(CudaBackend, MaskedSiblingsSampleUnderTheirOwnMasks) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  auto cuda = MakeCudaBackend(testing::TinyModelDir(), {});
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  Backend& b = **cuda;
  const int V = b.vocab_limit();
  std::mt19937 rng(33);
  using Mask = std::vector<uint64_t>;
  auto random_mask = [&](int count) {
    Mask m((V + 63) / 64, 0);
    for (int k = 0; k < count; ++k) {
      const int t = static_cast<int>(rng() % V);
      m[t >> 6] |= uint64_t{1} << (t & 63);
    }
    return m;
  };
  auto allows = [](const Mask& m, int32_t t) { return t >= 0 && ((m[t >> 6] >> (t & 63)) & 1) != 0; };
  SamplingParams greedy, sampled;
  greedy.logprobs = 2;
  sampled.temperature = 1.0f;
  sampled.top_p = 0.95f;
  sampled.logprobs = 2;
  TokenHistory history;
  history.AddPrompt(e.prompt);
  // The unmasked greedy token after the prompt.
  int32_t argmax = -1;
  {
    const int slot = *b.pool().Acquire();
    const StepItem lead{e.prompt, slot, true, &greedy, &history, 0};
    std::vector<SampledToken> out;
    ASSERT_TRUE(b.Step({&lead, 1}, &out).ok());
    argmax = out[0].token;
    b.pool().Release(slot);
  }
  for (int round = 0; round < 6; ++round) {
    sampled.seed = 100 + static_cast<uint64_t>(round);
    Mask with_argmax = random_mask(1 + static_cast<int>(rng() % 30));
    with_argmax[argmax >> 6] |= uint64_t{1} << (argmax & 63);
    const Mask few = random_mask(1 + static_cast<int>(rng() % 30)), half = random_mask(V / 2), one = random_mask(1);
    const int s0 = *b.pool().Acquire(), s1 = *b.pool().Acquire();
    auto sibling = [&](int of, const SamplingParams* p, const Mask* m) {
      StepItem it{{}, -1, true, p, &history, 0};
      it.sample_from = of;
      it.allowed = m != nullptr ? m->data() : nullptr;
      return it;
    };
    StepItem masked_lead{e.prompt, s1, true, &sampled, &history, 0};
    masked_lead.allowed = one.data();
    const StepItem items[] = {
        {e.prompt, s0, true, &greedy, &history, 0},  // 0: unmasked leader
        sibling(0, &greedy, &with_argmax),            // 1
        sibling(0, &sampled, &few),                   // 2
        sibling(0, &sampled, &half),                  // 3
        sibling(0, &sampled, &few),                   // 4: as 2
        sibling(0, &sampled, nullptr),                // 5
        masked_lead,                                  // 6: one id allowed
        sibling(6, &greedy, nullptr),                 // 7
    };
    std::vector<SampledToken> out;
    ASSERT_TRUE(b.Step(items, &out).ok());
    ASSERT_EQ(out.size(), std::size(items));
    if (out[0].token == argmax) {
      EXPECT_EQ(out[1].token, argmax) << "round " << round;
    }
    EXPECT_TRUE(allows(with_argmax, out[1].token)) << "round " << round;
    EXPECT_TRUE(allows(few, out[2].token)) << "round " << round;
    EXPECT_TRUE(allows(half, out[3].token)) << "round " << round;
    EXPECT_EQ(out[4].token, out[2].token) << "round " << round;
    EXPECT_EQ(out[4].logprob, out[2].logprob) << "round " << round;
    EXPECT_TRUE(allows(one, out[6].token)) << "round " << round;
    EXPECT_EQ(out[6].logprob, 0.0f) << "the only candidate";
    EXPECT_LE(out[6].top.size(), 1u) << "the only candidate";
    for (int i : {1, 2, 3, 4, 6}) {
      const Mask& m = i == 1 ? with_argmax : i == 3 ? half : i == 6 ? one : few;
      for (const auto& [id, lp] : out[i].top) EXPECT_TRUE(std::isfinite(lp) && allows(m, id)) << "item " << i << " id " << id;
    }
    for (int i : {0, 5, 7}) EXPECT_TRUE(out[i].token >= 0 && out[i].token < V) << "item " << i;
    b.pool().Release(s0);
    b.pool().Release(s1);
  }
}

// Prompt scoring on the GPU (scored rows through the sampling kernel with forced tokens) against
// fla's float64 logits: every position of the 130-token sequence (two 64-token chunks), in one
// step and in 24-token chunks beside a running request.
TEST(CudaBackend, PromptScoresWithinBf16BoundOfTheReference) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  auto cuda = MakeCudaBackend(testing::TinyModelDir(), {});
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  for (int budget : {512, 24}) {
    Scheduler s(**cuda, {.step_token_budget = budget, .min_prefill_tokens = 8});
    for (size_t q = 1; q < e.seq_ids.size(); ++q) {
      const std::vector<int32_t>& ids = e.seq_ids[q];
      const size_t V = e.seq_logits[q].size() / ids.size();
      GenerationSpec busy;
      busy.prompt = e.prompt;
      busy.max_new_tokens = 12;
      auto running = testing::SubmitCollect(s, busy);
      GenerationSpec spec;
      spec.prompt = ids;
      spec.max_new_tokens = 0;
      spec.prompt_logprobs = 2;
      const testing::Collected c = testing::SubmitCollect(s, spec).get();
      ASSERT_TRUE(c.status.ok()) << c.status;
      ASSERT_EQ(c.prompt_logprobs.size(), ids.size() - 1);
      std::vector<float> got;
      std::vector<double> want;
      for (size_t t = 0; t + 1 < ids.size(); ++t) {
        const double* row = e.seq_logits[q].data() + t * V;
        const double mx = *std::max_element(row, row + V);
        double z = 0;
        for (size_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
        EXPECT_EQ(c.prompt_logprobs[t].token, ids[t + 1]);
        EXPECT_EQ(c.prompt_logprobs[t].top.size(), 2u);
        got.push_back(c.prompt_logprobs[t].logprob);
        want.push_back(row[ids[t + 1]] - mx - std::log(z));
      }
      const double err = RelErr(got, want);
      std::printf("[ measure ] prompt scores of a %zu-token sequence, budget %d: rel err %.3g\n", ids.size(), budget, err);
      EXPECT_LT(err, kBf16Bound);
      EXPECT_TRUE(running.get().status.ok());
    }
  }
}

// n > 1 on the GPU: one prefill, then copies of the state in device memory; each generation equals
// the same request run alone (the sampler is batch-independent), and the prompt ran once.
TEST(CudaBackend, GroupFromOnePrefillEqualsEachAlone) {
  GLA_REQUIRE_CUDA_DEVICE();
  const Expected e = LoadExpected();
  auto cuda = MakeCudaBackend(testing::TinyModelDir(), {.slots = 3});  // too few: some wait on a host copy
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  std::vector<GenerationSpec> specs;
  for (int j = 0; j < 5; ++j) {
    GenerationSpec g;
    g.prompt = e.seq_ids[2];
    g.max_new_tokens = 6 + j;
    g.ignore_eos = true;
    g.sampling.temperature = 0.9f;
    g.sampling.seed = 50 + j;
    specs.push_back(g);
  }
  std::vector<testing::Collected> alone;
  {
    Scheduler s(**cuda, {});
    for (const auto& g : specs) alone.push_back(testing::SubmitCollect(s, g).get());
  }
  Scheduler s(**cuda, {});
  auto futures = testing::SubmitGroupCollect(s, specs);
  ASSERT_EQ(futures.size(), specs.size());
  for (size_t j = 0; j < specs.size(); ++j) {
    const testing::Collected c = futures[j].get();
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens, alone[j].tokens) << "generation " << j;
  }
  EXPECT_EQ(s.stats().prefill_tokens, e.seq_ids[2].size());
  EXPECT_EQ(s.stats().forks, specs.size() - 1);
}

}  // namespace
}  // namespace gla
