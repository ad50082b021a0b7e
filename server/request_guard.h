// Who may call glad, and how often: the bearer token every RPC must carry when one is configured
// (--auth_token; gRPC health stays open for load balancers and probes), and a per-client request
// rate (a token bucket per peer address: --rate_limit requests/s, --rate_limit_burst at once).
// The front door calls Admit() first for every request, before it reads it; the protocol
// adapters hand it the request's `authorization` header or metadata and the peer
// (server/grpc_admission.h for gRPC). No protocol type appears here.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <optional>

#include "absl/status/status.h"

namespace gla {

struct GuardOptions {
  std::string token;        // empty: no authentication
  double rate_per_s = 0.0;  // <= 0: no rate limit
  double burst = 0.0;       // bucket size; <= 0: max(1, rate_per_s)
};

class RequestGuard {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RequestGuard(GuardOptions options);

  // OK; UNAUTHENTICATED when the token is set and `authorization` (the header's value; nullopt:
  // none sent) is not "Bearer <token>"; RESOURCE_EXHAUSTED when the peer (its address without the
  // port) is over its rate.
  absl::Status Admit(std::optional<std::string_view> authorization, std::string_view peer,
                     Clock::time_point now = Clock::now());
  // The token check alone (no rate accounting): OK or UNAUTHENTICATED.
  absl::Status Authenticate(std::optional<std::string_view> authorization) const;

  bool authenticates() const { return !options_.token.empty(); }

 private:
  struct Bucket {
    double tokens = 0.0;
    Clock::time_point last;
  };
  GuardOptions options_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

// "ipv4:10.0.0.7:53211" -> "ipv4:10.0.0.7", "ipv6:[::1]:4000" -> "ipv6:[::1]": one client, many ports.
std::string PeerAddress(std::string_view peer);

}  // namespace gla
