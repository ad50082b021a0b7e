#include "clients/cli/finetune_commands.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "clients/cli/grpc_status.h"
#include "clients/common/connection.h"
#include "gla/v1/gla.grpc.pb.h"
#include "models/status_macros.h"

namespace gla {

namespace {

absl::StatusOr<double> Double(const ParsedArgs& a, const std::string& name) {
  double v;
  if (!absl::SimpleAtod(a.flags.at(name), &v)) return absl::InvalidArgumentError(absl::StrCat("--", name, " is not a number"));
  return v;
}

absl::StatusOr<std::vector<std::string>> Lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

const char* StateName(v1::FineTuneJobState s) {
  switch (s) {
    case v1::FINE_TUNE_JOB_STATE_QUEUED: return "queued";
    case v1::FINE_TUNE_JOB_STATE_RUNNING: return "running";
    case v1::FINE_TUNE_JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::FINE_TUNE_JOB_STATE_FAILED: return "failed";
    case v1::FINE_TUNE_JOB_STATE_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

void PrintJob(const v1::FineTuneJob& j) {
  std::printf("job %s adapter=%s state=%s step=%lld/%lld loss=%.4f documents=%u tokens=%llu%s%s\n", j.id().c_str(),
              j.adapter_name().c_str(), StateName(j.state()), static_cast<long long>(j.progress().step()),
              static_cast<long long>(j.progress().total_steps()), j.progress().loss(), j.documents(),
              static_cast<unsigned long long>(j.data_tokens()), j.output_dir().empty() ? "" : " output=",
              j.output_dir().c_str());
  if (!j.error().empty()) std::printf("error: %s\n", j.error().c_str());
}

void PrintAdapter(const v1::Adapter& a) {
  std::printf("%s rank=%d alpha=%g targets=%s source=%s dir=%s\n", a.name().c_str(), a.rank(), a.alpha(),
              absl::StrJoin(a.target_modules(), ",").c_str(), a.source().c_str(), a.dir().c_str());
}

absl::StatusOr<v1::CreateFineTuneJobRequest> BuildJob(const ParsedArgs& a) {
  v1::CreateFineTuneJobRequest r;
  ASSIGN_OR_RETURN(std::string name, a.Required("name"));
  r.set_adapter_name(name);
  const std::string method = a.Has("method") ? a.flags.at("method") : "lora";
  if (method == "lora") r.set_method(v1::FINE_TUNE_METHOD_LORA);
  else if (method == "full") r.set_method(v1::FINE_TUNE_METHOD_FULL);
  else return absl::InvalidArgumentError(absl::StrCat("--method ", method, ": lora or full"));
  const int sources = a.Has("text-file") + a.Has("ids-file") + a.Has("data-file");
  if (sources != 1) return absl::InvalidArgumentError("give one of --text-file, --ids-file, --data-file");
  if (a.Has("text-file")) {
    ASSIGN_OR_RETURN(auto lines, Lines(a.flags.at("text-file")));
    for (const std::string& l : lines) r.mutable_texts()->add_texts(l);
  } else if (a.Has("ids-file")) {
    ASSIGN_OR_RETURN(auto lines, Lines(a.flags.at("ids-file")));
    for (const std::string& l : lines) {
      ASSIGN_OR_RETURN(auto ids, ParseIdList(l));
      r.mutable_token_sequences()->add_sequences()->mutable_ids()->Add(ids.begin(), ids.end());
    }
  } else {
    r.set_data_file(a.flags.at("data-file"));
  }
  v1::FineTuneHyperParameters* hp = r.mutable_hyperparameters();
  if (a.Has("rank")) {
    ASSIGN_OR_RETURN(int v, a.Int("rank", 8, 1));
    hp->set_rank(v);
  }
  if (a.Has("alpha")) {
    ASSIGN_OR_RETURN(double v, Double(a, "alpha"));
    hp->set_alpha(v);
  }
  if (a.Has("targets"))
    for (absl::string_view t : absl::StrSplit(a.flags.at("targets"), ',', absl::SkipEmpty()))
      hp->add_target_modules(std::string(t));
  if (a.Has("steps")) {
    ASSIGN_OR_RETURN(int v, a.Int("steps", 100, 1));
    hp->set_max_steps(v);
  }
  if (a.Has("batch")) {
    ASSIGN_OR_RETURN(int v, a.Int("batch", 4, 1));
    hp->set_batch_sequences(v);
  }
  if (a.Has("seq-len")) {
    ASSIGN_OR_RETURN(int v, a.Int("seq-len", 256, 1));
    hp->set_sequence_length(v);
  }
  if (a.Has("lr")) {
    ASSIGN_OR_RETURN(double v, Double(a, "lr"));
    hp->set_learning_rate(v);
  }
  if (a.Has("seed")) {
    ASSIGN_OR_RETURN(int v, a.Int("seed", 0, 0));
    hp->set_seed(static_cast<uint64_t>(v));
  }
  return r;
}

}  // namespace

absl::Status RunFineTuneCommand(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(const Connection conn, Connect(a));
  auto stub = v1::FineTune::NewStub(conn.channel);
  grpc::ClientContext ctx;
  conn.Prepare(ctx);
  if (a.command == "finetune") {
    ASSIGN_OR_RETURN(v1::CreateFineTuneJobRequest req, BuildJob(a));
    ASSIGN_OR_RETURN(int watch, a.Int("watch", 1, 0));
    v1::FineTuneJob job;
    RETURN_IF_ERROR(FromGrpc(stub->CreateFineTuneJob(&ctx, req, &job)));
    PrintJob(job);
    std::fflush(stdout);
    if (watch == 0) return absl::OkStatus();
    grpc::ClientContext wctx;
    conn.Prepare(wctx);
    v1::WatchFineTuneJobRequest wreq;
    wreq.set_job_id(job.id());
    auto reader = stub->WatchFineTuneJob(&wctx, wreq);
    v1::FineTuneProgress p;
    v1::FineTuneJobState last = v1::FINE_TUNE_JOB_STATE_UNSPECIFIED;
    while (reader->Read(&p)) {
      last = p.state();
      std::printf("%s step %lld/%lld loss %.4f lr %.3g tokens/s %.0f eta %.0fs\n", StateName(p.state()),
                  static_cast<long long>(p.step()), static_cast<long long>(p.total_steps()), p.loss(), p.learning_rate(),
                  p.tokens_per_second(), p.eta_seconds());
      std::fflush(stdout);
    }
    RETURN_IF_ERROR(FromGrpc(reader->Finish()));
    grpc::ClientContext gctx;
    conn.Prepare(gctx);
    v1::GetFineTuneJobRequest greq;
    greq.set_job_id(job.id());
    RETURN_IF_ERROR(FromGrpc(stub->GetFineTuneJob(&gctx, greq, &job)));
    PrintJob(job);
    if (last != v1::FINE_TUNE_JOB_STATE_SUCCEEDED)
      return absl::AbortedError(absl::StrCat("job ", job.id(), " ended ", StateName(last)));
  } else if (a.command == "job" || a.command == "cancel") {
    ASSIGN_OR_RETURN(std::string id, a.Required("id"));
    v1::FineTuneJob job;
    if (a.command == "job") {
      v1::GetFineTuneJobRequest req;
      req.set_job_id(id);
      RETURN_IF_ERROR(FromGrpc(stub->GetFineTuneJob(&ctx, req, &job)));
    } else {
      v1::CancelFineTuneJobRequest req;
      req.set_job_id(id);
      RETURN_IF_ERROR(FromGrpc(stub->CancelFineTuneJob(&ctx, req, &job)));
    }
    PrintJob(job);
  } else if (a.command == "jobs") {
    v1::ListFineTuneJobsResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->ListFineTuneJobs(&ctx, {}, &resp)));
    for (const v1::FineTuneJob& j : resp.jobs()) PrintJob(j);
  } else if (a.command == "adapters") {
    v1::ListAdaptersResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->ListAdapters(&ctx, {}, &resp)));
    for (const v1::Adapter& x : resp.adapters()) PrintAdapter(x);
  } else if (a.command == "load-adapter") {
    v1::LoadAdapterRequest req;
    ASSIGN_OR_RETURN(std::string name, a.Required("name"));
    ASSIGN_OR_RETURN(std::string path, a.Required("path"));
    ASSIGN_OR_RETURN(int replace, a.Int("replace", 0, 0));
    req.set_name(name);
    req.set_path(path);
    req.set_replace(replace != 0);
    v1::Adapter resp;
    RETURN_IF_ERROR(FromGrpc(stub->LoadAdapter(&ctx, req, &resp)));
    PrintAdapter(resp);
  } else if (a.command == "unload-adapter") {
    v1::UnloadAdapterRequest req;
    ASSIGN_OR_RETURN(std::string name, a.Required("name"));
    req.set_name(name);
    v1::UnloadAdapterResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->UnloadAdapter(&ctx, req, &resp)));
    std::printf("unloaded %s\n", name.c_str());
  }
  return absl::OkStatus();
}

}  // namespace gla
