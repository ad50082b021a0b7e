#include "server/grpc_status.h"

#include "models/excerpt.h"
#include "server/front_door.h"

namespace gla {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), Excerpt(s.message(), kMaxStatusMessageBytes));
}

const char* GrpcCodeName(grpc::StatusCode code) { return StatusCodeName(static_cast<absl::StatusCode>(code)); }

}  // namespace gla
