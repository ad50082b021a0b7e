// Several engines behind one interface (engine/engine_set.h, `glad --devices`), on CPU backends:
// each engine is a scheduler with its own backend and state pool, as each GPU's would be. The
// yardstick: a conversation through the set gives exactly the tokens it gives on one engine, whatever
// engine its session (or a fork of it) lives on, and after a restart with another engine count.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/engine_set.h"
#include "engine/scheduler.h"
#include "models/fingerprint.h"
#include "tests/support/forwarding_backend.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::Cat;
using testing::Collected;
using testing::Greedy;
using testing::SubmitCollect;
using testing::Text;

template <typename Engine>
Collected RunOn(Engine& e, GenerationSpec spec) {
  return SubmitCollect(e, std::move(spec)).get();
}

// `n` engines on CPU backends of the tiny reference model, as glad --devices makes them (main.cc's
// EngineOptions: each engine loads and keeps only the sessions it is home to).
class Engines {
 public:
  // prefix_block > 0: a prefix cache of that block, shared among the engines (as main.cc does).
  explicit Engines(int n, const std::string& session_dir = "", int slots = 4, int prefix_block = 0) {
    SchedulerOptions so;
    so.sessions.dir = session_dir;
    if (prefix_block > 0) {
      so.prefix_cache_block = prefix_block;
      so.prefix_cache_bytes = int64_t{64} << 20;
      so.prefix_peers = std::make_shared<PeerPrefixStates>(16);
    }
    so.sessions.model_fingerprint = *ModelFingerprint(testing::TinyModelDir());
    for (int i = 0; i < n; ++i) {
      auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = slots, .threads = 1});
      EXPECT_TRUE(b.ok()) << b.status();
      backends_.push_back(std::move(*b));
      SchedulerOptions e = so;
      if (n > 1) e.sessions.owns = [i, n](const std::string& id) { return HomeOf(id, n) == i; };
      schedulers_.push_back(std::make_unique<Scheduler>(*backends_.back(), e));
    }
    std::vector<Scheduler*> list;
    for (auto& s : schedulers_) list.push_back(s.get());
    set_ = std::make_unique<EngineSet>(list, /*shared_store=*/false);
  }
  EngineSet& set() { return *set_; }
  Scheduler& engine(int i) { return *schedulers_[static_cast<size_t>(i)]; }
  // The ids of the sessions engine i holds itself.
  std::set<std::string> HeldBy(int i) {
    std::set<std::string> ids;
    for (const SessionInfo& s : testing::ListSessions(engine(i))) ids.insert(s.id);
    return ids;
  }

 private:
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<Scheduler>> schedulers_;
  std::unique_ptr<EngineSet> set_;
};

// An id whose home among `n` engines is (or, with want_home false, is not) `home`.
std::string IdWithHome(int n, int home, bool want_home, const std::string& stem) {
  for (int k = 0;; ++k) {
    const std::string id = stem + std::to_string(k);
    if ((HomeOf(id, n) == home) == want_home) return id;
  }
}

// A backend whose device the loop cannot bind (as a GPU index that went away would be): the rest
// is the CPU backend it wraps.
class UnbindableBackend : public testing::ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  absl::Status BindThread() override { return absl::InternalError("device 7 is gone"); }
};

TEST(EngineSet, AnEngineThatCannotUseItsDeviceRefusesEveryCallWithTheReason) {
  auto cpu = MakeCpuBackend(testing::TinyModelDir(), {.slots = 2, .threads = 1});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  UnbindableBackend backend(std::move(*cpu));
  Scheduler s(backend, SchedulerOptions{});
  EngineSet set({&s}, /*shared_store=*/false);
  absl::Status why;
  const Collected r = SubmitCollect(set, Greedy(Text(5, 1), 2), &why).get();
  EXPECT_TRUE(r.tokens.empty()) << "a request ran on an engine that could not bind its device";
  EXPECT_EQ(why.code(), absl::StatusCode::kUnavailable) << why;
  EXPECT_NE(why.message().find("cannot use its device: device 7 is gone"), std::string::npos) << why;
  for (const absl::Status& call : {testing::CreateSession(set, "a").status(), testing::DeleteSession(set, "a"),
                                   testing::ListSessionsOrError(set).status()}) {
    EXPECT_EQ(call.code(), absl::StatusCode::kUnavailable) << call;
    EXPECT_NE(call.message().find("device 7 is gone"), std::string::npos) << call;
  }
}

