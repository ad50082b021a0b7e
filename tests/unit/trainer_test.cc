// Fine-tuning on the CPU: whole-model gradients (full and LoRA) against finite differences of the
// forward, the training forward against the serving runner, and short training runs.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/model/cpu_model.h"
#include "engine/model/train_model.h"
#include "engine/finetune/trainer.h"
#include "tests/support/random_model.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

// The reference checkpoint (untied, no conv), and random ones with every other option: short
// conv + GQA + clamp_min (low enough that some gates clamp) + tied embeddings, and no output gate.
std::string ModelDir(const std::string& variant) {
  if (variant == "reference") return testing::TinyModelDir();
  const std::string base = R"({"model_type": "gla", "hidden_size": 32, "num_hidden_layers": 2, "num_heads": 2,
    "expand_k": 0.5, "expand_v": 1, "hidden_ratio": 2, "vocab_size": 61, "norm_eps": 1e-6, )";
  const std::string extra = variant == "options"
                                ? R"("num_kv_heads": 1, "use_short_conv": true, "conv_size": 4, "clamp_min": -0.04,
                                     "tie_word_embeddings": true})"
                                : R"("use_output_gate": false})";
  const std::string dir = testing::MakeTempDir("trainer_" + variant);
  const absl::Status s = testing::WriteRandomModel(dir, {base + extra, DType::kF32, 11, 1});
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

std::vector<int32_t> RandomTokens(int n, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Checks the analytic gradient of one tensor along a random unit direction against finite
// differences of the loss. The loss is a float sum over ~40 tokens: the steps are large enough
// that rounding (~1e-4 of the sum) stays far below the tolerance.
void ExpectDirectionalDerivative(const std::string& what, Weight& param, const Weight& grad,
                                 const std::function<double()>& loss, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  std::vector<float> dir(param.data.size());
  double norm = 0.0;
  for (float& d : dir) {
    d = nd(rng);
    norm += static_cast<double>(d) * d;
  }
  double analytic = 0.0;
  for (size_t i = 0; i < dir.size(); ++i) {
    dir[i] /= static_cast<float>(std::sqrt(norm));
    analytic += static_cast<double>(grad.data[i]) * dir[i];
  }
  const std::vector<float> saved = param.data;
  auto central = [&](float h) {
    for (size_t i = 0; i < dir.size(); ++i) param.data[i] = saved[i] + h * dir[i];
    const double up = loss();
    for (size_t i = 0; i < dir.size(); ++i) param.data[i] = saved[i] - h * dir[i];
    const double down = loss();
    param.data = saved;
    return (up - down) / (2.0 * h);
  };
  // Richardson extrapolation of two central differences cancels the h^2 (curvature) term: the
  // random models are curved enough that a plain central difference is off by a few percent.
  const float h = 5e-3f;
  const double numeric = (4.0 * central(h) - central(2 * h)) / 3.0;
  EXPECT_NEAR(analytic, numeric, 1e-2 * std::fabs(numeric) + 2e-3) << what;
}

class TrainModelGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainModelGradients, FullTrainingMatchesFiniteDifferences) {
  auto ck = LoadCheckpoint(ModelDir(GetParam()));
  ASSERT_TRUE(ck.ok()) << ck.status();
  ModelWeights& w = ck->weights;
  const TrainModel model(ck->config, &w, nullptr);
  const std::vector<int32_t> tokens = RandomTokens(41, ck->config.vocab_size, 3);
  ModelWeights g = ZerosLike(w);
  const TrainGrads grads{&g, nullptr};
  const double loss = model.Run(tokens, &grads, 1.0f, 0);
  EXPECT_NEAR(loss, model.Run(tokens, nullptr, 1.0f, 0), 1e-6 * loss);  // the backward changes nothing
  std::mt19937 rng(5);
  int checked = 0;
  ForEachParam(w, g, [&](Weight& p, Weight& gp, bool) {
    ExpectDirectionalDerivative(absl::StrCat("tensor #", checked++, " ", p.data.size(), " values"), p, gp,
                                [&] { return model.Run(tokens, nullptr, 1.0f, 0); }, rng);
  });
  EXPECT_GT(checked, 20);
}

