// LoRA adapters in the PEFT layout: target names and shapes, the initial adapter, save -> load
// (our files, and files as PEFT writes them in BF16/F16), every refusal naming its cause, and
// merging into the base weights computing what the adapted projection computes.
#include "models/lora_adapter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "models/dtype.h"
#include "models/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string> kAllModules = {"q_proj", "k_proj", "v_proj", "g_proj", "o_proj",
                                              "gk_proj", "gate_proj", "up_proj", "down_proj"};

// hidden 64, 2 layers, GQA (kdpg 16 != key_dim 32) so that mixing up two projections' shapes shows.
GlaConfig TinyConfig(bool use_output_gate = true) {
  auto c = ParseGlaConfigJson(
      absl::StrCat(R"({"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 4,
                       "num_kv_heads": 2, "expand_k": 0.5, "expand_v": 1, "vocab_size": 512,
                       "use_output_gate": )",
                   use_output_gate ? "true" : "false", "}"),
      "tiny config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

LoraConfig MakeLora(const std::vector<std::string>& modules, int r = 4, double alpha = 8.0) {
  LoraConfig lc;
  lc.r = r;
  lc.alpha = alpha;
  auto t = ParseLoraTargets(modules);
  EXPECT_TRUE(t.ok()) << t.status();
  if (t.ok()) lc.targets = *t;
  return lc;
}

// A new adapter with random B (B = 0 would make every merge and round trip trivially equal).
LoraAdapter RandomAdapter(const GlaConfig& config, const LoraConfig& lc, unsigned seed) {
  auto a = NewLoraAdapter(config, lc, seed);
  EXPECT_TRUE(a.ok()) << a.status();
  std::mt19937 rng(seed);
  for (auto& layer : a->layers)
    for (auto& pair : layer)
      if (pair.has_value()) pair->b.data = testing::RandomVector(pair->b.data.size(), rng, -0.5f, 0.5f);
  return *a;
}

bool SameBits(const Weight& a, const Weight& b) {
  return a.shape == b.shape && a.data.size() == b.data.size() &&
         (a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0);
}

std::string TempDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return testing::MakeTempDir(absl::StrReplaceAll(absl::StrCat("lora-", info->name()), {{"/", "_"}}));
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

// The error's message names `what` (a file, a field, a tensor, a value).
void ExpectMentions(const absl::Status& s, const std::string& what) {
  EXPECT_NE(std::string(s.message()).find(what), std::string::npos) << "\"" << s.message() << "\" does not name " << what;
}

// The base weight a target adapts (an independent copy of the library's table).
constexpr Weight LayerWeights::*kTargetWeights[kNumLoraTargets] = {
    &LayerWeights::q_proj,  &LayerWeights::k_proj,   &LayerWeights::v_proj,   &LayerWeights::g_proj,
    &LayerWeights::o_proj,  &LayerWeights::gk_proj0, &LayerWeights::gk_proj1, &LayerWeights::gate_proj,
    &LayerWeights::up_proj, &LayerWeights::down_proj};

// --- target names and shapes --------------------------------------------------------------------

TEST(LoraTargets, ParsesNamesExpandsGkProjAndDropsRepeats) {
  auto t = ParseLoraTargets({"down_proj", "v_proj", "gk_proj", "q_proj", "v_proj"});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, (std::vector<LoraTarget>{LoraTarget::kQ, LoraTarget::kV, LoraTarget::kGk0, LoraTarget::kGk1,
                                         LoraTarget::kDown}));
  for (int i = 0; i < kNumLoraTargets; ++i) {  // every name parses back to its target
    const auto target = static_cast<LoraTarget>(i);
    auto one = ParseLoraTargets({LoraTargetName(target)});
    ASSERT_TRUE(one.ok()) << LoraTargetName(target);
    EXPECT_EQ(*one, std::vector<LoraTarget>{target});
  }
  EXPECT_STREQ(LoraTargetName(LoraTarget::kGk1), "gk_proj.1");
  EXPECT_STREQ(LoraTargetName(LoraTarget::kGate), "gate_proj");
}

TEST(LoraTargets, RefusesUnknownNamesByName) {
  for (const char* bad : {"qkv_proj", "gk_proj.2", "attn.q_proj", "Q_PROJ", ""}) {
    auto t = ParseLoraTargets({"q_proj", bad});
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    ExpectMentions(t.status(), absl::StrCat("'", bad, "'"));
  }
}

