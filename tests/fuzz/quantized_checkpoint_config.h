// The small GLA config whose model.safetensors quantized_checkpoint_fuzz.cc fuzzes (and
// make_fuzz_corpus.cc seeds): one layer, hidden 16, tied embeddings, with a compressed-tensors
// quantization_config of INT8 or FP8 weights, one scale per row or per tensor.
#pragma once

#include <string>

namespace gla::fuzz {

inline std::string QuantizedFuzzConfigJson(bool fp8, bool per_channel) {
  return std::string(R"({"model_type": "gla", "hidden_size": 16, "num_hidden_layers": 1, "num_heads": 2,
    "expand_k": 0.5, "expand_v": 1, "intermediate_size": 32, "vocab_size": 32, "tie_word_embeddings": true,
    "quantization_config": {"quant_method": "compressed-tensors", "format": ")") +
         (fp8 ? "float-quantized" : "int-quantized") +
         R"(", "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": ")" +
         (fp8 ? "float" : "int") + R"(", "symmetric": true, "strategy": ")" + (per_channel ? "channel" : "tensor") +
         R"("}}}}})";
}

}  // namespace gla::fuzz