TEST_P(TrainModelGradients, LoraMatchesFiniteDifferences) {
  auto ck = LoadCheckpoint(ModelDir(GetParam()));
  ASSERT_TRUE(ck.ok()) << ck.status();
  LoraConfig lc;
  lc.r = 3;
  lc.alpha = 5.0;
  std::vector<std::string> names = {"q_proj", "k_proj", "v_proj", "o_proj", "gk_proj", "gate_proj", "up_proj", "down_proj"};
  if (ck->config.use_output_gate) names.push_back("g_proj");
  auto targets = ParseLoraTargets(names);
  ASSERT_TRUE(targets.ok()) << targets.status();
  lc.targets = *targets;
  auto adapter = NewLoraAdapter(ck->config, lc, 9);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  // B starts at zero (the adapter is a no-op), which would make every dA zero: randomise B.
  std::mt19937 rng(6);
  for (auto& layer : adapter->layers)
    for (auto& pair : layer)
      if (pair.has_value()) pair->b.data = testing::RandomVector(pair->b.data.size(), rng, -0.1f, 0.1f);
  const TrainModel model(ck->config, &ck->weights, &*adapter);
  const std::vector<int32_t> tokens = RandomTokens(37, ck->config.vocab_size, 4);
  LoraAdapter g = ZerosLike(*adapter);
  const TrainGrads grads{nullptr, &g};
  model.Run(tokens, &grads, 1.0f, 0);
  int checked = 0;
  ForEachParam(*adapter, g, [&](Weight& p, Weight& gp, bool) {
    ExpectDirectionalDerivative(absl::StrCat("LoRA tensor #", checked++), p, gp,
                                [&] { return model.Run(tokens, nullptr, 1.0f, 0); }, rng);
  });
  EXPECT_EQ(checked, 2 * ck->config.num_hidden_layers * static_cast<int>(lc.targets.size()));
}

