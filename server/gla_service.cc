#include "server/gla_service.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>

#include "models/utf8.h"
#include "server/grpc_generate_call.h"
#include "server/grpc_status.h"

namespace gla {

namespace {

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillUsage(const Usage& u, v1::Usage* out) {
  out->set_prompt_tokens(u.prompt_tokens);
  out->set_completion_tokens(u.completion_tokens);
  out->set_time_to_first_token_s(u.time_to_first_token_s);
  out->set_total_time_s(u.total_time_s);
  out->set_queue_time_s(u.queue_time_s);
  out->set_cached_prompt_tokens(u.cached_prompt_tokens);
  out->set_session_tokens(static_cast<uint64_t>(u.session_tokens));
}

void AddLogprobs(const std::vector<SampledToken>& from, google::protobuf::RepeatedPtrField<v1::Logprobs>* to) {
  for (const SampledToken& t : from) {
    v1::Logprobs* lp = to->Add();
    lp->mutable_chosen()->set_token_id(t.token);
    lp->mutable_chosen()->set_logprob(t.logprob);
    for (const auto& [id, logprob] : t.top) {
      v1::TokenLogprob* e = lp->add_top();
      e->set_token_id(id);
      e->set_logprob(logprob);
    }
  }
}

// How a finished generation ends its gRPC call (front door's FinalStatus, gRPC's view of the
// client: a cancelled context, its deadline).
absl::Status CallStatus(const GenerationUpdate& u, grpc::CallbackServerContext* ctx) {
  std::optional<std::chrono::system_clock::time_point> deadline;
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) deadline = ctx->deadline();
  return FinalStatus(u, ctx->IsCancelled(), deadline);
}

// Admission, then the request through the front door with the call's deadline: n specs (n > 1:
// one group, one prefill).
absl::StatusOr<std::vector<GenerationSpec>> PrepareSpecs(GlaService* svc, grpc::CallbackServerContext* ctx,
                                                         const v1::GenerateRequest& req) {
  if (absl::Status admitted = svc->Admit(*ctx); !admitted.ok()) return admitted;
  absl::StatusOr<GenerateCall> call = GenerateCallFromProto(req);
  if (!call.ok()) return call.status();
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) call->deadline = ctx->deadline();
  return svc->door().PrepareGroup(*call, std::max<int64_t>(req.n(), 1), "n");
}

// Submits the specs as one group, a sink per generation (sink(i, update)).
absl::StatusOr<std::vector<std::shared_ptr<RequestHandle>>> SubmitAll(
    GlaService* svc, std::vector<GenerationSpec> specs, const std::function<void(size_t, GenerationUpdate&&)>& sink) {
  std::vector<UpdateSink> sinks;
  for (size_t i = 0; i < specs.size(); ++i) sinks.push_back([sink, i](GenerationUpdate&& u) { sink(i, std::move(u)); });
  return svc->engines().SubmitGroup(std::move(specs), std::move(sinks));
}

// What the metrics record for a call of n generations when its last one ends: its usage with the
// completion tokens of all of them (the prompt ran once).
GenerationUpdate CallTotals(const GenerationUpdate& last, int64_t completion_tokens) {
  GenerationUpdate total;
  total.usage = last.usage;
  total.usage.completion_tokens = static_cast<int>(completion_tokens);
  return total;
}

// The first failure among a request's generations decides how its call ends.
void KeepFirstError(absl::Status* kept, absl::Status s) {
  if (kept->ok() && !s.ok()) *kept = std::move(s);
}

