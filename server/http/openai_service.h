// The OpenAI HTTP API over the front door (issue 20): an adapter like the gRPC service, which
// turns OpenAI JSON into GenerateCalls and the engine's updates back into OpenAI JSON or
// Server-Sent Events. Routes:
//   GET  /health              {"status":"ok"} (open, like gRPC health: for load balancers)
//   GET  /v1/models           the base model and every loaded LoRA adapter, each as a model
//   GET  /metrics             the Prometheus exposition (as --metrics_listen), behind the token
//   POST /v1/completions      prompt as a string, a list of strings, token ids or lists of them;
//                             n, stop, seed, logprobs, penalties, stream (+ include_usage),
//                             vLLM's extensions and ours (docs/api.md)
//   POST /v1/chat/completions messages (system, user, assistant) through the checkpoint's chat
//                             template (chat_prompt.h), the same sampling fields, streamed deltas
// Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the HTTP status of
// the refusal (400, 401, 404, 413, 429, 503, ...).
#pragma once

#include <memory>
#include <string>

#include "server/front_door.h"
#include "server/http/chat_prompt.h"
#include "server/http/http_server.h"

namespace gla::http {

struct OpenAiOptions {
  std::string served_model_name;  // the base model's id in /v1/models and in "model"
  int max_prompts = 64;           // prompts per request
};

class OpenAiService {
 public:
  // `chat` (outliving the service) makes the prompts of /v1/chat/completions.
  OpenAiService(FrontDoor& door, OpenAiOptions options, const ChatPrompter* chat)
      : door_(door), options_(std::move(options)), chat_(chat) {}
  // The HTTP server's handler.
  void Handle(Request request, std::shared_ptr<Responder> responder);

 private:
  void Models(const std::shared_ptr<Responder>& out);
  void Completions(const Request& request, const std::shared_ptr<Responder>& out, bool chat);

  FrontDoor& door_;
  const OpenAiOptions options_;
  const ChatPrompter* chat_;
};

// absl code -> the HTTP status OpenAI's API would answer with.
int HttpStatusOf(absl::StatusCode code);
// {"error": {...}} for a refusal.
std::string ErrorJson(const absl::Status& status);

}  // namespace gla::http
