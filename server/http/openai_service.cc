#include "server/http/openai_service.h"

#include <chrono>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "models/excerpt.h"
#include "nlohmann/json.hpp"
#include "server/http/completion_request.h"

namespace gla::http {

namespace {

using json = nlohmann::json;

constexpr absl::string_view kJson = "application/json";

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Path(const std::string& target) { return target.substr(0, target.find('?')); }

void Fail(Responder& out, const absl::Status& s) { out.Respond(HttpStatusOf(s.code()), kJson, ErrorJson(s)); }

const char* FinishReasonOf(const GenerationUpdate& u) {
  switch (u.reason) {
    case FinishReason::kEos:
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "abort";  // the server shut down under it (vLLM's word)
    case FinishReason::kNone: break;
  }
  return "stop";
}

// One /v1/completions request in flight: its generations (prompts x n, choice k = prompt * n + j),
// the answer being assembled, and the client. Sinks run on the scheduler thread and only append
// under the lock; the responder posts the bytes to the connection's own thread.
class CompletionRun : public std::enable_shared_from_this<CompletionRun> {
 public:
  CompletionRun(std::shared_ptr<Responder> out, const CompletionRequest& req, std::string id, const Tokenizer* tok,
                ServerMetrics* metrics, size_t choices)
      : out_(std::move(out)), id_(std::move(id)), model_(req.model), stream_(req.stream),
        include_usage_(req.include_usage), return_token_ids_(req.return_token_ids), chat_(req.chat), echo_(req.echo),
        logprobs_(req.logprobs), n_(req.n), tok_(tok), created_(UnixNow()) {
    choices_.reserve(choices);
    for (size_t k = 0; k < choices; ++k) choices_.emplace_back(metrics, req.chat);
  }

  // Submits every generation, the n of a prompt as one group (one prefill); a refusal of any
  // cancels those already running and answers it. echo[p]: prompt p's text, for echo.
  void Start(FrontDoor& door, std::vector<GenerationSpec> specs, const std::vector<std::string>& echo) {
    std::weak_ptr<CompletionRun> weak = weak_from_this();
    out_->OnClientGone([weak] {
      if (auto run = weak.lock()) run->CancelAll();
    });
    std::unique_lock<std::mutex> lock(mu_);  // sinks wait until every generation is in and the head is out
    for (size_t first = 0; first < specs.size(); first += n_) {
      std::vector<GenerationSpec> group;
      std::vector<UpdateSink> sinks;
      for (size_t k = first; k < first + n_; ++k) {
        choices_[k].id = specs[k].id;
        if (echo_) {
          choices_[k].echo = echo[k / n_];
          choices_[k].prompt_ids = specs[k].prompt;
        }
        group.push_back(std::move(specs[k]));
        sinks.push_back([self = shared_from_this(), k](GenerationUpdate&& u) { self->OnUpdate(k, std::move(u)); });
      }
      auto handles = door.engines().SubmitGroup(std::move(group), std::move(sinks));
      if (!handles.ok()) {
        choices_[first].record.Ended(handles.status());
        failed_ = true;
        for (auto& h : handles_) h->Cancel();
        handles_.clear();
        lock.unlock();
        return Fail(*out_, handles.status());
      }
      handles_.insert(handles_.end(), handles->begin(), handles->end());
    }
    remaining_ = specs.size();
    if (stream_) out_->StartStream(200, "text/event-stream");
  }

 private:
  struct Choice {
    Choice(ServerMetrics* metrics, bool chat) : record(metrics, chat ? "v1/chat/completions" : "v1/completions") {}
    std::string id;
    std::string text;
    std::vector<int32_t> token_ids;
    json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
         text_offset = json::array();
    json chat_logprobs = json::array();  // chat's shape: one {token, logprob, bytes, top_logprobs} each
    bool role_sent = false;              // chat streams open each choice with the assistant's role
    std::string echo;                    // echo: the prompt's text, sent before the first update's
    std::vector<int32_t> prompt_ids;     // echo: the prompt's tokens (their logprobs come in that update)
    bool echoed = false;
    const char* finish = nullptr;
    Usage usage;
    RequestRecord record;
  };

  void CancelAll() {
    std::lock_guard<std::mutex> lock(mu_);
    gone_ = true;
    for (auto& h : handles_) h->Cancel();
  }

