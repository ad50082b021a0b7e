// RequestGuard: the bearer token (exact, "Bearer " prefixed, compared in full) and the per-client
// token bucket (per address, not per port; refills with time; burst), on explicit clocks.
#include "server/request_guard.h"

#include <gtest/gtest.h>

namespace gla {
namespace {

using Authorization = std::optional<std::string_view>;
using Clock = RequestGuard::Clock;

TEST(RequestGuard, TokenMustBeExactlyTheConfiguredBearer) {
  RequestGuard g({"s3cret", 0, 0});
  EXPECT_TRUE(g.authenticates());
  const auto now = Clock::now();
  EXPECT_EQ(g.Admit(Authorization{}, "ipv4:1.2.3.4:5", now).code(), absl::StatusCode::kUnauthenticated);
  for (const char* bad : {"s3cret", "Bearer s3cre", "Bearer s3cret ", "Bearer S3CRET", "bearer s3cret", "Bearer "}) {
    EXPECT_EQ(g.Admit(Authorization(bad), "ipv4:1.2.3.4:5", now).code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  EXPECT_TRUE(g.Admit(Authorization("Bearer s3cret"), "ipv4:1.2.3.4:5", now).ok());
  RequestGuard open({"", 0, 0});
  EXPECT_FALSE(open.authenticates());
  EXPECT_TRUE(open.Admit(Authorization{}, "ipv4:1.2.3.4:5", now).ok());
}

TEST(RequestGuard, RateLimitIsPerClientAddressWithBurstAndRefill) {
  RequestGuard g({"", 2.0, 3.0});  // 2 requests/s, 3 at once
  const auto t0 = Clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(g.Admit(Authorization{}, "ipv4:10.0.0.1:" + std::to_string(1000 + i), t0).ok());
  const absl::Status over = g.Admit(Authorization{}, "ipv4:10.0.0.1:2000", t0);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << "a new port is the same client";
  EXPECT_NE(over.message().find("rate limit"), std::string::npos) << over;
  EXPECT_TRUE(g.Admit(Authorization{}, "ipv4:10.0.0.2:1000", t0).ok()) << "another client has its own bucket";
  EXPECT_TRUE(g.Admit(Authorization{}, "ipv4:10.0.0.1:1", t0 + std::chrono::milliseconds(500)).ok()) << "one refilled";
  EXPECT_FALSE(g.Admit(Authorization{}, "ipv4:10.0.0.1:1", t0 + std::chrono::milliseconds(500)).ok());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(g.Admit(Authorization{}, "ipv4:10.0.0.1:1", t0 + std::chrono::seconds(10)).ok());
  EXPECT_FALSE(g.Admit(Authorization{}, "ipv4:10.0.0.1:1", t0 + std::chrono::seconds(10)).ok()) << "never above the burst";
}

TEST(RequestGuard, PeerAddressDropsThePortOnly) {
  EXPECT_EQ(PeerAddress("ipv4:10.0.0.7:53211"), "ipv4:10.0.0.7");
  EXPECT_EQ(PeerAddress("ipv6:[::1]:4000"), "ipv6:[::1]");
  EXPECT_EQ(PeerAddress("unix:/tmp/sock"), "unix:/tmp/sock");
}

}  // namespace
}  // namespace gla
