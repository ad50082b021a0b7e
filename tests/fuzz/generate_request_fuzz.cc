// Fuzzes request validation (server/grpc_generate_call.h ValidateGenerateRequest, through the
// front door's ValidateGenerateCall): arbitrary
// bytes parsed as a gla.v1.GenerateRequest (what a gRPC call delivers), and each that parses
// validated against a CPU backend of a small random model (1 layer, 16 wide, vocabulary 512)
// with a byte-level tokenizer (byte_tokenizer_shim.cc says why not SentencePiece), under the
// server's default limits.
// Promise: a request is refused with INVALID_ARGUMENT, or its GenerationSpec holds what the
// scheduler assumes: a non-empty prompt of ids inside the vocabulary, within max_prompt_tokens;
// 1 <= max_new_tokens <= the limit, or 0 for a score-only request (prompt_logprobs in range, no
// session); sampling parameters in their documented ranges; stop token
// ids in the vocabulary; at most max_stop_strings non-empty stop strings; a known priority; a
// request id of at most 128 bytes. No UB, crash or leak. Nothing is generated (kept cheap).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "server/grpc_generate_call.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/support/random_model.h"

namespace {

gla::Backend& TheBackend() {
  static const std::unique_ptr<gla::Backend> backend = [] {
    const std::string dir = gla::fuzz::TempDir() + "/model";
    gla::testing::RandomModelSpec spec;
    spec.config_json = R"({"model_type": "gla", "hidden_size": 16, "num_hidden_layers": 1, "num_heads": 2,
      "expand_k": 0.5, "expand_v": 1, "intermediate_size": 32, "vocab_size": 512, "bos_token_id": 1,
      "eos_token_id": 2})";
    if (!gla::testing::WriteRandomModel(dir, spec).ok()) std::abort();
    gla::fuzz::WriteFileOrDie(dir + "/tokenizer.model", "byte-level (byte_tokenizer_shim.cc)");
    ::setenv("GLA_SENTENCEPIECE_SHIM", GLA_FUZZ_BYTE_SHIM, /*overwrite=*/1);
    auto b = gla::MakeCpuBackend(dir, {.slots = 1, .threads = 1});
    if (!b.ok()) {
      std::fprintf(stderr, "generate_request_fuzz: %s\n", b.status().ToString().c_str());
      std::abort();
    }
    if ((*b)->tokenizer() == nullptr) std::abort();
    return *std::move(b);
  }();
  return *backend;
}

bool In(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)TheBackend();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gla::v1::GenerateRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  const gla::Backend& backend = TheBackend();
  const gla::ServerLimits limits;
  auto spec = gla::ValidateGenerateRequest(req, backend, limits);
  if (!spec.ok()) {
    GLA_FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument, "refused with %s",
                   spec.status().ToString().c_str());
    return 0;
  }
  const int vocab = backend.config().vocab_size;
  GLA_FUZZ_CHECK(!spec->prompt.empty() && static_cast<int>(spec->prompt.size()) <= limits.max_prompt_tokens,
                 "prompt of %zu tokens", spec->prompt.size());
  for (int32_t id : spec->prompt) GLA_FUZZ_CHECK(id >= 0 && id < vocab, "prompt id %d", id);
  for (int32_t id : spec->stop_token_ids) GLA_FUZZ_CHECK(id >= 0 && id < vocab, "stop token id %d", id);
  // A score-only request generates nothing (scheduler.h: max_new_tokens 0 only with prompt_logprobs).
  const bool score_only = spec->max_new_tokens == 0;
  GLA_FUZZ_CHECK(score_only ? (req.score_only() && spec->prompt_logprobs >= 0 &&
                               spec->prompt_logprobs <= limits.max_logprobs && spec->session.empty())
                            : (spec->max_new_tokens >= 1 && spec->max_new_tokens <= limits.max_new_tokens),
                 "max_new_tokens = %d (request %u, score_only %d, prompt_logprobs %d)", spec->max_new_tokens,
                 req.max_new_tokens(), req.score_only(), spec->prompt_logprobs);
  const gla::SamplingParams& p = spec->sampling;
  GLA_FUZZ_CHECK(In(p.temperature, 0, 100) && p.top_k >= 0 && std::isfinite(p.top_p) && p.top_p > 0 &&
                     p.top_p <= 1 && In(p.min_p, 0, 1) && std::isfinite(p.repetition_penalty) &&
                     p.repetition_penalty > 0 && In(p.presence_penalty, -2, 2) && In(p.frequency_penalty, -2, 2),
                 "sampling parameters out of range");
  GLA_FUZZ_CHECK(p.logprobs >= -1 && p.logprobs <= limits.max_logprobs, "logprobs %d", p.logprobs);
  GLA_FUZZ_CHECK(static_cast<int>(spec->stop.size()) <= limits.max_stop_strings, "%zu stop strings", spec->stop.size());
  for (const std::string& s : spec->stop) GLA_FUZZ_CHECK(!s.empty(), "an empty stop string");
  GLA_FUZZ_CHECK(spec->priority >= -1 && spec->priority <= 1, "priority %d", spec->priority);
  GLA_FUZZ_CHECK(spec->id.size() <= 128, "request id of %zu bytes", spec->id.size());
  if (spec->bos_if_session_empty) GLA_FUZZ_CHECK(*spec->bos_if_session_empty >= 0 && *spec->bos_if_session_empty < vocab, "bos");
  return 0;
}
