#include "server/http/chat_prompt.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "models/file_io.h"
#include "nlohmann/json.hpp"

namespace gla::http {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxConfigBytes = size_t{16} << 20;  // tokenizer_config.json, --chat_template

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": not a regular file"));
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxConfigBytes)
    return absl::InvalidArgumentError(absl::StrCat(path, ": larger than ", kMaxConfigBytes >> 20, " MiB"));
  return ReadWholeFile(path);
}

// A special token in tokenizer_config.json: a string or {"content": string}.
std::string SpecialToken(const json& config, const char* name, const std::string& fallback) {
  auto it = config.find(name);
  if (it == config.end()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"];
  return fallback;
}

}  // namespace

absl::StatusOr<ChatPrompter> ChatPrompter::Load(const std::string& model_dir, const std::string& template_file,
                                                const Tokenizer* tokenizer) {
  std::string source, source_name = "the plain default (docs/api.md)";
  std::string bos = "<s>", eos = "</s>";
  const std::string config_path = (std::filesystem::path(model_dir) / "tokenizer_config.json").string();
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    absl::StatusOr<std::string> text = ReadSmallFile(config_path);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::optional<std::string>> from_config = ChatTemplateFromTokenizerConfig(*text);
    if (!from_config.ok())
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", from_config.status().message()));
    if (from_config->has_value()) {
      source = **from_config;
      source_name = config_path;
    }
    const json config = json::parse(*text, nullptr, false);
    if (config.is_object()) {
      bos = SpecialToken(config, "bos_token", bos);
      eos = SpecialToken(config, "eos_token", eos);
    }
  }
  if (!template_file.empty()) {
    absl::StatusOr<std::string> text = ReadSmallFile(template_file);
    if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("--chat_template ", text.status().message()));
    source = *std::move(text);
    source_name = template_file;
  }
  if (source.empty()) source = kDefaultChatTemplate;
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("chat template from ", source_name, ": ", t.status().message()));
  ChatPrompter p(*std::move(t), source_name, tokenizer);
  p.bos_token_ = bos;
  p.eos_token_ = eos;
  return p;
}

absl::StatusOr<std::vector<int32_t>> ChatPrompter::Prompt(const std::vector<ChatMessage>& messages,
                                                          bool add_generation_prompt, int max_tokens) const {
  if (tok_ == nullptr)
    return absl::FailedPreconditionError("chat completions need the model's tokenizer.model; this model has none");
  ChatTemplateInput in;
  in.messages = messages;
  in.add_generation_prompt = add_generation_prompt;
  in.bos_token = bos_token_;
  in.eos_token = eos_token_;
  absl::StatusOr<std::string> text = template_.Render(in);
  if (!text.ok()) {
    if (absl::IsResourceExhausted(text.status()))
      return absl::InvalidArgumentError(absl::StrCat("messages: the chat template ran past its limits (",
                                                     text.status().message(), ")"));
    return absl::InvalidArgumentError(absl::StrCat("messages: ", text.status().message()));
  }
  // The special tokens' spellings become their ids; the text between them is tokenized as text.
  std::vector<std::pair<const std::string*, std::optional<int>>> specials = {{&bos_token_, tok_->bos_id()},
                                                                            {&eos_token_, tok_->eos_id()}};
  std::vector<int32_t> ids;
  std::string_view rest = *text;
  while (!rest.empty()) {
    size_t at = rest.size();
    const std::pair<const std::string*, std::optional<int>>* hit = nullptr;
    for (const auto& s : specials) {
      if (s.first->empty() || !s.second.has_value()) continue;
      const size_t pos = rest.find(*s.first);
      if (pos < at) {
        at = pos;
        hit = &s;
      }
    }
    if (at > 0) {
      const int64_t room = int64_t{max_tokens} - static_cast<int64_t>(ids.size());
      if (room <= 0) return absl::InvalidArgumentError(absl::StrCat("messages: over ", max_tokens, " prompt tokens"));
      absl::StatusOr<std::vector<int32_t>> part =
          tok_->EncodeBounded(rest.substr(0, at), /*add_bos=*/false, {.max_tokens = room});
      if (!part.ok())
        return absl::InvalidArgumentError(absl::StrCat("messages: ", part.status().message(),
                                                       absl::IsOutOfRange(part.status()) ? " (--max_prompt_tokens)" : ""));
      ids.insert(ids.end(), part->begin(), part->end());
    }
    if (hit == nullptr) break;
    ids.push_back(*hit->second);
    rest = rest.substr(at + hit->first->size());
  }
  if (ids.empty()) return absl::InvalidArgumentError("messages: the chat template rendered an empty prompt");
  if (static_cast<int64_t>(ids.size()) > max_tokens)
    return absl::InvalidArgumentError(absl::StrCat("messages: over ", max_tokens, " prompt tokens"));
  return ids;
}

}  // namespace gla::http
