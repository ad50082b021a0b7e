#include "server/fine_tune_service.h"

#include "absl/strings/str_format.h"
#include "server/log.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "server/fine_tune_data.h"
#include "server/grpc_admission.h"
#include "server/grpc_status.h"

namespace gla {

namespace {

v1::FineTuneJobState ToProto(JobState s) {
  switch (s) {
    case JobState::kQueued: return v1::FINE_TUNE_JOB_STATE_QUEUED;
    case JobState::kRunning: return v1::FINE_TUNE_JOB_STATE_RUNNING;
    case JobState::kSucceeded: return v1::FINE_TUNE_JOB_STATE_SUCCEEDED;
    case JobState::kFailed: return v1::FINE_TUNE_JOB_STATE_FAILED;
    case JobState::kCancelled: return v1::FINE_TUNE_JOB_STATE_CANCELLED;
  }
  return v1::FINE_TUNE_JOB_STATE_UNSPECIFIED;
}

double UnixSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

void FillProgress(const std::string& id, JobState state, const TrainProgress& p, const std::string& error,
                  v1::FineTuneProgress* out) {
  out->set_job_id(id);
  out->set_state(ToProto(state));
  out->set_step(p.step);
  out->set_total_steps(p.total_steps);
  out->set_loss(p.loss);
  out->set_learning_rate(p.learning_rate);
  out->set_tokens_per_second(p.tokens_per_second);
  out->set_eta_seconds(p.eta_seconds);
  out->set_grad_norm(p.grad_norm);
  out->set_tokens(p.tokens);
  if (state == JobState::kFailed) out->set_error(error);
}

void FillHyperParameters(const TrainOptions& o, v1::FineTuneHyperParameters* hp) {
  if (o.method == TrainOptions::Method::kLora) {  // the adapter's shape (nothing for FULL)
    hp->set_rank(o.lora.r);
    hp->set_alpha(o.lora.alpha);
    hp->set_dropout(o.lora.dropout);
    for (LoraTarget t : o.lora.targets) hp->add_target_modules(LoraTargetName(t));
  }
  hp->set_max_steps(o.max_steps);
  hp->set_batch_sequences(o.batch_sequences);
  hp->set_sequence_length(o.sequence_length);
  hp->set_learning_rate(o.learning_rate);
  hp->set_min_lr_ratio(o.min_lr_ratio);
  hp->set_warmup_steps(o.warmup_steps);
  hp->set_weight_decay(o.weight_decay);
  hp->set_max_grad_norm(o.max_grad_norm);
  hp->set_seed(o.seed);
}

void FillJob(const JobInfo& j, v1::FineTuneJob* out) {
  out->set_id(j.id);
  out->set_adapter_name(j.adapter_name);
  out->set_method(j.options.method == TrainOptions::Method::kFull ? v1::FINE_TUNE_METHOD_FULL
                                                                  : v1::FINE_TUNE_METHOD_LORA);
  out->set_state(ToProto(j.state));
  FillHyperParameters(j.options, out->mutable_hyperparameters());
  FillProgress(j.id, j.state, j.progress, j.error, out->mutable_progress());
  out->set_error(j.error);
  out->set_output_dir(j.output_dir);
  out->set_documents(static_cast<uint32_t>(j.documents));
  out->set_data_tokens(static_cast<uint64_t>(j.data_tokens));
  out->set_cancel_requested(j.cancel_requested);
  out->set_create_time_s(UnixSeconds(j.created));
  if (j.started) out->set_start_time_s(UnixSeconds(*j.started));
  if (j.ended) out->set_end_time_s(UnixSeconds(*j.ended));
}

grpc::Status NoJobId() { return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id: empty"); }

}  // namespace

absl::StatusOr<TrainOptions> TrainOptionsFromProto(v1::FineTuneMethod method, const v1::FineTuneHyperParameters& hp) {
  TrainOptions o;
  switch (method) {
    case v1::FINE_TUNE_METHOD_UNSPECIFIED:
    case v1::FINE_TUNE_METHOD_LORA: o.method = TrainOptions::Method::kLora; break;
    case v1::FINE_TUNE_METHOD_FULL: o.method = TrainOptions::Method::kFull; break;
    default: return absl::InvalidArgumentError(absl::StrCat("method: unknown value ", static_cast<int>(method)));
  }
  o.lora.r = hp.has_rank() ? hp.rank() : 8;
  o.lora.alpha = hp.has_alpha() ? hp.alpha() : 16.0;
  o.lora.dropout = hp.has_dropout() ? hp.dropout() : 0.0;
  std::vector<std::string> targets(hp.target_modules().begin(), hp.target_modules().end());
  if (targets.empty()) targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  auto parsed = ParseLoraTargets(targets);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("target_modules: ", parsed.status().message()));
  o.lora.targets = *parsed;
  o.max_steps = hp.has_max_steps() ? hp.max_steps() : 100;
  o.batch_sequences = hp.has_batch_sequences() ? hp.batch_sequences() : 4;
  o.sequence_length = hp.has_sequence_length() ? hp.sequence_length() : 256;
  o.learning_rate = hp.has_learning_rate() ? hp.learning_rate() : 1e-4;
  o.min_lr_ratio = hp.has_min_lr_ratio() ? hp.min_lr_ratio() : 0.1;
  // Unset: a tenth of the run, at most 10 steps (a short run is not all warmup).
  o.warmup_steps = hp.has_warmup_steps() ? hp.warmup_steps() : std::clamp<int64_t>(o.max_steps / 10, 0, 10);
  o.weight_decay = hp.has_weight_decay() ? hp.weight_decay() : 0.0;
  o.max_grad_norm = hp.has_max_grad_norm() ? hp.max_grad_norm() : 1.0;
  o.seed = hp.has_seed() ? hp.seed() : 0;
  return o;
}

absl::StatusOr<FineTuneSpec> FineTuneService::ToSpec(const v1::CreateFineTuneJobRequest& req) const {
  FineTuneSpec spec;
  spec.adapter_name = req.adapter_name();
  if (absl::Status s = AdapterRegistry::ValidateName(spec.adapter_name); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("adapter_name: ", s.message()));
  auto options = TrainOptionsFromProto(req.method(), req.hyperparameters());
  if (!options.ok()) return options.status();
  spec.options = std::move(*options);

  auto need_tokenizer = [&](const char* field) -> absl::Status {
    if (tokenizer_ != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": this model has no tokenizer.model; send token_sequences instead"));
  };
  switch (req.data_case()) {
    case v1::CreateFineTuneJobRequest::kTokenSequences: {
      int64_t total = 0;
      for (const v1::TokenIds& seq : req.token_sequences().sequences()) {
        total += seq.ids_size();
        if (total > options_.max_tokens)  // FineTuneJobs checks too; stop copying early here
          return absl::InvalidArgumentError(absl::StrCat("token_sequences: more than ", options_.max_tokens,
                                                         " tokens (the server's --finetune_max_tokens)"));
        spec.documents.emplace_back(seq.ids().begin(), seq.ids().end());
      }
      break;
    }
    case v1::CreateFineTuneJobRequest::kTexts: {
      if (absl::Status s = need_tokenizer("texts"); !s.ok()) return s;
      std::vector<std::string> texts(req.texts().texts().begin(), req.texts().texts().end());
      auto docs = TokenizeDocuments(*tokenizer_, texts, options_.max_tokens, "texts");
      if (!docs.ok()) return docs.status();
      spec.documents = std::move(*docs);
      break;
    }
    case v1::CreateFineTuneJobRequest::kDataFile: {
      auto path = ResolveDataFile(options_.data_dir, req.data_file());
      if (!path.ok()) return path.status();
      if (absl::Status s = need_tokenizer("data_file"); !s.ok()) return s;
      auto lines = ReadLineDocuments(*path, options_.max_tokens * kDataFileBytesPerToken);
      if (!lines.ok()) return lines.status();
      auto docs = TokenizeDocuments(*tokenizer_, *lines, options_.max_tokens, "data_file");
      if (!docs.ok()) return docs.status();
      spec.documents = std::move(*docs);
      break;
    }
    case v1::CreateFineTuneJobRequest::DATA_NOT_SET:
      return absl::InvalidArgumentError("data: set one of texts, token_sequences, data_file");
  }
  return spec;
}