// The shapes agree with the checkpoint loader's table of the base weights they adapt.
TEST(LoraTargets, ShapesAreThoseOfTheBaseWeights) {
  const GlaConfig c = TinyConfig();
  std::map<std::string, std::vector<int64_t>> base;
  for (const ExpectedTensor& e : ExpectedTensors(c)) base[e.name] = e.shape;
  for (int i = 0; i < kNumLoraTargets; ++i) {
    const auto t = static_cast<LoraTarget>(i);
    const bool mlp = t == LoraTarget::kGate || t == LoraTarget::kUp || t == LoraTarget::kDown;
    const std::string name = absl::StrCat("model.layers.1.", mlp ? "mlp." : "attn.", LoraTargetName(t), ".weight");
    ASSERT_TRUE(base.count(name)) << name;
    const auto [out, in] = LoraTargetShape(c, t);
    EXPECT_EQ((std::vector<int64_t>{out, in}), base[name]) << name;
  }
}

// --- NewLoraAdapter ------------------------------------------------------------------------------

TEST(NewLoraAdapter, ShapesZeroBAndKaimingUniformA) {
  const GlaConfig c = TinyConfig();
  const LoraConfig lc = MakeLora({"q_proj", "k_proj", "gk_proj", "down_proj"}, 8);
  auto a = NewLoraAdapter(c, lc, 7);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->layers.size(), 2u);
  for (const auto& layer : a->layers)
    for (int i = 0; i < kNumLoraTargets; ++i) {
      const auto t = static_cast<LoraTarget>(i);
      const auto& p = layer[i];
      const bool targeted = std::find(lc.targets.begin(), lc.targets.end(), t) != lc.targets.end();
      ASSERT_EQ(p.has_value(), targeted) << LoraTargetName(t);
      if (!targeted) continue;
      const auto [out, in] = LoraTargetShape(c, t);
      EXPECT_EQ(p->a.shape, (std::vector<int64_t>{8, in}));
      EXPECT_EQ(p->b.shape, (std::vector<int64_t>{out, 8}));
      ASSERT_EQ(p->a.data.size(), static_cast<size_t>(8 * in));
      EXPECT_EQ(p->b.data, std::vector<float>(static_cast<size_t>(out * 8), 0.0f));
      // torch's Kaiming-uniform with a = sqrt(5) is U(-1/sqrt(in), 1/sqrt(in)): all inside, and
      // with >= 128 draws some come near each end.
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      float lo = 0, hi = 0;
      for (float v : p->a.data) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      EXPECT_GE(lo, -bound);
      EXPECT_LE(hi, bound);
      EXPECT_LT(lo, -0.9f * bound) << LoraTargetName(t);
      EXPECT_GT(hi, 0.9f * bound) << LoraTargetName(t);
    }
}

TEST(NewLoraAdapter, SameSeedSameAdapter) {
  const GlaConfig c = TinyConfig();
  const LoraConfig lc = MakeLora({"q_proj", "up_proj"});
  auto a = NewLoraAdapter(c, lc, 42), b = NewLoraAdapter(c, lc, 42), other = NewLoraAdapter(c, lc, 43);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  const int q = static_cast<int>(LoraTarget::kQ), up = static_cast<int>(LoraTarget::kUp);
  for (size_t l = 0; l < 2; ++l)
    for (int t : {q, up}) {
      EXPECT_TRUE(SameBits(a->layers[l][t]->a, b->layers[l][t]->a));
      EXPECT_FALSE(SameBits(a->layers[l][t]->a, other->layers[l][t]->a));
    }
  EXPECT_FALSE(SameBits(a->layers[0][q]->a, a->layers[1][q]->a));  // each layer draws its own
}

TEST(NewLoraAdapter, OnlyTheLayersToTransform) {
  LoraConfig lc = MakeLora({"v_proj"});
  lc.layers_to_transform = {1};
  auto a = NewLoraAdapter(TinyConfig(), lc, 1);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->layers.size(), 2u);
  EXPECT_FALSE(a->layers[0][static_cast<int>(LoraTarget::kV)].has_value());
  EXPECT_TRUE(a->layers[1][static_cast<int>(LoraTarget::kV)].has_value());
}

