// The session RPCs of gla.v1.Gla. The scheduler's loop thread owns the sessions, so each call
// posts its work there and the reactor finishes from that thread (nothing here blocks a gRPC
// thread); a call waits at most for the step in progress.
#include "server/gla_service.h"

#include "server/grpc_status.h"

namespace gla {

namespace {

void ToProto(const SessionInfo& i, v1::Session* out) {
  out->set_session_id(i.id);
  out->set_tokens(static_cast<uint64_t>(i.tokens));
  out->set_adapter(i.adapter);
  out->set_location(i.where);
  out->set_busy(i.busy);
  out->set_create_time_s(i.created_unix_s);
  out->set_last_used_time_s(i.last_used_unix_s);
  out->set_expire_time_s(i.expires_unix_s);
  out->set_ttl_s(i.ttl_s);
}

// What CreateSession and ForkSession answer with, from the loop thread.
Scheduler::SessionDone Reply(grpc::ServerUnaryReactor* reactor, v1::Session* resp) {
  return [reactor, resp](absl::StatusOr<SessionInfo> info) {
    if (info.ok()) ToProto(*info, resp);
    reactor->Finish(info.ok() ? grpc::Status::OK : ToGrpcStatus(info.status()));
  };
}

absl::Status CheckTtl(bool has, int64_t ttl) {
  if (has && ttl < 0) return absl::InvalidArgumentError("ttl_s: must be >= 0 (0 = never expires)");
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* GlaService::CreateSession(grpc::CallbackServerContext* ctx, const v1::CreateSessionRequest* req,
                                                    v1::Session* resp) {
  auto* reactor = ctx->DefaultReactor();
  absl::Status ok = Admit(*ctx);
  if (ok.ok()) ok = CheckTtl(req->has_ttl_s(), req->ttl_s());
  if (!ok.ok()) {
    reactor->Finish(ToGrpcStatus(ok));
    return reactor;
  }
  engines().CreateSession(req->session_id(), req->has_ttl_s() ? req->ttl_s() : -1, Reply(reactor, resp));
  return reactor;
}

grpc::ServerUnaryReactor* GlaService::ForkSession(grpc::CallbackServerContext* ctx, const v1::ForkSessionRequest* req,
                                                  v1::Session* resp) {
  auto* reactor = ctx->DefaultReactor();
  absl::Status ok = Admit(*ctx);
  if (ok.ok()) ok = CheckTtl(req->has_ttl_s(), req->ttl_s());
  if (ok.ok() && req->source_session_id().empty())
    ok = absl::InvalidArgumentError("source_session_id: name the session to fork");
  if (!ok.ok()) {
    reactor->Finish(ToGrpcStatus(ok));
    return reactor;
  }
  engines().ForkSession(req->source_session_id(), req->session_id(), req->has_ttl_s() ? req->ttl_s() : -1,
                         Reply(reactor, resp));
  return reactor;
}

grpc::ServerUnaryReactor* GlaService::DeleteSession(grpc::CallbackServerContext* ctx, const v1::DeleteSessionRequest* req,
                                                    v1::DeleteSessionResponse*) {
  auto* reactor = ctx->DefaultReactor();
  if (absl::Status ok = Admit(*ctx); !ok.ok()) {
    reactor->Finish(ToGrpcStatus(ok));
    return reactor;
  }
  engines().DeleteSession(req->session_id(), [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); });
  return reactor;
}

grpc::ServerUnaryReactor* GlaService::ListSessions(grpc::CallbackServerContext* ctx, const v1::ListSessionsRequest*,
                                                   v1::ListSessionsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  if (absl::Status ok = Admit(*ctx); !ok.ok()) {
    reactor->Finish(ToGrpcStatus(ok));
    return reactor;
  }
  engines().ListSessions([reactor, resp](absl::StatusOr<std::vector<SessionInfo>> list) {
    if (list.ok())
      for (const SessionInfo& i : *list) ToProto(i, resp->add_sessions());
    reactor->Finish(list.ok() ? grpc::Status::OK : ToGrpcStatus(list.status()));
  });
  return reactor;
}

}  // namespace gla
