// The gla.v1.Gla service over the callback API: a thin adapter over the front door
// (server/front_door.h), one reactor per call. Reactors never block: they translate the request,
// hand it to the front door and return; the scheduler's updates are written back as they come
// (unary: collected into one response).
#pragma once

#include <string>

#include "gla/v1/gla.grpc.pb.h"
#include "server/front_door.h"
#include "server/grpc_admission.h"

namespace gla {

class GlaService final : public v1::Gla::CallbackService {
 public:
  explicit GlaService(FrontDoor& door) : door_(door) {}

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
  // Sessions (gla_service_sessions.cc): run on the session's engine's loop thread, answered from there.
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx, const v1::CreateSessionRequest* req,
                                          v1::Session* resp) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx, const v1::DeleteSessionRequest* req,
                                          v1::DeleteSessionResponse* resp) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx, const v1::ListSessionsRequest* req,
                                         v1::ListSessionsResponse* resp) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* ctx, const v1::ForkSessionRequest* req,
                                        v1::Session* resp) override;

  // Shared by the reactors (gla_service.cc, gla_service_sessions.cc).
  FrontDoor& door() { return door_; }
  EngineSet& engines() { return door_.engines(); }
  const ServerLimits& limits() const { return door_.limits(); }
  const ServiceInfo& info() const { return door_.info(); }
  // The front door's verdict on a call (OK without a guard).
  absl::Status Admit(const grpc::CallbackServerContext& ctx) const {
    return door_.Admit(AuthorizationOf(ctx.client_metadata()), ctx.peer());
  }

 private:
  FrontDoor& door_;
};

}  // namespace gla
