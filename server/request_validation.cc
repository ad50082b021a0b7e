#include "server/request_validation.h"

#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/adapter_registry.h"
#include "models/status_macros.h"
#include "models/utf8.h"

namespace gla {

namespace {
absl::Status Bad(const char* field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}
bool InRange(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }
}  // namespace

absl::Status ValidateTokenIds(std::span<const int32_t> ids, int vocab, const char* field) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab) return Bad(field, absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  return absl::OkStatus();
}

absl::StatusOr<GenerationSpec> ValidateGenerateCall(const GenerateCall& call, const Backend& backend,
                                                    const ServerLimits& limits) {
  const CallFieldNames& f = call.names;
  GenerationSpec spec;
  const Tokenizer* tok = backend.tokenizer();
  if (call.text.has_value() == call.token_ids.has_value())
    return Bad(f.prompt, absl::StrCat("set ", f.text, " or ", f.token_ids));
  if (call.text.has_value()) {
    const std::string& text = *call.text;
    if (text.empty()) return Bad(f.text, "empty prompt");
    if (!IsValidUtf8(text)) return Bad(f.text, "not valid UTF-8");
    if (tok == nullptr) return Bad(f.text, absl::StrCat("this model has no tokenizer.model; send ", f.token_ids));
    // On a session, an unset add_bos means "BOS only if the session has no past yet", which the
    // scheduler knows: the BOS travels beside the prompt.
    const bool bos_decided_later = !call.session.empty() && !call.add_bos.has_value() && tok->bos_id().has_value();
    // Bounded while it is read: a text of many megabytes is refused, not tokenized whole.
    auto ids = tok->EncodeBounded(text, !bos_decided_later && call.add_bos.value_or(true),
                                  {.max_tokens = limits.max_prompt_tokens});
    if (!ids.ok())
      return Bad(f.text, absl::StrCat(ids.status().message(),
                                      absl::IsOutOfRange(ids.status()) ? " (the server's --max_prompt_tokens)" : ""));
    spec.prompt = std::move(*ids);
    if (bos_decided_later) spec.bos_if_session_empty = *tok->bos_id();
    if (spec.prompt.empty()) return Bad(f.text, "prompt has no tokens");
  } else {
    if (call.token_ids->empty()) return Bad(f.token_ids, "empty prompt");
    RETURN_IF_ERROR(ValidateTokenIds(*call.token_ids, backend.config().vocab_size, f.token_ids));
    spec.prompt = *call.token_ids;
  }
  if (!call.session.empty()) {
    spec.session = call.session;
    if (!AdapterRegistry::ValidateName(spec.session).ok())
      return Bad(f.session, "must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  if (static_cast<int64_t>(spec.prompt.size()) > limits.max_prompt_tokens)
    return Bad(f.prompt, absl::StrCat(spec.prompt.size(), " tokens, over the limit of ", limits.max_prompt_tokens));

  SamplingParams& p = spec.sampling;
  if (!InRange(call.temperature, 0.0f, 100.0f)) return Bad(f.temperature, "must be in [0, 100]");
  p.temperature = call.temperature;
  if (call.top_k < 0 || call.top_k > std::numeric_limits<int32_t>::max()) return Bad(f.top_k, "must be >= 0");
  p.top_k = static_cast<int>(call.top_k);
  if (call.top_p.has_value() && !(std::isfinite(*call.top_p) && *call.top_p > 0.0f && *call.top_p <= 1.0f))
    return Bad(f.top_p, "must be in (0, 1]");
  p.top_p = call.top_p.value_or(1.0f);
  if (!InRange(call.min_p, 0.0f, 1.0f)) return Bad(f.min_p, "must be in [0, 1]");
  p.min_p = call.min_p;
  if (call.repetition_penalty.has_value() && !(std::isfinite(*call.repetition_penalty) && *call.repetition_penalty > 0.0f))
    return Bad(f.repetition_penalty, "must be > 0");
  p.repetition_penalty = call.repetition_penalty.value_or(1.0f);
  if (!InRange(call.presence_penalty, -2.0f, 2.0f)) return Bad(f.presence_penalty, "must be in [-2, 2]");
  p.presence_penalty = call.presence_penalty;
  if (!InRange(call.frequency_penalty, -2.0f, 2.0f)) return Bad(f.frequency_penalty, "must be in [-2, 2]");
  p.frequency_penalty = call.frequency_penalty;
  if (call.seed.has_value()) {
    p.seed = *call.seed;
  } else {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    p.seed = rng();
  }
  if (call.logit_bias.size() > static_cast<size_t>(limits.max_logit_bias))
    return Bad(f.logit_bias, absl::StrCat("at most ", limits.max_logit_bias, " entries"));
  for (const auto& [id, bias] : call.logit_bias) {
    if (id < 0 || id >= backend.config().vocab_size)
      return Bad(f.logit_bias, absl::StrCat("token id ", id, " is outside the vocabulary [0, ", backend.config().vocab_size, ")"));
    if (!(std::isfinite(bias) && bias >= -100.0 && bias <= 100.0))
      return Bad(f.logit_bias, absl::StrCat("the bias of token ", id, " must be in [-100, 100]"));
    for (const auto& [seen, unused] : p.logit_bias)
      if (seen == id) return Bad(f.logit_bias, absl::StrCat("token id ", id, " appears twice"));
    p.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(bias));
  }
  if (call.logprobs.has_value()) {
    if (*call.logprobs < 0 || *call.logprobs > limits.max_logprobs)
      return Bad(f.logprobs, absl::StrCat("must be in [0, ", limits.max_logprobs, "]"));
    p.logprobs = static_cast<int>(*call.logprobs);
  }

  if (call.prompt_logprobs.has_value()) {
    if (*call.prompt_logprobs < 0 || *call.prompt_logprobs > limits.max_logprobs)
      return Bad(f.prompt_logprobs, absl::StrCat("must be in [0, ", limits.max_logprobs, "]"));
    if (!call.session.empty())
      return Bad(f.prompt_logprobs, "scores a prompt from an empty past: not with a session");
    spec.prompt_logprobs = static_cast<int>(*call.prompt_logprobs);
  }
  if (call.prompt_only && !call.prompt_logprobs.has_value())
    return Bad(f.prompt_only, absl::StrCat("scores the prompt only: needs ", f.prompt_logprobs));

  // Compared as unsigned: a count of 2^31 or more must not turn negative on the way.
  if (call.max_new_tokens > static_cast<uint64_t>(limits.max_new_tokens))
    return Bad(f.max_new_tokens, absl::StrCat(call.max_new_tokens, " is over the limit of ", limits.max_new_tokens));
  spec.max_new_tokens = call.prompt_only            ? 0
                        : call.max_new_tokens == 0 ? limits.max_new_tokens
                                                   : static_cast<int>(call.max_new_tokens);
  if (call.stop.size() > static_cast<size_t>(limits.max_stop_strings))
    return Bad(f.stop, absl::StrCat("at most ", limits.max_stop_strings, " stop strings"));
  for (const std::string& stop : call.stop) {
    if (stop.empty()) return Bad(f.stop, "empty stop string");
    if (tok == nullptr) return Bad(f.stop, "this model has no tokenizer.model, so there is no text to stop on");
    spec.stop.push_back(stop);
  }
  RETURN_IF_ERROR(ValidateTokenIds(call.stop_token_ids, backend.config().vocab_size, f.stop_token_ids));
  spec.stop_token_ids = call.stop_token_ids;
  spec.ignore_eos = call.ignore_eos;
  if (call.priority < -1 || call.priority > 1) return Bad(f.priority, absl::StrCat("unknown value ", call.priority));
  spec.priority = call.priority;
  if (call.request_id.size() > 128) return Bad(f.request_id, "longer than 128 bytes");
  spec.id = call.request_id;
  if (call.deadline.has_value()) spec.deadline = *call.deadline;
  return spec;
}

}  // namespace gla
