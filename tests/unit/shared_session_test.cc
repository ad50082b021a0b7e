// Sessions shared by replicas through the state store (issue 22; engine/sessions/shared_sessions.h):
// two Schedulers on their own CPU backends stand for two replicas, a redis-server started here for
// the store. The yardstick, as for sessions on one replica: a conversation whose turns go to
// either replica gives exactly the tokens of one plain request holding the whole text. Also: one
// turn at a time across replicas, a dead replica's lease runs out, a turn that lost its lease or
// was overtaken writes nothing, a store that is gone makes session calls UNAVAILABLE while plain
// generation goes on, entries of another model or corrupt ones are never used.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"
#include "engine/backend.h"
#include "engine/engine_set.h"
#include "engine/scheduler.h"
#include "engine/sessions/shared_sessions.h"
#include "models/fingerprint.h"
#include "tests/support/forwarding_backend.h"
#include "tests/support/random_model.h"
#include "tests/support/redis_server.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

// A backend reporting another name() (the store keys prefix states by it).
class NamedBackend : public testing::ForwardingBackend {
 public:
  NamedBackend(std::unique_ptr<Backend> inner, std::string name)
      : ForwardingBackend(std::move(inner)), name_(std::move(name)) {}
  std::string name() const override { return name_; }

 private:
  std::string name_;
};


using testing::Cat;
using testing::Collected;
using testing::Greedy;
using testing::SubmitCollect;
using testing::Text;

Collected Turn(Scheduler& s, GenerationSpec spec) { return SubmitCollect(s, std::move(spec)).get(); }

class SharedSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(std::system("command -v redis-server > /dev/null"), 0)
        << "redis-server is not installed (deploy/install-deps.sh installs it)";
    redis_ = std::make_unique<testing::RedisServer>(testing::FreePort());
    ASSERT_TRUE(redis_->Ready()) << "redis-server did not start on port " << redis_->port();
    fingerprint_ = *ModelFingerprint(testing::TinyModelDir());
  }

  // A replica: its own backend (its own state pool) and scheduler, the shared store.
  struct Replica {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Scheduler> scheduler;
    Scheduler& operator*() { return *scheduler; }
    Scheduler* operator->() { return scheduler.get(); }
  };
  // `as_backend`: the backend's name() as the replica reports it (a CPU backend in another's name).
  Replica MakeReplica(const std::string& name, int64_t lease_ms = 30000, int64_t host_bytes = int64_t{1} << 30,
                      int slots = 4, int prefix_cache_block = 0, const std::string& model = testing::TinyModelDir(),
                      WeightFormat weights = WeightFormat::kNative, const std::string& as_backend = "cpu") {
    Replica r;
    auto b = MakeCpuBackend(model, {.slots = slots, .threads = 1, .weights = weights});
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return r;
    r.backend = std::move(*b);
    if (as_backend != "cpu") r.backend = std::make_unique<NamedBackend>(std::move(r.backend), as_backend);
    SchedulerOptions o;
    o.sessions.model_fingerprint = *ModelFingerprint(model);
    o.sessions.host_bytes = host_bytes;
    RedisOptions ro;
    ro.connect_timeout_s = ro.command_timeout_s = 0.5;
    o.sessions.store = std::make_shared<RedisClient>(redis_->address(), ro);
    o.sessions.replica = name;
    o.sessions.lease_ms = lease_ms;
    if (prefix_cache_block > 0) {
      o.prefix_cache_block = prefix_cache_block;
      o.prefix_cache_bytes = 64 * r.backend->pool().state_bytes();
    } else {
      o.prefix_cache_bytes = 0;
    }
    r.scheduler = std::make_unique<Scheduler>(*r.backend, o);
    return r;
  }

  // How many commands of each name the store has run (INFO commandstats, through redis-cli).
  std::map<std::string, int64_t> CommandCounts() const {
    std::map<std::string, int64_t> out;
    FILE* p = popen(("redis-cli -p " + std::to_string(redis_->port()) + " INFO commandstats").c_str(), "r");
    if (p == nullptr) return out;
    char line[512];
    while (fgets(line, sizeof(line), p) != nullptr) {
      char name[128];
      long long calls = 0;
      if (std::sscanf(line, "cmdstat_%127[^:]:calls=%lld", name, &calls) == 2) out[name] = calls;
    }
    pclose(p);
    return out;
  }

  std::unique_ptr<testing::RedisServer> redis_;
  uint64_t fingerprint_ = 0;
};

