// The CPU model against fla's float64 answers for the reference checkpoint (gla-tiny).
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/model/cpu_model.h"
#include "tests/support/reference_data.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::RelErr;

using Expected = testing::TinyExpected;
Expected LoadExpected() { return testing::LoadTinyExpected(); }

std::unique_ptr<CpuModel> LoadTiny(CpuModelOptions o = {}) {
  auto m = CpuModel::Load(testing::TinyModelDir(), o);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

class ReferenceModel : public ::testing::TestWithParam<CpuModelOptions> {};

TEST_P(ReferenceModel, LogitsOfAllSequencesWithin1e5) {
  const Expected e = LoadExpected();
  auto model = LoadTiny(GetParam());
  for (int j = 0; j < 3; ++j) {
    SequenceState st = model->NewState();
    auto logits = model->Run(e.seq_ids[j], st, /*all_logits=*/true);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const double err = RelErr(*logits, e.seq_logits[j]);
    EXPECT_LT(err, 1e-5) << "sequence " << j << " (T=" << e.seq_ids[j].size() << ")";
  }
}

CpuModelOptions Form(CpuModelOptions::GlaForm f, int chunk, int sub) {
  CpuModelOptions o;
  o.gla_form = f;
  o.chunk = chunk;
  o.sub_chunk = sub;
  return o;
}
INSTANTIATE_TEST_SUITE_P(Forms, ReferenceModel,
                         ::testing::Values(Form(CpuModelOptions::GlaForm::kChunkwise, 64, 16),
                                           Form(CpuModelOptions::GlaForm::kChunkwise, 32, 8),
                                           Form(CpuModelOptions::GlaForm::kChunkwise, 16, 16),
                                           Form(CpuModelOptions::GlaForm::kRecurrent, 64, 16)));

TEST(ReferenceModel, PrefixThenContinueEqualsFullForward) {
  const Expected e = LoadExpected();
  auto model = LoadTiny();
  const int splits[3] = {1, 18, 65};  // expected.json's split points
  for (int j = 0; j < 3; ++j) {
    const auto& ids = e.seq_ids[j];
    SequenceState st = model->NewState();
    auto first = model->Run(std::span<const int32_t>(ids).first(splits[j]), st, true);
    SequenceState saved = st;  // the state is a value: save it, then continue from the copy
    auto rest = model->Run(std::span<const int32_t>(ids).subspan(splits[j]), saved, true);
    ASSERT_TRUE(first.ok() && rest.ok());
    std::vector<float> joined = *first;
    joined.insert(joined.end(), rest->begin(), rest->end());
    EXPECT_LT(RelErr(joined, e.seq_logits[j]), 1e-5) << "sequence " << j;
  }
}

TEST(ReferenceModel, TokenByTokenDecodeEqualsFullForward) {
  const Expected e = LoadExpected();
  auto model = LoadTiny();
  const auto& ids = e.seq_ids[2];  // 130 tokens: crosses two chunks in the full forward
  SequenceState st = model->NewState();
  std::vector<float> all;
  for (int32_t id : ids) {
    auto l = model->Run(std::span<const int32_t>(&id, 1), st, false);
    ASSERT_TRUE(l.ok());
    all.insert(all.end(), l->begin(), l->end());
  }
  EXPECT_LT(RelErr(all, e.seq_logits[2]), 1e-5);
}

TEST(ReferenceModel, GreedyContinuationMatches) {
  const Expected e = LoadExpected();
  auto model = LoadTiny();
  const int V = model->config().vocab_size;
  SequenceState st = model->NewState();
  auto logits = model->Run(e.prompt, st, false);
  ASSERT_TRUE(logits.ok());
  std::vector<int32_t> out;
  for (size_t i = 0; i < e.greedy.size(); ++i) {
    const int32_t next = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
    out.push_back(next);
    logits = model->Run(std::span<const int32_t>(&out.back(), 1), st, false);
    ASSERT_TRUE(logits.ok());
    ASSERT_EQ(static_cast<int>(logits->size()), V);
  }
  EXPECT_EQ(out, e.greedy);
}

TEST(ReferenceModel, PackedBatchEqualsSequencesRunAlone) {
  const Expected e = LoadExpected();
  auto model = LoadTiny();
  // A mixed step: a 37-token prefill, a single decode token, and a 130-token prefill.
  std::vector<SequenceState> states = {model->NewState(), model->NewState(), model->NewState()};
  const int32_t one = e.seq_ids[0][0];
  std::vector<CpuModel::Segment> segs = {{e.seq_ids[1], states[0].data.data(), true},
                                         {std::span<const int32_t>(&one, 1), states[1].data.data(), true},
                                         {e.seq_ids[2], states[2].data.data(), false}};
  std::vector<float> packed;
  ASSERT_TRUE(model->Forward(segs, &packed).ok());
  std::vector<float> alone;
  for (int s = 0; s < 3; ++s) {
    SequenceState st = model->NewState();
    auto l = model->Run(segs[s].tokens, st, segs[s].all_logits);
    ASSERT_TRUE(l.ok());
    alone.insert(alone.end(), l->begin(), l->end());
    // BLAS blocks differently for other row counts: equal to rounding, not bitwise.
    EXPECT_LT(RelErr(states[s].data, st.data), 1e-6) << "state of segment " << s;
  }
  EXPECT_LT(RelErr(packed, alone), 1e-6);
}

TEST(ReferenceModel, BadTokenIsRefusedAndChangesNoState) {
  auto model = LoadTiny();
  SequenceState st = model->NewState();
  const std::vector<int32_t> good = {3, 4, 5};
  ASSERT_TRUE(model->Run(good, st, false).ok());
  const SequenceState before = st;
  const std::vector<int32_t> bad = {3, 512};
  auto r = model->Run(bad, st, false);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("512"), std::string::npos);
  EXPECT_EQ(st.data, before.data);
  EXPECT_FALSE(model->Run({}, st, false).ok());
}

}  // namespace
}  // namespace gla
