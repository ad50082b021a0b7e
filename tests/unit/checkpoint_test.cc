// Weight map and checkpoint variants the reference does not cover: short conv, GQA, tied
// embeddings, clamp_min, g_norm naming, BF16 and sharded files. Each model must run
// consistently: chunkwise = recurrent, prefix + continuation = whole, batched = alone.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/model/cpu_model.h"
#include "models/checkpoint.h"
#include "models/file_io.h"
#include "models/tensor_store.h"
#include "tests/support/random_model.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::RelErr;

struct Variant {
  const char* name;
  const char* config;
  DType dtype;
  int shards;
};

class CheckpointVariant : public ::testing::TestWithParam<Variant> {
 protected:
  std::unique_ptr<CpuModel> Load(CpuModelOptions::GlaForm form) {
    const Variant& v = GetParam();
    const std::string dir = testing::MakeTempDir(v.name);
    EXPECT_TRUE(testing::WriteRandomModel(dir, {v.config, v.dtype, 7, v.shards}).ok());
    CpuModelOptions o;
    o.gla_form = form;
    o.chunk = 16;
    o.sub_chunk = 4;
    auto m = CpuModel::Load(dir, o);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }
};

std::vector<int32_t> Ids(int n, int vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 37 + 11) % vocab);
  return ids;
}

TEST_P(CheckpointVariant, FormsSplitsAndBatchesAgree) {
  auto chunk = Load(CpuModelOptions::GlaForm::kChunkwise);
  auto rec = Load(CpuModelOptions::GlaForm::kRecurrent);
  ASSERT_TRUE(chunk && rec);
  const auto ids = Ids(45, chunk->config().vocab_size);
  SequenceState s1 = chunk->NewState(), s2 = rec->NewState();
  auto full = chunk->Run(ids, s1, true);
  auto full_rec = rec->Run(ids, s2, true);
  ASSERT_TRUE(full.ok() && full_rec.ok());
  EXPECT_LT(RelErr(*full, *full_rec), 1e-5);
  EXPECT_LT(RelErr(s1.data, s2.data), 1e-5);  // final state, conv tails included

  // Prefix of 20, then 1 token, then the rest: the conv tails and S carry across calls.
  SequenceState s3 = chunk->NewState();
  std::vector<float> joined;
  for (auto [b, e] : {std::pair{0, 20}, {20, 21}, {21, 45}}) {
    auto part = chunk->Run(std::span<const int32_t>(ids).subspan(b, e - b), s3, true);
    ASSERT_TRUE(part.ok());
    joined.insert(joined.end(), part->begin(), part->end());
  }
  EXPECT_LT(RelErr(joined, *full), 1e-5);
  EXPECT_LT(RelErr(s3.data, s1.data), 1e-5);
}

const char* kBase = R"("hidden_size": 48, "num_hidden_layers": 2, "num_heads": 4, "vocab_size": 97,
                       "expand_k": 0.5, "expand_v": 1, "bos_token_id": 1, "eos_token_id": 2)";
std::string Cfg(const char* extra) { return absl::StrCat("{", kBase, extra, "}"); }
const std::string kConv = Cfg(R"(, "use_short_conv": true, "conv_size": 4)");
const std::string kGqa = Cfg(R"(, "num_kv_heads": 2)");
const std::string kTied = Cfg(R"(, "tie_word_embeddings": true, "clamp_min": -0.05)");
const std::string kGNorm = Cfg(R"(, "fuse_norm": false)");
const std::string kNoGate = Cfg(R"(, "use_output_gate": false, "hidden_ratio": 2)");
const std::string kAll = Cfg(R"(, "use_short_conv": true, "conv_size": 3, "num_kv_heads": 1, "tie_word_embeddings": true)");

INSTANTIATE_TEST_SUITE_P(Variants, CheckpointVariant,
                         ::testing::Values(Variant{"conv", kConv.c_str(), DType::kF32, 1},
                                           Variant{"gqa", kGqa.c_str(), DType::kBF16, 1},
                                           Variant{"tied_clamp", kTied.c_str(), DType::kF32, 3},
                                           Variant{"g_norm", kGNorm.c_str(), DType::kF32, 1},
                                           Variant{"no_gate", kNoGate.c_str(), DType::kBF16, 2},
                                           Variant{"all", kAll.c_str(), DType::kBF16, 2}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Checkpoint, Bf16CheckpointEqualsItsF32Upcast) {
  const std::string d16 = testing::MakeTempDir("bf16"), d32 = testing::MakeTempDir("bf16-up");
  ASSERT_TRUE(testing::WriteRandomModel(d16, {kGqa, DType::kBF16, 3, 1}).ok());
  // Rewrite the same weights as F32 (exactly representable): the two models must agree.
  auto store = TensorStore::OpenDir(d16);
  ASSERT_TRUE(store.ok());
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> out;
  for (const auto& n : store->Names()) data.push_back(*ToFloat32(*store->Find(n)));
  size_t i = 0;
  for (const auto& n : store->Names()) { out.push_back(F32Tensor(n, store->Find(n)->shape, data[i])); ++i; }
  ASSERT_TRUE(WriteSafetensors(d32 + "/model.safetensors", out).ok());
  std::filesystem::copy_file(d16 + "/config.json", d32 + "/config.json");
  auto a = CpuModel::Load(d16), b = CpuModel::Load(d32);
  ASSERT_TRUE(a.ok() && b.ok());
  const auto ids = Ids(9, 97);
  SequenceState sa = (*a)->NewState(), sb = (*b)->NewState();
  EXPECT_EQ(*(*a)->Run(ids, sa, true), *(*b)->Run(ids, sb, true));
}

// Damaged checkpoints: each error names the tensor.
class BrokenWeights : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("broken");
    ASSERT_TRUE(testing::WriteRandomModel(dir_, {kConv, DType::kF32, 1, 1}).ok());
    auto store = TensorStore::OpenDir(dir_);
    for (const auto& n : store->Names()) {
      names_.push_back(n);
      data_.push_back(*ToFloat32(*store->Find(n)));
      shapes_.push_back(store->Find(n)->shape);
    }
  }
  // Rewrites model.safetensors with `edit` applied to the tensor list.
  std::string LoadErrorAfter(const std::function<void(std::vector<TensorToWrite>&)>& edit) {
    std::vector<TensorToWrite> ts;
    for (size_t i = 0; i < names_.size(); ++i) ts.push_back(F32Tensor(names_[i], shapes_[i], data_[i]));
    edit(ts);
    EXPECT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", ts).ok());
    auto ck = LoadCheckpoint(dir_);
    return ck.ok() ? "" : std::string(ck.status().message());
  }
  std::string dir_;
  std::vector<std::string> names_;
  std::vector<std::vector<float>> data_;
  std::vector<std::vector<int64_t>> shapes_;
};