TEST_F(SharedSessionTest, TurnsOnEitherReplicaEqualOneRequestHoldingTheWholeText) {
  Replica a = MakeReplica("a"), b = MakeReplica("b");
  ASSERT_TRUE(testing::CreateSession(*a, "chat").ok());
  const auto p1 = Text(23, 1), p2 = Text(9, 2), p3 = Text(70, 3), p4 = Text(11, 4);
  const Collected o1 = Turn(*a, Greedy(p1, 6, "chat"));
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  const Collected o2 = Turn(*b, Greedy(p2, 5, "chat"));  // b has never seen it: read from the store
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.usage.session_tokens, 23 + 6);
  std::map<std::string, int64_t> before = CommandCounts();
  const Collected o3 = Turn(*a, Greedy(p3, 7, "chat"));  // a's copy is a turn old: read again
  ASSERT_TRUE(o3.status.ok()) << o3.status;
  // The resumed turn's calls: three scripts (its lease and record in one, the commit, the lease
  // back), the state's length and ranges, the new state's ranges; the record is never read on its
  // own. Redis counts the GETs inside scripts too: the lease script's 2, the commit's 2, the
  // release's 1 (a separate read of the record, before or with the state, would add to the 5).
  std::map<std::string, int64_t> after = CommandCounts();
  EXPECT_EQ(after["eval"] - before["eval"], 3);
  EXPECT_EQ(after["get"] - before["get"], 5);
  EXPECT_EQ(after["strlen"] - before["strlen"], 1);
  const Collected o4 = Turn(*a, Greedy(p4, 4, "chat"));  // a's copy is current: no read
  ASSERT_TRUE(o4.status.ok()) << o4.status;
  const Collected whole = Turn(*b, Greedy(Cat({p1, o1.tokens, p2, o2.tokens, p3, o3.tokens, p4}), 4));
  EXPECT_EQ(o4.tokens, whole.tokens);
  EXPECT_EQ(o3.tokens, Turn(*b, Greedy(Cat({p1, o1.tokens, p2, o2.tokens, p3}), 7)).tokens);
  EXPECT_EQ(a->stats().sessions.store_reads, 1u);
  EXPECT_EQ(b->stats().sessions.store_reads, 1u);
  EXPECT_EQ(a->stats().sessions.store_writes, 4u);  // the creation and three turns
  // Either replica lists it; the one holding the current copy says where.
  for (Scheduler* s : {a.scheduler.get(), b.scheduler.get()}) {
    auto list = testing::ListSessionsOrError(*s);
    ASSERT_TRUE(list.ok()) << list.status();
    ASSERT_EQ(list->size(), 1u);
    EXPECT_EQ((*list)[0].tokens, 23 + 6 + 9 + 5 + 70 + 7 + 11 + 4);
    EXPECT_EQ((*list)[0].where, s == a.scheduler.get() ? "cpu" : "store");
  }
}

