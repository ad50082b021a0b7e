#include "server/request_validation.h"

#include <cmath>
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

absl::Status ValidateTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int vocab, const char* field) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab) return Bad(field, absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  return absl::OkStatus();
}

absl::StatusOr<GenerationSpec> ValidateGenerateRequest(const v1::GenerateRequest& req, const Backend& backend,
                                                       const ServerLimits& limits) {
  GenerationSpec spec;
  const Tokenizer* tok = backend.tokenizer();
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (req.text().empty()) return Bad("text", "empty prompt");
      if (!IsValidUtf8(req.text())) return Bad("text", "not valid UTF-8");
      if (tok == nullptr) return Bad("text", "this model has no tokenizer.model; send token_ids");
      // On a session, an unset add_bos means "BOS only if the session has no past yet", which the
      // scheduler knows: the BOS travels beside the prompt.
      const bool bos_decided_later = !req.session().empty() && !req.has_add_bos() && tok->bos_id().has_value();
      // Bounded while it is read: a text of many megabytes is refused, not tokenized whole.
      auto ids = tok->EncodeBounded(req.text(), !bos_decided_later && (!req.has_add_bos() || req.add_bos()),
                                    {.max_tokens = limits.max_prompt_tokens});
      if (!ids.ok())
        return Bad("text", absl::StrCat(ids.status().message(),
                                        absl::IsOutOfRange(ids.status()) ? " (the server's --max_prompt_tokens)" : ""));
      spec.prompt = std::move(*ids);
      if (bos_decided_later) spec.bos_if_session_empty = *tok->bos_id();
      if (spec.prompt.empty()) return Bad("text", "prompt has no tokens");
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      if (req.token_ids().ids().empty()) return Bad("token_ids", "empty prompt");
      RETURN_IF_ERROR(ValidateTokenIds(req.token_ids().ids(), backend.config().vocab_size, "token_ids"));
      spec.prompt.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
      break;
    default:
      return Bad("prompt", "set text or token_ids");
  }
  if (!req.session().empty()) {
    spec.session = req.session();
    if (!AdapterRegistry::ValidateName(spec.session).ok())
      return Bad("session", "must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  if (static_cast<int>(spec.prompt.size()) > limits.max_prompt_tokens)
    return Bad("prompt", absl::StrCat(spec.prompt.size(), " tokens, over the limit of ", limits.max_prompt_tokens));

  const v1::SamplingParams& s = req.sampling();
  SamplingParams& p = spec.sampling;
  if (!InRange(s.temperature(), 0.0f, 100.0f)) return Bad("sampling.temperature", "must be in [0, 100]");
  p.temperature = s.temperature();
  if (s.top_k() < 0) return Bad("sampling.top_k", "must be >= 0");
  p.top_k = s.top_k();
  if (s.has_top_p() && !(std::isfinite(s.top_p()) && s.top_p() > 0.0f && s.top_p() <= 1.0f))
    return Bad("sampling.top_p", "must be in (0, 1]");
  p.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  if (!InRange(s.min_p(), 0.0f, 1.0f)) return Bad("sampling.min_p", "must be in [0, 1]");
  p.min_p = s.min_p();
  if (s.has_repetition_penalty() && !(std::isfinite(s.repetition_penalty()) && s.repetition_penalty() > 0.0f))
    return Bad("sampling.repetition_penalty", "must be > 0");
  p.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  if (!InRange(s.presence_penalty(), -2.0f, 2.0f)) return Bad("sampling.presence_penalty", "must be in [-2, 2]");
  p.presence_penalty = s.presence_penalty();
  if (!InRange(s.frequency_penalty(), -2.0f, 2.0f)) return Bad("sampling.frequency_penalty", "must be in [-2, 2]");
  p.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) {
    p.seed = s.seed();
  } else {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    p.seed = rng();
  }
  if (req.has_logprobs()) {
    if (req.logprobs() < 0 || req.logprobs() > limits.max_logprobs)
      return Bad("logprobs", absl::StrCat("must be in [0, ", limits.max_logprobs, "]"));
    p.logprobs = req.logprobs();
  }

  // Compared as unsigned: a uint32 of 2^31 or more must not turn negative on the way.
  if (req.max_new_tokens() > static_cast<uint32_t>(limits.max_new_tokens))
    return Bad("max_new_tokens", absl::StrCat(req.max_new_tokens(), " is over the limit of ", limits.max_new_tokens));
  spec.max_new_tokens = req.max_new_tokens() == 0 ? limits.max_new_tokens : static_cast<int>(req.max_new_tokens());
  if (req.stop_size() > limits.max_stop_strings)
    return Bad("stop", absl::StrCat("at most ", limits.max_stop_strings, " stop strings"));
  for (const std::string& stop : req.stop()) {
    if (stop.empty()) return Bad("stop", "empty stop string");
    if (tok == nullptr) return Bad("stop", "this model has no tokenizer.model, so there is no text to stop on");
    spec.stop.push_back(stop);
  }
  RETURN_IF_ERROR(ValidateTokenIds(req.stop_token_ids(), backend.config().vocab_size, "stop_token_ids"));
  spec.stop_token_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  spec.ignore_eos = req.ignore_eos();
  if (!v1::Priority_IsValid(req.priority())) return Bad("priority", absl::StrCat("unknown value ", req.priority()));
  spec.priority = req.priority() == v1::PRIORITY_HIGH ? 1 : req.priority() == v1::PRIORITY_LOW ? -1 : 0;
  if (req.request_id().size() > 128) return Bad("request_id", "longer than 128 bytes");
  spec.id = req.request_id();
  return spec;
}

}  // namespace gla