// The training forward is the serving model's forward: its loss equals the cross-entropy of the
// CPU runner's logits (the runner is checked against fla's float64 logits elsewhere); with an
// adapter, it equals the runner on the merged weights.
TEST_P(TrainModelGradients, LossEqualsServingModelCrossEntropy) {
  const std::string dir = ModelDir(GetParam());
  auto ck = LoadCheckpoint(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  const std::vector<int32_t> tokens = RandomTokens(70, ck->config.vocab_size, 8);
  auto cross_entropy = [&](CpuModel& m) {
    SequenceState st = m.NewState();
    auto logits = m.Run(std::span<const int32_t>(tokens).first(tokens.size() - 1), st, true);
    EXPECT_TRUE(logits.ok());
    const int V = ck->config.vocab_size;
    double sum = 0.0;
    for (size_t t = 0; t + 1 < tokens.size(); ++t) {
      const float* z = logits->data() + t * V;
      double mx = z[0], se = 0.0;
      for (int i = 1; i < V; ++i) mx = std::max<double>(mx, z[i]);
      for (int i = 0; i < V; ++i) se += std::exp(z[i] - mx);
      sum += mx + std::log(se) - z[tokens[t + 1]];
    }
    return sum;
  };
  auto base = CpuModel::Load(dir);
  ASSERT_TRUE(base.ok());
  const TrainModel plain(ck->config, &ck->weights, nullptr);
  const double want = cross_entropy(**base);
  EXPECT_NEAR(plain.Run(tokens, nullptr, 1.0f, 0), want, 1e-5 * want);

  LoraConfig lc;
  lc.r = 4;
  lc.targets = *ParseLoraTargets({"q_proj", "v_proj", "gk_proj", "down_proj"});
  auto adapter = NewLoraAdapter(ck->config, lc, 2);
  ASSERT_TRUE(adapter.ok());
  std::mt19937 rng(7);
  for (auto& layer : adapter->layers)
    for (auto& pair : layer)
      if (pair.has_value()) pair->b.data = testing::RandomVector(pair->b.data.size(), rng, -0.2f, 0.2f);
  const TrainModel adapted(ck->config, &ck->weights, &*adapter);
  auto merged_ck = LoadCheckpoint(dir);
  ASSERT_TRUE(merged_ck.ok());
  ASSERT_TRUE(MergeLoraAdapter(*adapter, &merged_ck->weights).ok());
  auto merged = CpuModel::FromCheckpoint(std::move(*merged_ck));
  ASSERT_TRUE(merged.ok());
  const double want_adapted = cross_entropy(**merged);
  EXPECT_GT(std::fabs(want_adapted - want), 1e-3 * want);  // the adapter does change the model
  EXPECT_NEAR(adapted.Run(tokens, nullptr, 1.0f, 0), want_adapted, 1e-5 * want_adapted);
}

INSTANTIATE_TEST_SUITE_P(Models, TrainModelGradients, ::testing::Values("reference", "options", "no_gate"));

// How the work of a window is cut into slices (between which serving may run) changes nothing but
// rounding: losses and every gradient, full and LoRA with dropout, are those of uncut work.
TEST_P(TrainModelGradients, SlicingTheWorkChangesNoResult) {
  auto ck = LoadCheckpoint(ModelDir(GetParam()));
  ASSERT_TRUE(ck.ok()) << ck.status();
  const std::vector<int32_t> tokens = RandomTokens(333, ck->config.vocab_size, 12);
  LoraConfig lc;
  lc.r = 4;
  lc.dropout = 0.2;
  lc.targets = *ParseLoraTargets({"q_proj", "v_proj", "gk_proj", "o_proj", "down_proj"});
  auto adapter = NewLoraAdapter(ck->config, lc, 3);
  ASSERT_TRUE(adapter.ok());
  std::mt19937 rng(8);
  for (auto& layer : adapter->layers)
    for (auto& pair : layer)
      if (pair.has_value()) pair->b.data = testing::RandomVector(pair->b.data.size(), rng, -0.2f, 0.2f);
  auto close = [](const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      den += static_cast<double>(b[i]) * b[i];
    }
    EXPECT_LE(std::sqrt(num), 1e-5 * std::sqrt(den) + 1e-9) << what;
  };
  // Whole (slices far longer than the window) against cut into the smallest slices (16 rows,
  // the GLA's 64: 6 time slices of 333 rows).
  const TrainModel whole_full(ck->config, &ck->weights, nullptr), whole_lora(ck->config, &ck->weights, &*adapter);
  TrainModel cut_full(ck->config, &ck->weights, nullptr), cut_lora(ck->config, &ck->weights, &*adapter);
  const_cast<TrainModel&>(whole_full).ScaleSlicesForTest(1e6);
  const_cast<TrainModel&>(whole_lora).ScaleSlicesForTest(1e6);
  cut_full.ScaleSlicesForTest(1e-9);
  cut_lora.ScaleSlicesForTest(1e-9);
  int pauses = 0;
  const auto count = [&] { return ++pauses, true; };

  ModelWeights g_whole = ZerosLike(ck->weights), g_cut = ZerosLike(ck->weights);
  const TrainGrads gw{&g_whole, nullptr}, gc{&g_cut, nullptr};
  const double l_whole = whole_full.Run(tokens, &gw, 0.5f, 0);
  const double l_cut = cut_full.Run(tokens, &gc, 0.5f, 0, count);
  EXPECT_NEAR(l_cut, l_whole, 1e-6 * l_whole);
  EXPECT_GT(pauses, 2 * ck->config.num_hidden_layers * 20) << "the work was cut into slices";
  int n = 0;
  ForEachParam(g_whole, g_cut, [&](Weight& a, Weight& b, bool) { close(b.data, a.data, absl::StrCat("tensor #", n++)); });

  LoraAdapter a_whole = ZerosLike(*adapter), a_cut = ZerosLike(*adapter);
  const TrainGrads lw{nullptr, &a_whole}, lcut{nullptr, &a_cut};
  const double d_whole = whole_lora.Run(tokens, &lw, 1.0f, 77);
  EXPECT_NEAR(cut_lora.Run(tokens, &lcut, 1.0f, 77), d_whole, 1e-6 * d_whole);
  EXPECT_NE(d_whole, whole_lora.Run(tokens, nullptr, 1.0f, 77)) << "dropout is on while training";
  n = 0;
  ForEachParam(a_whole, a_cut, [&](Weight& a, Weight& b, bool) { close(b.data, a.data, absl::StrCat("LoRA #", n++)); });
}

