// Writes the seed corpora of tests/fuzz/corpus/<harness>/ with the project's own writers: valid
// instances and slightly broken ones (truncated, a byte changed, a field out of range). Run by
// hand when a format changes (the output is checked in; deploy/fuzz.sh never writes there):
//   build-fuzz/tests/fuzz/gla-fuzz-corpus tests/fuzz/corpus
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/model/quantized_checkpoint.h"
#include "engine/sessions/session_file.h"
#include "gla/v1/gla.pb.h"
#include "models/lora_adapter.h"
#include "models/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/quantized_checkpoint_config.h"
#include "tests/support/random_model.h"

namespace fs = std::filesystem;

namespace {

std::string root;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void Put(const std::string& harness, const std::string& name, const std::string& bytes) {
  fs::create_directories(fs::path(root) / harness);
  std::ofstream out(fs::path(root) / harness / name, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", harness.c_str(), name.c_str());
    std::exit(1);
  }
}

// A safetensors file as bytes, from the project's writer.
std::string Safetensors(const std::vector<gla::TensorToWrite>& tensors, const std::map<std::string, std::string>& meta) {
  const std::string tmp = (fs::temp_directory_path() / "gla-fuzz-corpus.safetensors").string();
  if (!gla::WriteSafetensors(tmp, tensors, meta).ok()) std::exit(1);
  std::string b = Read(tmp);
  fs::remove(tmp);
  return b;
}

// A hand-made file: the 8-byte length, the header text, the data bytes.
std::string RawSafetensors(const std::string& header, size_t data_bytes) {
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  return b + header + std::string(data_bytes, '\x01');
}

void SafetensorsSeeds() {
  const std::vector<float> f = {1.5f, -2.0f, 0.25f, 3.0f, 4.0f, 5.0f};
  const std::vector<uint16_t> h = {0x3f80, 0xc000, 0x7f80, 0x0001};  // bf16 1, -2, inf, tiny
  const std::vector<int64_t> ids = {0, 1, -7};
  const std::vector<uint8_t> u8 = {1, 2, 3};
  auto span = [](const auto& v) { return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(v[0])); };
  const std::vector<gla::TensorToWrite> tensors = {
      {"model.embeddings.weight", gla::DType::kF32, {2, 3}, span(f)},
      {"h", gla::DType::kBF16, {4}, span(h)},
      {"ids", gla::DType::kI64, {3}, span(ids)},
      {"flags", gla::DType::kU8, {3}, span(u8)},
      {"empty", gla::DType::kF16, {0, 5}, {}}};
  const std::string valid = Safetensors(tensors, {{"format", "pt"}});
  Put("safetensors", "valid", valid);
  Put("safetensors", "valid_one_tensor", Safetensors({tensors[0]}, {}));
  Put("safetensors", "truncated", valid.substr(0, valid.size() - 5));
  std::string flipped = valid;
  flipped[8 + 20] ^= 0x20;
  Put("safetensors", "header_byte_changed", flipped);
  std::string long_len = valid;
  long_len[0] = static_cast<char>(long_len[0] + 1);
  Put("safetensors", "header_length_off_by_one", long_len);
  Put("safetensors", "overlap",
      RawSafetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12));
  Put("safetensors", "huge_shape",
      RawSafetensors(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", 0));
  Put("safetensors", "duplicate_name",
      RawSafetensors(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})", 2));
  Put("safetensors", "bad_metadata", RawSafetensors(R"({"__metadata__":{"format":7}})", 0));
  Put("safetensors", "too_short", std::string("\x08\x00\x00", 3));
}

void SessionSeeds() {
  constexpr uint64_t kFingerprint = 0x0123456789abcdefULL;  // session_file_fuzz.cc's
  std::vector<float> state(16);
  for (size_t i = 0; i < state.size(); ++i) state[i] = 0.5f * static_cast<float>(i) - 3.0f;
  const std::string tmp = (fs::temp_directory_path() / "gla-fuzz-corpus.glasession").string();
  auto write = [&](const gla::SessionRecord& r, uint64_t fp, std::span<const float> s,
                   gla::StateDType dtype = gla::StateDType::kF32) {
    if (!gla::WriteSessionFile(tmp, fp, r, s, dtype).ok()) std::exit(1);
    std::string b = Read(tmp);
    fs::remove(tmp);
    return b;
  };
  gla::SessionRecord r;
  r.id = "chat-1";
  r.adapter = "mine";
  r.tokens = 42;
  r.pending = 17;
  r.created_unix_s = 1.7e9;
  r.last_used_unix_s = 1.7e9 + 5;
  r.ttl_s = 3600;
  const std::string valid = write(r, kFingerprint, state);
  Put("session_file", "valid", valid);
  gla::SessionRecord plain;
  plain.id = "s";
  Put("session_file", "valid_no_pending", write(plain, kFingerprint, state));
  Put("session_file", "other_model", write(r, kFingerprint + 1, state));
  std::vector<float> bf16_words(gla::StateWords(16, gla::StateDType::kBF16));  // the same state kept in bf16
  gla::PackBf16State(state.data(), 16, bf16_words.data());
  Put("session_file", "valid_bf16", write(r, kFingerprint, bf16_words, gla::StateDType::kBF16));
  Put("session_file", "other_state_size", write(r, kFingerprint, std::span<const float>(state).first(8)));
  Put("session_file", "truncated", valid.substr(0, valid.size() - 9));
  std::string corrupt = valid;
  corrupt[corrupt.size() - 20] ^= 1;
  Put("session_file", "checksum_mismatch", corrupt);
  Put("session_file", "bad_magic", "GLASESS2" + valid.substr(8));
}

void ConfigSeeds() {
  Put("config", "gla_brown.json", Read(GLA_SOURCE_DIR "/models/gla-brown/config.json"));
  Put("config", "minimal.json", R"({"model_type": "gla", "hidden_size": 16, "num_hidden_layers": 1, "num_heads": 2, "vocab_size": 64})");
  Put("config", "gqa_conv.json",
      R"({"model_type":"gla","hidden_size":64,"num_hidden_layers":2,"num_heads":4,"num_kv_heads":2,"use_short_conv":true,)"
      R"("conv_size":4,"clamp_min":-2.5,"tie_word_embeddings":true,"fuse_norm":false,"eos_token_id":[2,3],"vocab_size":100})");
  Put("config", "expand_k_large.json", R"({"model_type": "gla", "hidden_size": 1024, "expand_k": 1e30, "num_heads": 4})");
  Put("config", "hidden_ratio.json", R"({"hidden_size": 2048, "hidden_ratio": 3.5e9, "intermediate_size": null})");
  Put("config", "unsupported.json", R"({"model_type": "gla", "attn": {"layers": [1]}, "use_gv": true})");
  Put("config", "broken.json", R"({"model_type": "gla", "hidden_size": 64, "num_heads": )");
  // A compressed-tensors INT8 checkpoint's config (models/quantization_config.h), W8A8 dynamic.
  Put("config", "quantized.json", R"({"model_type": "gla", "hidden_size": 64, "num_heads": 2, "vocab_size": 64,
    "quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
      "quantization_status": "compressed", "ignore": ["lm_head"], "kv_cache_scheme": null,
      "sparsity_config": {}, "config_groups": {"group_0": {"targets": ["Linear"], "output_activations": null,
        "input_activations": {"num_bits": 8, "type": "int", "dynamic": true, "strategy": "token"},
        "weights": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel", "group_size": null,
          "block_structure": null, "dynamic": false, "actorder": null}}}}})");
}

