#include "engine/model/quantized_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/linear_int8.h"
#include "models/config.h"
#include "models/dtype.h"
#include "models/file_io.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "models/tensor_store.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace {

namespace fs = std::filesystem;

// What llm-compressor writes for a W8A16 channel-wise scheme (a config our loader and vLLM read).
nlohmann::ordered_json QuantizationConfig(CheckpointQuantization::Kind kind) {
  const bool fp8 = kind == CheckpointQuantization::Kind::kFp8E4M3;
  nlohmann::ordered_json weights = {{"num_bits", 8},          {"type", fp8 ? "float" : "int"},
                                    {"symmetric", true},      {"strategy", "channel"},
                                    {"group_size", nullptr},  {"block_structure", nullptr},
                                    {"dynamic", false},       {"actorder", nullptr},
                                    {"observer", "minmax"}};
  nlohmann::ordered_json group = {{"targets", {"Linear"}},
                                  {"weights", weights},
                                  {"input_activations", nullptr},
                                  {"output_activations", nullptr}};
  return {{"quant_method", "compressed-tensors"},
          {"format", fp8 ? "float-quantized" : "int-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", group}}},
          {"ignore", {"lm_head"}},
          {"kv_cache_scheme", nullptr}};
}

}  // namespace

absl::Status WriteQuantizedCheckpoint(const std::string& model_dir, const std::string& out_dir,
                                      CheckpointQuantization::Kind kind) {
  std::error_code ec;
  if (fs::exists(out_dir, ec)) return absl::InvalidArgumentError(absl::StrCat(out_dir, ": exists already"));
  ASSIGN_OR_RETURN(GlaConfig config, LoadGlaConfig(model_dir));
  if (config.quantization)
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": the checkpoint is quantized already"));
  ASSIGN_OR_RETURN(TensorStore store, TensorStore::OpenDir(model_dir));
  {  // every check the loader makes (shapes, dtypes, nothing left over) before anything is written
    ASSIGN_OR_RETURN(ModelWeights unused, LoadModelWeights(config, store));
  }
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string config_text, ReadWholeFile(config_path));
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(config_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
  j["quantization_config"] = QuantizationConfig(kind);

  std::vector<TensorToWrite> tensors;
  std::deque<std::vector<uint8_t>> bytes;  // what `tensors` point at (stable addresses)
  auto keep = [&](const void* data, size_t n) -> std::span<const uint8_t> {
    std::vector<uint8_t>& b = bytes.emplace_back(n);
    std::memcpy(b.data(), data, n);
    return b;
  };
  for (const ExpectedTensor& e : ExpectedTensors(config)) {
    const TensorView* t = store.Find(e.name);
    if (!IsLinearWeight(e.name) || e.name == "lm_head.weight") {  // as they are (lm_head too, as llm-compressor leaves it)
      tensors.push_back({e.name, t->dtype, e.shape, keep(t->data, t->nbytes)});
      continue;
    }
    ASSIGN_OR_RETURN(std::vector<float> v, ToFloat32(*t));
    const int64_t N = e.shape[0], K = e.shape[1];
    const auto not_finite = [&] {
      return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", e.name, "' holds a value that is not finite"));
    };
    std::vector<float> scale;
    if (kind == CheckpointQuantization::Kind::kFp8E4M3) {
      std::vector<uint8_t> q;
      q.resize(static_cast<size_t>(N * K));
      scale.resize(static_cast<size_t>(N));
      if (!QuantizeFp8E4M3PerRow(v.data(), N, K, q.data(), scale.data())) return not_finite();
      tensors.push_back({e.name, DType::kF8E4M3, e.shape, keep(q.data(), q.size())});
    } else {
      cpu::Int8Weight q;
      if (!cpu::QuantizeInt8PerRow(v.data(), N, K, &q)) return not_finite();
      tensors.push_back({e.name, DType::kI8, e.shape, keep(q.q.data(), q.q.size())});
      scale = std::move(q.scale);
    }
    tensors.push_back({e.name + "_scale", DType::kF32, {N, 1}, keep(scale.data(), scale.size() * sizeof(float))});
  }

  const fs::path tok = fs::path(model_dir) / "tokenizer.model";
  const bool has_tokenizer = fs::exists(tok, ec);
  if (has_tokenizer && !fs::is_regular_file(tok, ec))  // (a FIFO or device would hang the copy)
    return absl::InvalidArgumentError(absl::StrCat(tok.string(), ": not a regular file"));
  if (!fs::create_directory(out_dir, ec))
    return absl::InvalidArgumentError(absl::StrCat(out_dir, ": cannot create", ec ? ": " + ec.message() : " (exists)"));
  // Written whole or not at all: a failure part way removes what was written.
  const absl::Status written = [&]() -> absl::Status {
    RETURN_IF_ERROR(WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), tensors,
                                     {{"format", "pt"}, {"quantized_by", "gla-eval quantize"}}));
    RETURN_IF_ERROR(WriteFileAtomically((fs::path(out_dir) / "config.json").string(), j.dump(2) + "\n"));
    if (has_tokenizer) {
      ASSIGN_OR_RETURN(std::string piece_model, ReadWholeFile(tok.string()));
      RETURN_IF_ERROR(WriteFileAtomically((fs::path(out_dir) / "tokenizer.model").string(), piece_model));
    }
    return absl::OkStatus();
  }();
  if (!written.ok()) fs::remove_all(out_dir, ec);
  return written;
}

}  // namespace gla
