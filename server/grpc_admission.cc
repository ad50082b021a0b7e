#include "server/grpc_admission.h"

namespace gla {

std::optional<std::string_view> AuthorizationOf(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return std::string_view(it->second.data(), it->second.size());
}

absl::Status AdmitCall(RequestGuard* guard, const grpc::ServerContextBase& ctx) {
  if (guard == nullptr) return absl::OkStatus();
  return guard->Admit(AuthorizationOf(ctx.client_metadata()), ctx.peer());
}

}  // namespace gla
