#include "clients/common/connection.h"

#include <cstdlib>
#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gla {

void Connection::Prepare(grpc::ClientContext& ctx, const std::string& session) const {
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  if (!session.empty()) ctx.AddMetadata(kSessionHeader, session);
}

const std::vector<FlagSpec>& ConnectionFlags() {
  static const std::vector<FlagSpec> flags = {
      {"addr", "HOST:PORT", "glad's address; several, comma-separated: replicas, the one for a session picked by its hash", ""},
      {"tls", "0|1", "TLS, verifying glad's certificate against the system's roots", "0"},
      {"tls-ca", "FILE", "TLS, verifying glad's certificate against this CA file", ""},
      {"token", "TOKEN", "bearer token glad requires", "$GLA_TOKEN"},
  };
  return flags;
}

std::string PickReplica(const std::vector<std::string>& replicas, const std::string& session) {
  if (replicas.size() == 1) return replicas[0];
  if (session.empty()) return replicas[std::random_device()() % replicas.size()];
  // Rendezvous hashing: the replica whose hash with the session is highest. Every client finds the
  // same one, and taking a replica away moves only its own sessions. FNV-1a, 64 bits: defined
  // here, not by a standard library, so other clients can compute it too.
  auto fnv = [](const std::string& text) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
    return h;
  };
  std::string best;
  uint64_t best_score = 0;
  for (const std::string& r : replicas) {
    const uint64_t score = fnv(session + "\n" + r);
    if (best.empty() || score > best_score) best = r, best_score = score;
  }
  return best;
}

absl::StatusOr<Connection> Connect(const ParsedArgs& a) {
  auto addr = a.Required("addr");
  if (!addr.ok()) return addr.status();
  std::vector<std::string> replicas = absl::StrSplit(*addr, ',', absl::SkipWhitespace());
  if (replicas.empty()) return absl::InvalidArgumentError("--addr names no address");
  // The session the call is about (a fork's source: where its state is).
  const std::string session = a.Has("session") ? a.flags.at("session")
                              : a.Has("from")  ? a.flags.at("from")
                              : a.Has("id")    ? a.flags.at("id")
                                               : "";
  Connection c;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  const bool tls = a.Has("tls-ca") || (a.Has("tls") && a.flags.at("tls") != "0");
  if (tls) {
    grpc::SslCredentialsOptions o;
    if (a.Has("tls-ca")) {
      std::ifstream in(a.flags.at("tls-ca"), std::ios::binary);
      if (!in) return absl::InvalidArgumentError(absl::StrCat("--tls-ca ", a.flags.at("tls-ca"), ": cannot read it"));
      std::stringstream ss;
      ss << in.rdbuf();
      o.pem_root_certs = ss.str();
    }
    creds = grpc::SslCredentials(o);
  }
  c.address = PickReplica(replicas, session);
  c.channel = grpc::CreateChannel(c.address, creds);
  if (a.Has("token")) {
    c.token = a.flags.at("token");
  } else if (const char* env = std::getenv("GLA_TOKEN"); env != nullptr) {
    c.token = env;
  }
  return c;
}

}  // namespace gla
