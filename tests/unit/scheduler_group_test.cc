// n generations of one prompt from one prefill (Scheduler::SubmitGroup) and prompt scoring
// (GenerationSpec::prompt_logprobs), on the CPU backend with the reference model (gla-tiny).
#include <gtest/gtest.h>

#include <cmath>
#include <future>
#include <optional>
#include <thread>

#include "engine/backend.h"
#include "engine/scheduler.h"
#include "models/safetensors.h"
#include "tests/support/forwarding_backend.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::Collected;
using testing::SubmitCollect;
using testing::SubmitGroupCollect;

std::vector<int32_t> Ids(const SafetensorsFile& f, const std::string& name) {
  auto v = *ToInt64(*f.Find(name));
  return std::vector<int32_t>(v.begin(), v.end());
}

class SchedulerGroupTest : public ::testing::Test {
 protected:
  void SetUp() override { Backend(4); }
  void Backend(int slots) {
    auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = slots, .threads = 1});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    auto ref = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_.emplace(std::move(*ref));
    prompt_ = Ids(*ref_, "greedy.prompt_ids");
  }
  // Sampled (temperature 0.9, top-p 0.95), seed `seed`, never stopping at EOS.
  GenerationSpec Sampled(std::vector<int32_t> prompt, int max_new, uint64_t seed) {
    GenerationSpec s;
    s.prompt = std::move(prompt);
    s.max_new_tokens = max_new;
    s.ignore_eos = true;
    s.sampling.temperature = 0.9f;
    s.sampling.top_p = 0.95f;
    s.sampling.seed = seed;
    return s;
  }
  std::vector<GenerationSpec> Group(const std::vector<int32_t>& prompt, int n, int max_new) {
    std::vector<GenerationSpec> specs;
    for (int j = 0; j < n; ++j) specs.push_back(Sampled(prompt, max_new + j, 1000 + j));
    return specs;
  }
  // Each generation of the group equals the same spec run alone (from its own prefill).
  void ExpectEqualsAlone(std::vector<GenerationSpec> specs, std::vector<std::future<Collected>>& futures) {
    ASSERT_EQ(futures.size(), specs.size());
    auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = 1, .threads = 1});
    ASSERT_TRUE(b.ok());
    Scheduler alone(**b, {});
    for (size_t j = 0; j < specs.size(); ++j) {
      const Collected c = futures[j].get();
      const Collected a = SubmitCollect(alone, specs[j]).get();
      ASSERT_TRUE(c.status.ok()) << c.status;
      EXPECT_EQ(c.tokens, a.tokens) << "generation " << j;
      EXPECT_EQ(c.tokens.size(), static_cast<size_t>(specs[j].max_new_tokens));
      EXPECT_EQ(c.usage.prompt_tokens, static_cast<int>(specs[j].prompt.size()));
    }
  }
  std::unique_ptr<gla::Backend> backend_;
  std::optional<SafetensorsFile> ref_;
  std::vector<int32_t> prompt_;
};

TEST_F(SchedulerGroupTest, OnePrefillThenStateCopies) {
  Scheduler s(*backend_, {});
  const auto specs = Group(prompt_, 4, 6);
  auto futures = SubmitGroupCollect(s, specs);
  ExpectEqualsAlone(specs, futures);
  // The prompt ran once; each generation's first token came from that prefill's last row.
  EXPECT_EQ(s.stats().prefill_tokens, prompt_.size());
  EXPECT_EQ(s.stats().forks, 3u);
  EXPECT_EQ(s.stats().slots_in_use, 0);
  EXPECT_EQ(s.stats().queued, 0);
}

TEST_F(SchedulerGroupTest, SiblingsWithoutAFreeSlotStartFromAHostCopy) {
  Backend(2);  // two slots for six generations: four wait for a slot with the state on the host
  SchedulerOptions o;
  o.step_token_budget = 8;  // a chunked prefill: the fork point is reached over several steps
  o.min_prefill_tokens = 4;
  Scheduler s(*backend_, o);
  const auto specs = Group(prompt_, 6, 5);
  auto futures = SubmitGroupCollect(s, specs);
  ExpectEqualsAlone(specs, futures);
  EXPECT_EQ(s.stats().prefill_tokens, prompt_.size());
  EXPECT_EQ(s.stats().forks, 5u);
}

