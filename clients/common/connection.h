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
  std::string address;  // the replica this connection reaches (one of --addr's)
  std::string token;
  // Adds the token (when there is one) to a call's metadata, and the session the call is about
  // (when there is one) as kSessionHeader: a proxy in front of replicas (deploy/nginx/gla.conf)
  // sends every call about one session to the same replica.
  void Prepare(grpc::ClientContext& ctx, const std::string& session = "") const;
};

// From --addr and the flags above; INVALID_ARGUMENT for an unreadable CA file. --addr may list
// replicas (comma-separated, or dns:///NAME:PORT for every address NAME resolves to, e.g. a headless
// Service's endpoints): a call about a session (--session, --from, --id) goes to PickReplica's choice
// for it, any other to a random one.
absl::StatusOr<Connection> Connect(const ParsedArgs& a);

// The replica for a session by rendezvous hashing (FNV-1a 64 of "SESSION\nREPLICA" through MurmurHash3's
// finalizer, highest wins): the
// same for every client, and a replica taken away moves only its own sessions; a random one without
// a session.
std::string PickReplica(const std::vector<std::string>& replicas, const std::string& session);

// --addr's replicas: each HOST:PORT as given, and each dns:///NAME:PORT resolved (every A and AAAA
// record of NAME, e.g. a headless Service's ready pods) into IP:PORT entries, so that every
// client hashing sessions over them picks from the same set (duplicates removed; rendezvous hashing
// does not depend on the order). UNAVAILABLE when a name resolves to nothing.
absl::StatusOr<std::vector<std::string>> ExpandReplicas(const std::vector<std::string>& addresses);

// The flags Connect reads, to add to every command's table.
const std::vector<FlagSpec>& ConnectionFlags();

}  // namespace gla
