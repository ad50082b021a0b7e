#include "server/http/completion_request.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/constraints/json_depth.h"
#include "engine/constraints/json_schema.h"
#include "models/excerpt.h"
#include "nlohmann/json.hpp"

namespace gla::http {

namespace {

// Ordered: a JSON Schema sent for structured output keeps its properties in the order the client
// wrote them (the order the output follows, as OpenAI's does).
using json = nlohmann::ordered_json;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Reads typed fields of the request object; the first error wins and later reads do nothing.
class Fields {
 public:
  explicit Fields(const json& j) : j_(j) {}
  const absl::Status& status() const { return status_; }
  void Fail(absl::Status s) {
    if (status_.ok()) status_ = std::move(s);
  }
  const json* Get(const char* name) {
    seen_.insert(name);
    auto it = j_.find(name);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<double> Number(const char* name) {
    const json* v = Get(name);
    if (v == nullptr || !status_.ok()) return std::nullopt;
    if (!v->is_number()) return Fail(Bad(name, "must be a number")), std::nullopt;
    const double d = v->get<double>();
    if (!std::isfinite(d)) return Fail(Bad(name, "must be finite")), std::nullopt;
    return d;
  }
  std::optional<int64_t> Int(const char* name) {
    const json* v = Get(name);
    if (v == nullptr || !status_.ok()) return std::nullopt;
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      return Fail(Bad(name, "is too large")), std::nullopt;
    if (!v->is_number_integer()) return Fail(Bad(name, "must be an integer")), std::nullopt;
    return v->get<int64_t>();
  }
  std::optional<bool> Bool(const char* name) {
    const json* v = Get(name);
    if (v == nullptr || !status_.ok()) return std::nullopt;
    if (!v->is_boolean()) return Fail(Bad(name, "must be true or false")), std::nullopt;
    return v->get<bool>();
  }
  std::optional<std::string> String(const char* name) {
    const json* v = Get(name);
    if (v == nullptr || !status_.ok()) return std::nullopt;
    if (!v->is_string()) return Fail(Bad(name, "must be a string")), std::nullopt;
    return v->get<std::string>();
  }
  // Fields the request holds that no read asked for.
  std::vector<std::string> Unread() const {
    std::vector<std::string> out;
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!seen_.count(it.key())) out.push_back(it.key());
    return out;
  }

