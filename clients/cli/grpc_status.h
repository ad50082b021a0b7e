// A gRPC status as absl::Status (same code and message), for gla-cli's commands.
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace gla {

inline absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace gla