// A state of 1.7 MiB (a random model with wide heads), so every write and read of it goes to the
// store in several ranges (RedisClient::kRangeBytes), and a prefix state too.
TEST_F(SharedSessionTest, StatesLargerThanARangeGoThroughExact) {
  static const std::string dir = [] {
    const std::string d = testing::MakeTempDir("shared_wide_model");
    testing::RandomModelSpec spec;
    spec.config_json = R"({"model_type": "gla", "hidden_size": 768, "num_hidden_layers": 3, "num_heads": 2,
      "expand_k": 0.5, "expand_v": 1, "hidden_ratio": 2, "vocab_size": 300, "use_output_gate": true,
      "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false})";
    spec.seed = 11;
    const absl::Status s = testing::WriteRandomModel(d, spec);
    if (!s.ok()) ADD_FAILURE() << s;
    return d;
  }();
  Replica a = MakeReplica("a", 30000, int64_t{1} << 30, 4, 16, dir), b = MakeReplica("b", 30000, int64_t{1} << 30, 4, 16, dir);
  ASSERT_GT(a.backend->pool().state_bytes(), 3 * static_cast<int64_t>(RedisClient::kRangeBytes) / 2);
  ASSERT_TRUE(testing::CreateSession(*a, "wide").ok());
  const auto p1 = Text(40, 41), p2 = Text(7, 42), p3 = Text(9, 43);
  const Collected o1 = Turn(*a, Greedy(p1, 4, "wide"));
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  const Collected o2 = Turn(*b, Greedy(p2, 4, "wide"));
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  const Collected o3 = Turn(*a, Greedy(p3, 4, "wide"));
  ASSERT_TRUE(o3.status.ok()) << o3.status;
  EXPECT_EQ(o3.tokens, Turn(*b, Greedy(Cat({p1, o1.tokens, p2, o2.tokens, p3}), 4)).tokens);
  EXPECT_EQ(a->stats().sessions.store_reads + b->stats().sessions.store_reads, 2u);
  // A prefix (two 16-token blocks) saved on a, used on b.
  const auto system = Text(35, 44);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Turn(*a, Greedy(Cat({system, Text(3, 45 + i)}), 2)).status.ok());
  const Collected hit = Turn(*b, Greedy(Cat({system, Text(3, 47)}), 3));
  EXPECT_EQ(hit.usage.cached_prompt_tokens, 32);
  Replica plain = MakeReplica("plain", 30000, int64_t{1} << 30, 4, 0, dir);
  EXPECT_EQ(hit.tokens, Turn(*plain, Greedy(Cat({system, Text(3, 47)}), 3)).tokens);
}

TEST_F(SharedSessionTest, OneTurnAtATimeAcrossReplicasAndACancelledTurnChangesNothing) {
  Replica a = MakeReplica("a"), b = MakeReplica("b");
  ASSERT_TRUE(testing::CreateSession(*b, "c").ok());
  const auto p1 = Text(20, 7), p2 = Text(8, 8);
  const Collected o1 = Turn(*a, Greedy(p1, 3, "c"));
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  std::shared_ptr<RequestHandle> h;
  auto endless = SubmitCollect(*a, Greedy(Text(5, 9), 1000000, "c"), nullptr, &h);
  while (a->stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const Collected second = Turn(*b, Greedy(p2, 2, "c"));
  EXPECT_EQ(second.status.code(), absl::StatusCode::kFailedPrecondition) << second.status;
  EXPECT_NE(second.status.message().find("another replica"), std::string::npos) << second.status;
  EXPECT_EQ(testing::DeleteSession(*b, "c").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(testing::ForkSession(*b, "c").status().code(), absl::StatusCode::kFailedPrecondition);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // some tokens into the turn
  h->Cancel();
  EXPECT_EQ(endless.get().reason, FinishReason::kCancelled);
  const Collected o2 = Turn(*b, Greedy(p2, 5, "c"));  // continues from turn 1, not the cancelled one
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.tokens, Turn(*a, Greedy(Cat({p1, o1.tokens, p2}), 5)).tokens);
}

TEST_F(SharedSessionTest, ADeadReplicasLeaseRunsOutAndAnOvertakenTurnWritesNothing) {
  Replica b = MakeReplica("b");
  ASSERT_TRUE(testing::CreateSession(*b, "d").ok());
  const auto p1 = Text(15, 10), p2 = Text(6, 11);
  const Collected o1 = Turn(*b, Greedy(p1, 4, "d"));
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  // A replica that took the lease and died: nobody gives it back; it runs out.
  SessionFileExpect expect{fingerprint_, b.backend->pool().state_values(), b.backend->pool().state_dtype(),
                           b.backend->config().vocab_size};
  SharedSessions dead(std::make_shared<RedisClient>(redis_->address()), expect, "dead-replica", 800);
  ASSERT_TRUE(*dead.Lease("d"));
  EXPECT_EQ(Turn(*b, Greedy(p2, 3, "d")).status.code(), absl::StatusCode::kFailedPrecondition);
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  const Collected o2 = Turn(*b, Greedy(p2, 3, "d"));
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.tokens, Turn(*b, Greedy(Cat({p1, o1.tokens, p2}), 3)).tokens);
  // The dead replica comes back and tries to write the turn it started at version 2: the lease is
  // not its own any more, and had it taken it again, the version moved on.
  auto entry = dead.Find("d");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->version, 3u);  // created, turn 1, turn 2
  std::vector<float> zeros(static_cast<size_t>(expect.state_words()), 0.0f);
  SessionRecord stale = (*entry)->record;
  stale.tokens = 1;
  absl::Status lost = dead.Commit(stale, 2, zeros);
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  EXPECT_NE(lost.message().find("no longer holds its lease"), std::string::npos) << lost;
  ASSERT_TRUE(*dead.Lease("d"));
  lost = dead.Commit(stale, 2, zeros);
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  EXPECT_NE(lost.message().find("moved on"), std::string::npos) << lost;
  ASSERT_TRUE(dead.Unlease("d").ok());
  // Nothing of it reached the store: the conversation goes on exactly.
  const auto p3 = Text(9, 12);
  const Collected o3 = Turn(*b, Greedy(p3, 3, "d"));
  ASSERT_TRUE(o3.status.ok()) << o3.status;
  EXPECT_EQ(o3.tokens, Turn(*b, Greedy(Cat({p1, o1.tokens, p2, o2.tokens, p3}), 3)).tokens);
}

