#include "server/grpc_generate_call.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "models/status_macros.h"

namespace gla {

absl::StatusOr<GenerateCall> GenerateCallFromProto(const v1::GenerateRequest& req) {
  GenerateCall call;
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: call.text = req.text(); break;
    case v1::GenerateRequest::kTokenIds:
      call.token_ids.emplace(req.token_ids().ids().begin(), req.token_ids().ids().end());
      break;
    default: break;  // neither: the front door says which fields to set
  }
  if (req.has_add_bos()) call.add_bos = req.add_bos();
  call.session = req.session();
  call.adapter = req.adapter();
  call.request_id = req.request_id();
  const v1::SamplingParams& s = req.sampling();
  call.temperature = s.temperature();
  call.top_k = s.top_k();
  if (s.has_top_p()) call.top_p = s.top_p();
  call.min_p = s.min_p();
  if (s.has_repetition_penalty()) call.repetition_penalty = s.repetition_penalty();
  call.presence_penalty = s.presence_penalty();
  call.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) call.seed = s.seed();
  for (const auto& [id, bias] : s.logit_bias()) call.logit_bias.emplace_back(id, bias);
  std::sort(call.logit_bias.begin(), call.logit_bias.end());  // a map's order is unspecified
  if (req.has_logprobs()) call.logprobs = req.logprobs();
  if (req.has_prompt_logprobs()) call.prompt_logprobs = req.prompt_logprobs();
  call.prompt_only = req.score_only();
  call.max_new_tokens = req.max_new_tokens();
  call.stop.assign(req.stop().begin(), req.stop().end());
  call.stop_token_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  call.ignore_eos = req.ignore_eos();
  using Kind = OutputConstraint::Kind;
  switch (req.constraint_case()) {
    case v1::GenerateRequest::kJsonSchema:
      call.constraint = {Kind::kJsonSchema, req.json_schema()};
      call.names.constraint = "json_schema";
      break;
    case v1::GenerateRequest::kJsonObject:
      if (req.json_object()) call.constraint = {Kind::kJsonObject, ""};
      call.names.constraint = "json_object";
      break;
    case v1::GenerateRequest::kRegex:
      call.constraint = {Kind::kRegex, req.regex()};
      call.names.constraint = "regex";
      break;
    case v1::GenerateRequest::kGrammar:
      call.constraint = {Kind::kGrammar, req.grammar()};
      call.names.constraint = "grammar";
      break;
    default: break;
  }
  if (!v1::Priority_IsValid(req.priority()))
    return absl::InvalidArgumentError(absl::StrCat("priority: unknown value ", req.priority()));
  call.priority = req.priority() == v1::PRIORITY_HIGH ? 1 : req.priority() == v1::PRIORITY_LOW ? -1 : 0;
  return call;
}

absl::StatusOr<GenerationSpec> ValidateGenerateRequest(const v1::GenerateRequest& req, const Backend& backend,
                                                       const ServerLimits& limits) {
  ASSIGN_OR_RETURN(GenerateCall call, GenerateCallFromProto(req));
  return ValidateGenerateCall(call, backend, limits);
}

}  // namespace gla