// ---- Generate (unary)
class GenerateReactor : public grpc::ServerUnaryReactor {
 public:
  GenerateReactor(GlaService* svc, grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req,
                  v1::GenerateResponse* resp)
      : ctx_(ctx), resp_(resp), recorder_(svc->info().metrics, "Generate") {
    auto specs = PrepareSpecs(svc, ctx, *req);
    if (!specs.ok()) {
      recorder_.Ended(specs.status());
      Finish(ToGrpcStatus(specs.status()));
      return;
    }
    resp_->set_request_id(specs->front().id);
    for (const GenerationSpec& g : *specs) ids_.push_back(g.id);
    if (specs->size() > 1)
      for (const GenerationSpec& g : *specs) resp_->add_choices()->set_request_id(g.id);
    remaining_ = specs->size();
    // Held across Submit: the sink may run before Submit returns and must see handles_ set.
    std::unique_lock<std::mutex> lock(mu_);
    auto handles = SubmitAll(svc, *std::move(specs), [this](size_t i, GenerationUpdate&& u) { OnUpdate(i, std::move(u)); });
    if (handles.ok()) handles_ = *handles;
    if (!handles.ok()) recorder_.Ended(handles.status());
    lock.unlock();
    if (!handles.ok()) Finish(ToGrpcStatus(handles.status()));
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& h : handles_) h->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  // Generation i's update, into the response (the top-level fields are generation 0's; with n > 1
  // each also has its choice).
  void OnUpdate(size_t i, GenerationUpdate&& u) {
    grpc::Status st;
    {
      std::lock_guard<std::mutex> l(mu_);
      recorder_.Tokens(u.tokens.size());
      if (i == 0) {
        for (int32_t t : u.tokens) resp_->add_token_ids(t);
        resp_->mutable_text()->append(u.text);
        AddLogprobs(u.logprobs, resp_->mutable_logprobs());
        AddLogprobs(u.prompt_logprobs, resp_->mutable_prompt_logprobs());
      }
      v1::GenerateChoice* c = resp_->choices_size() > 0 ? resp_->mutable_choices(static_cast<int>(i)) : nullptr;
      if (c != nullptr) {
        for (int32_t t : u.tokens) c->add_token_ids(t);
        c->mutable_text()->append(u.text);
        AddLogprobs(u.logprobs, c->mutable_logprobs());
      }
      if (!u.finished) return;
      if (i == 0) {
        resp_->set_finish_reason(ToProto(u.reason));
        FillUsage(u.usage, resp_->mutable_usage());
      }
      if (c != nullptr) {
        c->set_finish_reason(ToProto(u.reason));
        FillUsage(u.usage, c->mutable_usage());
      }
      const absl::Status final_status = CallStatus(u, ctx_);
      LogRequest(ids_[i], u, final_status);
      KeepFirstError(&status_, final_status);
      completion_tokens_ += u.usage.completion_tokens;
      if (!final_status.ok())  // one failed: the call fails, the others need not run on
        for (auto& h : handles_) h->Cancel();
      if (--remaining_ > 0) return;
      const GenerationUpdate total = CallTotals(u, completion_tokens_);
      recorder_.Ended(status_, &total);
      st = ToGrpcStatus(status_);
    }
    Finish(st);  // after unlocking: OnDone may delete this at once
  }

  grpc::CallbackServerContext* ctx_;
  v1::GenerateResponse* resp_;
  std::mutex mu_;
  std::vector<std::shared_ptr<RequestHandle>> handles_;
  std::vector<std::string> ids_;
  size_t remaining_ = 0;
  int64_t completion_tokens_ = 0;  // all generations' so far (the metrics count the call's total)
  absl::Status status_;
  RequestRecord recorder_;
};

// ---- GenerateStream
class StreamReactor : public grpc::ServerWriteReactor<v1::GenerateStreamResponse> {
 public:
  StreamReactor(GlaService* svc, grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req)
      : ctx_(ctx), recorder_(svc->info().metrics, "GenerateStream") {
    auto specs = PrepareSpecs(svc, ctx, *req);
    if (!specs.ok()) {
      recorder_.Ended(specs.status());
      Finish(ToGrpcStatus(specs.status()));
      return;
    }
    for (const GenerationSpec& g : *specs) ids_.push_back(g.id);
    remaining_ = specs->size();
    std::unique_lock<std::mutex> lock(mu_);  // the sink may run before Submit returns
    auto handles = SubmitAll(svc, *std::move(specs), [this](size_t i, GenerationUpdate&& u) { OnUpdate(i, std::move(u)); });
    if (handles.ok()) {
      handles_ = *handles;
      return;
    }
    finish_called_ = true;
    recorder_.Ended(handles.status());
    lock.unlock();
    Finish(ToGrpcStatus(handles.status()));
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {  // the client is gone: stop generating, drop what is queued
      broken_ = true;
      pending_.clear();
      for (auto& h : handles_) h->Cancel();
    }
    Advance(lock);
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& h : handles_) h->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void OnUpdate(size_t i, GenerationUpdate&& u) {
    std::unique_lock<std::mutex> lock(mu_);
    recorder_.Tokens(u.tokens.size());
    if (!broken_ && (!u.tokens.empty() || !u.text.empty() || !u.prompt_logprobs.empty() || (u.finished && u.status.ok()))) {
      // Coalesce into the last queued message of the same generation when a slow client has not
      // taken it yet.
      if (pending_.empty() || pending_.back().index() != i || pending_.back().finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        pending_.emplace_back();
        pending_.back().set_request_id(ids_[i]);
        pending_.back().set_index(static_cast<uint32_t>(i));
      }
      v1::GenerateStreamResponse& m = pending_.back();
      for (int32_t t : u.tokens) m.add_token_ids(t);
      m.mutable_text()->append(u.text);
      AddLogprobs(u.logprobs, m.mutable_logprobs());
      AddLogprobs(u.prompt_logprobs, m.mutable_prompt_logprobs());
      if (u.finished) {
        m.set_finish_reason(ToProto(u.reason));
        FillUsage(u.usage, m.mutable_usage());
      }
    }
    if (u.finished) {
      const absl::Status final_status = CallStatus(u, ctx_);
      LogRequest(ids_[i], u, final_status);
      KeepFirstError(&status_, final_status);
      completion_tokens_ += u.usage.completion_tokens;
      if (!final_status.ok())
        for (auto& h : handles_) h->Cancel();
      if (--remaining_ == 0) {
        final_status_ = ToGrpcStatus(status_);
        generation_done_ = true;
        const GenerationUpdate total = CallTotals(u, completion_tokens_);
        recorder_.Ended(status_, &total);
      }
    }
    Advance(lock);
  }