TEST_F(SharedSessionTest, CreateForkAndDeleteActOnTheStore) {
  Replica a = MakeReplica("a"), b = MakeReplica("b");
  ASSERT_TRUE(testing::CreateSession(*a, "src").ok());
  EXPECT_EQ(testing::CreateSession(*b, "src").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::CreateSession(*b, "../x").status().code(), absl::StatusCode::kInvalidArgument);
  auto chosen = testing::CreateSession(*b);  // the server makes the id
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_EQ(chosen->id.substr(0, 2), "s-");
  const auto p1 = Text(30, 13), x = Text(12, 14), y = Text(15, 15);
  const Collected o1 = Turn(*a, Greedy(p1, 4, "src"));
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  auto fork = testing::ForkSession(*b, "src", "fork");  // b reads src from the store
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(fork->tokens, 34);
  EXPECT_EQ(testing::ForkSession(*a, "src", "fork").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::ForkSession(*a, "nope").status().code(), absl::StatusCode::kNotFound);
  const Collected ax = Turn(*b, Greedy(x, 6, "src"));
  const Collected fy = Turn(*a, Greedy(y, 6, "fork"));  // a has never held the fork
  EXPECT_EQ(ax.tokens, Turn(*a, Greedy(Cat({p1, o1.tokens, x}), 6)).tokens);
  EXPECT_EQ(fy.tokens, Turn(*a, Greedy(Cat({p1, o1.tokens, y}), 6)).tokens);
  // Deleted on b: a's copy is not brought back to life.
  ASSERT_TRUE(testing::DeleteSession(*b, "src").ok());
  EXPECT_EQ(testing::DeleteSession(*a, "src").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Turn(*a, Greedy(x, 2, "src")).status.code(), absl::StatusCode::kNotFound);
  auto list = testing::ListSessionsOrError(*a);
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> ids;
  for (const SessionInfo& i : *list) ids.push_back(i.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"fork", chosen->id}));
}

TEST_F(SharedSessionTest, CopiesPastTheHostBudgetAreLetGoAndReadBackExact) {
  // One slot and no host memory: every idle session's copy goes as soon as another needs room.
  Replica a = MakeReplica("a", 30000, /*host_bytes=*/0, /*slots=*/2);
  const auto p = Text(18, 16), q = Text(7, 17);
  std::vector<Collected> first;
  for (const char* id : {"s1", "s2", "s3"}) {
    ASSERT_TRUE(testing::CreateSession(*a, id).ok());
    first.push_back(Turn(*a, Greedy(p, 3, id)));
    ASSERT_TRUE(first.back().status.ok()) << first.back().status;
  }
  for (const char* id : {"s1", "s2", "s3"}) {
    const Collected next = Turn(*a, Greedy(q, 4, id));
    ASSERT_TRUE(next.status.ok()) << next.status;
    EXPECT_EQ(next.tokens, Turn(*a, Greedy(Cat({p, first[0].tokens, q}), 4)).tokens) << id;
  }
  EXPECT_GT(a->stats().sessions.store_released, 0u);
  EXPECT_GT(a->stats().sessions.store_reads, 0u);
}