TEST(NewLoraAdapter, RefusesBadOptionsByName) {
  const GlaConfig c = TinyConfig();
  auto refused = [&](const GlaConfig& config, std::function<void(LoraConfig&)> edit, const char* what) {
    LoraConfig lc = MakeLora({"q_proj", "v_proj"});
    edit(lc);
    auto a = NewLoraAdapter(config, lc, 1);
    ASSERT_FALSE(a.ok()) << what;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    ExpectMentions(a.status(), what);
  };
  refused(c, [](LoraConfig& l) { l.r = 0; }, "rank");
  refused(c, [](LoraConfig& l) { l.alpha = 0; }, "lora_alpha");
  refused(c, [](LoraConfig& l) { l.alpha = NAN; }, "lora_alpha");
  refused(c, [](LoraConfig& l) { l.dropout = 1.0; }, "lora_dropout");
  refused(c, [](LoraConfig& l) { l.dropout = -0.1; }, "lora_dropout");
  refused(c, [](LoraConfig& l) { l.targets.clear(); }, "target module");
  refused(c, [](LoraConfig& l) { l.layers_to_transform = {0, 2}; }, "layers_to_transform: layer 2");
  refused(TinyConfig(/*use_output_gate=*/false), [](LoraConfig& l) { l.targets = {LoraTarget::kG}; }, "g_proj");
  EXPECT_TRUE(NewLoraAdapter(TinyConfig(false), MakeLora({"q_proj"}), 1).ok());
}

// --- save and load -------------------------------------------------------------------------------

void ExpectSameAdapter(const LoraAdapter& got, const LoraAdapter& want) {
  EXPECT_EQ(got.config.r, want.config.r);
  EXPECT_EQ(got.config.alpha, want.config.alpha);
  EXPECT_EQ(got.config.dropout, want.config.dropout);
  EXPECT_EQ(got.config.use_rslora, want.config.use_rslora);
  EXPECT_EQ(got.config.targets, want.config.targets);
  EXPECT_EQ(got.config.layers_to_transform, want.config.layers_to_transform);
  EXPECT_EQ(got.config.base_model, want.config.base_model);
  ASSERT_EQ(got.layers.size(), want.layers.size());
  for (size_t l = 0; l < got.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto &g = got.layers[l][t], &w = want.layers[l][t];
      ASSERT_EQ(g.has_value(), w.has_value()) << "layer " << l << " " << LoraTargetName(static_cast<LoraTarget>(t));
      if (!g.has_value()) continue;
      EXPECT_TRUE(SameBits(g->a, w->a)) << "layer " << l << " " << LoraTargetName(static_cast<LoraTarget>(t));
      EXPECT_TRUE(SameBits(g->b, w->b)) << "layer " << l << " " << LoraTargetName(static_cast<LoraTarget>(t));
    }
}

