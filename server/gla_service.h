// The gla.v1.Gla service over the callback API: one reactor per call. Reactors never block:
// they validate, hand the request to the Scheduler and return; the scheduler's updates are
// written back as they come (unary: collected into one response).
#pragma once

#include <atomic>
#include <string>

#include "engine/adapter_registry.h"
#include "engine/scheduler.h"
#include "gla/v1/gla.grpc.pb.h"
#include "server/metrics.h"
#include "server/request_guard.h"
#include "server/request_validation.h"

namespace gla {

struct ServiceInfo {
  std::string model_dir;
  int queue_size = 0;
  int step_token_budget = 0;
  const AdapterRegistry* adapters = nullptr;  // GenerateRequest.adapter names one of these
  RequestGuard* guard = nullptr;               // token and rate checks on every RPC (null: none)
  ServerMetrics* metrics = nullptr;            // request counters and latencies (null: none)
  int prefix_cache_block = 0;                  // tokens per cached prefix block (ModelInfo)
};

class GlaService final : public v1::Gla::CallbackService {
 public:
  GlaService(Scheduler& scheduler, const ServerLimits& limits, const ServiceInfo& info)
      : scheduler_(scheduler), limits_(limits), info_(info) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req,
                                     v1::GenerateResponse* resp) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(grpc::CallbackServerContext* ctx,
                                                                       const v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx, const v1::DetokenizeRequest* req,
                                       v1::DetokenizeResponse* resp) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* ctx, const v1::ModelInfoRequest* req,
                                      v1::ModelInfoResponse* resp) override;
  // Sessions (gla_service_sessions.cc): run on the scheduler's loop thread, answered from there.
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx, const v1::CreateSessionRequest* req,
                                          v1::Session* resp) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx, const v1::DeleteSessionRequest* req,
                                          v1::DeleteSessionResponse* resp) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx, const v1::ListSessionsRequest* req,
                                         v1::ListSessionsResponse* resp) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* ctx, const v1::ForkSessionRequest* req,
                                        v1::Session* resp) override;

  // Shared by the reactors (gla_service.cc).
  Scheduler& scheduler() { return scheduler_; }
  const ServerLimits& limits() const { return limits_; }
  const ServiceInfo& info() const { return info_; }
  std::string NextRequestId() { return "req-" + std::to_string(++next_id_); }
  // The guard's verdict on a call (OK without a guard).
  absl::Status Admit(const grpc::CallbackServerContext& ctx) const {
    return info_.guard != nullptr ? info_.guard->Admit(ctx.client_metadata(), ctx.peer()) : absl::OkStatus();
  }

 private:
  Scheduler& scheduler_;
  const ServerLimits limits_;
  const ServiceInfo info_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace gla