// The pauses come at a rate set by the work, not by the window: eight times the window, about
// eight times the pauses (so the longest stretch between two stays that of one slice).
TEST(TrainModel, PausesGrowWithTheWindowAndTheGapBetweenThemDoesNot) {
  auto ck = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  const TrainModel model(ck->config, &ck->weights, nullptr);
  ModelWeights g = ZerosLike(ck->weights);
  const TrainGrads grads{&g, nullptr};
  struct Count {
    int pauses = 0;
    double longest_s = 0;
  };
  auto run = [&](int T) {
    Count c;
    auto last = std::chrono::steady_clock::now();
    const std::vector<int32_t> tokens = RandomTokens(T + 1, ck->config.vocab_size, 2);
    model.Run(tokens, &grads, 1.0f, 0, [&] {
      const auto now = std::chrono::steady_clock::now();
      c.longest_s = std::max(c.longest_s, std::chrono::duration<double>(now - last).count());
      last = now;
      ++c.pauses;
      return true;
    });
    return c;
  };
  const Count short_window = run(2048), long_window = run(16384);
  std::printf("[ measure ] reference model, one window forward+backward: T=2048 %d pauses, longest gap %.1f ms; "
              "T=16384 %d pauses, longest gap %.1f ms\n",
              short_window.pauses, short_window.longest_s * 1e3, long_window.pauses, long_window.longest_s * 1e3);
  EXPECT_GE(long_window.pauses, 5 * short_window.pauses);

  // A stop at any pause ends the run there (cancel and SIGTERM within one slice), not at the end
  // of the layer: no pause after the one that said stop, and NaN for the partial run.
  const std::vector<int32_t> tokens = RandomTokens(16385, ck->config.vocab_size, 2);
  for (int stop_at : {2, 7, long_window.pauses / 2}) {
    int calls = 0;
    const double loss = model.Run(tokens, &grads, 1.0f, 0, [&] { return ++calls < stop_at; });
    EXPECT_TRUE(std::isnan(loss)) << stop_at;
    EXPECT_EQ(calls, stop_at);
  }
}

TEST(TrainOptions, ValidationNamesTheField) {
  GlaConfig config;
  ASSERT_TRUE(config.Validate().ok());
  TrainOptions o;
  o.lora.targets = {LoraTarget::kQ};
  EXPECT_TRUE(ValidateTrainOptions(o, config).ok());
  auto refused = [&](auto mutate, const std::string& field) {
    TrainOptions bad = o;
    mutate(bad);
    const absl::Status s = ValidateTrainOptions(bad, config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
  };
  refused([](TrainOptions& b) { b.learning_rate = -1; }, "learning_rate");
  refused([](TrainOptions& b) { b.learning_rate = NAN; }, "learning_rate");
  refused([](TrainOptions& b) { b.max_steps = 0; }, "max_steps");
  refused([](TrainOptions& b) { b.warmup_steps = 1000; }, "warmup_steps");
  refused([](TrainOptions& b) { b.batch_sequences = 0; }, "batch_sequences");
  refused([](TrainOptions& b) { b.sequence_length = 0; }, "sequence_length");
  refused([](TrainOptions& b) { b.beta2 = 1.0; }, "beta2");
  refused([](TrainOptions& b) { b.lora.r = 0; }, "rank");
  refused([](TrainOptions& b) { b.lora.dropout = 1.0; }, "dropout");
  refused([](TrainOptions& b) { b.lora.targets.clear(); }, "target_modules");
  config.use_output_gate = false;
  refused([](TrainOptions& b) { b.lora.targets = {LoraTarget::kG}; }, "g_proj");
}

TEST(TrainOptions, WarmupThenCosine) {
  TrainOptions o;
  o.learning_rate = 1e-3;
  o.min_lr_ratio = 0.1;
  o.max_steps = 110;
  o.warmup_steps = 10;
  EXPECT_NEAR(LearningRateAt(o, 0), 1e-4, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 9), 1e-3, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 10), 1e-3, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 10 + 99 / 2.0), 0.55e-3, 2e-5);  // halfway down the cosine
  EXPECT_NEAR(LearningRateAt(o, 109), 1e-4, 1e-12);
  for (int s = 11; s < 110; ++s) EXPECT_LE(LearningRateAt(o, s), LearningRateAt(o, s - 1));
}

