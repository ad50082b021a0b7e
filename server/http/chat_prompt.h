// How /v1/chat/completions turns messages into prompt token ids: the checkpoint's chat template
// (tokenizer_config.json's "chat_template", or --chat_template FILE), rendered by the Jinja subset
// (chat_template.h), then tokenized with the template's special tokens (bos_token, eos_token)
// becoming their ids rather than their spelling (as transformers' tokenizers parse them). A
// checkpoint with neither gets a plain default (kDefaultChatTemplate): "role: content" lines and
// "assistant:" to prompt the answer.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/tokenizer.h"
#include "server/http/chat_template.h"

namespace gla::http {

inline constexpr const char* kDefaultChatTemplate =
    "{{ bos_token }}{% for message in messages %}{{ message.role }}: {{ message.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}";

class ChatPrompter {
 public:
  // From the model directory (its tokenizer_config.json, when there is one) and --chat_template
  // (a file path; empty: none), which wins. A template that does not parse is an error at start-up,
  // naming its source.
  static absl::StatusOr<ChatPrompter> Load(const std::string& model_dir, const std::string& template_file,
                                           const Tokenizer* tokenizer);

  // Renders and tokenizes. INVALID_ARGUMENT for a conversation the template refuses (its
  // raise_exception message) or a prompt over `max_tokens`; FAILED_PRECONDITION without a tokenizer.
  absl::StatusOr<std::vector<int32_t>> Prompt(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                              int max_tokens) const;

  const std::string& source() const { return source_name_; }  // where the template came from

 private:
  ChatPrompter(ChatTemplate t, std::string source_name, const Tokenizer* tok)
      : template_(std::move(t)), source_name_(std::move(source_name)), tok_(tok) {}
  ChatTemplate template_;
  std::string source_name_;
  const Tokenizer* tok_;
  std::string bos_token_, eos_token_;  // their spellings in the template's output
};

}  // namespace gla::http
