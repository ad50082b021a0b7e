// Sampler, text assembly (stop strings) and the continuous-batching scheduler on the CPU backend.
#include <gtest/gtest.h>

#include <future>
#include <map>

#include "engine/backend.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/text_assembler.h"
#include "models/safetensors.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/spm_train.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

TEST(Sampler, GreedyPenaltiesAndFilters) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 2.9f};
  TokenHistory h;
  SamplingParams p;
  EXPECT_EQ(SampleToken(logits, 4, p, h, 0).token, 1);
  EXPECT_EQ(SampleToken(logits, 1, p, h, 0).token, 0);  // vocab_limit masks the rest
  h.AddOutput(1);
  p.presence_penalty = 0.5f;
  EXPECT_EQ(SampleToken(logits, 4, p, h, 0).token, 3);  // 3.0 - 0.5 < 2.9
  p = {};
  p.repetition_penalty = 2.0f;
  EXPECT_EQ(SampleToken(logits, 4, p, h, 0).token, 3);  // 3.0 / 2
  p = {};
  p.temperature = 1.0f;
  p.top_k = 1;
  for (uint64_t s = 0; s < 20; ++s) EXPECT_EQ(SampleToken(logits, 4, p, TokenHistory{}, s).token, 1);
  p.top_k = 0;
  p.min_p = 0.95f;  // token 3 has e^-0.1 = 0.905 of the best probability (< 0.95): only token 1 is left
  for (uint64_t s = 0; s < 20; ++s) EXPECT_EQ(SampleToken(logits, 4, p, TokenHistory{}, s).token, 1);
  p.min_p = 0.0f;
  p.top_p = 0.3f;  // the best token alone holds > 30%
  for (uint64_t s = 0; s < 20; ++s) EXPECT_EQ(SampleToken(logits, 4, p, TokenHistory{}, s).token, 1);
}

TEST(Sampler, LogitBiasComesBeforeThePenaltiesAndIntoTheLogprobs) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 2.9f};
  TokenHistory h;
  SamplingParams p;
  p.logit_bias = {{1, -100.0f}};  // bans the best
  EXPECT_EQ(SampleToken(logits, 4, p, h, 0).token, 3);
  p.logit_bias = {{0, 100.0f}, {9, 5.0f}};  // forces the worst; an id beyond the vocabulary is ignored
  p.logprobs = 1;
  const SampledToken t = SampleToken(logits, 4, p, h, 0);
  EXPECT_EQ(t.token, 0);
  EXPECT_GT(t.logprob, -1e-6f);  // all but certain under the biased logits
  ASSERT_EQ(t.top.size(), 1u);
  EXPECT_EQ(t.top[0].first, 0);
  p = {};
  p.logit_bias = {{2, 2.0f}};  // 4.0 after the bias, then the repetition penalty halves it: 2.0 < 3.0
  p.repetition_penalty = 2.0f;
  h.AddPrompt(std::vector<int32_t>{2});
  EXPECT_EQ(SampleToken(logits, 4, p, h, 0).token, 1);
}

TEST(Sampler, SeededDrawsFollowTheDistribution) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 1/4, 3/4
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  p.logprobs = 2;
  int ones = 0;
  for (uint64_t s = 0; s < 4000; ++s) ones += SampleToken(logits, 2, p, TokenHistory{}, s).token;
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
  const auto a = SampleToken(logits, 2, p, TokenHistory{}, 7), b = SampleToken(logits, 2, p, TokenHistory{}, 7);
  EXPECT_EQ(a.token, b.token);
  ASSERT_EQ(a.top.size(), 2u);
  EXPECT_EQ(a.top[0].first, 1);
  EXPECT_NEAR(a.top[0].second, std::log(0.75), 1e-5);
  EXPECT_NEAR(a.top[1].second, std::log(0.25), 1e-5);
}

TEST(TextAssembler, HoldsBackAndCutsAtStopStrings) {
  const std::string spm = testing::TrainSentencePiece("assembler");
  auto tok = Tokenizer::Load(spm);
  ASSERT_TRUE(tok.ok());
  const std::string text = "the quick brown fox jumps over the lazy dog";
  auto ids = *(*tok)->Encode(text, false);
  auto run = [&](std::vector<std::string> stops, bool* stopped_at_all) {
    TextAssembler a(tok->get(), std::move(stops));
    std::string out;
    *stopped_at_all = false;
    for (int32_t id : ids) {
      bool stopped = false;
      out += a.Push(id, &stopped);
      if (stopped) {
        *stopped_at_all = true;
        return out;
      }
    }
    return out + a.Finish();
  };
  bool stopped = false;
  EXPECT_EQ(run({}, &stopped), text);
  EXPECT_FALSE(stopped);
  EXPECT_EQ(run({"fox j"}, &stopped), "the quick brown ");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(run({"lazy", "brown"}, &stopped), "the quick ");
  EXPECT_EQ(run({"dogs"}, &stopped), text);  // a held-back prefix is released at the end
  EXPECT_FALSE(stopped);
}