TEST(HomeOf, SpreadsSessionsEvenlyAndAnAddedEngineTakesOnlyItsShare) {
  constexpr int kIds = 3000;
  std::map<int, int> per_engine;
  int moved = 0, moved_elsewhere = 0;
  for (int k = 0; k < kIds; ++k) {
    const std::string id = "session-" + std::to_string(k);
    const int three = HomeOf(id, 3), four = HomeOf(id, 4);
    ASSERT_GE(three, 0);
    ASSERT_LT(three, 3);
    ++per_engine[three];
    if (four != three) {
      ++moved;
      moved_elsewhere += four != 3;  // a session moves only to the new engine
    }
  }
  for (const auto& [engine, count] : per_engine) EXPECT_NEAR(count, kIds / 3, kIds / 10) << "engine " << engine;
  EXPECT_EQ(moved_elsewhere, 0);
  EXPECT_NEAR(moved, kIds / 4, kIds / 12);
  EXPECT_EQ(HomeOf("anything", 1), 0);
}

TEST(EngineSet, SessionsLiveOnTheirHomeAndContinueAsOnOneEngine) {
  Engines one(1), three(3);
  const auto p1 = Text(20, 1), p2 = Text(9, 2), p3 = Text(5, 3);
  // On one engine: three turns of one conversation.
  ASSERT_TRUE(testing::CreateSession(one.set(), "ref").ok());
  const Collected r1 = RunOn(one.set(), Greedy(p1, 4, "ref"));
  const Collected r2 = RunOn(one.set(), Greedy(p2, 4, "ref"));
  const Collected r3 = RunOn(one.set(), Greedy(p3, 4, "ref"));
  ASSERT_TRUE(r3.status.ok()) << r3.status;

  std::vector<std::string> ids;
  for (int k = 0; k < 6; ++k) {
    auto made = testing::CreateSession(three.set(), k < 4 ? "conv-" + std::to_string(k) : "");  // two named by the set
    ASSERT_TRUE(made.ok()) << made.status();
    ids.push_back(made->id);
  }
  for (const std::string& id : ids) {
    EXPECT_EQ(RunOn(three.set(), Greedy(p1, 4, id)).tokens, r1.tokens) << id;
    EXPECT_EQ(RunOn(three.set(), Greedy(p2, 4, id)).tokens, r2.tokens) << id;
    EXPECT_EQ(RunOn(three.set(), Greedy(p3, 4, id)).tokens, r3.tokens) << id;
  }
  // Each session is held by its home alone; the set lists them all, sorted.
  std::set<std::string> held;
  for (int i = 0; i < 3; ++i)
    for (const std::string& id : three.HeldBy(i)) {
      EXPECT_EQ(HomeOf(id, 3), i) << id;
      EXPECT_TRUE(held.insert(id).second) << id << " held twice";
    }
  EXPECT_EQ(held, std::set<std::string>(ids.begin(), ids.end()));
  const std::vector<SessionInfo> listed = testing::ListSessions(three.set());
  ASSERT_EQ(listed.size(), ids.size());
  EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end(), [](const SessionInfo& a, const SessionInfo& b) { return a.id < b.id; }));
  for (const SessionInfo& s : listed) EXPECT_EQ(s.tokens, static_cast<int64_t>(p1.size() + p2.size() + p3.size() + 12)) << s.id;
  // Every call about a session reaches its home: a second create is refused, delete works once.
  EXPECT_EQ(testing::CreateSession(three.set(), "conv-2").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(testing::DeleteSession(three.set(), "conv-2").ok());
  EXPECT_EQ(testing::DeleteSession(three.set(), "conv-2").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RunOn(three.set(), Greedy(p1, 2, "conv-2")).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::ListSessions(three.set()).size(), ids.size() - 1);
}

