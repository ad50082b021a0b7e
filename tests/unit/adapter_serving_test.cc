// Serving with LoRA adapters on the CPU runner: a sequence with an adapter computes what the model
// with the adapter merged into its weights computes, and sequences with different adapters (or
// none) packed in one step each get their own answer. Also: trained weights written back as a
// checkpoint load to the same model.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "engine/model/cpu_model.h"
#include "models/lora_adapter.h"
#include "tests/support/random_adapter.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

LoraAdapter RandomAdapter(const GlaConfig& config, const std::vector<std::string>& targets, unsigned seed) {
  return testing::RandomLoraAdapter(config, targets, seed, /*r=*/4, /*alpha=*/8.0, /*b_range=*/0.3f);
}

std::vector<float> RunAlone(CpuModel& m, const std::vector<int32_t>& tokens, const LoraAdapter* adapter) {
  SequenceState st = m.NewState();
  const CpuModel::Segment seg{tokens, st.data.data(), true, adapter};
  std::vector<float> logits;
  EXPECT_TRUE(m.Forward(std::span<const CpuModel::Segment>(&seg, 1), &logits).ok());
  return logits;
}

TEST(AdapterServing, AdaptedEqualsMergedAndMixesInOneStep) {
  auto base = CpuModel::Load(testing::TinyModelDir());
  ASSERT_TRUE(base.ok());
  const GlaConfig& c = (*base)->config();
  const LoraAdapter all = RandomAdapter(
      c, {"q_proj", "k_proj", "v_proj", "g_proj", "o_proj", "gk_proj", "gate_proj", "up_proj", "down_proj"}, 1);
  const LoraAdapter some = RandomAdapter(c, {"v_proj", "down_proj"}, 2);
  const std::vector<int32_t> a = {5, 17, 300, 42, 9, 77, 128, 3, 64, 200, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  const std::vector<int32_t> b = {400, 401, 2, 8};

  for (const LoraAdapter* adapter : {&all, &some}) {
    auto ck = LoadCheckpoint(testing::TinyModelDir());
    ASSERT_TRUE(ck.ok());
    ASSERT_TRUE(MergeLoraAdapter(*adapter, &ck->weights).ok());
    auto merged = CpuModel::FromCheckpoint(std::move(*ck));
    ASSERT_TRUE(merged.ok());
    const std::vector<float> want = RunAlone(**merged, a, nullptr);
    EXPECT_LT(testing::RelErr(RunAlone(**base, a, adapter), want), 1e-5);
    EXPECT_GT(testing::RelErr(RunAlone(**base, a, nullptr), want), 1e-3);  // the adapter matters
  }

  // One step: a prefill with `all`, a prefill without adapter, a one-token decode with `some`.
  SequenceState s1 = (*base)->NewState(), s2 = (*base)->NewState(), s3 = (*base)->NewState();
  const std::vector<int32_t> one = {99};
  const CpuModel::Segment segs[] = {{a, s1.data.data(), true, &all},
                                    {b, s2.data.data(), true, nullptr},
                                    {one, s3.data.data(), true, &some}};
  std::vector<float> packed;
  ASSERT_TRUE((*base)->Forward(segs, &packed).ok());
  std::vector<float> solo = RunAlone(**base, a, &all);
  const std::vector<float> solo_b = RunAlone(**base, b, nullptr), solo_one = RunAlone(**base, one, &some);
  solo.insert(solo.end(), solo_b.begin(), solo_b.end());
  solo.insert(solo.end(), solo_one.begin(), solo_one.end());
  EXPECT_LT(testing::RelErr(packed, solo), 1e-6);
}

TEST(AdapterServing, AdapterForAnotherModelIsRefused) {
  auto base = CpuModel::Load(testing::TinyModelDir());
  ASSERT_TRUE(base.ok());
  LoraAdapter wrong = RandomAdapter((*base)->config(), {"q_proj"}, 3);
  wrong.layers.pop_back();
  SequenceState st = (*base)->NewState();
  const SequenceState before = st;
  const std::vector<int32_t> tokens = {1, 2, 3};
  const CpuModel::Segment seg{tokens, st.data.data(), false, &wrong};
  std::vector<float> logits;
  const absl::Status s = (*base)->Forward(std::span<const CpuModel::Segment>(&seg, 1), &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(st.data, before.data);
}

TEST(ModelWeightsWriter, WrittenWeightsLoadToTheSameModel) {
  auto ck = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(ck.ok());
  const std::string dir = testing::MakeTempDir("written_weights");
  std::filesystem::copy_file(testing::TinyModelDir() + "/config.json", dir + "/config.json");
  ASSERT_TRUE(WriteModelWeights(dir + "/model.safetensors", ck->config, ck->weights).ok());
  auto original = CpuModel::Load(testing::TinyModelDir()), copy = CpuModel::Load(dir);
  ASSERT_TRUE(original.ok() && copy.ok());
  const std::vector<int32_t> tokens = {7, 8, 9, 10, 300};
  EXPECT_EQ(RunAlone(**copy, tokens, nullptr), RunAlone(**original, tokens, nullptr));

  ck->weights.layers[1].o_proj.data.pop_back();
  const absl::Status bad = WriteModelWeights(dir + "/model.safetensors", ck->config, ck->weights);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("model.layers.1.attn.o_proj.weight"), std::string::npos) << bad;
}

}  // namespace
}  // namespace gla
