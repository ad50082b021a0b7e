#include "clients/common/connection.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
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
  // same one, and taking a replica away moves only its own sessions. FNV-1a, 64 bits, through
  // MurmurHash3's finalizer (FNV-1a alone leaves the replica's last bytes in the low bits, which
  // skews the highest score): defined here, not by a standard library, so other clients can
  // compute it too (the Python client's pick_replica does).
  auto fnv = [](const std::string& text) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
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

absl::StatusOr<std::vector<std::string>> ExpandReplicas(const std::vector<std::string>& addresses) {
  constexpr std::string_view kDns = "dns:///";
  std::vector<std::string> out;
  for (const std::string& a : addresses) {
    if (a.rfind(kDns, 0) != 0) {
      out.push_back(a);
      continue;
    }
    const std::string target = a.substr(kDns.size());
    const size_t colon = target.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == target.size())
      return absl::InvalidArgumentError(absl::StrCat("--addr ", a, ": expected dns:///NAME:PORT"));
    const std::string name = target.substr(0, colon), port = target.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = getaddrinfo(name.c_str(), port.c_str(), &hints, &found); rc != 0)
      return absl::UnavailableError(absl::StrCat("--addr ", a, ": cannot resolve ", name, " (", gai_strerror(rc), ")"));
    std::vector<std::string> resolved;
    for (addrinfo* p = found; p != nullptr; p = p->ai_next) {
      char ip[INET6_ADDRSTRLEN] = {};
      if (p->ai_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(p->ai_addr)->sin_addr, ip, sizeof(ip));
        resolved.push_back(absl::StrCat(ip, ":", port));
      } else if (p->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(p->ai_addr)->sin6_addr, ip, sizeof(ip));
        resolved.push_back(absl::StrCat("[", ip, "]:", port));
      }
    }
    freeaddrinfo(found);
    if (resolved.empty()) return absl::UnavailableError(absl::StrCat("--addr ", a, ": ", name, " has no address"));
    out.insert(out.end(), resolved.begin(), resolved.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

absl::StatusOr<Connection> Connect(const ParsedArgs& a) {
  auto addr = a.Required("addr");
  if (!addr.ok()) return addr.status();
  absl::StatusOr<std::vector<std::string>> replicas =
      ExpandReplicas(absl::StrSplit(*addr, ',', absl::SkipWhitespace()));
  if (!replicas.ok()) return replicas.status();
  if (replicas->empty()) return absl::InvalidArgumentError("--addr names no address");
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
  c.address = PickReplica(*replicas, session);
  c.channel = grpc::CreateChannel(c.address, creds);
  if (a.Has("token")) {
    c.token = a.flags.at("token");
  } else if (const char* env = std::getenv("GLA_TOKEN"); env != nullptr) {
    c.token = env;
  }
  return c;
}

}  // namespace gla
