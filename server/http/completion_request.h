// POST /v1/completions' and /v1/chat/completions' JSON bodies -> what the front door takes: one
// GenerateCall per prompt (for chat: one, its prompt made later from the messages by the chat
// template), and what only the HTTP side needs (n, streaming, the model named). Type errors and fields we do not
// take are refused here by name (INVALID_ARGUMENT, "field: why"); ranges are the front door's.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/generate_call.h"
#include "server/http/chat_template.h"

namespace gla::http {

struct CompletionRequest {
  std::string model;
  std::vector<GenerateCall> prompts;  // one call per prompt, sampling fields filled in each
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<int> logprobs;
  bool echo = false;  // completions: each choice starts with its prompt (and its tokens' logprobs)
  bool return_token_ids = false;  // ours: each choice also carries its token ids
  // Chat only.
  bool chat = false;
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
};

struct CompletionLimits {
  int max_n = 16;
  int max_prompts = 64;
};

// The OpenAI field names, as errors from the front door should say them.
CallFieldNames OpenAiFieldNames();

absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body, const CompletionLimits& limits);
// prompts holds one call without a prompt: the caller renders `messages` into its token ids.
absl::StatusOr<CompletionRequest> ParseChatRequest(absl::string_view body, const CompletionLimits& limits);

}  // namespace gla::http