 private:
  const json& j_;
  absl::Status status_;
  std::set<std::string, std::less<>> seen_;
};

absl::StatusOr<std::vector<int32_t>> TokenList(const json& a, absl::string_view field) {
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (const json& v : a) {
    if (!v.is_number_integer()) return Bad(field, "token ids must be integers");
    const int64_t id = v.get<int64_t>();
    if (id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max())
      return Bad(field, absl::StrCat("token id ", id, " is outside the vocabulary"));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// "prompt": a string, a list of strings, a list of token ids, or a list of lists of them.
absl::Status ReadPrompts(const json* prompt, const CompletionLimits& limits, std::vector<GenerateCall>* out) {
  if (prompt == nullptr) return Bad("prompt", "is required");
  auto add = [&](GenerateCall call) {
    out->push_back(std::move(call));
    return out->size() <= static_cast<size_t>(limits.max_prompts)
               ? absl::OkStatus()
               : Bad("prompt", absl::StrCat("at most ", limits.max_prompts, " prompts per request"));
  };
  if (prompt->is_string()) {
    GenerateCall c;
    c.text = prompt->get<std::string>();
    return add(std::move(c));
  }
  if (!prompt->is_array() || prompt->empty())
    return Bad("prompt", "must be a string, a list of strings, or token ids (a list of integers, or lists of them)");
  if ((*prompt)[0].is_number()) {
    absl::StatusOr<std::vector<int32_t>> ids = TokenList(*prompt, "prompt");
    if (!ids.ok()) return ids.status();
    GenerateCall c;
    c.token_ids = std::move(*ids);
    return add(std::move(c));
  }
  for (const json& p : *prompt) {
    GenerateCall c;
    if (p.is_string()) {
      c.text = p.get<std::string>();
    } else if (p.is_array()) {
      absl::StatusOr<std::vector<int32_t>> ids = TokenList(p, "prompt");
      if (!ids.ok()) return ids.status();
      c.token_ids = std::move(*ids);
    } else {
      return Bad("prompt", "a list of prompts holds strings or lists of token ids");
    }
    if (absl::Status s = add(std::move(c)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> StopStrings(const json* stop) {
  if (stop == nullptr) return std::vector<std::string>{};
  if (stop->is_string()) return std::vector<std::string>{stop->get<std::string>()};
  if (!stop->is_array()) return Bad("stop", "must be a string or a list of strings");
  std::vector<std::string> out;
  for (const json& s : *stop) {
    if (!s.is_string()) return Bad("stop", "must be a string or a list of strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

}  // namespace

CallFieldNames OpenAiFieldNames() {
  CallFieldNames n;
  n.text = "prompt";
  n.token_ids = "prompt";
  n.prompt = "prompt";
  n.session = "session";
  n.temperature = "temperature";
  n.top_k = "top_k";
  n.top_p = "top_p";
  n.min_p = "min_p";
  n.repetition_penalty = "repetition_penalty";
  n.presence_penalty = "presence_penalty";
  n.frequency_penalty = "frequency_penalty";
  n.logprobs = "logprobs";
  n.logit_bias = "logit_bias";
  n.prompt_logprobs = "logprobs";  // echo's prompt scores take their count from logprobs
  n.prompt_only = "max_tokens";    // 0 with echo
  n.max_new_tokens = "max_tokens";
  n.stop = "stop";
  n.stop_token_ids = "stop_token_ids";
  n.priority = "priority";
  n.request_id = "request_id";
  return n;
}

namespace {

absl::StatusOr<json> ParseObject(absl::string_view body) {
  // nlohmann parses iteratively (no recursion to bound); the size is the HTTP server's body limit.
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the request body is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  return j;
}

// A regex matching exactly one of `choices` (vLLM's guided_choice): every ASCII byte written \xHH,
// so none is a metacharacter; the bytes of other characters kept as they are (the dialect's \xHH is
// the code point U+00HH, two bytes in UTF-8, and its literals are UTF-8: JSON strings are valid
// UTF-8, and a non-ASCII byte is never a metacharacter).
std::string ChoiceRegex(const std::vector<std::string>& choices) {
  std::string re;
  for (const std::string& c : choices) {
    if (!re.empty()) re += '|';
    re += '(';
    for (unsigned char ch : c) {
      if (ch < 0x80) absl::StrAppendFormat(&re, "\\x%02x", ch);
      else re += static_cast<char>(ch);
    }
    re += ')';
  }
  return re;
}

// Structured output (issue 21): OpenAI's response_format (json_object; json_schema with name,
// schema, strict, description) and vLLM's guided_json / guided_regex / guided_grammar /
// guided_choice; at most one of them. The constraint is compiled by the front door (its errors name
// the field set here).
absl::Status ReadConstraint(Fields& f, GenerateCall& base) {
  using Kind = OutputConstraint::Kind;
  std::vector<const char*> set;
  auto take = [&](const char* field, Kind kind, std::string text) {
    set.push_back(field);
    base.constraint.kind = kind;
    base.constraint.text = std::move(text);
    base.names.constraint = field;
  };
  if (const json* rf = f.Get("response_format")) {
    if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
      return Bad("response_format", "must be an object with a type (text, json_object or json_schema)");
    const std::string type = (*rf)["type"];
    for (auto it = rf->begin(); it != rf->end(); ++it)
      if (it.key() != "type" && !(type == "json_schema" && it.key() == "json_schema"))
        return Bad("response_format", absl::StrCat("unknown field '", Excerpt(it.key(), 32), "' for type ", Excerpt(type, 32)));
    if (type == "json_object") {
      take("response_format", Kind::kJsonObject, "");
    } else if (type == "json_schema") {
      const auto js = rf->find("json_schema");
      if (js == rf->end() || !js->is_object()) return Bad("response_format.json_schema", "is required (an object)");
      for (auto it = js->begin(); it != js->end(); ++it)
        if (it.key() != "name" && it.key() != "schema" && it.key() != "strict" && it.key() != "description")
          return Bad("response_format.json_schema", absl::StrCat("unknown field '", Excerpt(it.key(), 32), "'"));
      const auto name = js->find("name");
      if (name == js->end() || !name->is_string()) return Bad("response_format.json_schema.name", "is required (a string)");
      const std::string n = *name;
      if (n.empty() || n.size() > 64 ||
          !std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }))
        return Bad("response_format.json_schema.name", "must be 1-64 characters of a-z, A-Z, 0-9, _ and -");
      if (const auto strict = js->find("strict"); strict != js->end() && !strict->is_boolean() && !strict->is_null())
        return Bad("response_format.json_schema.strict", "must be true or false");
      if (const auto d = js->find("description"); d != js->end() && !d->is_string() && !d->is_null())
        return Bad("response_format.json_schema.description", "must be a string");
      const auto schema = js->find("schema");
      if (schema == js->end() || !(schema->is_object() || schema->is_boolean()))
        return Bad("response_format.json_schema.schema", "is required (a JSON Schema object)");
      if (!constraints::NestedWithin(*schema, constraints::kMaxJsonDepth))
        return Bad("response_format.json_schema.schema", absl::StrCat("nested more than ", constraints::kMaxJsonDepth, " deep"));
      take("response_format.json_schema.schema", Kind::kJsonSchema, schema->dump());
    } else if (type != "text") {
      return Bad("response_format.type", "must be text, json_object or json_schema");
    }
  }
  if (const json* v = f.Get("guided_json")) {
    if (v->is_string()) take("guided_json", Kind::kJsonSchema, v->get<std::string>());
    else if (!constraints::NestedWithin(*v, constraints::kMaxJsonDepth))
      return Bad("guided_json", absl::StrCat("nested more than ", constraints::kMaxJsonDepth, " deep"));
    else if (v->is_object() || v->is_boolean()) take("guided_json", Kind::kJsonSchema, v->dump());
    else return Bad("guided_json", "must be a JSON Schema (an object, or a string holding one)");
  }
  if (auto v = f.String("guided_regex")) take("guided_regex", Kind::kRegex, *v);
  if (auto v = f.String("guided_grammar")) take("guided_grammar", Kind::kGrammar, *v);
  if (const json* v = f.Get("guided_choice")) {
    if (!v->is_array() || v->empty()) return Bad("guided_choice", "must be a non-empty list of strings");
    std::vector<std::string> choices;
    for (const json& c : *v) {
      if (!c.is_string() || c.get<std::string>().empty()) return Bad("guided_choice", "must be a list of non-empty strings");
      choices.push_back(c.get<std::string>());
    }
    take("guided_choice", Kind::kRegex, ChoiceRegex(choices));
  }
  if (set.size() > 1)
    return Bad(set[1], absl::StrCat("one output constraint per request: ", set[0], " is set too"));
  return f.status();
}

// The fields both endpoints take: sampling, n, streaming, stop, vLLM's extensions and ours.
absl::Status ReadCommon(Fields& f, const CompletionLimits& limits, GenerateCall& base, CompletionRequest& r) {
  base.names = OpenAiFieldNames();
  const std::optional<std::string> model = f.String("model");
  if (f.status().ok() && !model.has_value()) return Bad("model", "is required");
  r.model = model.value_or("");
  base.temperature = static_cast<float>(f.Number("temperature").value_or(1.0));  // OpenAI's default
  if (auto v = f.Number("top_p")) base.top_p = static_cast<float>(*v);
  if (auto v = f.Int("n")) {
    if (*v < 1 || *v > limits.max_n) return Bad("n", absl::StrCat("must be in [1, ", limits.max_n, "]"));
    r.n = static_cast<int>(*v);
  }
  if (auto v = f.Int("seed")) base.seed = static_cast<uint64_t>(*v);
  if (auto v = f.Number("presence_penalty")) base.presence_penalty = static_cast<float>(*v);
  if (auto v = f.Number("frequency_penalty")) base.frequency_penalty = static_cast<float>(*v);
  if (const json* v = f.Get("logit_bias"); v != nullptr && !v->is_null()) {
    if (!v->is_object()) return Bad("logit_bias", "must be an object of token id -> bias");
    for (auto it = v->begin(); it != v->end(); ++it) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(it.key(), &id))
        return Bad("logit_bias", absl::StrCat("'", Excerpt(it.key(), 32), "' is not a token id"));
      if (!it->is_number()) return Bad("logit_bias", absl::StrCat("the bias of token ", id, " must be a number"));
      base.logit_bias.emplace_back(id, it->get<double>());
    }
  }
  r.stream = f.Bool("stream").value_or(false);
  if (const json* so = f.Get("stream_options")) {
    if (!so->is_object()) return Bad("stream_options", "must be an object");
    if (!r.stream) return Bad("stream_options", "only with stream: true");
    for (auto it = so->begin(); it != so->end(); ++it) {
      if (it.key() != "include_usage") return Bad("stream_options", absl::StrCat("unknown field '", it.key(), "'"));
      if (!it->is_boolean()) return Bad("stream_options.include_usage", "must be true or false");
      r.include_usage = it->get<bool>();
    }
  }
  (void)f.String("user");  // for the client's own accounting: accepted, not used
  // vLLM's extensions.
  if (auto v = f.Int("top_k")) base.top_k = *v == -1 ? 0 : *v;  // vLLM: -1 = off
  if (auto v = f.Number("min_p")) base.min_p = static_cast<float>(*v);
  if (auto v = f.Number("repetition_penalty")) base.repetition_penalty = static_cast<float>(*v);
  if (auto v = f.Bool("ignore_eos")) base.ignore_eos = *v;
  if (const json* v = f.Get("stop_token_ids")) {
    if (!v->is_array()) return Bad("stop_token_ids", "must be a list of token ids");
    absl::StatusOr<std::vector<int32_t>> ids = TokenList(*v, "stop_token_ids");
    if (!ids.ok()) return ids.status();
    base.stop_token_ids = std::move(*ids);
  }
  if (auto v = f.Int("priority")) base.priority = *v < 0 ? 1 : *v > 0 ? -1 : 0;  // vLLM: lower runs first
  // Ours.
  r.return_token_ids = f.Bool("return_token_ids").value_or(false);
  if (auto v = f.String("session")) base.session = *v;
  if (auto v = f.String("request_id")) base.request_id = *v;
  absl::StatusOr<std::vector<std::string>> stop = StopStrings(f.Get("stop"));
  if (!stop.ok()) return stop.status();
  base.stop = std::move(*stop);
  if (absl::Status c = ReadConstraint(f, base); !c.ok()) return c;
  return f.status();
}

absl::Status NoUnknownFields(const Fields& f, const char* endpoint) {
  if (const std::vector<std::string> unread = f.Unread(); !unread.empty())
    return Bad(Excerpt(unread.front(), 64), absl::StrCat("unknown field (docs/api.md lists what ", endpoint, " takes)"));
  return absl::OkStatus();
}

// A chat message's content: a string, or a list of {"type": "text", "text": ...} parts.
absl::StatusOr<std::string> MessageContent(const json& content, size_t i) {
  const std::string field = absl::StrCat("messages[", i, "].content");
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) return std::string();
  if (!content.is_array()) return Bad(field, "must be a string or a list of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      return Bad(field, "only text parts ({\"type\": \"text\", \"text\": ...}) are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

absl::StatusOr<std::vector<ChatMessage>> Messages(const json* messages) {
  if (messages == nullptr) return Bad("messages", "is required");
  if (!messages->is_array() || messages->empty()) return Bad("messages", "must be a non-empty list");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      return Bad(field, "must be an object with a role");
    for (auto it = m.begin(); it != m.end(); ++it)
      if (it.key() != "role" && it.key() != "content" && it.key() != "name")
        return Bad(absl::StrCat(field, ".", Excerpt(it.key(), 32)), "is not supported (text messages only)");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant")
      return Bad(absl::StrCat(field, ".role"), absl::StrCat("'", Excerpt(role, 32), "' is not one of system, user, assistant"));
    absl::StatusOr<std::string> content = MessageContent(m.contains("content") ? m["content"] : json(nullptr), i);
    if (!content.ok()) return content.status();
    out.push_back({std::move(role), *std::move(content)});
  }
  return out;
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body, const CompletionLimits& limits) {
  absl::StatusOr<json> j = ParseObject(body);
  if (!j.ok()) return j.status();
  Fields f(*j);
  CompletionRequest r;
  GenerateCall base;
  if (absl::Status s = ReadCommon(f, limits, base, r); !s.ok()) return s;
  if (auto v = f.Int("max_tokens")) {
    if (*v < 0) return Bad("max_tokens", "must be >= 0 (0 with echo: score the prompt only)");
    base.prompt_only = *v == 0;
    base.max_new_tokens = static_cast<uint64_t>(*v);
  } else {
    base.max_new_tokens = 16;  // OpenAI's default for completions
  }
  if (auto v = f.Int("best_of"); v.has_value() && *v != r.n) return Bad("best_of", "is not supported (only best_of == n)");
  if (auto v = f.Int("logprobs")) {
    base.logprobs = *v;
    r.logprobs = static_cast<int>(std::clamp<int64_t>(*v, -1, 1 << 20));
  }
  r.echo = f.Bool("echo").value_or(false);
  if (base.prompt_only && !r.echo) return Bad("max_tokens", "0 only with echo: true (prompt scoring)");
  if (r.echo && !base.session.empty()) return Bad("echo", "scores a prompt from an empty past: not with a session");
  // The prompt's tokens are scored when their logprobs are asked for, or when they are all there is.
  if (r.echo && (base.logprobs.has_value() || base.prompt_only)) base.prompt_logprobs = base.logprobs.value_or(0);
  if (auto v = f.String("suffix"); v.has_value() && !v->empty()) return Bad("suffix", "is not supported");
  if (auto v = f.Bool("add_special_tokens")) base.add_bos = *v;
  const json* prompt = f.Get("prompt");
  if (!f.status().ok()) return f.status();
  if (absl::Status s = NoUnknownFields(f, "/v1/completions"); !s.ok()) return s;

  std::vector<GenerateCall> prompts;
  if (absl::Status s = ReadPrompts(prompt, limits, &prompts); !s.ok()) return s;
  if (prompts.size() > 1 && !base.session.empty()) return Bad("prompt", "a session takes one prompt per request");
  if (!base.request_id.empty() && prompts.size() > 1)  // n > 1: the front door says the same
    return Bad("request_id", "names one generation: with several prompts or n > 1 leave it unset");
  for (GenerateCall& p : prompts) {
    GenerateCall c = base;
    c.text = std::move(p.text);
    c.token_ids = std::move(p.token_ids);
    r.prompts.push_back(std::move(c));
  }
  return r;
}

absl::StatusOr<CompletionRequest> ParseChatRequest(absl::string_view body, const CompletionLimits& limits) {
  absl::StatusOr<json> j = ParseObject(body);
  if (!j.ok()) return j.status();
  Fields f(*j);
  CompletionRequest r;
  r.chat = true;
  GenerateCall base;
  if (absl::Status s = ReadCommon(f, limits, base, r); !s.ok()) return s;
  // max_completion_tokens is the newer name; unset: the server's --max_new_tokens.
  std::optional<int64_t> max_tokens = f.Int("max_completion_tokens");
  if (auto v = f.Int("max_tokens"); !max_tokens.has_value()) max_tokens = v;
  if (max_tokens.has_value()) {
    if (*max_tokens < 1) return Bad("max_tokens", "must be >= 1");
    base.max_new_tokens = static_cast<uint64_t>(*max_tokens);
  }
  if (f.Bool("logprobs").value_or(false)) {
    const int64_t top = f.Int("top_logprobs").value_or(0);
    base.logprobs = top;
    r.logprobs = static_cast<int>(std::clamp<int64_t>(top, -1, 1 << 20));
  } else if (f.Int("top_logprobs").has_value()) {
    return Bad("top_logprobs", "needs logprobs: true");
  }
  if (const json* tools = f.Get("tools"); tools != nullptr && !(tools->is_array() && tools->empty()))
    return Bad("tools", "tool calls are not supported");
  if (auto v = f.String("tool_choice"); v.has_value() && *v != "none") return Bad("tool_choice", "tool calls are not supported");
  (void)f.Bool("parallel_tool_calls");
  r.add_generation_prompt = f.Bool("add_generation_prompt").value_or(true);
  absl::StatusOr<std::vector<ChatMessage>> messages = Messages(f.Get("messages"));
  if (!f.status().ok()) return f.status();
  if (absl::Status s = NoUnknownFields(f, "/v1/chat/completions"); !s.ok()) return s;
  if (!messages.ok()) return messages.status();
  r.messages = *std::move(messages);
  r.prompts.push_back(std::move(base));
  return r;
}

}  // namespace gla::http