grpc::Status FineTuneService::Admit(grpc::ServerContext* ctx) const {
  return ToGrpcStatus(AdmitCall(options_.guard, *ctx));
}

grpc::Status FineTuneService::CreateFineTuneJob(grpc::ServerContext* ctx, const v1::CreateFineTuneJobRequest* req,
                                                v1::FineTuneJob* resp) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  auto spec = ToSpec(*req);
  if (!spec.ok()) return ToGrpcStatus(spec.status());
  auto job = jobs_.Create(std::move(*spec));
  if (!job.ok()) return ToGrpcStatus(job.status());
  LogEvent(LogLevel::kInfo, "finetune_queued",
           absl::StrFormat("glad: fine-tune job id=%s adapter=%s queued (%d documents, %d tokens, %d steps)", job->id,
                           job->adapter_name, job->documents, job->data_tokens, job->options.max_steps),
           {{"job", job->id},
            {"adapter", job->adapter_name},
            {"documents", job->documents},
            {"tokens", job->data_tokens},
            {"steps", job->options.max_steps}});
  FillJob(*job, resp);
  return grpc::Status::OK;
}

grpc::Status FineTuneService::GetFineTuneJob(grpc::ServerContext* ctx, const v1::GetFineTuneJobRequest* req,
                                             v1::FineTuneJob* resp) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  if (req->job_id().empty()) return NoJobId();
  auto job = jobs_.Get(req->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  FillJob(*job, resp);
  return grpc::Status::OK;
}

