#include "server/request_guard.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gla {

namespace {

// Compares without an early exit, so the time taken does not tell how much of a guess was right.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

constexpr size_t kMaxClients = 100000;  // buckets kept; full (idle) ones are dropped beyond it

}  // namespace

std::string PeerAddress(std::string_view peer) {
  const size_t colon = peer.rfind(':');
  const size_t scheme = peer.find(':');
  if (colon == std::string_view::npos || colon == scheme) return std::string(peer);  // no port (unix:...)
  return std::string(peer.substr(0, colon));
}

RequestGuard::RequestGuard(GuardOptions options) : options_(std::move(options)) {
  if (options_.rate_per_s > 0 && options_.burst <= 0) options_.burst = std::max(1.0, options_.rate_per_s);
}

absl::Status RequestGuard::Authenticate(std::optional<std::string_view> authorization) const {
  if (options_.token.empty()) return absl::OkStatus();
  const std::string_view got = authorization.value_or(std::string_view());
  constexpr std::string_view kBearer = "Bearer ";
  if (got.substr(0, kBearer.size()) != kBearer || !SameSecret(got.substr(kBearer.size()), options_.token))
    return absl::UnauthenticatedError(!authorization.has_value()
                                          ? "this server requires a bearer token ('authorization: Bearer <token>')"
                                          : "the bearer token is not this server's");
  return absl::OkStatus();
}

absl::Status RequestGuard::Admit(std::optional<std::string_view> authorization, std::string_view peer,
                                 Clock::time_point now) {
  if (absl::Status s = Authenticate(authorization); !s.ok()) return s;
  if (options_.rate_per_s > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    if (buckets_.size() >= kMaxClients) {
      for (auto it = buckets_.begin(); it != buckets_.end();) {
        const double refill = std::chrono::duration<double>(now - it->second.last).count() * options_.rate_per_s;
        it = it->second.tokens + refill >= options_.burst ? buckets_.erase(it) : std::next(it);
      }
    }
    auto [it, fresh] = buckets_.try_emplace(PeerAddress(peer), Bucket{options_.burst, now});
    Bucket& b = it->second;
    if (!fresh) {
      b.tokens = std::min(options_.burst,
                          b.tokens + std::chrono::duration<double>(now - b.last).count() * options_.rate_per_s);
      b.last = now;
    }
    if (b.tokens < 1.0)
      return absl::ResourceExhaustedError(absl::StrCat("rate limit: ", options_.rate_per_s,
                                                       " requests/s per client (burst ", options_.burst, ")"));
    b.tokens -= 1.0;
  }
  return absl::OkStatus();
}

}  // namespace gla