TEST_F(SharedSessionTest, AStoreThatIsGoneMakesSessionsUnavailableAndPlainGenerationGoesOn) {
  Replica a = MakeReplica("a");
  ASSERT_TRUE(testing::CreateSession(*a, "e").ok());
  ASSERT_TRUE(Turn(*a, Greedy(Text(10, 18), 2, "e")).status.ok());
  redis_->Stop(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  const Collected turn = Turn(*a, Greedy(Text(5, 19), 2, "e"));
  EXPECT_EQ(turn.status.code(), absl::StatusCode::kUnavailable) << turn.status;
  EXPECT_NE(turn.status.message().find("state store"), std::string::npos) << turn.status;
  EXPECT_EQ(testing::CreateSession(*a, "f").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(testing::ListSessionsOrError(*a).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(testing::DeleteSession(*a, "e").code(), absl::StatusCode::kUnavailable);
  const Collected plain = Turn(*a, Greedy(Text(10, 20), 5));
  EXPECT_TRUE(plain.status.ok()) << plain.status;
  EXPECT_EQ(plain.tokens.size(), 5u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_GT(a->stats().sessions.store_errors, 0u);
  // A new, empty store: the old sessions are gone (this one persists nothing), new ones work.
  redis_->Start();
  ASSERT_TRUE(redis_->Ready());
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // past the client's retry interval
  EXPECT_EQ(Turn(*a, Greedy(Text(5, 19), 2, "e")).status.code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(testing::CreateSession(*a, "f").ok());
  EXPECT_TRUE(Turn(*a, Greedy(Text(5, 19), 2, "f")).status.ok());
}

// A store that answers slowly delays the turns and calls that wait for it, not the rest: the
// store's calls run on their own thread, so a plain request keeps stepping while a session's turn,
// and then a creation and a listing, wait 0.4 s for a paused Redis (CLIENT PAUSE).
TEST_F(SharedSessionTest, ASlowStoreDelaysOnlyTheTurnsThatWaitForIt) {
  Replica a = MakeReplica("a");
  ASSERT_TRUE(testing::CreateSession(*a, "slow").ok());
  using Clock = std::chrono::steady_clock;
  std::mutex mu;
  std::vector<Clock::time_point> stamps;
  auto done = std::make_shared<std::promise<void>>();
  GenerationSpec plain = Greedy(Text(10, 50), 100000);
  auto handle = a->Submit(plain, [&, done](GenerationUpdate&& u) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!u.tokens.empty()) stamps.push_back(Clock::now());
    }
    if (u.finished) done->set_value();
  });
  ASSERT_TRUE(handle.ok()) << handle.status();
  while (a->stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const std::string pause = "redis-cli -p " + std::to_string(redis_->port()) + " CLIENT PAUSE 400 ALL > /dev/null";
  ASSERT_EQ(std::system(pause.c_str()), 0);
  const auto t0 = Clock::now();
  const Collected turn = Turn(*a, Greedy(Text(5, 51), 2, "slow"));
  const auto t1 = Clock::now();
  // The session calls too: a creation, a fork and a listing, each while the store is paused again.
  const auto t2 = Clock::now();
  ASSERT_EQ(std::system(pause.c_str()), 0);
  const absl::StatusOr<SessionInfo> created = testing::CreateSession(*a, "slow-2");
  ASSERT_EQ(std::system(pause.c_str()), 0);
  const absl::StatusOr<SessionInfo> forked = testing::ForkSession(*a, "slow", "slow-fork");
  ASSERT_EQ(std::system(pause.c_str()), 0);
  const auto listed = testing::ListSessionsOrError(*a);
  const auto t3 = Clock::now();
  (*handle)->Cancel();
  done->get_future().wait();
  ASSERT_TRUE(turn.status.ok()) << turn.status;
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE(forked.ok()) << forked.status();
  EXPECT_EQ(forked->tokens, 7);  // the turn's 5 + 2
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), 3u);
  EXPECT_GE(t1 - t0, std::chrono::milliseconds(300)) << "the turn did not wait for the paused store";
  EXPECT_GE(t3 - t2, std::chrono::milliseconds(900)) << "the creation, fork and listing did not wait for the paused store";
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& [from, to] : {std::pair{t0, t1}, std::pair{t2, t3}}) {
    Clock::duration longest{0};
    int during = 0;
    for (size_t i = 1; i < stamps.size(); ++i)
      if (stamps[i] > from && stamps[i - 1] < to) longest = std::max(longest, stamps[i] - stamps[i - 1]), ++during;
    EXPECT_GT(during, 20) << "the plain request made few tokens while the store was paused";
    EXPECT_LT(longest, std::chrono::milliseconds(150)) << "the plain request stalled with the store";
  }
}

