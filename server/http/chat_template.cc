#include "server/http/chat_template.h"

#include <utility>

#include "absl/status/status.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/http/chat_parser.h"

namespace gla {

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  ASSIGN_OR_RETURN(chat::Body body, chat::ParseTemplate(source));
  return ChatTemplate(std::make_shared<const chat::Body>(std::move(body)));
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInput& in) const {
  return Render(in, chat::RenderLimits{});
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInput& in, const chat::RenderLimits& limits) const {
  using chat::Value;
  chat::List messages;
  for (const ChatMessage& m : in.messages) {
    chat::Dict d;
    d.items = {{"role", Value::Str(m.role)}, {"content", Value::Str(m.content)}};
    messages.push_back(Value::MakeDict(std::move(d)));
  }
  chat::Dict context;
  context.items = {{"messages", Value::MakeList(std::move(messages))},
                   {"tools", Value::MakeNone()},
                   {"documents", Value::MakeNone()},
                   {"add_generation_prompt", Value::Bool(in.add_generation_prompt)},
                   {"bos_token", Value::Str(in.bos_token)},
                   {"eos_token", Value::Str(in.eos_token)}};
  for (const auto& [k, v] : in.extra) {
    bool replaced = false;
    for (auto& [ck, cv] : context.items) {
      if (ck == k) {
        cv = Value::Str(v);
        replaced = true;
      }
    }
    if (!replaced) context.items.emplace_back(k, Value::Str(v));
  }
  chat::Evaluator ev(limits, std::move(context));
  return ev.Render(*body_);
}

absl::StatusOr<std::optional<std::string>> ChatTemplateFromTokenizerConfig(std::string_view json) {
  const nlohmann::json j = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("tokenizer_config.json is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("tokenizer_config.json is not a JSON object");
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
          !entry["template"].is_string()) {
        return absl::InvalidArgumentError(
            "tokenizer_config.json: chat_template list entries must be {\"name\": string, \"template\": string}");
      }
      if (entry["name"].get<std::string>() == "default") {
        return std::optional<std::string>(entry["template"].get<std::string>());
      }
    }
    return absl::InvalidArgumentError("tokenizer_config.json: chat_template lists no template named \"default\"");
  }
  return absl::InvalidArgumentError("tokenizer_config.json: chat_template must be a string or a list");
}

}  // namespace gla