  // Starts the next write, or finishes the call once everything is written. Called with the
  // lock held; releases it before calling into gRPC (OnDone may delete this right after Finish).
  void Advance(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finish_called_) return;
    if (!pending_.empty() && !broken_) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      lock.unlock();
      StartWrite(&current_);
    } else if (generation_done_) {
      finish_called_ = true;
      const grpc::Status st = final_status_;
      lock.unlock();
      Finish(st);
    }
  }

  grpc::CallbackServerContext* ctx_;
  std::vector<std::string> ids_;
  std::mutex mu_;
  std::vector<std::shared_ptr<RequestHandle>> handles_;
  size_t remaining_ = 0;
  int64_t completion_tokens_ = 0;  // all generations' so far (the metrics count the call's total)
  absl::Status status_;
  std::deque<v1::GenerateStreamResponse> pending_;
  v1::GenerateStreamResponse current_;
  bool writing_ = false, broken_ = false, generation_done_ = false, finish_called_ = false;
  grpc::Status final_status_;
  RequestRecord recorder_;
};

}  // namespace

grpc::ServerUnaryReactor* GlaService::Generate(grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req,
                                               v1::GenerateResponse* resp) {
  return new GenerateReactor(this, ctx, req, resp);
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GlaService::GenerateStream(grpc::CallbackServerContext* ctx,
                                                                                 const v1::GenerateRequest* req) {
  return new StreamReactor(this, ctx, req);
}

grpc::ServerUnaryReactor* GlaService::Tokenize(grpc::CallbackServerContext* ctx, const v1::TokenizeRequest* req,
                                               v1::TokenizeResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  const Tokenizer* tok = engines().backend().tokenizer();
  if (absl::Status admitted = Admit(*ctx); !admitted.ok()) {
    reactor->Finish(ToGrpcStatus(admitted));
  } else if (tok == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer.model"));
  } else if (!IsValidUtf8(req->text())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text: not valid UTF-8"));
  } else {
    // A text is tokenized only as far as a prompt may go (--max_prompt_tokens), in bounded memory.
    auto ids = tok->EncodeBounded(req->text(), !req->has_add_bos() || req->add_bos(),
                                  {.max_tokens = limits().max_prompt_tokens});
    if (ids.ok()) resp->mutable_token_ids()->Add(ids->begin(), ids->end());
    reactor->Finish(ids.ok() ? grpc::Status::OK
                    : absl::IsOutOfRange(ids.status())
                        ? grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                       absl::StrCat("text: ", ids.status().message(), " (the server's --max_prompt_tokens)"))
                        : ToGrpcStatus(ids.status()));
  }
  return reactor;
}