TEST_F(SharedSessionTest, AnotherModelsOrACorruptEntryIsNeverUsed) {
  Replica a = MakeReplica("a");
  ASSERT_TRUE(testing::CreateSession(*a, "g").ok());
  ASSERT_TRUE(Turn(*a, Greedy(Text(12, 21), 3, "g")).status.ok());
  SessionFileExpect other{fingerprint_ ^ 1, a.backend->pool().state_values(), a.backend->pool().state_dtype(),
                          a.backend->config().vocab_size};
  SharedSessions foreign(std::make_shared<RedisClient>(redis_->address()), other, "x", 1000);
  EXPECT_FALSE(foreign.Find("g")->has_value()) << "another model's sessions are other keys";
  // Flip one byte of the stored state: the checksum refuses it, by name.
  RedisClient raw(redis_->address());
  const std::string key = absl::StrFormat("gla:%016x:s:g", fingerprint_);
  auto blob = raw.Get(key);
  ASSERT_TRUE(blob.ok() && blob->has_value());
  std::string bad = **blob;
  bad[bad.size() / 2] ^= 0x40;
  ASSERT_TRUE(raw.Put(key, bad).ok());
  Replica b = MakeReplica("b");  // holds no copy: must read it
  const Collected turn = Turn(*b, Greedy(Text(4, 22), 2, "g"));
  EXPECT_EQ(turn.status.code(), absl::StatusCode::kDataLoss) << turn.status;
  EXPECT_NE(turn.status.message().find("session 'g' in the state store"), std::string::npos) << turn.status;
  // Its lease went back with the refusal: a's current copy still continues it.
  EXPECT_TRUE(Turn(*a, Greedy(Text(4, 22), 2, "g")).status.ok());
}

// Replicas running other weights (--weights int8 here) keep their prefix states apart from the
// native ones' in the store: their states differ, and a hit must give what the replica itself would
// compute. An INT8 replica misses the native replica's entry, writes its own, and another INT8
// replica hits that one; every answer equals its own kind's without a cache.
TEST_F(SharedSessionTest, PrefixStatesOfAnotherWeightFormatAreNeverUsed) {
  const std::string model = testing::TinyModelDir();
  Replica native = MakeReplica("native", 30000, int64_t{1} << 30, 4, /*prefix_cache_block=*/16);
  Replica q1 = MakeReplica("q1", 30000, int64_t{1} << 30, 4, 16, model, WeightFormat::kInt8);
  Replica q2 = MakeReplica("q2", 30000, int64_t{1} << 30, 4, 16, model, WeightFormat::kInt8);
  Replica plain8 = MakeReplica("plain8", 30000, int64_t{1} << 30, 4, 0, model, WeightFormat::kInt8);
  const auto system = Text(70, 60);
  auto prompt = [&](int i) { return Cat({system, Text(5 + 3 * i, 61 + i)}); };
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Turn(*native, Greedy(prompt(i), 6)).status.ok());
  ASSERT_EQ(native->stats().prefix_cache.store_writes, 1u);
  for (int i = 2; i < 4; ++i) {  // q1: the native entry is not its own; the second request saves q1's
    const Collected c = Turn(*q1, Greedy(prompt(i), 6));
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens, Turn(*plain8, Greedy(prompt(i), 6)).tokens) << "request " << i;
  }
  EXPECT_EQ(q1->stats().prefix_cache.store_hits, 0u);
  EXPECT_EQ(q1->stats().prefix_cache.store_writes, 1u);
  const Collected c = Turn(*q2, Greedy(prompt(4), 6));
  ASSERT_TRUE(c.status.ok()) << c.status;
  EXPECT_EQ(c.usage.cached_prompt_tokens, 64) << "q1's entry is q2's kind";
  EXPECT_EQ(q2->stats().prefix_cache.store_hits, 1u);
  EXPECT_EQ(c.tokens, Turn(*plain8, Greedy(prompt(4), 6)).tokens);
}

