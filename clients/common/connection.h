// How a client reaches glad: plaintext, or TLS verified against a CA file (--tls-ca FILE) or the
// system's roots (--tls 1); and the bearer token glad may require (--token, or GLA_TOKEN in the
// environment, which keeps it off the command line), sent with every call.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "clients/common/args.h"

namespace gla {

// The header (gRPC metadata) naming the session a call is about; proxies hash it (issue 22).
inline constexpr char kSessionHeader[] = "x-gla-session";

struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::string token;
  // Adds the token (when there is one) to a call's metadata, and the session the call is about
  // (when there is one) as kSessionHeader: a proxy in front of replicas (deploy/nginx/gla.conf)
  // sends every call about one session to the same replica.
  void Prepare(grpc::ClientContext& ctx, const std::string& session = "") const;
};

// From --addr and the flags above; INVALID_ARGUMENT for an unreadable CA file.
absl::StatusOr<Connection> Connect(const ParsedArgs& a);

// The flags Connect reads, to add to every command's table.
const std::vector<FlagSpec>& ConnectionFlags();

}  // namespace gla