TEST(LoraAdapterFiles, RoundTripIsBitExactInPeftLayout) {
  const GlaConfig c = TinyConfig();
  LoraConfig lc = MakeLora(kAllModules, 4, 8.0);
  lc.dropout = 0.05;
  lc.use_rslora = true;
  lc.base_model = "fla-hub/gla-tiny";
  const LoraAdapter adapter = RandomAdapter(c, lc, 3);
  const std::string dir = TempDir();
  ASSERT_TRUE(SaveLoraAdapter(dir, adapter).ok());
  auto loaded = LoadLoraAdapter(dir, c);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameAdapter(*loaded, adapter);

  // adapter_config.json holds what PEFT's LoraConfig writes.
  const json j = json::parse(ReadText(dir + "/adapter_config.json"));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());  // PEFT's type for it
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_EQ(j["lora_dropout"], 0.05);
  EXPECT_EQ(j["target_modules"], json({"q_proj", "k_proj", "v_proj", "g_proj", "o_proj", "gk_proj.0", "gk_proj.1",
                                       "gate_proj", "up_proj", "down_proj"}));
  EXPECT_EQ(j["base_model_name_or_path"], "fla-hub/gla-tiny");
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["fan_in_fan_out"], false);
  EXPECT_EQ(j["use_rslora"], true);
  EXPECT_EQ(j["use_dora"], false);
  EXPECT_EQ(j["inference_mode"], true);
  EXPECT_TRUE(j.contains("modules_to_save") && j["modules_to_save"].is_null());
  EXPECT_TRUE(j.contains("layers_to_transform") && j["layers_to_transform"].is_null());
  EXPECT_EQ(j["rank_pattern"], json::object());
  EXPECT_EQ(j["alpha_pattern"], json::object());

  // adapter_model.safetensors: F32 factors under PEFT's names, nothing else.
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().size(), 2u * 2u * kNumLoraTargets);
  for (const TensorView& t : file->tensors()) EXPECT_EQ(t.dtype, DType::kF32) << t.name;
  const TensorView* gk0 = file->Find("base_model.model.model.layers.1.attn.gk_proj.0.lora_A.weight");
  const TensorView* down = file->Find("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  ASSERT_NE(gk0, nullptr);
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(gk0->shape, (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(down->shape, (std::vector<int64_t>{64, 4}));
}

TEST(LoraAdapterFiles, RoundTripWithLayersToTransform) {
  const GlaConfig c = TinyConfig();
  LoraConfig lc = MakeLora({"o_proj", "gk_proj"}, 2, 2.5);
  lc.layers_to_transform = {1};
  const LoraAdapter adapter = RandomAdapter(c, lc, 4);
  const std::string dir = TempDir();
  ASSERT_TRUE(SaveLoraAdapter(dir, adapter).ok());
  const json j = json::parse(ReadText(dir + "/adapter_config.json"));
  EXPECT_EQ(j["layers_to_transform"], json({1}));
  EXPECT_EQ(j["lora_alpha"], 2.5);
  EXPECT_TRUE(j["base_model_name_or_path"].is_null());  // as PEFT writes an unset one
  auto loaded = LoadLoraAdapter(dir, c);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameAdapter(*loaded, adapter);
}

TEST(LoraAdapterFiles, SaveRefusesPairsTheConfigDoesNotDescribe) {
  const GlaConfig c = TinyConfig();
  auto refused = [&](std::function<void(LoraAdapter&)> edit, const char* what) {
    LoraAdapter a = RandomAdapter(c, MakeLora({"q_proj", "v_proj"}), 5);
    edit(a);
    const std::string dir = TempDir() + "/out";
    absl::Status s = SaveLoraAdapter(dir, a);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what;
    ExpectMentions(s, what);
    EXPECT_FALSE(fs::exists(dir)) << what;  // nothing written
  };
  const int q = static_cast<int>(LoraTarget::kQ);
  refused([&](LoraAdapter& a) { a.layers[1][q].reset(); }, "layer 1 q_proj");
  refused([&](LoraAdapter& a) { a.layers[0][static_cast<int>(LoraTarget::kO)] = a.layers[0][q]; }, "layer 0 o_proj");
  refused([&](LoraAdapter& a) { a.config.r = 5; }, "r = 5");
  refused([&](LoraAdapter& a) { a.layers[0][q]->b.data.pop_back(); }, "layer 0 q_proj lora_B holds 127 values");
  refused([&](LoraAdapter& a) { a.layers[1][q]->b.shape = {16, 8}; }, "layer 1 q_proj: lora_A [4, 64] and lora_B [16, 8]");
  refused([&](LoraAdapter& a) { a.config.layers_to_transform = {3}; }, "layers_to_transform");
  refused([&](LoraAdapter& a) { a.config.alpha = NAN; }, "lora_alpha");  // JSON would write null
}

// An adapter as PEFT writes one with torch_dtype=bfloat16 (A) or float16 (B), and a config with
// fields we do not use, target_modules as a single string, and layers_to_transform as an int.
TEST(LoraAdapterFiles, LoadsHalfPrecisionPeftFiles) {
  const GlaConfig c = TinyConfig();
  const std::string dir = TempDir();
  WriteText(dir + "/adapter_config.json", R"({
    "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "fla-hub/gla-340M-15B",
    "bias": "none", "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
    "inference_mode": true, "init_lora_weights": true, "layer_replication": null,
    "layers_pattern": "layers", "layers_to_transform": 0, "loftq_config": {}, "lora_alpha": 16,
    "lora_bias": false, "lora_dropout": 0.1, "megatron_config": null, "megatron_core": "megatron.core",
    "modules_to_save": null, "peft_type": "LORA", "r": 2, "rank_pattern": {}, "revision": null,
    "target_modules": "v_proj", "task_type": "CAUSAL_LM", "trainable_token_indices": null,
    "use_dora": false, "use_rslora": false})");
  // Multiples of 1/64 below 1 are exact in BF16 and F16, so the expected fp32 values are these.
  const auto [out, in] = LoraTargetShape(c, LoraTarget::kV);
  std::vector<float> a_vals(static_cast<size_t>(2 * in)), b_vals(static_cast<size_t>(out * 2));
  for (size_t i = 0; i < a_vals.size(); ++i) a_vals[i] = static_cast<float>(static_cast<int>(i % 127) - 63) / 64;
  for (size_t i = 0; i < b_vals.size(); ++i) b_vals[i] = static_cast<float>(static_cast<int>(i % 101) - 50) / 64;
  std::vector<uint16_t> a_bf16, b_f16;
  for (float v : a_vals) a_bf16.push_back(FloatToBFloat16(v));
  for (float v : b_vals) {  // F16 by hand: sign, exponent - 15, top 10 mantissa bits (exact here)
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    const uint32_t exp = (bits >> 23) & 0xff;
    b_f16.push_back(v == 0 ? 0 : static_cast<uint16_t>(((bits >> 16) & 0x8000) | ((exp - 112) << 10) |
                                                          ((bits >> 13) & 0x3ff)));
  }
  const TensorToWrite tensors[] = {
      {"base_model.model.model.layers.0.attn.v_proj.lora_A.weight", DType::kBF16, {2, in},
       {reinterpret_cast<const uint8_t*>(a_bf16.data()), a_bf16.size() * 2}},
      {"base_model.model.model.layers.0.attn.v_proj.lora_B.weight", DType::kF16, {out, 2},
       {reinterpret_cast<const uint8_t*>(b_f16.data()), b_f16.size() * 2}}};
  ASSERT_TRUE(WriteSafetensors(dir + "/adapter_model.safetensors", tensors).ok());

  auto loaded = LoadLoraAdapter(dir, c);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.r, 2);
  EXPECT_EQ(loaded->config.alpha, 16.0);
  EXPECT_EQ(loaded->config.dropout, 0.1);
  EXPECT_EQ(loaded->config.scale(), 8.0);
  EXPECT_EQ(loaded->config.targets, std::vector<LoraTarget>{LoraTarget::kV});
  EXPECT_EQ(loaded->config.layers_to_transform, std::vector<int>{0});
  EXPECT_EQ(loaded->config.base_model, "fla-hub/gla-340M-15B");
  const auto& v = loaded->layers[0][static_cast<int>(LoraTarget::kV)];
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->a.data, a_vals);
  EXPECT_EQ(v->b.data, b_vals);
  EXPECT_FALSE(loaded->layers[1][static_cast<int>(LoraTarget::kV)].has_value());
}