// Replicas on another kind of backend keep their prefix states apart too: a GPU computes with bf16
// activations, the CPU with fp32 ones, so a state prefilled on one is not what the other would
// compute. (Sessions still move between them: a conversation continues wherever it lands.) Here a
// CPU backend in the name of "cuda" stands for a GPU replica: it misses the CPU replica's entry and
// writes its own, which a second "cuda" replica hits.
TEST_F(SharedSessionTest, PrefixStatesOfAnotherBackendAreNeverUsed) {
  const std::string model = testing::TinyModelDir();
  Replica cpu = MakeReplica("cpu", 30000, int64_t{1} << 30, 4, /*prefix_cache_block=*/16);
  Replica g1 = MakeReplica("g1", 30000, int64_t{1} << 30, 4, 16, model, WeightFormat::kNative, "cuda");
  Replica g2 = MakeReplica("g2", 30000, int64_t{1} << 30, 4, 16, model, WeightFormat::kNative, "cuda");
  ASSERT_EQ(g1.backend->name(), "cuda");
  const auto system = Text(70, 70);
  auto prompt = [&](int i) { return Cat({system, Text(5 + 3 * i, 71 + i)}); };
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Turn(*cpu, Greedy(prompt(i), 6)).status.ok());
  ASSERT_EQ(cpu->stats().prefix_cache.store_writes, 1u);
  for (int i = 2; i < 4; ++i) ASSERT_TRUE(Turn(*g1, Greedy(prompt(i), 6)).status.ok());
  EXPECT_EQ(g1->stats().prefix_cache.store_hits, 0u) << "the CPU replica's entry is not a GPU's";
  EXPECT_EQ(g1->stats().prefix_cache.store_writes, 1u);
  const Collected c = Turn(*g2, Greedy(prompt(4), 6));
  ASSERT_TRUE(c.status.ok()) << c.status;
  EXPECT_EQ(c.usage.cached_prompt_tokens, 64) << "g1's entry is g2's kind";
  EXPECT_EQ(g2->stats().prefix_cache.store_hits, 1u);
  RedisClient raw(redis_->address());
  auto keys = raw.ScanKeys(absl::StrFormat("gla:%016x:p-cuda:*", fingerprint_), 10);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 1u) << "the GPU replicas' entry says its backend";
}