void ShardIndexSeeds() {
  // The harness's directory holds a, b in shard 1 and c in shard 2.
  Put("shard_index", "valid.json",
      R"({"metadata": {"total_size": 28}, "weight_map": {"a": "model-00001-of-00002.safetensors", )"
      R"("b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  Put("shard_index", "one_shard_short.json", R"({"weight_map": {"a": "model-00001-of-00002.safetensors"}})");
  Put("shard_index", "wrong_shard.json",
      R"({"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  Put("shard_index", "escape.json", R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  Put("shard_index", "missing_file.json", R"({"weight_map": {"a": "model-00003-of-00003.safetensors"}})");
  Put("shard_index", "not_a_map.json", R"({"weight_map": ["a", "b"]})");
}

void AdapterSeeds() {
  // What SaveLoraAdapter writes for adapter_config_fuzz.cc's adapter (r 2, q_proj + v_proj).
  const std::string tmp = (fs::temp_directory_path() / "gla-fuzz-corpus-adapter").string();
  auto model = gla::ParseGlaConfigJson(
      R"({"model_type": "gla", "hidden_size": 16, "num_hidden_layers": 2, "num_heads": 2, "expand_k": 0.5,
          "expand_v": 1, "intermediate_size": 32, "vocab_size": 64})", "config.json");
  gla::LoraConfig lora;
  lora.r = 2;
  lora.alpha = 4;
  lora.targets = {gla::LoraTarget::kQ, gla::LoraTarget::kV};
  auto a = gla::NewLoraAdapter(*model, lora, 1);
  if (!a.ok() || !gla::SaveLoraAdapter(tmp, *a).ok()) std::exit(1);
  Put("adapter_config", "matches.json", Read(tmp + "/adapter_config.json"));
  fs::remove_all(tmp);
  Put("adapter_config", "rslora_layers.json",
      R"({"peft_type":"LORA","task_type":"CAUSAL_LM","r":2,"lora_alpha":3.5,"lora_dropout":0.1,"use_rslora":true,)"
      R"("target_modules":["q_proj","v_proj"],"layers_to_transform":[1],"layers_pattern":"layers","bias":"none"})");
  Put("adapter_config", "regex_targets.json", R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":".*proj"})");
  Put("adapter_config", "dora.json", R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["gk_proj"],"use_dora":true})");
  Put("adapter_config", "alpha_huge.json", R"({"peft_type":"LORA","r":1,"lora_alpha":1e308,"target_modules":["q_proj"]})");
  Put("adapter_config", "not_lora.json", R"({"peft_type":"IA3","r":8})");
}

void TokenizerSeeds() {
  // tokenizer_model: the two tiny SentencePiece models (tests/data/tokenizers) and broken copies.
  for (const char* name : {"tiny_unigram", "tiny_bpe_bytes"}) {
    const std::string model = Read(std::string(GLA_SOURCE_DIR "/tests/data/tokenizers/") + name + ".model");
    if (model.size() < 64) {
      std::fprintf(stderr, "gla-fuzz-corpus: tests/data/tokenizers/%s.model is missing\n", name);
      std::exit(1);
    }
    Put("tokenizer_model", name, model);
    Put("tokenizer_model", std::string(name) + "_truncated", model.substr(0, model.size() / 2));
    std::string flipped = model;
    flipped[flipped.size() / 3] ^= 0x5a;
    Put("tokenizer_model", std::string(name) + "_byte_changed", flipped);
  }
  // Its first finding (a zero-length piece threw out of SentencePiece), kept as a regression seed.
  Put("tokenizer_model", "zero_length_piece", Read(GLA_SOURCE_DIR "/tests/data/tokenizers/zero_length_piece.model"));
  Put("tokenizer", "english", "The jury said it did find that many of Georgia's registration and election laws are outmoded.");
  Put("tokenizer", "spaces", "  two  spaces\tand\na newline  ");
  Put("tokenizer", "unicode", "caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x9a\x80 \xe4\xb8\xad\xe6\x96\x87 \xef\xbf\xbd");
  Put("tokenizer", "invalid_utf8", "ok \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 end");
  Put("tokenizer", "controls", std::string("<s></s><unk>\x01\x7f", 14));
}

void RequestSeeds() {
  auto put = [](const std::string& name, const gla::v1::GenerateRequest& r) {
    std::string b;
    if (!r.SerializeToString(&b)) std::exit(1);
    Put("generate_request", name, b);
  };
  gla::v1::GenerateRequest text;
  text.set_text("The jury said");
  text.set_max_new_tokens(40);
  text.mutable_sampling()->set_temperature(0.8f);
  text.mutable_sampling()->set_top_p(0.95f);
  text.mutable_sampling()->set_seed(1);
  put("text", text);
  gla::v1::GenerateRequest ids;
  for (int id : {1, 17, 42, 7999}) ids.mutable_token_ids()->add_ids(id);
  ids.set_max_new_tokens(16);
  ids.add_stop_token_ids(2);
  ids.set_logprobs(5);
  ids.set_priority(gla::v1::PRIORITY_HIGH);
  ids.set_request_id("req-1");
  put("token_ids", ids);
  gla::v1::GenerateRequest full = text;
  full.add_stop("\n\n");
  full.add_stop(".");
  full.set_ignore_eos(true);
  full.set_add_bos(false);
  full.set_session("chat-1");
  full.set_adapter("mine");
  auto* s = full.mutable_sampling();
  s->set_top_k(40);
  s->set_min_p(0.05f);
  s->set_repetition_penalty(1.1f);
  s->set_presence_penalty(0.5f);
  s->set_frequency_penalty(-0.5f);
  put("everything", full);
  gla::v1::GenerateRequest session_text;
  session_text.set_text("Hello.");
  session_text.set_session("chat-1");
  put("session_text", session_text);
  gla::v1::GenerateRequest bad = ids;
  bad.mutable_token_ids()->add_ids(8000);
  put("id_outside_vocab", bad);
  gla::v1::GenerateRequest big = ids;
  big.set_max_new_tokens(1024);
  put("max_new_tokens_at_limit", big);
  gla::v1::GenerateRequest nan = text;
  nan.mutable_sampling()->set_temperature(std::nanf(""));
  put("nan_temperature", nan);
  std::string cut;
  full.SerializeToString(&cut);
  Put("generate_request", "truncated", cut.substr(0, cut.size() - 3));
}

}  // namespace