TEST_F(BrokenWeights, MissingTensorIsNamed) {
  const std::string msg = LoadErrorAfter([](auto& ts) {
    std::erase_if(ts, [](const TensorToWrite& t) { return t.name == "model.layers.1.attn.k_conv1d.weight"; });
  });
  EXPECT_NE(msg.find("missing tensor 'model.layers.1.attn.k_conv1d.weight'"), std::string::npos) << msg;
}

TEST_F(BrokenWeights, MisShapedTensorIsNamed) {
  std::vector<float> small(48 * 12);
  const std::string msg = LoadErrorAfter([&](auto& ts) {
    for (auto& t : ts)
      if (t.name == "model.layers.0.attn.q_proj.weight") t = F32Tensor(t.name, {12, 48}, small);
  });
  EXPECT_NE(msg.find("'model.layers.0.attn.q_proj.weight' has shape [12, 48], expected [24, 48]"), std::string::npos) << msg;
}

TEST_F(BrokenWeights, ExtraTensorIsNamed) {
  std::vector<float> one(1);
  const std::string msg = LoadErrorAfter([&](auto& ts) { ts.push_back(F32Tensor("model.layers.0.attn.extra", {1}, one)); });
  EXPECT_NE(msg.find("unexpected tensor 'model.layers.0.attn.extra'"), std::string::npos) << msg;
}

TEST_F(BrokenWeights, IntegerWeightIsRefused) {
  std::vector<int64_t> ints(48);
  const std::string msg = LoadErrorAfter([&](auto& ts) {
    for (auto& t : ts)
      if (t.name == "model.norm.weight")
        t = {t.name, DType::kI64, {48}, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ints.data()), 48 * 8)};
  });
  EXPECT_NE(msg.find("'model.norm.weight' has dtype I64"), std::string::npos) << msg;
}

TEST(Checkpoint, ReferenceHasNoTokenizerAndLoads) {
  auto ck = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->tokenizer, nullptr);
  EXPECT_EQ(ck->weights.layers.size(), 2u);
  EXPECT_FALSE(ck->weights.lm_head.empty());
}

// A hostile or broken model directory: config.json or tokenizer.model as a FIFO (which would block
// the open, and with it start-up) or far larger than any real one is refused by name, at once;
// model files reached through symbolic links (a hub cache's layout) still load.
TEST(Checkpoint, FifosAndOversizedSmallFilesAreRefusedByName) {
  namespace fs = std::filesystem;
  const std::string src = testing::TinyModelDir();
  auto fresh = [&](const std::string& name) {
    const std::string dir = testing::MakeTempDir(name);
    fs::create_symlink(fs::absolute(fs::path(src) / "model.safetensors"), fs::path(dir) / "model.safetensors");
    return dir;
  };
  const std::string linked = fresh("ck_links");
  fs::create_symlink(fs::absolute(fs::path(src) / "config.json"), fs::path(linked) / "config.json");
  ASSERT_TRUE(LoadCheckpoint(linked).ok()) << LoadCheckpoint(linked).status();

  const std::string fifo_config = fresh("ck_fifo_config");
  ASSERT_EQ(::mkfifo((fs::path(fifo_config) / "config.json").c_str(), 0600), 0);
  auto r = LoadCheckpoint(fifo_config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(r.status().message().find("config.json: not a regular file"), std::string::npos) << r.status();

  const std::string big_config = fresh("ck_big_config");
  fs::copy_file(fs::path(src) / "config.json", fs::path(big_config) / "config.json");
  fs::resize_file(fs::path(big_config) / "config.json", kMaxSmallFileBytes + 1);  // sparse: nothing read
  r = LoadCheckpoint(big_config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(r.status().message().find("more than the"), std::string::npos) << r.status();

  const std::string fifo_tok = fresh("ck_fifo_tokenizer");
  fs::copy_file(fs::path(src) / "config.json", fs::path(fifo_tok) / "config.json");
  ASSERT_EQ(::mkfifo((fs::path(fifo_tok) / "tokenizer.model").c_str(), 0600), 0);
  r = LoadCheckpoint(fifo_tok);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(r.status().message().find("tokenizer.model: not a regular file"), std::string::npos) << r.status();

  const std::string fifo_weights = testing::MakeTempDir("ck_fifo_weights");
  fs::copy_file(fs::path(src) / "config.json", fs::path(fifo_weights) / "config.json");
  ASSERT_EQ(::mkfifo((fs::path(fifo_weights) / "model.safetensors").c_str(), 0600), 0);
  r = LoadCheckpoint(fifo_weights);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.safetensors: not a regular file"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace gla
