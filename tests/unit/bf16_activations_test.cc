// bf16 activations (CpuModelOptions::activations, gla-eval --activations bf16): the CPU model
// rounding what the CUDA engine keeps in bf16, where it rounds it, so the GPU's decode tests can
// hold it to the CPU tightly (tests/cuda/cuda_engine_test.cc). Here: the rounding changes the
// logits by a bf16-sized amount on the reference model, and it rounds every row of a packed step
// (a sequence's logits are the same alone or packed with another, with either activation dtype).
#include <gtest/gtest.h>

#include <vector>

#include "engine/model/cpu_model.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

std::unique_ptr<CpuModel> Load(CpuModelOptions::ActivationDType activations) {
  CpuModelOptions o;
  o.threads = 1;
  o.activations = activations;
  auto m = CpuModel::Load(testing::TinyModelDir(), o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

// Each sequence's logits for `feeds` (a prompt, then decode tokens), run alone or packed in one
// Forward per step.
std::vector<std::vector<float>> LogitsOf(CpuModel& m, const std::vector<std::vector<std::vector<int32_t>>>& feeds,
                                    bool packed) {
  const size_t n = feeds.size();
  std::vector<SequenceState> states;
  for (size_t s = 0; s < n; ++s) states.push_back(m.NewState());
  std::vector<std::vector<float>> out(n);
  for (size_t step = 0; step < feeds[0].size(); ++step) {
    std::vector<CpuModel::Segment> segs;
    for (size_t s = 0; s < n; ++s) segs.push_back({feeds[s][step], states[s].data.data(), true});
    if (packed) {
      std::vector<float> logits;
      EXPECT_TRUE(m.Forward(segs, &logits).ok());
      const int V = m.config().vocab_size;
      size_t at = 0;
      for (size_t s = 0; s < n; ++s) {
        const size_t len = feeds[s][step].size() * static_cast<size_t>(V);
        out[s].insert(out[s].end(), logits.begin() + static_cast<std::ptrdiff_t>(at),
                      logits.begin() + static_cast<std::ptrdiff_t>(at + len));
        at += len;
      }
    } else {
      for (size_t s = 0; s < n; ++s) {
        std::vector<float> logits;
        EXPECT_TRUE(m.Forward(std::span<const CpuModel::Segment>(&segs[s], 1), &logits).ok());
        out[s].insert(out[s].end(), logits.begin(), logits.end());
      }
    }
  }
  return out;
}

TEST(Bf16Activations, MoveTheLogitsByABf16SizedAmountAndRoundEveryRowOfAPackedStep) {
  auto f32 = Load(CpuModelOptions::ActivationDType::kF32);
  auto bf16 = Load(CpuModelOptions::ActivationDType::kBF16);
  ASSERT_TRUE(f32 && bf16);
  EXPECT_EQ(bf16->options().activations, CpuModelOptions::ActivationDType::kBF16);
  // Two sequences: prompts of 9 and 14 tokens, then four decode tokens each.
  std::vector<std::vector<std::vector<int32_t>>> feeds = {{testing::Text(9, 1)}, {testing::Text(14, 2)}};
  for (int step = 0; step < 4; ++step)
    for (size_t s = 0; s < feeds.size(); ++s) feeds[s].push_back({static_cast<int32_t>(7 + 11 * step + 3 * s)});

  const auto ref = LogitsOf(*f32, feeds, /*packed=*/false);
  const auto alone = LogitsOf(*bf16, feeds, /*packed=*/false);
  for (size_t s = 0; s < feeds.size(); ++s) {
    // gla-tiny's bf16 bound against fp32 on the GPU is 2e-2 (tests/cuda); the rounding of five
    // kinds of rows must show (a bf16 ulp is 2^-8 relative), and stay inside it.
    const double err = testing::RelErr(alone[s], ref[s]);
    EXPECT_GT(err, 1e-5) << "sequence " << s << ": nothing was rounded";
    EXPECT_LT(err, 2e-2) << "sequence " << s;
    std::printf("[ measure ] gla-tiny, bf16 activations against fp32, sequence %zu: logits rel err %.2e\n", s, err);
  }
  // Packed, each row is rounded as it is alone. Not to the bit: BLAS sums a packed step's rows in
  // another order (fp32 activations differ too, measured below 1e-6), and a sum that lands near a
  // rounding boundary may round the other way. A row left unrounded would differ by the 1e-2 above.
  const auto packed = LogitsOf(*bf16, feeds, /*packed=*/true), packed_ref = LogitsOf(*f32, feeds, /*packed=*/true);
  for (size_t s = 0; s < feeds.size(); ++s) {
    const double err = testing::RelErr(packed[s], alone[s]), err_ref = testing::RelErr(packed_ref[s], ref[s]);
    EXPECT_LT(err, 1e-3) << "sequence " << s;
    std::printf("[ measure ] sequence %zu packed against alone: bf16 activations %.2e, fp32 %.2e\n", s, err, err_ref);
  }
}

}  // namespace
}  // namespace gla