TEST_F(SchedulerGroupTest, AOneTokenPromptForksAtOnce) {
  Scheduler s(*backend_, {});
  const auto specs = Group({prompt_.front()}, 3, 4);
  auto futures = SubmitGroupCollect(s, specs);
  ExpectEqualsAlone(specs, futures);
  EXPECT_EQ(s.stats().prefill_tokens, 1u);
}

TEST_F(SchedulerGroupTest, OneTokenEachNeedsNoStateCopyAndScoreOnlyGroupsGenerateNothing) {
  Backend(1);  // one slot: the siblings' first tokens need none
  Scheduler s(*backend_, {});
  const auto specs = Group(prompt_, 5, 1);
  std::vector<GenerationSpec> one_each(specs.begin(), specs.end());
  for (auto& g : one_each) g.max_new_tokens = 1;
  auto futures = SubmitGroupCollect(s, one_each);
  ExpectEqualsAlone(one_each, futures);
  EXPECT_EQ(s.stats().prefill_tokens, prompt_.size());
  std::vector<GenerationSpec> scores = one_each;
  for (auto& g : scores) {
    g.max_new_tokens = 0;
    g.prompt_logprobs = 1;
  }
  futures = SubmitGroupCollect(s, scores);
  ASSERT_EQ(futures.size(), scores.size());
  for (auto& f : futures) {
    const Collected c = f.get();
    EXPECT_TRUE(c.tokens.empty());
    EXPECT_EQ(c.reason, FinishReason::kLength);
    EXPECT_EQ(c.prompt_logprobs.size(), prompt_.size() - 1);
  }
  EXPECT_EQ(s.stats().slots_in_use, 0);
}

TEST_F(SchedulerGroupTest, CancelledLeaderLeavesItsSiblingsToPrefillThemselves) {
  SchedulerOptions o;
  o.step_token_budget = 4;  // the leader needs many steps to reach its fork point
  o.min_prefill_tokens = 2;
  // The cancel lands while the leader's first prefill chunk runs (a fast machine could otherwise
  // finish the whole group before the test thread calls Cancel).
  testing::FirstStepGate gate(*backend_);
  Scheduler s(gate, o);
  std::vector<int32_t> prompt = prompt_;
  for (int i = 0; i < 200; ++i) prompt.push_back((i * 37 + 11) % 500 + 3);
  auto specs = Group(prompt, 3, 4);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  auto futures = SubmitGroupCollect(s, specs, nullptr, &handles);
  ASSERT_EQ(handles.size(), 3u);
  gate.WaitForFirstStep();
  handles[0]->Cancel();
  gate.Release();
  EXPECT_EQ(futures[0].get().reason, FinishReason::kCancelled);
  futures.erase(futures.begin());
  specs.erase(specs.begin());
  ExpectEqualsAlone(specs, futures);
  EXPECT_EQ(s.stats().forks, 0u) << "the leader was cancelled before its fork point";
  EXPECT_EQ(s.stats().slots_in_use, 0);
}

TEST_F(SchedulerGroupTest, CancelledSiblingsAndShutdownLeaveNothingBehind) {
  Scheduler s(*backend_, {});
  std::vector<std::shared_ptr<RequestHandle>> handles;
  auto futures = SubmitGroupCollect(s, Group(prompt_, 5, 1000000), nullptr, &handles);
  ASSERT_EQ(futures.size(), 5u);
  handles[2]->Cancel();
  EXPECT_EQ(futures[2].get().reason, FinishReason::kCancelled);
  s.Shutdown(std::chrono::milliseconds(50));
  for (auto& f : futures)
    if (f.valid()) {
      EXPECT_EQ(f.get().reason, FinishReason::kCancelled);
    }
  EXPECT_EQ(s.stats().slots_in_use, 0);
  EXPECT_EQ(s.stats().queued, 0);
}