// --- refusals ------------------------------------------------------------------------------------

// A valid adapter (q_proj and down_proj, r = 4) in a fresh directory, then broken one way per test.
class LoraAdapterRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir();
    ASSERT_TRUE(SaveLoraAdapter(dir_, RandomAdapter(config_, MakeLora({"q_proj", "down_proj"}), 6)).ok());
    ASSERT_TRUE(LoadLoraAdapter(dir_, config_).ok());
  }
  std::string ConfigPath() const { return dir_ + "/adapter_config.json"; }
  std::string WeightsPath() const { return dir_ + "/adapter_model.safetensors"; }

  void EditConfig(const std::function<void(json&)>& edit) const {
    json j = json::parse(ReadText(ConfigPath()));
    edit(j);
    WriteText(ConfigPath(), j.dump(2));
  }

  struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
  };
  std::map<std::string, Tensor> ReadTensors() const {
    std::map<std::string, Tensor> tensors;
    auto file = SafetensorsFile::Open(WeightsPath());
    EXPECT_TRUE(file.ok()) << file.status();
    if (file.ok())
      for (const TensorView& t : file->tensors()) tensors[t.name] = {t.shape, *ToFloat32(t)};
    return tensors;
  }
  // Rewrites adapter_model.safetensors: `tensors` as F32, then `raw` as they are.
  void WriteTensors(const std::map<std::string, Tensor>& tensors, std::vector<TensorToWrite> raw = {}) const {
    for (const auto& [name, t] : tensors) raw.push_back(F32Tensor(name, t.shape, t.data));
    ASSERT_TRUE(WriteSafetensors(WeightsPath(), raw).ok());
  }
  void EditTensors(const std::function<void(std::map<std::string, Tensor>&)>& edit) const {
    std::map<std::string, Tensor> tensors = ReadTensors();
    edit(tensors);
    WriteTensors(tensors);
  }

  // The load fails with `code`, naming each of `what`.
  void ExpectRefused(absl::StatusCode code, std::initializer_list<std::string> what) const {
    auto a = LoadLoraAdapter(dir_, config_);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), code) << a.status();
    for (const std::string& w : what) ExpectMentions(a.status(), w);
  }

  const GlaConfig config_ = TinyConfig();
  std::string dir_;
};