grpc::Status FineTuneService::CancelFineTuneJob(grpc::ServerContext* ctx, const v1::CancelFineTuneJobRequest* req,
                                                v1::FineTuneJob* resp) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  if (req->job_id().empty()) return NoJobId();
  auto job = jobs_.Cancel(req->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  FillJob(*job, resp);
  return grpc::Status::OK;
}

grpc::Status FineTuneService::WatchFineTuneJob(grpc::ServerContext* ctx, const v1::WatchFineTuneJobRequest* req,
                                               grpc::ServerWriter<v1::FineTuneProgress>* writer) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  if (req->job_id().empty()) return NoJobId();
  const auto cancelled = [ctx] { return ctx->IsCancelled(); };  // the client left or its deadline passed
  size_t next = 0;
  for (;;) {
    // Wake at least once a second to notice a cancelled call between events.
    auto batch = jobs_.WaitForEvents(req->job_id(), next, std::chrono::steady_clock::now() + std::chrono::seconds(1),
                                     cancelled);
    if (!batch.ok()) return ToGrpcStatus(batch.status());
    for (const JobEvent& e : batch->events) {
      v1::FineTuneProgress m;
      FillProgress(req->job_id(), e.state, e.progress, e.error, &m);
      if (!writer->Write(m)) return grpc::Status::CANCELLED;  // the stream is broken: the client is gone
    }
    next = batch->next;
    if (batch->final) return grpc::Status::OK;
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
  }
}

namespace {
void ToProto(const AdapterInfo& a, v1::Adapter* out) {
  out->set_name(a.name);
  out->set_dir(a.dir);
  out->set_rank(a.r);
  out->set_alpha(a.alpha);
  for (const std::string& t : a.target_modules) out->add_target_modules(t);
  out->set_source(a.source);
}
}  // namespace

grpc::Status FineTuneService::ListFineTuneJobs(grpc::ServerContext* ctx, const v1::ListFineTuneJobsRequest*,
                                               v1::ListFineTuneJobsResponse* resp) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  for (const JobInfo& j : jobs_.List()) FillJob(j, resp->add_jobs());
  return grpc::Status::OK;
}

grpc::Status FineTuneService::ListAdapters(grpc::ServerContext* ctx, const v1::ListAdaptersRequest*,
                                           v1::ListAdaptersResponse* resp) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  for (const AdapterInfo& a : registry_.List()) ToProto(a, resp->add_adapters());
  return grpc::Status::OK;
}

grpc::Status FineTuneService::LoadAdapter(grpc::ServerContext* ctx, const v1::LoadAdapterRequest* req, v1::Adapter* resp) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  auto info = jobs_.LoadAdapter(req->name(), req->path(), req->replace());
  if (!info.ok()) return ToGrpcStatus(info.status());
  ToProto(*info, resp);
  return grpc::Status::OK;
}

grpc::Status FineTuneService::UnloadAdapter(grpc::ServerContext* ctx, const v1::UnloadAdapterRequest* req,
                                            v1::UnloadAdapterResponse*) {
  if (grpc::Status st = Admit(ctx); !st.ok()) return st;
  return ToGrpcStatus(registry_.Remove(req->name()));
}

}  // namespace gla
