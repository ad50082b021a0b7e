// Fuzzes the OpenAI HTTP API's request parsing (server/http/completion_request.h): arbitrary
// bytes as the body of POST /v1/completions and of POST /v1/chat/completions. Promise: every
// input is refused with INVALID_ARGUMENT, or accepted as a request the service can run (at least
// one prompt, n in range, at most the prompt limit, chat requests with messages), with no UB,
// crash, leak or unbounded work.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/http/completion_request.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const gla::http::CompletionLimits limits{.max_n = 16, .max_prompts = 64};
  for (bool chat : {false, true}) {
    auto r = chat ? gla::http::ParseChatRequest(body, limits) : gla::http::ParseCompletionRequest(body, limits);
    if (!r.ok()) {
      GLA_FUZZ_CHECK(r.status().code() == absl::StatusCode::kInvalidArgument, "refused with %s",
                     r.status().ToString().c_str());
      continue;
    }
    GLA_FUZZ_CHECK(!r->prompts.empty() && r->prompts.size() <= 64, "%zu prompts", r->prompts.size());
    GLA_FUZZ_CHECK(r->n >= 1 && r->n <= 16, "n %d", r->n);
    GLA_FUZZ_CHECK(r->chat == chat, "chat flag");
    GLA_FUZZ_CHECK(!chat || !r->messages.empty(), "a chat request without messages");
    for (const gla::GenerateCall& c : r->prompts) {
      if (chat) GLA_FUZZ_CHECK(!c.text.has_value() && !c.token_ids.has_value(), "chat prompts come from messages");
      else GLA_FUZZ_CHECK(c.text.has_value() != c.token_ids.has_value(), "a prompt is text or ids");
    }
  }
  return 0;
}
