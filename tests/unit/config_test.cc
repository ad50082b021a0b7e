// config.json: fields that change the computation are read; options we cannot run are refused by name.
#include <gtest/gtest.h>

#include "models/config.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

TEST(Config, ReadsTheReferenceConfig) {
  auto c = LoadGlaConfig(testing::TinyModelDir());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_k_dim, 8);
  EXPECT_EQ(c->head_v_dim, 16);
  EXPECT_EQ(c->intermediate_size, 256);  // int(64*4*2/3) = 170 -> 256
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{2});
  EXPECT_FALSE(c->clamp_min.has_value());
  EXPECT_DOUBLE_EQ(c->norm_eps, 1e-6);
}

TEST(Config, PublishedShapesDeriveTheirHeadsAndMlp) {
  auto c340 = ParseGlaConfigJson(R"({"hidden_size":1024,"num_heads":4,"expand_k":0.5,"expand_v":1})", "c");
  ASSERT_TRUE(c340.ok());
  EXPECT_EQ(c340->head_k_dim, 128);
  EXPECT_EQ(c340->head_v_dim, 256);
  EXPECT_EQ(c340->intermediate_size, 2816);  // int(2730.67) = 2730 -> 2816
  auto c13 = ParseGlaConfigJson(R"({"hidden_size":2048,"num_heads":4})", "c");
  ASSERT_TRUE(c13.ok());
  EXPECT_EQ(c13->head_k_dim, 256);
  EXPECT_EQ(c13->head_v_dim, 512);
  EXPECT_EQ(c13->intermediate_size, 5632);
  EXPECT_EQ(c13->StateFloatsPerLayer() * 4 * c13->num_hidden_layers, 48 << 20);  // 48 MiB per sequence
}

TEST(Config, GqaShortConvClampAndEosList) {
  auto c = ParseGlaConfigJson(
      R"({"hidden_size":64,"num_heads":4,"num_kv_heads":2,"use_short_conv":true,"conv_size":3,
          "clamp_min":-0.5,"eos_token_id":[2,3],"intermediate_size":100,"vocab_size":10})",
      "c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kv_groups, 2);
  EXPECT_EQ(c->key_dim_per_group, 16);
  EXPECT_EQ(c->value_dim_per_group, 32);
  EXPECT_EQ(c->intermediate_size, 100);
  EXPECT_EQ(c->ConvTailFloatsPerLayer(), 2 * (32 + 16 + 32));
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{2, 3}));
  EXPECT_DOUBLE_EQ(*c->clamp_min, -0.5);
}

class ConfigError : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(ConfigError, NamesTheField) {
  auto c = ParseGlaConfigJson(GetParam().first, "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find(GetParam().second), std::string::npos) << c.status();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigError,
    ::testing::Values(std::pair{"{not json", "not valid JSON"}, std::pair{"[]", "not a JSON object"},
                      std::pair{R"({"feature_map":"relu"})", "'feature_map'"},
                      std::pair{R"({"attn":{"layers":[1]}})", "'attn'"},
                      std::pair{R"({"use_gv":true})", "'use_gv'"}, std::pair{R"({"use_gk":false})", "'use_gk'"},
                      std::pair{R"({"attnres_block_size":2})", "'attnres_block_size'"},
                      std::pair{R"({"hidden_act":"powlu"})", "'hidden_act'"},
                      std::pair{R"({"elementwise_affine":false})", "'elementwise_affine'"},
                      std::pair{R"({"model_type":"llama"})", "'model_type'"},
                      std::pair{R"({"hidden_size":"big"})", "'hidden_size' must be an integer"},
                      std::pair{R"({"hidden_size":0})", "'hidden_size'"},
                      std::pair{R"({"num_heads":3})", "'expand_k'"},
                      std::pair{R"({"num_kv_heads":3})", "'num_kv_heads'"},
                      std::pair{R"({"norm_eps":-1})", "'norm_eps'"},
                      std::pair{R"({"clamp_min":0.5})", "'clamp_min'"},
                      std::pair{R"({"vocab_size":10,"eos_token_id":12})", "'eos_token_id'"},
                      std::pair{R"({"use_short_conv":"yes"})", "'use_short_conv'"},
                      // Found by config_fuzz: these converted out-of-range doubles to int (UB).
                      std::pair{R"({"hidden_ratio":3.5e9})", "'hidden_ratio' must be at most"},
                      std::pair{R"({"hidden_size":1073741824,"hidden_ratio":2})", "'hidden_ratio' gives an intermediate size"},
                      std::pair{R"({"hidden_size":1024,"expand_k":1e30})", "'expand_k' gives a key dim"},
                      std::pair{R"({"hidden_size":1024,"expand_v":2e6})", "'expand_v' gives a value dim"}));

}  // namespace
}  // namespace gla