grpc::ServerUnaryReactor* GlaService::Detokenize(grpc::CallbackServerContext* ctx, const v1::DetokenizeRequest* req,
                                                 v1::DetokenizeResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  if (absl::Status admitted = Admit(*ctx); !admitted.ok()) {
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  const Tokenizer* tok = engines().backend().tokenizer();
  if (tok == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer.model"));
    return reactor;
  }
  absl::Status valid =
      ValidateTokenIds(std::span<const int32_t>(req->token_ids().data(), req->token_ids().size()), tok->vocab_size(),
                       "token_ids");
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  auto text = tok->Decode(std::vector<int32_t>(req->token_ids().begin(), req->token_ids().end()));
  if (text.ok()) resp->set_text(*text);
  reactor->Finish(text.ok() ? grpc::Status::OK : ToGrpcStatus(text.status()));
  return reactor;
}

grpc::ServerUnaryReactor* GlaService::ModelInfo(grpc::CallbackServerContext* ctx, const v1::ModelInfoRequest*,
                                                v1::ModelInfoResponse* resp) {
  if (absl::Status admitted = Admit(*ctx); !admitted.ok()) {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  Backend& b = engines().backend();
  const GlaConfig& c = b.config();
  const SchedulerStats st = engines().stats();
  resp->set_model_dir(info().model_dir);
  v1::ModelConfig* mc = resp->mutable_config();
  mc->set_hidden_size(c.hidden_size);
  mc->set_num_hidden_layers(c.num_hidden_layers);
  mc->set_num_heads(c.num_heads);
  mc->set_num_kv_heads(c.num_kv_heads);
  mc->set_head_k_dim(c.head_k_dim);
  mc->set_head_v_dim(c.head_v_dim);
  mc->set_intermediate_size(c.intermediate_size);
  mc->set_vocab_size(c.vocab_size);
  mc->set_use_short_conv(c.use_short_conv);
  mc->set_tie_word_embeddings(c.tie_word_embeddings);
  for (int e : c.eos_token_ids) mc->add_eos_token_ids(e);
  mc->set_bos_token_id(c.bos_token_id.value_or(-1));
  resp->set_backend(b.name());
  resp->set_device(engines().devices());
  resp->set_slots(st.slots);
  resp->set_slots_in_use(st.slots_in_use);
  resp->set_queued_requests(st.queued);
  resp->set_state_bytes_per_sequence(b.pool().state_bytes());
  resp->set_state_dtype(StateDTypeName(b.pool().state_dtype()));
  resp->set_has_tokenizer(b.tokenizer() != nullptr);
  resp->set_weight_bytes(engines().weight_bytes());
  resp->set_state_pool_bytes(engines().state_pool_bytes());
  resp->set_workspace_bytes(engines().workspace_bytes());
  v1::Limits* l = resp->mutable_limits();
  l->set_max_prompt_tokens(limits().max_prompt_tokens);
  l->set_max_new_tokens(limits().max_new_tokens);
  l->set_queue_size(info().queue_size);
  l->set_step_token_budget(info().step_token_budget);
  l->set_max_logprobs(limits().max_logprobs);
  v1::SessionStats* ss = resp->mutable_sessions();
  ss->set_sessions(st.sessions.sessions);
  ss->set_in_slots(st.sessions.in_slots);
  ss->set_in_host(st.sessions.in_host);
  ss->set_on_disk(st.sessions.on_disk);
  ss->set_host_bytes(st.sessions.host_bytes);
  ss->set_swapped_out(st.sessions.swapped_out);
  ss->set_written(st.sessions.written);
  ss->set_dropped(st.sessions.dropped);
  ss->set_expired(st.sessions.expired);
  ss->set_store_reads(st.sessions.store_reads);
  ss->set_store_writes(st.sessions.store_writes);
  ss->set_store_released(st.sessions.store_released);
  ss->set_store_errors(st.sessions.store_errors);
  ss->set_store_read_seconds(st.sessions.store_read_s);
  ss->set_store_write_seconds(st.sessions.store_write_s);
  v1::PrefixCacheStats* pc = resp->mutable_prefix_cache();
  pc->set_hits(st.prefix_cache.hits);
  pc->set_misses(st.prefix_cache.misses);
  pc->set_saved_tokens(st.prefix_cache.saved_tokens);
  pc->set_entries(st.prefix_cache.entries);
  pc->set_bytes(st.prefix_cache.bytes);
  pc->set_block_tokens(info().prefix_cache_block);
  pc->set_store_hits(st.prefix_cache.store_hits);
  pc->set_store_misses(st.prefix_cache.store_misses);
  pc->set_store_writes(st.prefix_cache.store_writes);
  pc->set_store_errors(st.prefix_cache.store_errors);
  pc->set_peer_hits(st.prefix_cache.peer_hits);
  pc->set_peer_misses(st.prefix_cache.peer_misses);
  pc->set_peer_publishes(st.prefix_cache.peer_publishes);
  resp->set_preemptions(st.preemptions);
  resp->set_engines(static_cast<uint32_t>(engines().size()));
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace gla
