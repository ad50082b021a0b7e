// Fuzzes config.json parsing (models/config.h ParseGlaConfigJson) with arbitrary text.
// Promise: every input is refused with INVALID_ARGUMENT or accepted as a config whose derived
// shapes are consistent (what the model runners index with), with no UB, crash or leak.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = gla::ParseGlaConfigJson(text, "config.json");
  if (!c.ok()) {
    GLA_FUZZ_CHECK(c.status().code() == absl::StatusCode::kInvalidArgument, "refused with %s",
                   c.status().ToString().c_str());
    return 0;
  }
  GLA_FUZZ_CHECK(c->hidden_size >= 1 && c->num_hidden_layers >= 1 && c->num_heads >= 1 && c->vocab_size >= 1,
                 "a non-positive size was accepted");
  GLA_FUZZ_CHECK(c->head_k_dim >= 1 && c->head_v_dim >= 1 && c->head_k_dim * c->num_heads == c->key_dim &&
                     c->head_v_dim * c->num_heads == c->value_dim,
                 "head dims do not tile key/value dims");
  GLA_FUZZ_CHECK(c->kv_groups >= 1 && c->kv_groups * c->num_kv_heads == c->num_heads, "kv groups");
  GLA_FUZZ_CHECK(c->intermediate_size >= 0, "intermediate_size %d", c->intermediate_size);
  for (int e : c->eos_token_ids) GLA_FUZZ_CHECK(e >= 0 && e < c->vocab_size, "eos %d outside the vocabulary", e);
  (void)c->StateFloatsPerLayer();
  return 0;
}