  // The logprobs of an update's tokens, appended to `c`'s running lists; returns the update's own
  // part for a stream chunk. Completions: OpenAI's legacy shape (tokens, token_logprobs,
  // top_logprobs, text_offset); chat: {"content": [{token, logprob, bytes, top_logprobs}]}.
  // With `prompt`, the choice's prompt tokens go first (the first with null: nothing precedes it),
  // their offsets counted from the start of the echoed text.
  json Logprobs(Choice& c, const GenerationUpdate& u, size_t text_start, bool prompt) {
    if (chat_) {
      json part = json::array();
      auto entry = [&](int32_t id, float lp) {
        const std::string t = TokenText(id);
        return json{{"token", t}, {"logprob", lp}, {"bytes", std::vector<uint8_t>(t.begin(), t.end())}};
      };
      for (const SampledToken& t : u.logprobs) {
        json e = entry(t.token, t.logprob);
        e["top_logprobs"] = json::array();
        for (const auto& [id, lp] : t.top) e["top_logprobs"].push_back(entry(id, lp));
        c.chat_logprobs.push_back(e);
        part.push_back(std::move(e));
      }
      return {{"content", std::move(part)}};
    }
    json part = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                 {"text_offset", json::array()}};
    if (prompt) {
      size_t at = 0;
      for (size_t i = 0; i < c.prompt_ids.size(); ++i) {
        const std::string piece = TokenText(c.prompt_ids[i]);
        const bool scored = i > 0 && i - 1 < u.prompt_logprobs.size();
        part["tokens"].push_back(piece);
        part["token_logprobs"].push_back(scored ? json(u.prompt_logprobs[i - 1].logprob) : json(nullptr));
        json top = nullptr;
        if (scored) {
          top = json::object();
          for (const auto& [id, lp] : u.prompt_logprobs[i - 1].top) top[TokenText(id)] = lp;
        }
        part["top_logprobs"].push_back(std::move(top));
        part["text_offset"].push_back(at);
        at += piece.size();
      }
    }
    size_t offset = text_start;
    for (const SampledToken& t : u.logprobs) {
      const std::string piece = TokenText(t.token);
      part["tokens"].push_back(piece);
      part["token_logprobs"].push_back(t.logprob);
      json top = json::object();
      for (const auto& [id, lp] : t.top) top[TokenText(id)] = lp;
      part["top_logprobs"].push_back(std::move(top));
      part["text_offset"].push_back(offset);
      offset += piece.size();
    }
    for (size_t i = 0; i < part["tokens"].size(); ++i) {
      c.tokens.push_back(part["tokens"][i]);
      c.token_logprobs.push_back(part["token_logprobs"][i]);
      c.top_logprobs.push_back(part["top_logprobs"][i]);
      c.text_offset.push_back(part["text_offset"][i]);
    }
    return part;
  }

  // A model without a tokenizer has no token texts: its tokens are named by id.
  std::string TokenText(int32_t id) const { return tok_ != nullptr ? tok_->PieceText(id) : absl::StrCat("<", id, ">"); }