TEST_F(SchedulerGroupTest, RefusesGroupsItCannotServeAsOne) {
  Scheduler s(*backend_, {.queue_size = 3});
  absl::Status st;
  auto specs = Group(prompt_, 2, 3);
  specs[1].prompt.push_back(5);
  EXPECT_TRUE(SubmitGroupCollect(s, specs, &st).empty());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  specs = Group(prompt_, 2, 3);
  specs[0].session = "a";
  SubmitGroupCollect(s, specs, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  specs = Group(prompt_, 2, 3);
  specs[1].prompt_logprobs = 0;
  SubmitGroupCollect(s, specs, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  specs = Group(prompt_, 1, 3);
  specs[0].max_new_tokens = 0;  // nothing to generate and nothing to score
  SubmitGroupCollect(s, specs, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  SubmitGroupCollect(s, Group(prompt_, 4, 3), &st);  // more than the queue holds: none is queued
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(s.stats().queued, 0);
}

// Log-softmax of a float64 reference row.
double RefLogprob(std::span<const double> row, int32_t id) {
  double mx = row[0];
  for (double v : row) mx = std::max(mx, v);
  double z = 0;
  for (double v : row) z += std::exp(v - mx);
  return row[id] - mx - std::log(z);
}

// Prompt scores against fla's float64 logits (reference data): every prompt token after the first,
// across prefill chunks and the 64-token chunk boundary of the 130-token sequence, alone and
// beside other requests.
TEST_F(SchedulerGroupTest, PromptScoresEqualTheReferenceLogSoftmax) {
  for (int budget : {512, 24}) {
    SchedulerOptions o;
    o.step_token_budget = budget;
    o.min_prefill_tokens = 8;
    Scheduler s(*backend_, o);
    for (int seq : {1, 2}) {
      const std::vector<int32_t> ids = Ids(*ref_, absl::StrCat("seq", seq, ".input_ids"));
      const auto logits = *ToFloat64(*ref_->Find(absl::StrCat("seq", seq, ".logits")));
      const size_t V = logits.size() / ids.size();
      auto busy = SubmitCollect(s, Sampled(prompt_, 20, 7));  // shares the steps
      GenerationSpec spec;
      spec.prompt = ids;
      spec.max_new_tokens = 0;
      spec.prompt_logprobs = 3;
      const Collected c = SubmitCollect(s, spec).get();
      ASSERT_TRUE(c.status.ok()) << c.status;
      EXPECT_EQ(c.reason, FinishReason::kLength);
      EXPECT_TRUE(c.tokens.empty());
      ASSERT_EQ(c.prompt_logprobs.size(), ids.size() - 1);
      for (size_t t = 0; t + 1 < ids.size(); ++t) {
        const std::span<const double> row(logits.data() + t * V, V);
        const SampledToken& got = c.prompt_logprobs[t];
        EXPECT_EQ(got.token, ids[t + 1]);
        EXPECT_NEAR(got.logprob, RefLogprob(row, ids[t + 1]), 2e-4) << "seq " << seq << " position " << t;
        ASSERT_EQ(got.top.size(), 3u);
        for (const auto& [id, lp] : got.top) EXPECT_NEAR(lp, RefLogprob(row, id), 2e-4);
        EXPECT_GE(got.top[0].second, got.top[1].second);
        EXPECT_LE(got.logprob, got.top[0].second + 1e-6);
      }
      EXPECT_TRUE(busy.get().status.ok());
    }
  }
}

TEST_F(SchedulerGroupTest, ScoringAndGeneratingTogether) {
  // Scores come in the first update; the generation is the one an unscored request makes.
  Scheduler s(*backend_, {.step_token_budget = 16, .min_prefill_tokens = 4});
  GenerationSpec plain = Sampled(prompt_, 8, 3);
  GenerationSpec scored = plain;
  scored.prompt_logprobs = 0;
  std::vector<GenerationSpec> group = {scored, scored, scored};
  group[2].sampling.seed = 4;
  auto futures = SubmitGroupCollect(s, group);
  ASSERT_EQ(futures.size(), 3u);
  const Collected first = futures[0].get();
  ASSERT_EQ(first.prompt_logprobs.size(), prompt_.size() - 1);
  for (const SampledToken& t : first.prompt_logprobs) EXPECT_TRUE(t.top.empty());
  EXPECT_EQ(first.tokens, SubmitCollect(s, plain).get().tokens);
  const Collected second = futures[1].get();  // the same scores, copied at the fork
  EXPECT_EQ(second.tokens, first.tokens);
  ASSERT_EQ(second.prompt_logprobs.size(), first.prompt_logprobs.size());
  for (size_t t = 0; t < first.prompt_logprobs.size(); ++t)
    EXPECT_EQ(second.prompt_logprobs[t].logprob, first.prompt_logprobs[t].logprob);
  EXPECT_EQ(futures[2].get().tokens.size(), 8u);
  EXPECT_EQ(s.stats().forks, 2u);
}

}  // namespace
}  // namespace gla
