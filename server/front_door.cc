#include "server/front_door.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/log.h"

namespace gla {

absl::Status FrontDoor::Admit(std::optional<std::string_view> authorization, std::string_view peer) const {
  return info_.guard != nullptr ? info_.guard->Admit(authorization, peer) : absl::OkStatus();
}

absl::StatusOr<GenerationSpec> FrontDoor::Prepare(const GenerateCall& call) {
  auto spec = ValidateGenerateCall(call, engines_.backend(), limits_);
  if (!spec.ok()) return spec;
  if (!call.adapter.empty()) {
    Backend& backend = engines_.backend();
    if (!backend.supports_adapters())
      return absl::FailedPreconditionError(absl::StrCat("adapter '", call.adapter, "': the ", backend.name(),
                                                        " backend does not apply LoRA adapters yet (glad --backend cpu does)"));
    spec->adapter = info_.adapters != nullptr ? info_.adapters->Find(call.adapter) : nullptr;
    spec->adapter_name = call.adapter;
    if (spec->adapter == nullptr)
      return absl::NotFoundError(
          absl::StrCat("no adapter named '", call.adapter, "' is loaded (FineTune.ListAdapters lists them)"));
  }
  if (call.constraint.kind != OutputConstraint::Kind::kNone) {
    using Kind = constraints::Constraint::Kind;
    const char* field = call.names.constraint;
    if (engines_.backend().tokenizer() == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(field, ": structured output needs the model's tokenizer; it has none"));
    if (call.constraint.text.size() > kMaxConstraintBytes)
      return absl::InvalidArgumentError(absl::StrCat(field, ": longer than ", kMaxConstraintBytes, " bytes"));
    Kind kind = Kind::kJsonObject;
    switch (call.constraint.kind) {
      case OutputConstraint::Kind::kRegex: kind = Kind::kRegex; break;
      case OutputConstraint::Kind::kGrammar: kind = Kind::kGrammar; break;
      case OutputConstraint::Kind::kJsonSchema: kind = Kind::kJsonSchema; break;
      default: break;
    }
    auto compiled = constraints_.Get(kind, call.constraint.text);
    // What cannot be compiled (refused keywords, syntax, a compile limit) is the client's to fix.
    if (!compiled.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", compiled.status().message()));
    spec->constraint = *std::move(compiled);
  }
  if (spec->id.empty()) spec->id = NextRequestId();
  return spec;
}

absl::StatusOr<std::vector<GenerationSpec>> FrontDoor::PrepareGroup(const GenerateCall& call, int64_t n,
                                                                   const char* n_field) {
  if (n < 1 || n > limits_.max_n)
    return absl::InvalidArgumentError(absl::StrCat(n_field, ": must be in [1, ", limits_.max_n, "]"));
  if (n > 1 && !call.session.empty())
    return absl::InvalidArgumentError(absl::StrCat(n_field, ": a session continues one conversation: n must be 1"));
  if (n > 1 && !call.request_id.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(call.names.request_id, ": names one generation: with ", n_field, " > 1 leave it unset"));
  std::vector<GenerationSpec> specs;
  for (int64_t j = 0; j < n; ++j) {
    GenerateCall c = call;
    if (c.seed.has_value()) *c.seed += static_cast<uint64_t>(j);
    absl::StatusOr<GenerationSpec> spec = Prepare(c);
    if (!spec.ok()) return spec.status();
    specs.push_back(*std::move(spec));
  }
  return specs;
}

absl::Status FinalStatus(const GenerationUpdate& u, bool client_went_away,
                         std::optional<std::chrono::system_clock::time_point> deadline) {
  if (!u.status.ok()) return u.status;
  if (u.reason == FinishReason::kCancelled && client_went_away) {
    if (deadline.has_value() && std::chrono::system_clock::now() + std::chrono::milliseconds(100) >= *deadline)
      return absl::DeadlineExceededError("deadline exceeded");
    return absl::CancelledError("");
  }
  return absl::OkStatus();
}

const char* StatusCodeName(absl::StatusCode code) {
  // Indexed by the code's number (Abseil's codes are gRPC's, 0..16).
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                       "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : "UNKNOWN";
}

void LogRequest(const std::string& id, const GenerationUpdate& u, const absl::Status& status) {
  const std::string text = absl::StrFormat(
      "glad: request id=%s prompt_tokens=%d completion_tokens=%d ttft_s=%.4f total_s=%.4f finish=%s status=%d%s%s", id,
      u.usage.prompt_tokens, u.usage.completion_tokens, u.usage.time_to_first_token_s, u.usage.total_time_s,
      FinishReasonName(u.reason), static_cast<int>(status.code()), status.ok() ? "" : " ", status.message());
  LogEvent(status.ok() ? LogLevel::kInfo : LogLevel::kWarning, "request", text,
           {{"id", id},
            {"prompt_tokens", int64_t{u.usage.prompt_tokens}},
            {"completion_tokens", int64_t{u.usage.completion_tokens}},
            {"ttft_s", u.usage.time_to_first_token_s},
            {"total_s", u.usage.total_time_s},
            {"finish", std::string_view(FinishReasonName(u.reason))},
            {"code", std::string_view(StatusCodeName(status.code()))}});
}

void RequestRecord::Tokens(size_t n) {
  if (metrics_ == nullptr || n == 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (seen_) {  // several tokens in one update share the interval since the last one
    const double each = std::chrono::duration<double>(now - last_).count() / static_cast<double>(n);
    for (size_t i = 0; i < n; ++i) metrics_->TokenInterval(each);
  }
  seen_ = true;
  last_ = now;
}

void RequestRecord::Ended(const absl::Status& status, const GenerationUpdate* u) {
  if (metrics_ == nullptr) return;
  metrics_->RequestEnded(method_, StatusCodeName(status.code()), u ? u->usage.prompt_tokens : 0,
                         u ? u->usage.completion_tokens : 0, u ? u->usage.time_to_first_token_s : 0.0,
                         u ? u->usage.total_time_s : 0.0);
}

}  // namespace gla