  void OnUpdate(size_t k, GenerationUpdate&& u) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) return;
    Choice& c = choices_[k];
    c.record.Tokens(u.tokens.size());
    const bool echo_now = echo_ && !c.echoed;  // the first update of an echoed choice carries its prompt
    c.echoed = c.echoed || echo_now;
    if (echo_now) c.text += c.echo;
    const size_t text_start = c.text.size();
    c.text += u.text;
    c.token_ids.insert(c.token_ids.end(), u.tokens.begin(), u.tokens.end());
    json lp = logprobs_.has_value() ? Logprobs(c, u, text_start, echo_now) : json(nullptr);
    if (u.finished) {
      const absl::Status final_status = FinalStatus(u, gone_, std::nullopt);
      LogRequest(c.id, u, final_status);
      c.record.Ended(final_status, &u);
      c.usage = u.usage;
      c.finish = FinishReasonOf(u);
      --remaining_;
      if (!u.status.ok()) return Failed(u.status);
    }
    if (stream_ && chat_ && !c.role_sent) {  // chat: a first chunk with the role alone
      c.role_sent = true;
      json first = Envelope();
      first["choices"] = json::array(
          {{{"index", k}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
      if (include_usage_) first["usage"] = nullptr;
      out_->Write(Event(first));
    }
    if (stream_ && (!u.text.empty() || !u.tokens.empty() || u.finished)) {
      json choice = {{"index", k}, {"logprobs", lp}, {"finish_reason", nullptr}};
      if (chat_) {
        choice["delta"] = u.text.empty() ? json::object() : json{{"content", u.text}};
      } else {
        choice["text"] = echo_now ? absl::StrCat(c.echo, u.text) : u.text;
      }
      if (return_token_ids_) choice["token_ids"] = u.tokens;
      if (u.finished) choice["finish_reason"] = c.finish;
      json chunk = Envelope();
      chunk["choices"] = json::array({std::move(choice)});
      if (include_usage_) chunk["usage"] = nullptr;
      out_->Write(Event(chunk));
    }
    if (remaining_ == 0) Finished();
  }

  json Envelope() const {
    const char* object = !chat_ ? "text_completion" : stream_ ? "chat.completion.chunk" : "chat.completion";
    return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
  }
  static std::string Event(const json& j) {
    return absl::StrCat("data: ", j.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n");
  }

  json UsageJson() const {
    int64_t prompt = 0, completion = 0;
    for (size_t k = 0; k < choices_.size(); ++k) {
      if (k % n_ == 0) prompt += choices_[k].usage.prompt_tokens;  // a prompt counts once, whatever n
      completion += choices_[k].usage.completion_tokens;
    }
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  void Finished() {
    handles_.clear();  // the scheduler is done with them (and they may hold the sinks, which hold us)
    if (stream_) {
      if (include_usage_) {
        json last = Envelope();
        last["choices"] = json::array();
        last["usage"] = UsageJson();
        out_->Write(Event(last));
      }
      out_->Write("data: [DONE]\n\n");
      out_->End();
      return;
    }
    json choices = json::array();
    for (size_t k = 0; k < choices_.size(); ++k) {
      const Choice& c = choices_[k];
      json lp = nullptr;
      if (logprobs_.has_value())
        lp = chat_ ? json{{"content", c.chat_logprobs}}
                   : json{{"tokens", c.tokens}, {"token_logprobs", c.token_logprobs}, {"top_logprobs", c.top_logprobs},
                          {"text_offset", c.text_offset}};
      json choice = {{"index", k}, {"logprobs", std::move(lp)}, {"finish_reason", c.finish}};
      if (chat_) {
        choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      } else {
        choice["text"] = c.text;
      }
      if (return_token_ids_) choice["token_ids"] = c.token_ids;
      choices.push_back(std::move(choice));
    }
    json body = Envelope();
    body["choices"] = std::move(choices);
    body["usage"] = UsageJson();
    out_->Respond(200, kJson, body.dump(-1, ' ', false, json::error_handler_t::replace));
  }

  // A generation failed: the others are cancelled and the client gets the error (in a stream,
  // as an error event before [DONE]).
  void Failed(const absl::Status& s) {
    failed_ = true;
    for (auto& h : handles_) h->Cancel();
    handles_.clear();
    if (stream_) {
      out_->Write(absl::StrCat("data: ", ErrorJson(s), "\n\n"));
      out_->Write("data: [DONE]\n\n");
      out_->End();
    } else {
      Fail(*out_, s);
    }
  }

  std::mutex mu_;
  std::shared_ptr<Responder> out_;
  const std::string id_, model_;
  const bool stream_, include_usage_, return_token_ids_, chat_, echo_;
  const std::optional<int> logprobs_;
  const size_t n_;
  const Tokenizer* tok_;
  const int64_t created_;
  std::vector<Choice> choices_;
  std::vector<std::shared_ptr<RequestHandle>> handles_;
  size_t remaining_ = 0;
  bool failed_ = false, gone_ = false;
};

}  // namespace

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  const int http = HttpStatusOf(status.code());
  const char* type = http == 401   ? "authentication_error"
                     : http == 404 ? "not_found_error"
                     : http == 429 ? "rate_limit_error"
                     : http < 500  ? "invalid_request_error"
                                   : "server_error";
  json e = {{"error",
             {{"message", Excerpt(status.message(), 4096)},
              {"type", type},
              {"param", nullptr},
              {"code", StatusCodeName(status.code())}}}};
  return e.dump(-1, ' ', false, json::error_handler_t::replace);
}

void OpenAiService::Handle(Request request, std::shared_ptr<Responder> responder) {
  const std::string path = Path(request.target);
  if (path == "/health") {
    if (request.method != "GET") return Fail(*responder, absl::InvalidArgumentError("GET /health"));
    return responder->Respond(200, kJson, R"({"status":"ok"})");
  }
  const bool models = path == "/v1/models", completions = path == "/v1/completions",
             chat = path == "/v1/chat/completions", metrics = path == "/metrics";
  if (!models && !completions && !chat && !metrics)
    return Fail(*responder,
                absl::NotFoundError(absl::StrCat("no route ", Excerpt(path, 128),
                                                 " (GET /v1/models, POST /v1/completions, POST /v1/chat/completions, "
                                                 "GET /health, GET /metrics)")));
  if (absl::Status admitted = door_.Admit(request.authorization, request.peer); !admitted.ok())
    return Fail(*responder, admitted);
  if (models || metrics) {
    if (request.method != "GET") return Fail(*responder, absl::InvalidArgumentError(absl::StrCat(path, " takes GET")));
    if (models) return Models(responder);
    // The Prometheus exposition (the same as --metrics_listen's), behind the token when one is set.
    const ServerMetrics* m = door_.info().metrics;
    if (m == nullptr) return Fail(*responder, absl::NotFoundError("this server keeps no metrics"));
    return responder->Respond(200, "text/plain; version=0.0.4", m->Text());
  }
  if (request.method != "POST")
    return Fail(*responder, absl::InvalidArgumentError(absl::StrCat(path, " takes POST")));
  Completions(request, responder, chat);
}

void OpenAiService::Models(const std::shared_ptr<Responder>& out) {
  const int64_t created = UnixNow();
  json data = json::array();
  data.push_back({{"id", options_.served_model_name}, {"object", "model"}, {"created", created}, {"owned_by", "glad"}});
  if (const AdapterRegistry* adapters = door_.info().adapters; adapters != nullptr)
    for (const AdapterInfo& a : adapters->List())
      data.push_back({{"id", a.name},
                      {"object", "model"},
                      {"created", created},
                      {"owned_by", "glad"},
                      {"parent", options_.served_model_name}});
  json body = {{"object", "list"}, {"data", std::move(data)}};
  out->Respond(200, kJson, body.dump(-1, ' ', false, json::error_handler_t::replace));
}

void OpenAiService::Completions(const Request& request, const std::shared_ptr<Responder>& out, bool chat) {
  const CompletionLimits limits{.max_n = door_.limits().max_n, .max_prompts = options_.max_prompts};
  absl::StatusOr<CompletionRequest> req =
      chat ? ParseChatRequest(request.body, limits) : ParseCompletionRequest(request.body, limits);
  if (!req.ok()) return Fail(*out, req.status());
  if (chat) {  // the messages through the chat template: the one prompt's token ids
    if (chat_ == nullptr) return Fail(*out, absl::UnimplementedError("this server has no chat template loaded"));
    absl::StatusOr<std::vector<int32_t>> ids =
        chat_->Prompt(req->messages, req->add_generation_prompt, door_.limits().max_prompt_tokens);
    if (!ids.ok()) return Fail(*out, ids.status());
    req->prompts.front().token_ids = *std::move(ids);
  }
  // "model": the base model, or a loaded LoRA adapter by name (as vLLM serves adapters).
  std::string adapter;
  if (req->model != options_.served_model_name) {
    const AdapterRegistry* adapters = door_.info().adapters;
    if (adapters == nullptr || adapters->Find(req->model) == nullptr)
      return Fail(*out, absl::NotFoundError(absl::StrCat("model '", Excerpt(req->model, 128),
                                                         "' does not exist (GET /v1/models lists them)")));
    adapter = req->model;
  }
  std::vector<GenerationSpec> specs;
  std::vector<std::string> echo;  // per prompt, with echo: its text
  const Tokenizer* tok = door_.engines().backend().tokenizer();
  for (GenerateCall call : req->prompts) {
    call.adapter = adapter;
    absl::StatusOr<std::vector<GenerationSpec>> group = door_.PrepareGroup(call, req->n, "n");
    if (!group.ok()) return Fail(*out, group.status());
    if (req->echo) {  // the prompt as sent; token ids as their text
      absl::StatusOr<std::string> text = call.text.has_value() ? absl::StatusOr<std::string>(*call.text)
                                         : tok != nullptr      ? tok->Decode(group->front().prompt)
                                                               : absl::StatusOr<std::string>("");
      if (!text.ok()) return Fail(*out, text.status());
      echo.push_back(*std::move(text));
    }
    for (GenerationSpec& spec : *group) specs.push_back(std::move(spec));
  }
  const std::string id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", specs.front().id);
  auto run = std::make_shared<CompletionRun>(out, *req, id, door_.engines().backend().tokenizer(),
                                             door_.info().metrics, specs.size());
  run->Start(door_, std::move(specs), echo);
}

}  // namespace gla::http