const std::string kQA = "base_model.model.model.layers.1.attn.q_proj.lora_A.weight";

TEST_F(LoraAdapterRefusal, MissingConfigFile) {
  fs::remove(ConfigPath());
  ExpectRefused(absl::StatusCode::kNotFound, {ConfigPath()});
}

TEST_F(LoraAdapterRefusal, InvalidJson) {
  WriteText(ConfigPath(), R"({"peft_type": "LORA", "r": 4,)");
  ExpectRefused(absl::StatusCode::kInvalidArgument, {ConfigPath(), "not valid JSON"});
}

TEST_F(LoraAdapterRefusal, MissingWeightsFile) {
  fs::remove(WeightsPath());
  ExpectRefused(absl::StatusCode::kNotFound, {WeightsPath()});
}

TEST_F(LoraAdapterRefusal, TruncatedWeightsFile) {
  fs::resize_file(WeightsPath(), fs::file_size(WeightsPath()) - 100);
  ExpectRefused(absl::StatusCode::kDataLoss, {WeightsPath(), "corrupt"});
}

TEST_F(LoraAdapterRefusal, MissingTensor) {
  EditTensors([](auto& t) { t.erase(kQA); });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {WeightsPath(), "missing tensor '" + kQA + "'", "[4, 64]"});
}

TEST_F(LoraAdapterRefusal, ExtraTensor) {
  const std::string k = "base_model.model.model.layers.0.attn.k_proj.lora_A.weight";
  EditTensors([&](auto& t) { t[k] = {{4, 64}, std::vector<float>(256, 0.0f)}; });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {WeightsPath(), "unexpected tensor '" + k + "'"});
}

TEST_F(LoraAdapterRefusal, WrongShape) {
  EditTensors([](auto& t) { t[kQA] = {{5, 64}, std::vector<float>(320, 0.0f)}; });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {WeightsPath(), kQA, "[5, 64]", "expected [4, 64]"});
}

TEST_F(LoraAdapterRefusal, NonFiniteValue) {
  for (float bad : {NAN, INFINITY}) {
    EditTensors([&](auto& t) { t[kQA].data[17] = bad; });
    ExpectRefused(absl::StatusCode::kInvalidArgument, {WeightsPath(), kQA, "non-finite", "element 17"});
  }
}

TEST_F(LoraAdapterRefusal, IntegerTensor) {
  std::map<std::string, Tensor> tensors = ReadTensors();
  tensors.erase(kQA);
  const std::vector<int32_t> ints(4 * 64, 1);
  WriteTensors(tensors, {{kQA, DType::kI32, {4, 64}, {reinterpret_cast<const uint8_t*>(ints.data()), 4 * 64 * 4}}});
  ExpectRefused(absl::StatusCode::kInvalidArgument, {WeightsPath(), kQA, "dtype I32"});
}

TEST_F(LoraAdapterRefusal, ConfigForAnotherModel) {
  EditConfig([](json& j) { j["layers_to_transform"] = {0, 5}; });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {ConfigPath(), "layers_to_transform: layer 5"});
  EditConfig([](json& j) { j["layers_to_transform"] = nullptr; j["target_modules"] = {"g_proj"}; });
  auto no_gate = LoadLoraAdapter(dir_, TinyConfig(/*use_output_gate=*/false));
  ASSERT_FALSE(no_gate.ok());
  ExpectMentions(no_gate.status(), "g_proj");
}

// One adapter_config.json field set to a value we cannot apply (or read): refused, naming the field
// and, where it is a string, the value.
struct FieldCase {
  const char* field;
  const char* value;  // JSON; "<absent>" removes the field
  const char* named;  // also in the message
};

class LoraAdapterConfigRefusal : public LoraAdapterRefusal, public ::testing::WithParamInterface<FieldCase> {};

TEST_P(LoraAdapterConfigRefusal, NamesTheField) {
  const FieldCase& f = GetParam();
  EditConfig([&](json& j) {
    if (std::string(f.value) == "<absent>")
      j.erase(f.field);
    else
      j[f.field] = json::parse(f.value);
  });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {ConfigPath(), absl::StrCat("field '", f.field, "'"), f.named});
}

