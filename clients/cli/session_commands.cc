#include "clients/cli/session_commands.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>

#include "clients/cli/grpc_status.h"
#include "clients/common/connection.h"
#include "gla/v1/gla.grpc.pb.h"
#include "models/status_macros.h"

namespace gla {

namespace {

void PrintSession(const v1::Session& s) {
  std::printf("%s tokens=%llu location=%s%s%s%s\n", s.session_id().c_str(), static_cast<unsigned long long>(s.tokens()),
              s.location().c_str(), s.busy() ? " busy" : "", s.adapter().empty() ? "" : " adapter=", s.adapter().c_str());
}

}  // namespace

absl::Status RunSessionCommand(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(const Connection conn, Connect(a));
  auto stub = v1::Gla::NewStub(conn.channel);
  grpc::ClientContext ctx;
  // The session the call is about (a fork's source: where its state is) goes to the proxy too.
  conn.Prepare(ctx, a.Has("from") ? a.flags.at("from") : a.Has("id") ? a.flags.at("id") : "");
  if (a.command == "session-create" || a.command == "session-fork") {
    v1::Session s;
    int64_t ttl = -1;
    if (a.Has("ttl-s")) {
      ASSIGN_OR_RETURN(int t, a.Int("ttl-s", 0, 0));
      ttl = t;
    }
    if (a.command == "session-create") {
      v1::CreateSessionRequest req;
      if (a.Has("id")) req.set_session_id(a.flags.at("id"));
      if (ttl >= 0) req.set_ttl_s(ttl);
      RETURN_IF_ERROR(FromGrpc(stub->CreateSession(&ctx, req, &s)));
    } else {
      v1::ForkSessionRequest req;
      ASSIGN_OR_RETURN(std::string from, a.Required("from"));
      req.set_source_session_id(from);
      if (a.Has("id")) req.set_session_id(a.flags.at("id"));
      if (ttl >= 0) req.set_ttl_s(ttl);
      RETURN_IF_ERROR(FromGrpc(stub->ForkSession(&ctx, req, &s)));
    }
    std::printf("%s\n", s.session_id().c_str());
  } else if (a.command == "session-delete") {
    v1::DeleteSessionRequest req;
    ASSIGN_OR_RETURN(std::string id, a.Required("id"));
    req.set_session_id(id);
    v1::DeleteSessionResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->DeleteSession(&ctx, req, &resp)));
  } else {
    v1::ListSessionsResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->ListSessions(&ctx, {}, &resp)));
    for (const v1::Session& s : resp.sessions()) PrintSession(s);
  }
  return absl::OkStatus();
}

}  // namespace gla