// Two engines of one glad sharing the store (glad --devices with --state_store; engine_set.h): a
// session's turn whose home engine has every slot taken runs on the other engine, its state read
// from the store, and gives exactly the tokens its home would have; the next turn goes home again
// (its copy there a turn old: read again). The metric counts the turn that ran away from home.
TEST_F(SharedSessionTest, ATurnWhoseHomeEngineIsBusyRunsOnAnotherFromTheStore) {
  Replica a = MakeReplica("a", 30000, int64_t{1} << 30, /*slots=*/1);
  Replica b = MakeReplica("b", 30000, int64_t{1} << 30, /*slots=*/1);
  EngineSet set({a.scheduler.get(), b.scheduler.get()}, /*shared_store=*/true);
  auto at_home_0 = [](const std::string& stem) {
    for (int k = 0;; ++k)
      if (HomeOf(stem + std::to_string(k), 2) == 0) return stem + std::to_string(k);
  };
  const std::string chat = at_home_0("chat"), busy = at_home_0("busy");
  ASSERT_TRUE(testing::CreateSession(set, chat).ok());
  ASSERT_TRUE(testing::CreateSession(set, busy).ok());
  const auto p1 = Text(20, 41), p2 = Text(9, 42), p3 = Text(12, 43);
  const Collected o1 = SubmitCollect(set, Greedy(p1, 4, chat)).get();
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  EXPECT_EQ(set.stats().sessions.turns_off_home, 0u);
  // Engine 0's one slot taken by another session's long turn.
  std::shared_ptr<RequestHandle> h;
  auto endless = SubmitCollect(set, Greedy(Text(5, 44), 1000000, busy), nullptr, &h);
  while (a->stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const uint64_t b_reads = b->stats().sessions.store_reads;
  auto second = SubmitCollect(set, Greedy(p2, 5, chat));
  if (second.wait_for(std::chrono::seconds(10)) != std::future_status::ready) h->Cancel();
  const Collected o2 = second.get();
  ASSERT_TRUE(endless.wait_for(std::chrono::seconds(0)) != std::future_status::ready) << "the turn waited for its home";
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(set.stats().sessions.turns_off_home, 1u);
  EXPECT_EQ(b->stats().sessions.store_reads, b_reads + 1) << "engine 1 read the session from the store";
  EXPECT_EQ(set.in_flight(), (std::vector<int>{1, 0}));
  h->Cancel();
  EXPECT_EQ(endless.get().reason, FinishReason::kCancelled);
  const Collected o3 = SubmitCollect(set, Greedy(p3, 5, chat)).get();  // home again
  ASSERT_TRUE(o3.status.ok()) << o3.status;
  EXPECT_EQ(set.stats().sessions.turns_off_home, 1u);
  Replica plain = MakeReplica("plain");
  EXPECT_EQ(o2.tokens, Turn(*plain, Greedy(Cat({p1, o1.tokens, p2}), 5)).tokens);
  EXPECT_EQ(o3.tokens, Turn(*plain, Greedy(Cat({p1, o1.tokens, p2, o2.tokens, p3}), 5)).tokens);
}

TEST_F(SharedSessionTest, APrefixPrefilledOnOneReplicaIsAHitOnAnother) {
  Replica a = MakeReplica("a", 30000, int64_t{1} << 30, 4, /*prefix_cache_block=*/16);
  Replica b = MakeReplica("b", 30000, int64_t{1} << 30, 4, 16);
  Replica plain = MakeReplica("plain");  // no prefix cache: what every request must give
  const auto system = Text(70, 30);      // 4 whole blocks + 6
  auto prompt = [&](int i) { return Cat({system, Text(5 + 3 * i, 31 + i)}); };
  // a sees the system prompt twice: the second request saves its 64-token prefix, here and in the store.
  for (int i = 0; i < 2; ++i) {
    const Collected c = Turn(*a, Greedy(prompt(i), 6));
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens, Turn(*plain, Greedy(prompt(i), 6)).tokens);
  }
  EXPECT_EQ(a->stats().prefix_cache.store_writes, 1u);
  // b has never seen it: its first request with that prefix starts from the store's state.
  for (int i = 2; i < 4; ++i) {
    const Collected c = Turn(*b, Greedy(prompt(i), 6));
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.usage.cached_prompt_tokens, 64) << "request " << i;
    EXPECT_EQ(c.tokens, Turn(*plain, Greedy(prompt(i), 6)).tokens) << "request " << i;
  }
  const PrefixCacheStats st = b->stats().prefix_cache;
  EXPECT_EQ(st.store_hits, 1u) << "the second is a hit in b's own cache";
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.store_writes, 0u);
  // A corrupt entry is a miss, never a wrong state; the store gone is a miss too.
  RedisClient raw(redis_->address());
  auto keys = raw.ScanKeys(absl::StrFormat("gla:%016x:p:*", fingerprint_), 10);
  ASSERT_TRUE(keys.ok() && keys->size() == 1u) << keys.status();
  std::string value = **raw.Get((*keys)[0]);
  value[value.size() / 2] ^= 0x01;
  ASSERT_TRUE(raw.Put((*keys)[0], value).ok());
  Replica c = MakeReplica("c", 30000, int64_t{1} << 30, 4, 16);
  Collected r = Turn(*c, Greedy(prompt(5), 6));
  EXPECT_EQ(r.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(r.tokens, Turn(*plain, Greedy(prompt(5), 6)).tokens);
  EXPECT_EQ(c->stats().prefix_cache.store_misses, 1u);
  redis_->Stop(SIGKILL);
  Replica d = MakeReplica("d", 30000, int64_t{1} << 30, 4, 16);
  r = Turn(*d, Greedy(prompt(6), 6));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, Turn(*plain, Greedy(prompt(6), 6)).tokens);
  EXPECT_EQ(d->stats().prefix_cache.store_errors, 1u);
}

}  // namespace
}  // namespace gla