INSTANTIATE_TEST_SUITE_P(
    Fields, LoraAdapterConfigRefusal,
    ::testing::Values(FieldCase{"peft_type", R"("PREFIX_TUNING")", "PREFIX_TUNING"},
                      FieldCase{"peft_type", "<absent>", "missing"},
                      FieldCase{"bias", R"("all")", "all"},
                      FieldCase{"bias", R"("lora_only")", "lora_only"},
                      FieldCase{"task_type", R"("SEQ_CLS")", "SEQ_CLS"},
                      FieldCase{"fan_in_fan_out", "true", "true"},
                      FieldCase{"use_dora", "true", "true"},
                      FieldCase{"lora_bias", "true", "true"},
                      FieldCase{"modules_to_save", R"(["lm_head"])", "lm_head"},
                      FieldCase{"rank_pattern", R"({"q_proj": 16})", "q_proj"},
                      FieldCase{"alpha_pattern", R"({"down_proj": 32})", "down_proj"},
                      FieldCase{"layer_replication", "[[0, 2], [1, 2]]", "not supported"},
                      FieldCase{"layers_pattern", R"("h")", "\"h\""},
                      FieldCase{"target_modules", R"(["q_proj", "qkv_proj"])", "qkv_proj"},
                      FieldCase{"target_modules", R"(".*\\.(q|v)_proj")", "(q|v)_proj"},
                      FieldCase{"target_modules", "[]", "at least one"},
                      FieldCase{"target_modules", "<absent>", "at least one"},
                      FieldCase{"r", "0", "0"},
                      FieldCase{"r", "4.5", "4.5"},
                      FieldCase{"r", "<absent>", "missing"},
                      FieldCase{"lora_alpha", "-16", "-16"},
                      // Unbounded alphas loaded and made every logprob NaN.
                      FieldCase{"lora_alpha", "1e308", "(0, 65536]"},
                      FieldCase{"lora_alpha", "65537", "65537"},
                      FieldCase{"lora_alpha", "<absent>", "missing"},
                      FieldCase{"lora_dropout", "1.5", "1.5"},
                      FieldCase{"use_rslora", R"("yes")", "true or false"},
                      FieldCase{"layers_to_transform", "[-1]", "non-negative"}));

// A field holding a long list is quoted back in a few dozen bytes: the whole list made the status
// too large for a gRPC trailer (the client saw RESOURCE_EXHAUSTED instead of the error).
TEST_F(LoraAdapterRefusal, ALongFieldIsQuotedBackBriefly) {
  EditConfig([&](json& j) {
    json list = json::array();
    for (int i = 0; i < 1000; ++i) list.push_back("module_number_" + std::to_string(i));
    j["modules_to_save"] = list;
  });
  const auto loaded = LoadLoraAdapter(dir_, config_);
  ASSERT_FALSE(loaded.ok());
  const std::string msg(loaded.status().message());
  EXPECT_NE(msg.find("modules_to_save"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bytes)"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 400u) << msg;
}

// --- merging -------------------------------------------------------------------------------------

// Base weights for every target, random.
ModelWeights RandomTargetWeights(const GlaConfig& c, unsigned seed) {
  std::mt19937 rng(seed);
  ModelWeights w;
  w.layers.resize(c.num_hidden_layers);
  for (LayerWeights& layer : w.layers)
    for (int i = 0; i < kNumLoraTargets; ++i) {
      const auto [out, in] = LoraTargetShape(c, static_cast<LoraTarget>(i));
      Weight& w = layer.*kTargetWeights[i];
      w.shape = {out, in};
      w.data = testing::RandomVector(static_cast<size_t>(out * in), rng);
    }
  return w;
}

const Weight& TargetWeight(const LayerWeights& l, int t) { return l.*kTargetWeights[t]; }

// y = x W^T for x [T, in], in double.
std::vector<double> Apply(const std::vector<float>& x, int64_t T, const Weight& w) {
  const int64_t out = w.shape[0], in = w.shape[1];
  std::vector<double> y(static_cast<size_t>(T * out), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) y[t * out + o] += double{x[t * in + i]} * w.data[o * in + i];
  return y;
}

class LoraMerge : public ::testing::TestWithParam<bool> {};  // use_rslora

TEST_P(LoraMerge, MergedWeightComputesTheAdaptedProjection) {
  const GlaConfig c = TinyConfig();
  LoraConfig lc = MakeLora({"q_proj", "v_proj", "g_proj", "o_proj", "gk_proj", "up_proj", "down_proj"}, 4, 6.0);
  lc.use_rslora = GetParam();
  const double scale = GetParam() ? 6.0 / 2.0 : 6.0 / 4.0;  // alpha / sqrt(r), alpha / r
  const LoraAdapter adapter = RandomAdapter(c, lc, 8);
  const ModelWeights base = RandomTargetWeights(c, 9);
  ModelWeights merged = base;
  ASSERT_TRUE(MergeLoraAdapter(adapter, &merged).ok());

  std::mt19937 rng(10);
  const int64_t T = 3;
  for (size_t l = 0; l < base.layers.size(); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const Weight &w = TargetWeight(base.layers[l], t), &m = TargetWeight(merged.layers[l], t);
      const auto& p = adapter.layers[l][t];
      if (!p.has_value()) {
        EXPECT_TRUE(SameBits(w, m)) << "untargeted " << LoraTargetName(static_cast<LoraTarget>(t)) << " changed";
        continue;
      }
      // y = x W^T + scale (x A^T) B^T
      const std::vector<float> x = testing::RandomVector(static_cast<size_t>(T * w.shape[1]), rng);
      const std::vector<double> xa = Apply(x, T, p->a);
      std::vector<float> xa_f(xa.begin(), xa.end());
      std::vector<double> want = Apply(x, T, w);
      const std::vector<double> delta = Apply(xa_f, T, p->b);
      for (size_t i = 0; i < want.size(); ++i) want[i] += scale * delta[i];
      EXPECT_LT(testing::RelErr(Apply(x, T, m), want), 1e-5)
          << "layer " << l << " " << LoraTargetName(static_cast<LoraTarget>(t));
      EXPECT_GT(testing::RelErr(Apply(x, T, w), want), 1e-3);  // the adapter matters here
    }
}

INSTANTIATE_TEST_SUITE_P(Scale, LoraMerge, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "RsLora" : "Lora"; });

