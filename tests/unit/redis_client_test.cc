// The shared state tier's Redis client (engine/sessions/redis_client.h) against a real
// redis-server (Debian's, started here on loopback): values, expiry, leases (one owner at a time,
// free again after expiry, even under threads racing for one), and a store that is gone or slow:
// UNAVAILABLE naming the store within the timeout, and back to work when the store is.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "engine/sessions/redis_client.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using Clock = std::chrono::steady_clock;
using testing::FreePort;
using testing::RedisServer;

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(std::system("command -v redis-server > /dev/null"), 0)
        << "redis-server is not installed (deploy/install-deps.sh installs it)";
    server_ = std::make_unique<RedisServer>(FreePort());
    ASSERT_TRUE(server_->Ready()) << "redis-server did not start on port " << server_->port();
  }
  RedisAddress Address() const { return {"127.0.0.1", server_->port(), 0}; }
  std::unique_ptr<RedisServer> server_;
};

TEST(RedisUrl, ParsesHostPortDatabaseAndRefusesTheRestByName) {
  auto a = ParseRedisUrl("redis://cache.internal:6380/3");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "cache.internal");
  EXPECT_EQ(a->port, 6380);
  EXPECT_EQ(a->db, 3);
  a = ParseRedisUrl("redis://10.0.0.7");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->port, 6379);
  EXPECT_EQ(a->db, 0);
  a = ParseRedisUrl("redis://[::1]:7000");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 7000);
  for (const char* bad : {"http://x:1", "redis://", "redis://:6379", "redis://h:0", "redis://h:70000", "redis://h:12x",
                          "redis://h/16", "redis://h/-1", "redis://[::1", "redis://[::1]x", "redis://[]:1", "redis://user:pw@h:1", "redis://h:1?timeout=3"}) {
    auto r = ParseRedisUrl(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(std::string(r.status().message()).find(bad), std::string::npos) << r.status();
  }
}

TEST_F(RedisClientTest, ValuesAreBinarySafeAndExpire) {
  RedisClient c(Address());
  std::string state(3 << 20, '\0');  // a few MiB of state with every byte value in it
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<char>(i * 131 % 256);
  ASSERT_TRUE(c.Put("session:a", state).ok());
  auto got = c.Get("session:a");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, state);
  EXPECT_FALSE(c.Get("session:none")->has_value());
  ASSERT_TRUE(c.Delete("session:a").ok());
  EXPECT_FALSE(c.Get("session:a")->has_value());
  ASSERT_TRUE(c.Put("prefix:p", "x", /*ttl_ms=*/100).ok());
  EXPECT_TRUE(c.Get("prefix:p")->has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_FALSE(c.Get("prefix:p")->has_value());
}