// quantized_checkpoint: a mode byte (INT8/FP8, per row/per tensor) then the model.safetensors the
// project's quantizer writes for that harness's config (per row; the per-tensor modes start from
// the same bytes, which their scales' shapes refuse until mutated).
void QuantizedCheckpointSeeds() {
  const fs::path dir = fs::temp_directory_path() / "gla-fuzz-corpus-quantized";
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json base = nlohmann::json::parse(gla::fuzz::QuantizedFuzzConfigJson(false, true));
  base.erase("quantization_config");
  if (!gla::testing::WriteRandomModel((dir / "src").string(), {base.dump(), gla::DType::kF32, 3}).ok()) std::exit(1);
  for (int fp8 = 0; fp8 < 2; ++fp8) {
    const fs::path out = dir / (fp8 ? "fp8" : "int8");
    if (!gla::WriteQuantizedCheckpoint((dir / "src").string(), out.string(),
                                       fp8 ? gla::CheckpointQuantization::Kind::kFp8E4M3
                                           : gla::CheckpointQuantization::Kind::kInt8)
             .ok())
      std::exit(1);
    const std::string bytes = Read((out / "model.safetensors").string());
    Put("quantized_checkpoint", fp8 ? "fp8_per_row" : "int8_per_row", std::string(1, static_cast<char>(fp8)) + bytes);
    Put("quantized_checkpoint", fp8 ? "fp8_per_tensor_mode" : "int8_per_tensor_mode",
        std::string(1, static_cast<char>(fp8 | 2)) + bytes);
    Put("quantized_checkpoint", fp8 ? "fp8_truncated" : "int8_truncated",
        std::string(1, static_cast<char>(fp8)) + bytes.substr(0, bytes.size() - 40));
  }
  fs::remove_all(dir);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  root = argv[1];
  SafetensorsSeeds();
  SessionSeeds();
  ConfigSeeds();
  ShardIndexSeeds();
  AdapterSeeds();
  TokenizerSeeds();
  RequestSeeds();
  QuantizedCheckpointSeeds();
  return 0;
}
