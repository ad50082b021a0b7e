// gRPC calls through the front door's RequestGuard: the `authorization` metadata and the peer
// handed over in the guard's neutral terms.
#pragma once

#include <map>
#include <optional>
#include <string_view>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "server/request_guard.h"

namespace gla {

// The `authorization` metadata's value; nullopt when the call has none.
std::optional<std::string_view> AuthorizationOf(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

// The guard's verdict on a call (OK without a guard).
absl::Status AdmitCall(RequestGuard* guard, const grpc::ServerContextBase& ctx);

}  // namespace gla
