// Structured output through the scheduler (issue 21) on the CPU backend with the default model
// (models/gla-brown, its SentencePiece vocabulary of 8,000): whatever the sampler draws, the text
// a client sees is in the constraint's language, the output ends where the text is complete, and
// n > 1, stop strings and logprobs keep working with a constraint.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <future>
#include <regex>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/constraints/constraint.h"
#include "engine/mask_workers.h"
#include "engine/scheduler.h"
#include "models/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/support/forwarding_backend.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::Collected;
using testing::SubmitCollect;
using testing::SubmitGroupCollect;

const std::string kModelDir = std::string(GLA_SOURCE_DIR) + "/models/gla-brown";

std::shared_ptr<const constraints::Constraint> Compile(constraints::Constraint::Kind kind, const std::string& text) {
  auto c = constraints::Constraint::Compile(kind, text);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : nullptr;
}

class StructuredOutput : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = MakeCpuBackend(kModelDir, {.slots = 8, .threads = 1});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    ASSERT_NE(backend_->tokenizer(), nullptr);
    auto ids = backend_->tokenizer()->Encode("The committee said that", true);
    ASSERT_TRUE(ids.ok());
    prompt_ = *ids;
  }
  GenerationSpec Spec(std::shared_ptr<const constraints::Constraint> c, uint64_t seed, float temperature = 1.0f,
                      int max_new = 96) {
    GenerationSpec s;
    s.prompt = prompt_;
    s.max_new_tokens = max_new;
    s.sampling.temperature = temperature;
    s.sampling.seed = seed;
    s.constraint = std::move(c);
    return s;
  }
  std::unique_ptr<Backend> backend_;
  std::vector<int32_t> prompt_;
};

// The name/age schema: what a valid output looks like, checked field by field.
constexpr char kPerson[] = R"({"type": "object",
  "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 12},
                 "age": {"type": "integer", "minimum": 0, "maximum": 120},
                 "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
  "required": ["name", "age"], "additionalProperties": false})";

void ExpectPerson(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: " << text;
  ASSERT_TRUE(j.is_object()) << text;
  ASSERT_TRUE(j.contains("name") && j["name"].is_string()) << text;
  const std::string name = j["name"];
  // Length in characters (the schema's unit): count UTF-8 lead bytes.
  int chars = 0;
  for (unsigned char ch : name) chars += (ch & 0xC0) != 0x80;
  EXPECT_GE(chars, 1) << text;
  EXPECT_LE(chars, 12) << text;
  ASSERT_TRUE(j.contains("age") && j["age"].is_number_integer()) << text;
  EXPECT_GE(j["age"].get<int64_t>(), 0) << text;
  EXPECT_LE(j["age"].get<int64_t>(), 120) << text;
  for (auto it = j.begin(); it != j.end(); ++it) EXPECT_TRUE(it.key() == "name" || it.key() == "age" || it.key() == "tags") << text;
  if (j.contains("tags")) {
    ASSERT_TRUE(j["tags"].is_array()) << text;
    EXPECT_LE(j["tags"].size(), 3u) << text;
    for (const auto& t : j["tags"]) EXPECT_TRUE(t == "a" || t == "b") << text;
  }
}

TEST_F(StructuredOutput, SampledJsonAlwaysValidatesAndEndsWhenComplete) {
  Scheduler s(*backend_, {});
  auto c = Compile(constraints::Constraint::Kind::kJsonSchema, kPerson);
  ASSERT_NE(c, nullptr);
  int complete = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    const Collected got = SubmitCollect(s, Spec(c, seed, seed % 3 == 0 ? 0.0f : 1.0f)).get();
    ASSERT_TRUE(got.status.ok()) << got.status;
    if (got.reason == FinishReason::kLength) continue;  // cut by max_new_tokens: a prefix, not checked
    ++complete;
    EXPECT_TRUE(got.reason == FinishReason::kEos || got.reason == FinishReason::kStop) << FinishReasonName(got.reason);
    ExpectPerson(got.text);
  }
  EXPECT_GE(complete, 8) << "most outputs of the small schema complete within 96 tokens";
}

// A backend that watches when the scheduler's masks are made: the items' masks are empty when the
// step starts (they are not made before the forward pass) and made when its before_sampling hook
// returns (while a GPU would run the forward pass), by the mask workers.
class MaskWatchingBackend : public testing::ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  using Backend::Step;
  absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out,
                    const std::function<void()>& before_sampling) override {
    const int words = (vocab_limit() + 63) / 64;
    auto made = [&](const StepItem& it) {
      return std::any_of(it.allowed, it.allowed + words, [](uint64_t w) { return w != 0; });
    };
    int masked = 0;
    for (const StepItem& it : items)
      if (it.allowed != nullptr) ++masked, made_early_ += made(it);
    if (masked > 0) {
      ++masked_steps_;
      hooked_ += before_sampling != nullptr;
    }
    return inner().Step(items, out, [&] {
      if (before_sampling) before_sampling();
      for (const StepItem& it : items)
        if (it.allowed != nullptr) unmade_ += !made(it);
    });
  }
  int masked_steps_ = 0, hooked_ = 0, made_early_ = 0, unmade_ = 0;
};