using testing::Collected;
using testing::SubmitCollect;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = 4, .threads = 1});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    auto f = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
    auto p = *ToInt64(*f->Find("greedy.prompt_ids"));
    auto o = *ToInt64(*f->Find("greedy.output_ids"));
    prompt_.assign(p.begin(), p.end());
    greedy_.assign(o.begin(), o.end());
  }
  GenerationSpec Greedy(std::vector<int32_t> prompt, int max_new) {
    GenerationSpec s;
    s.prompt = std::move(prompt);
    s.max_new_tokens = max_new;
    s.ignore_eos = true;
    return s;
  }
  std::unique_ptr<Backend> backend_;
  std::vector<int32_t> prompt_, greedy_;
};

TEST_F(SchedulerTest, GreedyEqualsReferenceContinuation) {
  Scheduler s(*backend_, {});
  auto r = SubmitCollect(s, Greedy(prompt_, 16)).get();
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.tokens, greedy_);
  EXPECT_EQ(s.stats().slots_in_use, 0);
}

TEST_F(SchedulerTest, ManyRequestsWithTheBatchChangingUnderThem) {
  // More requests than slots, different prompt lengths and budgets, a small token budget so
  // prefills are chunked: each must equal the same request run alone.
  SchedulerOptions o;
  o.step_token_budget = 24;
  o.min_prefill_tokens = 8;
  std::vector<GenerationSpec> specs;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> p(prompt_.begin(), prompt_.begin() + 1 + (i * 7) % 24);
    for (int j = 0; j < i * 5; ++j) p.push_back((j * 31 + i) % 500 + 3);
    GenerationSpec spec = Greedy(p, 3 + i % 9);
    if (i % 3 == 0) {
      spec.sampling.temperature = 0.8f;
      spec.sampling.top_p = 0.9f;
      spec.sampling.seed = 100 + i;
    }
    specs.push_back(spec);
  }
  std::vector<Collected> alone;
  {
    Scheduler s(*backend_, {});
    for (const auto& spec : specs) alone.push_back(SubmitCollect(s, spec).get());
  }
  Scheduler s(*backend_, o);
  std::vector<std::future<Collected>> futures;
  for (const auto& spec : specs) futures.push_back(SubmitCollect(s, spec));
  for (size_t i = 0; i < specs.size(); ++i) {
    const Collected c = futures[i].get();
    EXPECT_EQ(c.tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(c.tokens.size(), static_cast<size_t>(specs[i].max_new_tokens));
  }
  EXPECT_EQ(s.stats().slots_in_use, 0);
  EXPECT_EQ(s.stats().queued, 0);
}

TEST_F(SchedulerTest, CancelReleasesTheSlot) {
  Scheduler s(*backend_, {});
  std::shared_ptr<RequestHandle> h;
  auto f = SubmitCollect(s, Greedy(prompt_, 1000000), nullptr, &h);
  ASSERT_TRUE(h);
  while (s.stats().slots_in_use == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  h->Cancel();
  const Collected c = f.get();
  EXPECT_EQ(c.reason, FinishReason::kCancelled);
  EXPECT_EQ(s.stats().slots_in_use, 0);
}

TEST_F(SchedulerTest, DeadlineEndsTheRequest) {
  Scheduler s(*backend_, {});
  GenerationSpec spec = Greedy(prompt_, 1000000);
  spec.deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(50);
  const Collected c = SubmitCollect(s, spec).get();
  EXPECT_EQ(c.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(s.stats().slots_in_use, 0);
}

TEST_F(SchedulerTest, QueueFullIsResourceExhaustedAndShutdownDrains) {
  SchedulerOptions o;
  o.queue_size = 2;
  Scheduler s(*backend_, o);
  std::vector<std::future<Collected>> running;
  for (int i = 0; i < 4; ++i) {  // fill the 4 slots, one admission at a time
    absl::Status submitted;
    running.push_back(SubmitCollect(s, Greedy(prompt_, 1000000), &submitted));
    ASSERT_TRUE(submitted.ok()) << submitted;
    while (s.stats().slots_in_use < i + 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  absl::Status st;
  auto q1 = SubmitCollect(s, Greedy(prompt_, 2), &st);
  EXPECT_TRUE(st.ok());
  auto q2 = SubmitCollect(s, Greedy(prompt_, 2), &st);
  EXPECT_TRUE(st.ok());
  auto q3 = SubmitCollect(s, Greedy(prompt_, 2), &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  s.Shutdown(std::chrono::milliseconds(100));  // the endless ones are cancelled after the grace
  for (auto& f : running) EXPECT_EQ(f.get().reason, FinishReason::kCancelled);
  EXPECT_EQ(SubmitCollect(s, Greedy(prompt_, 2), &st).get().updates, 0);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  q1.get();
  q2.get();
  EXPECT_EQ(s.stats().slots_in_use, 0);
}

}  // namespace
}  // namespace gla