// A short run on a small repeated text lowers the training loss and that text's loss (hence its
// perplexity) below the base model's; the same seed gives the same run.
class TrainerRuns : public ::testing::TestWithParam<TrainOptions::Method> {};

TEST_P(TrainerRuns, LowersTheLossOfItsText) {
  auto ck = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(ck.ok());
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 6; ++d) {
    std::vector<int32_t> doc;
    for (int i = 0; i < 50; ++i) doc.push_back(static_cast<int32_t>((7 * i + 3 * d) % 40 + 100));
    docs.push_back(doc);
  }
  TrainOptions o;
  o.method = GetParam();
  o.lora.targets = *ParseLoraTargets({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  o.lora.r = 8;
  o.lora.alpha = 16;
  o.lora.dropout = 0.05;
  o.max_steps = 30;
  o.warmup_steps = 3;
  o.batch_sequences = 3;
  o.sequence_length = 24;
  o.learning_rate = GetParam() == TrainOptions::Method::kLora ? 1e-2 : 3e-3;
  o.weight_decay = 0.01;
  auto trainer = Trainer::Create(*ck, o, docs);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const auto before = (*trainer)->MeanLoss(docs);
  ASSERT_TRUE(before.ok());
  std::vector<double> losses;
  while (!(*trainer)->done()) {
    auto p = (*trainer)->Step();
    ASSERT_TRUE(p.ok()) << p.status();
    losses.push_back(p->loss);
    EXPECT_GT(p->tokens_per_second, 0.0);
  }
  EXPECT_EQ((*trainer)->progress().step, 30);
  EXPECT_EQ((*trainer)->Step().status().code(), absl::StatusCode::kFailedPrecondition);
  const auto after = (*trainer)->MeanLoss(docs);
  ASSERT_TRUE(after.ok());
  std::printf("[ measure ] %s: text loss %.3f -> %.3f (perplexity %.1f -> %.1f), step loss %.3f -> %.3f\n",
              GetParam() == TrainOptions::Method::kLora ? "LoRA" : "full", *before, *after, std::exp(*before),
              std::exp(*after), losses.front(), losses.back());
  EXPECT_LT(*after, *before - 1.0);
  EXPECT_LT(losses.back(), losses.front() - 1.0);

  // Same seed, same run (dropout masks and window order included).
  auto again = Trainer::Create(*ck, o, docs);
  ASSERT_TRUE(again.ok());
  for (int s = 0; s < 3; ++s) EXPECT_EQ((*again)->Step()->loss, losses[s]);

  // What a run hands over: an adapter for LoRA, weights for full training.
  EXPECT_EQ((*trainer)->adapter().ok(), GetParam() == TrainOptions::Method::kLora);
  EXPECT_EQ((*trainer)->weights().ok(), GetParam() == TrainOptions::Method::kFull);
}

INSTANTIATE_TEST_SUITE_P(Methods, TrainerRuns,
                         ::testing::Values(TrainOptions::Method::kLora, TrainOptions::Method::kFull));

TEST(Trainer, RefusesUnusableData) {
  auto ck = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(ck.ok());
  TrainOptions o;
  o.lora.targets = {LoraTarget::kQ};
  EXPECT_EQ(Trainer::Create(*ck, o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Trainer::Create(*ck, o, {{5}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Trainer::Create(*ck, o, {{5, 512}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Trainer::Create(*ck, o, {{5, -1}}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Training on a GPU is asked for by device; where it cannot happen the refusal says why, and the
// CPU path is untouched. (The GPU path itself is tested on the GPU: tests/cuda/cuda_train_test.cc.)
TEST(Trainer, CudaDeviceRefusedWhereItCannotTrain) {
  auto ck = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  // gla-tiny's heads (dk = 8) are smaller than the GPU kernels' tiles, in any build.
  const absl::Status why = CudaTrainingAvailable(ck->config);
  EXPECT_EQ(why.code(), absl::StatusCode::kFailedPrecondition) << why;
  TrainOptions o;
  o.lora.targets = {LoraTarget::kQ};
  auto t = Trainer::Create(*ck, o, {{1, 2, 3, 4, 5}}, TrainDevice{0});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
  auto cpu = Trainer::Create(*ck, o, {{1, 2, 3, 4, 5}});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_FALSE((*cpu)->device().cuda());
}

}  // namespace
}  // namespace gla
