// A generation request as the front door sees it, whatever protocol carried it: the gRPC adapter
// (server/grpc_generate_call.h) and the HTTP one fill this, and server/request_validation.h turns
// it into the engine's GenerationSpec. No protocol type appears here.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gla {

// What each field is called by the protocol that carried it, so that an error names the field
// the client sent (gRPC: "sampling.temperature"; the OpenAI API: "temperature").
struct CallFieldNames {
  const char* text = "text";
  const char* token_ids = "token_ids";
  const char* prompt = "prompt";  // neither text nor token ids
  const char* session = "session";
  const char* temperature = "sampling.temperature";
  const char* top_k = "sampling.top_k";
  const char* top_p = "sampling.top_p";
  const char* min_p = "sampling.min_p";
  const char* repetition_penalty = "sampling.repetition_penalty";
  const char* presence_penalty = "sampling.presence_penalty";
  const char* frequency_penalty = "sampling.frequency_penalty";
  const char* logprobs = "logprobs";
  const char* logit_bias = "sampling.logit_bias";
  const char* prompt_logprobs = "prompt_logprobs";
  const char* prompt_only = "score_only";
  const char* max_new_tokens = "max_new_tokens";
  const char* stop = "stop";
  const char* stop_token_ids = "stop_token_ids";
  const char* priority = "priority";
  const char* request_id = "request_id";
  const char* constraint = "constraint";
};

// Structured output (issue 21): the generated text kept inside a language. kNone: free text.
struct OutputConstraint {
  enum class Kind { kNone, kRegex, kGrammar, kJsonSchema, kJsonObject } kind = Kind::kNone;
  std::string text;  // the pattern, the GBNF grammar or the JSON Schema (JSON text); kJsonObject: unused
};

struct GenerateCall {
  // The prompt: text (tokenized with the model's tokenizer) or token ids, exactly one.
  std::optional<std::string> text;
  std::optional<std::vector<int32_t>> token_ids;
  std::optional<bool> add_bos;  // text only; unset: BOS (on a session: only on its first turn)
  std::string session;          // empty: none
  std::string adapter;          // LoRA adapter by name; empty: the base model
  std::string request_id;       // empty: the front door names it

  // Sampling. temperature 0 = greedy.
  float temperature = 0.0f;
  int64_t top_k = 0;  // 0: off
  std::optional<float> top_p;
  float min_p = 0.0f;
  std::optional<float> repetition_penalty;
  float presence_penalty = 0.0f, frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;      // unset: a fresh random seed
  std::optional<int64_t> logprobs;   // top alternatives per token; unset: no logprobs
  std::vector<std::pair<int64_t, double>> logit_bias;  // token id -> added to its logit

  // Prompt scoring: the log-probability of every prompt token after the first, with this many
  // alternatives each; unset: none.
  std::optional<int64_t> prompt_logprobs;
  bool prompt_only = false;  // score the prompt and generate nothing (needs prompt_logprobs)

  uint64_t max_new_tokens = 0;  // 0: the server's limit
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int priority = 0;  // -1 low, 0 normal, 1 high
  OutputConstraint constraint;

  // When the client stops waiting; unset: never.
  std::optional<std::chrono::system_clock::time_point> deadline;

  CallFieldNames names;
};

}  // namespace gla