TEST_F(StructuredOutput, MasksAreMadeWhileTheStepRunsOnTheMaskWorkers) {
  MaskWatchingBackend watching(*backend_);
  for (int threads : {0, 3}) {
    SchedulerOptions o;
    o.mask_threads = threads;
    Scheduler s(watching, o);
    auto c = Compile(constraints::Constraint::Kind::kJsonSchema, kPerson);
    ASSERT_NE(c, nullptr);
    std::vector<std::future<Collected>> runs;
    for (uint64_t seed = 1; seed <= 6; ++seed) runs.push_back(SubmitCollect(s, Spec(c, seed, 1.0f)));
    for (auto& r : runs) {
      const Collected got = r.get();
      ASSERT_TRUE(got.status.ok()) << got.status;
      if (got.reason != FinishReason::kLength) ExpectPerson(got.text);
    }
  }
  EXPECT_GT(watching.masked_steps_, 20);
  EXPECT_EQ(watching.hooked_, watching.masked_steps_) << "every masked step gets the hook";
  EXPECT_EQ(watching.made_early_, 0) << "no mask is made before the step's forward pass";
  EXPECT_EQ(watching.unmade_, 0) << "every mask is made when the hook returns";
}

TEST(MaskWorkers, RunsEveryJobOnceWithAnyNumberOfThreads) {
  for (int threads : {0, 1, 3}) {
    MaskWorkers workers(threads);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{64}}) {
      for (int round = 0; round < 20; ++round) {
        std::vector<std::atomic<int>> ran(n);
        workers.Run(n, [&](size_t i) { ran[i].fetch_add(1); });
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(ran[i].load(), 1) << threads << " threads, job " << i << " of " << n;
      }
    }
  }
}

TEST_F(StructuredOutput, RegexOutputMatchesAndStopsWhereNothingMayFollow) {
  Scheduler s(*backend_, {});
  auto c = Compile(constraints::Constraint::Kind::kRegex, "[0-9]{3}-[0-9]{4}");
  ASSERT_NE(c, nullptr);
  const std::regex want("[0-9]{3}-[0-9]{4}");
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const Collected got = SubmitCollect(s, Spec(c, seed)).get();
    ASSERT_TRUE(got.status.ok()) << got.status;
    EXPECT_EQ(got.reason, FinishReason::kStop) << "complete with nothing to follow: ended without an EOS step";
    EXPECT_TRUE(std::regex_match(got.text, want)) << got.text;
  }
}

TEST_F(StructuredOutput, GrammarChoicesWithLogprobsOfAllowedTokensOnly) {
  Scheduler s(*backend_, {});
  auto c = Compile(constraints::Constraint::Kind::kGrammar, R"(root ::= ("yes" | "no" | "maybe") "." )");
  ASSERT_NE(c, nullptr);
  GenerationSpec spec = Spec(c, 3);
  spec.sampling.logprobs = 5;
  const Collected got = SubmitCollect(s, spec).get();
  ASSERT_TRUE(got.status.ok()) << got.status;
  EXPECT_TRUE(got.text == "yes." || got.text == "no." || got.text == "maybe.") << got.text;
  ASSERT_EQ(got.logprobs.size(), got.tokens.size());
  const Tokenizer& tok = *backend_->tokenizer();
  for (const SampledToken& t : got.logprobs) {
    EXPECT_LE(t.logprob, 0.0f);
    for (const auto& [id, lp] : t.top) {
      EXPECT_TRUE(std::isfinite(lp)) << "a masked id among the alternatives: " << id;
      // Every alternative is a token the grammar allowed there: a piece of the choices' letters.
      const std::string piece = tok.PieceText(id);
      EXPECT_EQ(piece.find_first_not_of(" yesnomaybe."), std::string::npos) << piece;
    }
  }
}

TEST_F(StructuredOutput, EveryGenerationOfAGroupKeepsItsOwnConstraintState) {
  Scheduler s(*backend_, {});
  auto c = Compile(constraints::Constraint::Kind::kJsonSchema, kPerson);
  ASSERT_NE(c, nullptr);
  std::vector<GenerationSpec> specs;
  for (uint64_t j = 0; j < 4; ++j) specs.push_back(Spec(c, 100 + j));
  auto futures = SubmitGroupCollect(s, specs);
  std::vector<std::string> texts;
  for (auto& f : futures) {
    const Collected got = f.get();
    ASSERT_TRUE(got.status.ok()) << got.status;
    if (got.reason != FinishReason::kLength) ExpectPerson(got.text);
    texts.push_back(got.text);
  }
  EXPECT_FALSE(texts[0] == texts[1] && texts[1] == texts[2] && texts[2] == texts[3]) << "seeds differ";
}

TEST_F(StructuredOutput, AStopStringStillEndsAConstrainedOutput) {
  Scheduler s(*backend_, {});
  auto c = Compile(constraints::Constraint::Kind::kRegex, "a(b|c)*d");
  ASSERT_NE(c, nullptr);
  GenerationSpec spec = Spec(c, 5, 1.0f, 40);
  spec.stop = {"b"};
  const Collected got = SubmitCollect(s, spec).get();
  ASSERT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(got.text.find('b'), std::string::npos) << got.text;
  EXPECT_EQ(got.text.rfind("a", 0), 0u) << got.text;
}

TEST(StructuredOutputNoTokenizer, IsRefusedClearly) {
  auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = 1, .threads = 1});
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ((*b)->tokenizer(), nullptr) << "this test needs a model without a tokenizer (the reference model had none)";
  Scheduler s(**b, {});
  GenerationSpec spec;
  spec.prompt = {1, 2, 3};
  spec.constraint = Compile(constraints::Constraint::Kind::kRegex, "a");
  auto h = s.Submit(spec, [](GenerationUpdate&&) {});
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(h.status().message().find("tokenizer"), std::string::npos) << h.status();
}

}  // namespace
}  // namespace gla