// Large values in ranges: sizes on and around the range's boundary, every byte value, the expiry
// set, a missing key, and a value overwritten whole by a shorter one (no stale tail).
TEST_F(RedisClientTest, LargeValuesGoInRangesWholeAndExact) {
  RedisClient c(Address());
  const size_t r = RedisClient::kRangeBytes;
  for (size_t size : {size_t{1}, r - 1, r, r + 1, 5 * r + 12345}) {
    std::string v(size, '\0');
    for (size_t i = 0; i < size; ++i) v[i] = static_cast<char>((i * 131 + size) % 256);
    ASSERT_TRUE(c.PutInRanges("big", v, 60000).ok()) << size;
    auto got = c.GetInRanges("big");
    ASSERT_TRUE(got.ok() && got->has_value()) << size;
    EXPECT_EQ(**got, v) << size;
  }
  // Over several connections at once: the same bytes (the last value written above).
  RedisClient c2(Address()), c3(Address());
  const std::string big(7 * r + 999, 'q');
  ASSERT_TRUE(c.PutInRanges("big", big, 60000).ok());
  for (const std::vector<RedisClient*>& over : {std::vector<RedisClient*>{&c}, {&c, &c2}, {&c, &c2, &c3}}) {
    auto got = RedisClient::GetInRanges(over, "big");
    ASSERT_TRUE(got.ok() && got->has_value()) << over.size();
    EXPECT_EQ(**got, big) << over.size();
  }
  EXPECT_FALSE(RedisClient::GetInRanges({&c, &c2}, "nothing")->has_value());
  // A value longer than the caller expects is refused before it is read.
  EXPECT_EQ(c.GetInRanges("big", big.size() - 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(RedisClient::GetInRanges({&c, &c2}, "big", 100).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(c.GetInRanges("big", big.size()).ok());
  auto ttl = c.Eval("return redis.call('PTTL', KEYS[1])", {"big"}, {});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 50000);
  EXPECT_LE(ttl->integer, 60000);
  ASSERT_TRUE(c.PutInRanges("big", "short", 60000).ok());
  EXPECT_EQ(c.GetInRanges("big")->value_or(""), "short");
  EXPECT_FALSE(c.GetInRanges("nothing")->has_value());
  EXPECT_EQ(c.PutInRanges("big", "", 60000).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.PutInRanges("big", "x", 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RedisClientTest, ALeaseHasOneOwnerAndIsFreeAgainAfterItsTime) {
  RedisClient a(Address()), b(Address());
  EXPECT_TRUE(*a.Acquire("lease:s", "replica-a", 60000));
  EXPECT_FALSE(*b.Acquire("lease:s", "replica-b", 60000));
  EXPECT_TRUE(*a.Acquire("lease:s", "replica-a", 60000)) << "its owner renews it";
  EXPECT_FALSE(*b.Release("lease:s", "replica-b")) << "only the owner gives it back";
  EXPECT_TRUE(*a.Release("lease:s", "replica-a"));
  EXPECT_TRUE(*b.Acquire("lease:s", "replica-b", 150));
  EXPECT_FALSE(*a.Acquire("lease:s", "replica-a", 60000));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // replica-b died: its lease runs out
  EXPECT_TRUE(*a.Acquire("lease:s", "replica-a", 60000));
  EXPECT_EQ(a.Acquire("lease:s", "replica-a", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RedisClientTest, ThreadsRacingForOneLeaseGetOneOwner) {
  for (int round = 0; round < 20; ++round) {
    const std::string key = "lease:race" + std::to_string(round);
    std::atomic<int> won{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        RedisClient c(Address());
        auto r = c.Acquire(key, "owner-" + std::to_string(t), 60000);
        if (r.ok() && *r) ++won;
      });
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(won.load(), 1) << key;
  }
}

TEST_F(RedisClientTest, AStoreThatIsGoneIsUnavailableAndTheClientReconnectsWhenItIsBack) {
  RedisOptions fast;
  fast.connect_timeout_s = 0.5;
  fast.command_timeout_s = 0.5;
  fast.retry_after_s = 0;  // asked again at once (the interval has its own test below)
  RedisClient c(Address(), fast);
  ASSERT_TRUE(c.Put("k", "v").ok());
  server_->Stop(SIGKILL);
  const auto t0 = Clock::now();
  auto r = c.Get("k");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(r.status().message()).find(std::to_string(server_->port())), std::string::npos) << r.status();
  EXPECT_EQ(c.Ping().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  server_->Start();  // a new, empty Redis on the same port
  ASSERT_TRUE(server_->Ready());
  EXPECT_TRUE(c.Ping().ok());
  EXPECT_FALSE(c.Get("k")->has_value()) << "nothing was kept: this Redis persists nothing";
}

// A store restarted under an open connection: the next large write meets a closed socket after its
// first chunk. That is an UNAVAILABLE (then a new connection), not a SIGPIPE that ends the process.
TEST_F(RedisClientTest, AWriteToAStoreThatWentAwayIsAnErrorNotASignal) {
  RedisOptions retry_at_once;
  retry_at_once.retry_after_s = 0;
  RedisClient c(Address(), retry_at_once);
  ASSERT_TRUE(c.Put("k", "v").ok());
  server_->Stop(SIGKILL);
  server_->Start();
  ASSERT_TRUE(server_->Ready());
  const std::string big(8 << 20, 'x');
  absl::Status first = c.Put("big", big);  // the old connection: refused, or (if the kernel took it all) fine
  if (!first.ok()) {
    EXPECT_EQ(first.code(), absl::StatusCode::kUnavailable) << first;
  }
  EXPECT_TRUE(c.Put("big", big).ok());
  EXPECT_EQ(c.Get("big")->value_or("").size(), big.size());
}

TEST(RedisClientAlone, AStoreThatNeverAnswersTimesOut) {
  // A socket that accepts connections (the kernel's backlog) and never answers: a hung store.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  RedisOptions fast;
  fast.connect_timeout_s = 0.5;
  fast.command_timeout_s = 0.3;
  RedisClient c({"127.0.0.1", ntohs(addr.sin_port), 0}, fast);
  const auto t0 = Clock::now();
  EXPECT_EQ(c.Put("k", "v").code(), absl::StatusCode::kUnavailable);
  const auto took = Clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(250));
  EXPECT_LT(took, std::chrono::seconds(2));
  // Within retry_after_s of that, a call does not wait out another timeout: it fails at once,
  // saying when the store last failed; after it, the client tries again (and waits again).
  const auto t1 = Clock::now();
  const absl::Status again = c.Ping();
  EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(again.message()).find("tried again after 500 ms"), std::string::npos) << again;
  EXPECT_LT(Clock::now() - t1, std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(550));
  const auto t2 = Clock::now();
  EXPECT_EQ(c.Ping().code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(Clock::now() - t2, std::chrono::milliseconds(250)) << "after the interval the store is asked again";
  close(fd);
  // Nothing listens: refused at once.
  RedisClient none({"127.0.0.1", ntohs(addr.sin_port), 0}, fast);
  EXPECT_EQ(none.Ping().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace gla
