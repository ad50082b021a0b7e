// The gRPC side of a generation request: gla.v1.GenerateRequest -> the front door's GenerateCall.
#pragma once

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "gla/v1/gla.pb.h"
#include "server/generate_call.h"
#include "server/request_validation.h"

namespace gla {

// Only what the proto alone can get wrong is refused here (an enum value it does not define);
// everything else is the front door's to check.
absl::StatusOr<GenerateCall> GenerateCallFromProto(const v1::GenerateRequest& req);

// GenerateCallFromProto, then ValidateGenerateCall (what the fuzz harness and the tests drive).
absl::StatusOr<GenerationSpec> ValidateGenerateRequest(const v1::GenerateRequest& req, const Backend& backend,
                                                       const ServerLimits& limits);

}  // namespace gla
