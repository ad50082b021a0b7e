// Chat templates of Hugging Face checkpoints (tokenizer_config.json's "chat_template"): the
// Jinja subset real templates use, rendered as transformers renders them (jinja2's
// ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, raise_exception, tojson,
// strftime_now). The template is untrusted: parsing and rendering are bounded in size, depth,
// loop iterations and work, and fail with a status naming the line instead.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/http/chat_eval.h"

namespace gla {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateInput {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = false;
  std::string bos_token, eos_token;
  // More string variables (e.g. date_string, enable_thinking is not a string: see Render).
  std::map<std::string, std::string> extra;
};

class ChatTemplate {
 public:
  // INVALID_ARGUMENT, naming the line, for a template outside the subset or malformed.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  // Variables: messages (role, content), add_generation_prompt, bos_token, eos_token, tools and
  // documents (None, as transformers passes when the request has none), then `extra`.
  // raise_exception(msg) gives INVALID_ARGUMENT with msg as it is; other template errors
  // INVALID_ARGUMENT "chat template line N: ..."; limits RESOURCE_EXHAUSTED.
  absl::StatusOr<std::string> Render(const ChatTemplateInput& in) const;
  absl::StatusOr<std::string> Render(const ChatTemplateInput& in, const chat::RenderLimits& limits) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const chat::Body> body) : body_(std::move(body)) {}
  std::shared_ptr<const chat::Body> body_;  // shared: copies of a template are cheap
};

// The "chat_template" of a tokenizer_config.json: a string, or a list of {"name", "template"}
// from which the one named "default" is taken. nullopt when absent or null; INVALID_ARGUMENT for
// malformed JSON or a field of another shape.
absl::StatusOr<std::optional<std::string>> ChatTemplateFromTokenizerConfig(std::string_view json);

}  // namespace gla