TEST(LoraMergeRefusal, AMismatchLeavesEveryWeightUnchanged) {
  const GlaConfig c = TinyConfig();
  const LoraAdapter adapter = RandomAdapter(c, MakeLora({"q_proj", "down_proj"}), 11);
  const ModelWeights base = RandomTargetWeights(c, 12);
  auto expect_refused = [&](ModelWeights w, const LoraAdapter& a, const char* what) {
    const ModelWeights before = w;
    absl::Status s = MergeLoraAdapter(a, &w);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what;
    ExpectMentions(s, what);
    ASSERT_EQ(w.layers.size(), before.layers.size());
    for (size_t l = 0; l < w.layers.size(); ++l)
      for (int t = 0; t < kNumLoraTargets; ++t)
        EXPECT_TRUE(SameBits(TargetWeight(w.layers[l], t), TargetWeight(before.layers[l], t)))
            << what << ": layer " << l << " " << LoraTargetName(static_cast<LoraTarget>(t)) << " changed";
  };
  // Layer 1's down_proj is checked after layer 0's q_proj and down_proj would have been merged.
  ModelWeights wide = base;
  wide.layers[1].down_proj.shape = {64, 128};
  wide.layers[1].down_proj.data.resize(64 * 128);
  expect_refused(wide, adapter, "layer 1 down_proj");
  LoraAdapter short_b = adapter;
  short_b.layers[1][static_cast<int>(LoraTarget::kQ)]->b.data.resize(10);
  expect_refused(base, short_b, "layer 1 q_proj lora_B holds 10 values");
  LoraAdapter other_rank = adapter;
  auto& q = other_rank.layers[1][static_cast<int>(LoraTarget::kQ)];
  q->a = Weight{std::vector<float>(3 * 64, 0.5f), {3, 64}};
  expect_refused(base, other_rank, "layer 1 q_proj: lora_A [3, 64] and lora_B [32, 4]");
  ModelWeights one_layer = base;
  one_layer.layers.pop_back();
  expect_refused(one_layer, adapter, "layers");
  ModelWeights no_gate = base;  // a g_proj adapter on a model without an output gate
  no_gate.layers[0].g_proj = Weight{};
  expect_refused(no_gate, RandomAdapter(c, MakeLora({"g_proj"}), 13), "layer 0 g_proj base weight");
}

}  // namespace
}  // namespace gla
