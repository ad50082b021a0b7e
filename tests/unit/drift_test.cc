// gla-eval drift's measure (clients/gla_eval/drift.h): a model against itself drifts by nothing,
// INT8 weights or bf16 states against fp32 by a little (and not nothing), and bad arguments are
// refused.
#include "clients/gla_eval/drift.h"

#include <gtest/gtest.h>

#include "models/dtype.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

std::unique_ptr<CpuModel> Load(WeightFormat w) {
  CpuModelOptions o;
  o.weights = w;
  auto m = CpuModel::Load(testing::TinyModelDir(), o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

TEST(Drift, AModelAgainstItselfDriftsByNothing) {
  auto a = Load(WeightFormat::kNative), b = Load(WeightFormat::kNative);
  const std::vector<int32_t> prompt = {1, 5, 9, 2};
  for (double temperature : {0.0, 1.0}) {
    auto d = MeasureDrift(*a, *b, prompt, {.tokens = 64, .temperature = temperature, .seed = 3});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->tokens, 64);
    EXPECT_EQ(d->max_kl, 0.0);
    EXPECT_EQ(d->top1_agreement, 1.0);
    EXPECT_EQ(d->free_run_identical, 64);
  }
}

TEST(Drift, Int8WeightsDriftALittle) {
  auto fp32 = Load(WeightFormat::kNative), int8 = Load(WeightFormat::kInt8);
  const std::vector<int32_t> prompt = {1, 5, 9, 2};
  auto d = MeasureDrift(*fp32, *int8, prompt, {.tokens = 128, .temperature = 1.0, .seed = 7});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_GT(d->mean_kl, 0.0);
  EXPECT_LT(d->mean_kl, 0.05);  // the reference model is random: a loose bound, the docs carry gla-brown's number
  EXPECT_LE(d->mean_kl, d->max_kl);
  EXPECT_LE(d->p99_kl, d->max_kl);
  EXPECT_GT(d->p99_kl, 0.0);
  EXPECT_GT(d->top1_agreement, 0.8);
  std::printf("[ measure ] gla-tiny int8 vs fp32, 128 sampled tokens: mean KL %.3g, max %.3g, top-1 %.3f, greedy "
              "identical for %d\n",
              d->mean_kl, d->max_kl, d->top1_agreement, d->free_run_identical);
}

// bf16 states (CpuModelOptions::state_dtype): every state value is a bf16 after a step, and the
// outputs drift a little from the fp32-state model.
TEST(Drift, Bf16StatesKeepBf16ValuesAndDriftALittle) {
  CpuModelOptions o;
  o.state_dtype = CpuModelOptions::StateDType::kBF16;
  auto bf16 = CpuModel::Load(testing::TinyModelDir(), o);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  auto fp32 = Load(WeightFormat::kNative);
  const std::vector<int32_t> prompt = {1, 5, 9, 2};
  SequenceState s = (*bf16)->NewState(), f = fp32->NewState();
  ASSERT_TRUE((*bf16)->Run(prompt, s, false).ok());
  ASSERT_TRUE(fp32->Run(prompt, f, false).ok());
  int not_bf16 = 0, differ = 0;
  for (size_t i = 0; i < s.data.size(); ++i) {
    not_bf16 += BFloat16ToFloat(FloatToBFloat16(s.data[i])) != s.data[i];
    differ += s.data[i] != f.data[i];
  }
  EXPECT_EQ(not_bf16, 0);
  EXPECT_GT(differ, 0);
  auto d = MeasureDrift(*fp32, **bf16, prompt, {.tokens = 128, .temperature = 1.0, .seed = 7});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_GT(d->mean_kl, 0.0);
  EXPECT_LT(d->mean_kl, 0.05);
  std::printf("[ measure ] gla-tiny bf16 states vs fp32, 128 sampled tokens: mean KL %.3g, max %.3g, top-1 %.3f\n",
              d->mean_kl, d->max_kl, d->top1_agreement);
}

TEST(Drift, BadArgumentsAreRefused) {
  auto a = Load(WeightFormat::kNative), b = Load(WeightFormat::kNative);
  const std::vector<int32_t> prompt = {1, 2};
  EXPECT_FALSE(MeasureDrift(*a, *b, {}, {}).ok());
  EXPECT_FALSE(MeasureDrift(*a, *b, prompt, {.tokens = 0}).ok());
  EXPECT_FALSE(MeasureDrift(*a, *b, prompt, {.tokens = DriftOptions::kMaxTokens + 1}).ok());  // before any step
  EXPECT_FALSE(MeasureDrift(*a, *b, prompt, {.tokens = 4, .temperature = INFINITY}).ok());
  EXPECT_FALSE(MeasureDrift(*a, *b, prompt, {.tokens = 4, .temperature = -1}).ok());
  EXPECT_FALSE(MeasureDrift(*a, *b, prompt, {.tokens = 4, .temperature = std::nan("")}).ok());
  const std::vector<int32_t> outside = {1, a->config().vocab_size};
  EXPECT_FALSE(MeasureDrift(*a, *b, outside, {.tokens = 4}).ok());
}

}  // namespace
}  // namespace gla
