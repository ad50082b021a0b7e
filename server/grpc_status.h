// absl::Status -> grpc::Status, and gRPC codes by name: the one mapping every service, the request
// guard and the call interceptor answer with, so that a refusal reads the same whichever of them
// sends it.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace gla {

// The same code (Abseil's codes are gRPC's) and the message, bounded to kMaxStatusMessageBytes
// (models/excerpt.h): a message too large for the trailers would reach the client as
// RESOURCE_EXHAUSTED instead of the error.
grpc::Status ToGrpcStatus(const absl::Status& s);

// "OK", "INVALID_ARGUMENT", ...: the code's name, as metrics and logs label requests; "UNKNOWN"
// for a number gRPC does not define.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace gla
