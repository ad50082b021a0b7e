// The gla.v1.FineTune service: fine-tune jobs (engine/finetune/jobs.h) and the adapter list.
//
// Unlike gla.v1.Gla this uses gRPC's synchronous API: WatchFineTuneJob waits on the jobs' events
// (a condition variable) for as long as a job runs, and CreateFineTuneJob may read and tokenize a
// data file — both would block a callback-API thread, which must never block. Synchronous
// handlers run on gRPC's own thread pool, apart from the callback threads that serve generation.
#pragma once

#include <string>

#include "engine/adapter_registry.h"
#include "engine/finetune/jobs.h"
#include "gla/v1/gla.grpc.pb.h"
#include "models/tokenizer.h"
#include "server/request_guard.h"

namespace gla {

struct FineTuneServiceOptions {
  std::string data_dir;            // --finetune_data_dir; empty: no data_file is accepted
  int64_t max_tokens = 1'000'000;  // --finetune_max_tokens (also bounds what is tokenized)
  RequestGuard* guard = nullptr;   // token and rate checks on every RPC (null: none)
};

class FineTuneService final : public v1::FineTune::Service {
 public:
  // `tokenizer` may be null (a model without tokenizer.model: text data is FAILED_PRECONDITION).
  FineTuneService(FineTuneJobs& jobs, AdapterRegistry& registry, const Tokenizer* tokenizer,
                  FineTuneServiceOptions options)
      : jobs_(jobs), registry_(registry), tokenizer_(tokenizer), options_(std::move(options)) {}

  grpc::Status CreateFineTuneJob(grpc::ServerContext* ctx, const v1::CreateFineTuneJobRequest* req,
                                 v1::FineTuneJob* resp) override;
  grpc::Status GetFineTuneJob(grpc::ServerContext* ctx, const v1::GetFineTuneJobRequest* req,
                              v1::FineTuneJob* resp) override;
  grpc::Status ListFineTuneJobs(grpc::ServerContext* ctx, const v1::ListFineTuneJobsRequest* req,
                                v1::ListFineTuneJobsResponse* resp) override;
  grpc::Status WatchFineTuneJob(grpc::ServerContext* ctx, const v1::WatchFineTuneJobRequest* req,
                                grpc::ServerWriter<v1::FineTuneProgress>* writer) override;
  grpc::Status CancelFineTuneJob(grpc::ServerContext* ctx, const v1::CancelFineTuneJobRequest* req,
                                 v1::FineTuneJob* resp) override;
  grpc::Status ListAdapters(grpc::ServerContext* ctx, const v1::ListAdaptersRequest* req,
                            v1::ListAdaptersResponse* resp) override;
  grpc::Status LoadAdapter(grpc::ServerContext* ctx, const v1::LoadAdapterRequest* req, v1::Adapter* resp) override;
  grpc::Status UnloadAdapter(grpc::ServerContext* ctx, const v1::UnloadAdapterRequest* req,
                             v1::UnloadAdapterResponse* resp) override;

 private:
  // The request as a job spec: hyper-parameters with their defaults, data as token documents.
  absl::StatusOr<FineTuneSpec> ToSpec(const v1::CreateFineTuneJobRequest& req) const;
  grpc::Status Admit(grpc::ServerContext* ctx) const;

  FineTuneJobs& jobs_;
  AdapterRegistry& registry_;
  const Tokenizer* tokenizer_;
  const FineTuneServiceOptions options_;
};

// The defaults the proto documents for unset hyper-parameters, and the method; INVALID_ARGUMENT
// for an unknown method or target module (range checks are ValidateTrainOptions', at Create).
absl::StatusOr<TrainOptions> TrainOptionsFromProto(v1::FineTuneMethod method, const v1::FineTuneHyperParameters& hp);

}  // namespace gla
