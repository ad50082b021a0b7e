// What gRPC answers on its own before a handler runs, made to say what happened.
//
// A request whose bytes do not parse never reaches our handlers: gRPC's callback API ends such a
// call with UNIMPLEMENTED and an empty message (the token check in the handler never runs
// either). This interceptor, on every call of the server, sees that the request did not
// deserialize and rewrites the status the client gets: UNAUTHENTICATED when the server wants a
// bearer token and the call has none that matches (health excepted: it is open for probes),
// else INVALID_ARGUMENT naming the method.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include "server/request_guard.h"

namespace gla {

class CallInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallInterceptorFactory(const RequestGuard* guard) : guard_(guard) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  const RequestGuard* guard_;  // null: no token to check
};

}  // namespace gla