TEST(EngineSet, OneTurnAtATimePerSession) {
  Engines two(2);
  ASSERT_TRUE(testing::CreateSession(two.set(), "busy").ok());
  std::shared_ptr<RequestHandle> h;
  auto endless = SubmitCollect(two.set(), Greedy(Text(5, 9), 1000000, "busy"), nullptr, &h);
  const Collected second = RunOn(two.set(), Greedy(Text(4, 1), 2, "busy"));
  EXPECT_EQ(second.status.code(), absl::StatusCode::kFailedPrecondition) << second.status;
  EXPECT_EQ(testing::ForkSession(two.set(), "busy", IdWithHome(2, HomeOf("busy", 2), false, "f")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  h->Cancel();
  EXPECT_EQ(endless.get().reason, FinishReason::kCancelled);
}

TEST(EngineSet, AForkOnAnotherEngineContinuesAsTheSourceDoes) {
  Engines two(2);
  const auto p1 = Text(30, 4), p2 = Text(7, 5);
  ASSERT_TRUE(testing::CreateSession(two.set(), "src").ok());
  ASSERT_TRUE(RunOn(two.set(), Greedy(p1, 6, "src")).status.ok());
  const int home = HomeOf("src", 2);
  const std::string near = IdWithHome(2, home, true, "near-"), far = IdWithHome(2, home, false, "far-");
  ASSERT_TRUE(testing::ForkSession(two.set(), "src", near).ok());
  auto copied = testing::ForkSession(two.set(), "src", far);  // copied out of one engine into the other
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(copied->tokens, static_cast<int64_t>(p1.size() + 6));
  auto named = testing::ForkSession(two.set(), "src");  // the set names it: on the source's engine
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(HomeOf(named->id, 2), home);
  EXPECT_TRUE(two.HeldBy(1 - home).count(far));
  EXPECT_TRUE(two.HeldBy(home).count(near));

  const Collected from_source = RunOn(two.set(), Greedy(p2, 8, "src"));
  ASSERT_TRUE(from_source.status.ok()) << from_source.status;
  for (const std::string& fork : {near, far, named->id})
    EXPECT_EQ(RunOn(two.set(), Greedy(p2, 8, fork)).tokens, from_source.tokens) << fork;
  // A fork of an empty session across engines is an empty session there.
  ASSERT_TRUE(testing::CreateSession(two.set(), "empty").ok());
  const std::string empty_far = IdWithHome(2, HomeOf("empty", 2), false, "empty-far-");
  ASSERT_TRUE(testing::ForkSession(two.set(), "empty", empty_far).ok());
  EXPECT_EQ(RunOn(two.set(), Greedy(p2, 3, empty_far)).tokens, RunOn(two.set(), Greedy(p2, 3)).tokens);

  // Refusals, as on one engine.
  EXPECT_EQ(testing::ForkSession(two.set(), "src", far).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::ForkSession(two.set(), "nowhere", far + "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::ForkSession(two.set(), "src", "../bad").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineSet, RequestsWithoutASessionGoToTheLeastLoadedEngine) {
  Engines three(3, "", /*slots=*/2);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  std::vector<std::future<Collected>> outs;
  for (int k = 0; k < 9; ++k) {
    std::shared_ptr<RequestHandle> h;
    outs.push_back(SubmitCollect(three.set(), Greedy(Text(6, k), 1000000), nullptr, &h));
    handles.push_back(h);
  }
  // Counted as they were submitted: a burst is spread before any engine has run a step.
  EXPECT_EQ(three.set().in_flight(), (std::vector<int>{3, 3, 3}));
  for (auto& h : handles) h->Cancel();
  for (auto& o : outs) EXPECT_EQ(o.get().reason, FinishReason::kCancelled);
  EXPECT_EQ(three.set().in_flight(), (std::vector<int>{0, 0, 0}));
  // A group (n > 1) goes to one engine whole; the answers equal one engine's.
  Engines one(1);
  std::vector<GenerationSpec> group(3, Greedy(Text(12, 3), 5));
  auto futures = testing::SubmitGroupCollect(three.set(), group);
  ASSERT_EQ(futures.size(), 3u);
  const std::vector<int32_t> alone = RunOn(one.set(), Greedy(Text(12, 3), 5)).tokens;
  for (auto& f : futures) EXPECT_EQ(f.get().tokens, alone);
  const SchedulerStats st = three.set().stats();
  EXPECT_EQ(st.slots, 6);
  EXPECT_EQ(st.completed, 12u);  // the cancelled ones count
  int engines_with_the_group = 0;
  for (int i = 0; i < 3; ++i) engines_with_the_group += three.engine(i).stats().completed == 6;  // its 3 cancelled, and the group
  EXPECT_EQ(engines_with_the_group, 1);
}

TEST(EngineSet, APrefixOneEngineCachedIsAHitOnTheOthers) {
  Engines two(2, "", 4, /*prefix_block=*/16), one(1);
  const auto header = Text(48, 8);
  auto prompt = [&](int k) { return Cat({header, Text(5, 30 + k)}); };
  // Engine 0 sees the header twice: the second prefill stops at it for a snapshot, shared.
  for (int k = 0; k < 2; ++k) ASSERT_TRUE(RunOn(two.engine(0), Greedy(prompt(k), 4)).status.ok());
  EXPECT_EQ(two.engine(0).stats().prefix_cache.peer_publishes, 1u);
  // Engine 1 has never seen it: its cache misses, the peer tier hits, and the answer is exact.
  const Collected on_1 = RunOn(two.engine(1), Greedy(prompt(2), 6));
  ASSERT_TRUE(on_1.status.ok()) << on_1.status;
  EXPECT_EQ(on_1.usage.cached_prompt_tokens, 48);
  EXPECT_EQ(on_1.tokens, RunOn(one.set(), Greedy(prompt(2), 6)).tokens);
  const PrefixCacheStats p1 = two.engine(1).stats().prefix_cache;
  EXPECT_EQ(p1.peer_hits, 1u);
  EXPECT_EQ(p1.entries, 1);  // its own copy now: the next hit is local
  EXPECT_EQ(RunOn(two.engine(1), Greedy(prompt(3), 2)).usage.cached_prompt_tokens, 48);
  EXPECT_EQ(two.engine(1).stats().prefix_cache.peer_hits, 1u);
  // A prompt that shares no block with it misses everywhere; the set sums both engines' counters.
  EXPECT_EQ(RunOn(two.engine(1), Greedy(Text(40, 50), 2)).usage.cached_prompt_tokens, 0);
  const PrefixCacheStats all = two.set().stats().prefix_cache;
  EXPECT_EQ(all.peer_hits, 1u);
  EXPECT_GE(all.peer_misses, 3u);  // engine 0's first two lookups, engine 1's last
  EXPECT_EQ(all.hits, 2u);
}

TEST(EngineSet, ASharedSessionDirFindsEverySessionAfterARestartWithAnotherEngineCount) {
  const std::string dir = testing::MakeTempDir("engine_set_sessions");
  const auto p1 = Text(16, 6), p2 = Text(6, 7);
  std::vector<std::string> ids;
  {
    Engines two(2, dir);
    for (int k = 0; k < 8; ++k) {
      auto made = testing::CreateSession(two.set(), "kept-" + std::to_string(k));
      ASSERT_TRUE(made.ok()) << made.status();
      ids.push_back(made->id);
      ASSERT_TRUE(RunOn(two.set(), Greedy(p1, 3, made->id)).status.ok());
    }
    two.set().Shutdown(std::chrono::milliseconds(1000));
  }
  Engines one(1);
  const std::vector<int32_t> turn2 = [&] {
    const Collected first = RunOn(one.set(), Greedy(p1, 3));
    return RunOn(one.set(), Greedy(Cat({p1, first.tokens, p2}), 4)).tokens;
  }();
  Engines three(3, dir);
  EXPECT_EQ(testing::ListSessions(three.set()).size(), ids.size());
  for (int i = 0; i < 3; ++i)
    for (const std::string& id : three.HeldBy(i)) EXPECT_EQ(HomeOf(id, 3), i) << id << " loaded by another engine";
  for (const std::string& id : ids) EXPECT_EQ(RunOn(three.set(), Greedy(p2, 4, id)).tokens, turn2) << id;
}

}  // namespace
}  // namespace gla
