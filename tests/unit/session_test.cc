// Sessions, the prefix-state cache and preemption (issue 8) through the Scheduler, on the CPU
// backend and (on the GPU machine) the CUDA backend, for the reference model and a random model
// with short convolutions (whose conv tails are part of the state). The yardstick throughout: a
// conversation continued through a session, a prompt started from a cached prefix, a sequence
// swapped out and resumed all give exactly the tokens of one plain request holding the same text.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "engine/backend.h"
#include "engine/scheduler.h"
#include "engine/sessions/session_file.h"
#include "models/fingerprint.h"
#include "tests/support/random_model.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::Cat;
using testing::Collected;
using testing::Greedy;
using testing::SubmitCollect;
using testing::Text;

struct Case {
  const char* backend;  // "cpu" or "cuda"
  const char* model;    // "tiny" (the reference checkpoint) or "conv" (random, short convolutions)
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.backend << "/" << c.model; }

std::string ModelDir(const std::string& which) {
  if (which == "tiny") return testing::TinyModelDir();
  static const std::string dir = [] {
    const std::string d = testing::MakeTempDir("session_conv_model");
    testing::RandomModelSpec spec;
    spec.config_json = R"({"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2,
      "expand_k": 0.5, "expand_v": 1, "hidden_ratio": 4, "vocab_size": 300, "use_short_conv": true, "conv_size": 4,
      "use_output_gate": true, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false})";
    spec.seed = 7;
    const absl::Status s = testing::WriteRandomModel(d, spec);
    if (!s.ok()) ADD_FAILURE() << s;
    return d;
  }();
  return dir;
}

class SessionTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { backend_ = MakeBackend(4); }

  std::unique_ptr<Backend> MakeBackend(int slots) {
    const std::string dir = ModelDir(GetParam().model);
    absl::StatusOr<std::unique_ptr<Backend>> b;
    if (std::string(GetParam().backend) == "cuda") {
      std::string why;
      if (!CudaBackendAvailable(&why)) {
        skip_ = "CUDA test skipped: no usable GPU here (" + why + "); it runs on the GPU machine through deploy/gpu-check.sh";
        return nullptr;
      }
      CudaBackendOptions o;
      o.slots = slots;
      b = MakeCudaBackend(dir, o);
    } else {
      b = MakeCpuBackend(dir, {.slots = slots, .threads = 1});
    }
    if (!b.ok()) {
      ADD_FAILURE() << b.status();
      return nullptr;
    }
    return std::move(*b);
  }

  SchedulerOptions Options() const {
    SchedulerOptions o;
    o.sessions.model_fingerprint = *ModelFingerprint(ModelDir(GetParam().model));
    return o;
  }

  static Collected Run(Scheduler& s, GenerationSpec spec) { return SubmitCollect(s, std::move(spec)).get(); }

  std::unique_ptr<Backend> backend_;
  std::string skip_;
};

#define SKIP_WITHOUT_BACKEND()              \
  do {                                      \
    if (!skip_.empty()) GTEST_SKIP() << skip_; \
    ASSERT_NE(backend_, nullptr);           \
  } while (0)

TEST_P(SessionTest, ThreeTurnsEqualOneRequestHoldingTheWholeText) {
  SKIP_WITHOUT_BACKEND();
  Scheduler s(*backend_, Options());
  auto info = testing::CreateSession(s, "chat");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->id, "chat");
  EXPECT_EQ(info->where, "empty");
  const auto p1 = Text(23, 1), p2 = Text(9, 2), p3 = Text(70, 3);  // p3 spans a 64-token chunk
  const Collected o1 = Run(s, Greedy(p1, 6, "chat"));
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  const Collected o2 = Run(s, Greedy(p2, 5, "chat"));
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.usage.session_tokens, 23 + 6);
  const Collected o3 = Run(s, Greedy(p3, 7, "chat"));
  ASSERT_TRUE(o3.status.ok()) << o3.status;
  const Collected whole = Run(s, Greedy(Cat({p1, o1.tokens, p2, o2.tokens, p3}), 7));
  EXPECT_EQ(o3.tokens, whole.tokens);
  const auto list = testing::ListSessions(s);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].tokens, 23 + 6 + 9 + 5 + 70 + 7);
  EXPECT_EQ(list[0].where, GetParam().backend);  // the state stays in its slot after the turn
  EXPECT_FALSE(list[0].busy);
}

TEST_P(SessionTest, ForkGivesTwoIndependentContinuations) {
  SKIP_WITHOUT_BACKEND();
  Scheduler s(*backend_, Options());
  ASSERT_TRUE(testing::CreateSession(s, "a").ok());
  const auto p1 = Text(30, 4), x = Text(12, 5), y = Text(15, 6);
  const Collected o1 = Run(s, Greedy(p1, 4, "a"));
  auto b = testing::ForkSession(s, "a", "b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->tokens, 34);
  const Collected ax = Run(s, Greedy(x, 6, "a"));  // a moves on first: b must not see it
  const Collected by = Run(s, Greedy(y, 6, "b"));
  EXPECT_EQ(ax.tokens, Run(s, Greedy(Cat({p1, o1.tokens, x}), 6)).tokens);
  EXPECT_EQ(by.tokens, Run(s, Greedy(Cat({p1, o1.tokens, y}), 6)).tokens);
  EXPECT_EQ(testing::ForkSession(s, "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::ForkSession(s, "a", "b").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::CreateSession(s, "../x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::DeleteSession(s, "a").ok());
  EXPECT_EQ(testing::DeleteSession(s, "a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Run(s, Greedy(x, 2, "a")).status.code(), absl::StatusCode::kNotFound);
}

TEST_P(SessionTest, OneTurnAtATimeAndACancelledTurnChangesNothing) {
  SKIP_WITHOUT_BACKEND();
  Scheduler s(*backend_, Options());
  ASSERT_TRUE(testing::CreateSession(s, "c").ok());
  const auto p1 = Text(20, 7), p2 = Text(8, 8);
  const Collected o1 = Run(s, Greedy(p1, 3, "c"));
  std::shared_ptr<RequestHandle> h;
  auto endless = SubmitCollect(s, Greedy(Text(5, 9), 1000000, "c"), nullptr, &h);
  const Collected second = Run(s, Greedy(p2, 2, "c"));
  EXPECT_EQ(second.status.code(), absl::StatusCode::kFailedPrecondition) << second.status;
  EXPECT_EQ(testing::DeleteSession(s, "c").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(testing::ForkSession(s, "c").status().code(), absl::StatusCode::kFailedPrecondition);
  while (s.stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // some tokens into the turn
  h->Cancel();
  EXPECT_EQ(endless.get().reason, FinishReason::kCancelled);
  const Collected o2 = Run(s, Greedy(p2, 5, "c"));  // continues from turn 1, not the cancelled one
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.tokens, Run(s, Greedy(Cat({p1, o1.tokens, p2}), 5)).tokens);
  // A past computed with the base model does not continue under an adapter.
  GenerationSpec other_adapter = Greedy(p2, 2, "c");
  other_adapter.adapter_name = "some-adapter";  // the name is what a session checks
  const Collected refused = Run(s, other_adapter);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status.message().find("adapter 'some-adapter'"), std::string::npos) << refused.status;
}

TEST_P(SessionTest, SessionsSwapToHostWhenSlotsRunOutAndComeBackExact) {
  SKIP_WITHOUT_BACKEND();
  backend_ = MakeBackend(2);
  Scheduler s(*backend_, Options());
  std::vector<std::vector<int32_t>> history(5);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(testing::CreateSession(s, "s" + std::to_string(i)).ok());
    const auto p = Text(10 + i, 20 + i);
    const Collected o = Run(s, Greedy(p, 3, "s" + std::to_string(i)));
    ASSERT_TRUE(o.status.ok()) << o.status;
    history[i] = Cat({p, o.tokens});
  }
  EXPECT_GE(s.stats().sessions.swapped_out, 3u);  // 2 slots, 5 sessions
  EXPECT_GE(s.stats().sessions.in_host, 3);
  // Second turns, all at once: sessions come back from host memory while others run.
  std::vector<std::future<Collected>> turns;
  for (int i = 0; i < 5; ++i) turns.push_back(SubmitCollect(s, Greedy(Text(6, 40 + i), 4, "s" + std::to_string(i))));
  for (int i = 0; i < 5; ++i) {
    const Collected t = turns[i].get();
    ASSERT_TRUE(t.status.ok()) << t.status;
    EXPECT_EQ(t.tokens, Run(s, Greedy(Cat({history[i], Text(6, 40 + i)}), 4)).tokens) << "session " << i;
  }
}

TEST_P(SessionTest, TightHostBudgetDropsIdleSessionsButNoRunningSequence) {
  SKIP_WITHOUT_BACKEND();
  backend_ = MakeBackend(2);
  SchedulerOptions o = Options();
  o.sessions.host_bytes = backend_->pool().state_bytes();  // room for one idle state in host memory
  Scheduler s(*backend_, o);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(testing::CreateSession(s, "t" + std::to_string(i)).ok());
    ASSERT_TRUE(Run(s, Greedy(Text(8, 60 + i), 2, "t" + std::to_string(i))).status.ok());
  }
  // Plain requests and session turns racing for the 2 slots: every one completes, exactly.
  std::vector<std::future<Collected>> plain;
  for (int i = 0; i < 6; ++i) plain.push_back(SubmitCollect(s, Greedy(Text(12, 70 + i), 8)));
  for (int i = 0; i < 6; ++i) {
    const Collected c = plain[i].get();
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens.size(), 8u);
  }
  const SessionStats st = s.stats().sessions;
  EXPECT_GE(st.dropped, 1u);  // without --session_dir, over-budget idle sessions go
  EXPECT_LE(st.host_bytes, backend_->pool().state_bytes());
  EXPECT_EQ(st.sessions + static_cast<int>(st.dropped), 4);
}

TEST_P(SessionTest, SessionsSurviveARestartWithASessionDir) {
  SKIP_WITHOUT_BACKEND();
  const std::string dir = testing::MakeTempDir(std::string("sessions_") + GetParam().backend + GetParam().model);
  SchedulerOptions o = Options();
  o.sessions.dir = dir;
  const auto p1 = Text(33, 11), p2 = Text(10, 12);
  Collected o1;
  {
    Scheduler s(*backend_, o);
    ASSERT_TRUE(testing::CreateSession(s, "kept").ok());
    ASSERT_TRUE(testing::CreateSession(s, "blank").ok());
    o1 = Run(s, Greedy(p1, 5, "kept"));
    ASSERT_TRUE(o1.status.ok());
  }  // shutdown writes both
  EXPECT_TRUE(std::filesystem::exists(dir + "/kept.glasession"));
  auto fresh = MakeBackend(4);  // a new server process, as far as states go
  Scheduler s(*fresh, o);
  EXPECT_TRUE(s.refused_session_files().empty());
  const auto list = testing::ListSessions(s);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].id, "kept");
  EXPECT_EQ(list[1].where, "disk");
  EXPECT_EQ(list[1].tokens, 38);
  const Collected o2 = Run(s, Greedy(p2, 5, "kept"));
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.tokens, Run(s, Greedy(Cat({p1, o1.tokens, p2}), 5)).tokens);
  // Written through (the default durability): the file holds the state after this turn.
  EXPECT_TRUE(std::filesystem::exists(dir + "/kept.glasession"));
}

// What kill -9 leaves is what the session directory holds at that moment: a copy of it taken
// right after a turn returned is the directory a restarted server finds.
TEST_P(SessionTest, EveryCompletedTurnIsOnDiskUnderEachDurabilityPolicy) {
  SKIP_WITHOUT_BACKEND();
  namespace fs = std::filesystem;
  const auto p1 = Text(20, 21), p2 = Text(7, 22), p3 = Text(5, 23);
  for (const SessionDurability policy :
       {SessionDurability::kAlways, SessionDurability::kInterval, SessionDurability::kShutdown}) {
    SCOPED_TRACE(static_cast<int>(policy));
    const std::string dir = testing::MakeTempDir(std::string("durable_") + GetParam().backend + GetParam().model);
    SchedulerOptions o = Options();
    o.sessions.dir = dir;
    o.sessions.durability = policy;
    o.sessions.sync_interval_s = 0.2;
    auto crash_copy = [&](const std::string& name) {
      const std::string to = testing::MakeTempDir(name + std::to_string(static_cast<int>(policy)));
      const std::string error = testing::CopyLiveDirectory(dir, to);
      EXPECT_EQ(error, "");
      return to;
    };
    Collected o1, o2;
    std::string after_create, after_turn1, after_turn2, later;
    {
      Scheduler s(*backend_, o);
      ASSERT_TRUE(testing::CreateSession(s, "c").ok());
      after_create = crash_copy("after_create");
      o1 = Run(s, Greedy(p1, 5, "c"));
      ASSERT_TRUE(o1.status.ok()) << o1.status;
      after_turn1 = crash_copy("after_turn1");
      o2 = Run(s, Greedy(p2, 4, "c"));
      ASSERT_TRUE(o2.status.ok()) << o2.status;
      after_turn2 = crash_copy("after_turn2");
      // Past the interval (the loop wakes each second): the file of the interval policy holds the
      // second turn by then. Polled (up to 10 s) rather than slept: a loaded test machine is slow.
      const int64_t past2_tokens = static_cast<int64_t>(p1.size() + o1.tokens.size() + p2.size() + o2.tokens.size());
      const SessionFileExpect expect{o.sessions.model_fingerprint, backend_->pool().state_values(),
                                     backend_->pool().state_dtype(), backend_->config().vocab_size};
      for (int i = 0; i < 20; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (policy != SessionDurability::kInterval) break;
        auto rec = ReadSessionFile(dir + "/c.glasession", expect, {});
        if (rec.ok() && rec->tokens + (rec->pending ? 1 : 0) >= past2_tokens) break;
      }
      later = crash_copy("later");
    }
    // The past a restarted server finds in `crashed`, checked by its next turn against one
    // request holding that whole past.
    auto next_turn_matches = [&](const std::string& crashed, const std::vector<int32_t>& past) {
      SchedulerOptions r = o;
      r.sessions.dir = crashed;
      auto fresh = MakeBackend(4);
      Scheduler s(*fresh, r);
      const auto list = testing::ListSessions(s);
      if (list.size() != 1) return false;
      const Collected turn = Run(s, Greedy(p3, 4, "c"));
      const Collected whole = Run(s, Greedy(Cat({past, p3}), 4));
      return turn.status.ok() && turn.tokens == whole.tokens;
    };
    const auto past1 = Cat({p1, o1.tokens}), past2 = Cat({p1, o1.tokens, p2, o2.tokens});
    if (policy == SessionDurability::kAlways) {
      EXPECT_TRUE(fs::exists(after_create + "/c.glasession")) << "a created session is on disk";
      EXPECT_TRUE(next_turn_matches(after_create, {}));
      EXPECT_TRUE(next_turn_matches(after_turn1, past1));
      EXPECT_TRUE(next_turn_matches(after_turn2, past2));
    } else if (policy == SessionDurability::kInterval) {
      EXPECT_TRUE(next_turn_matches(later, past2)) << "written within the interval";
    } else {
      EXPECT_FALSE(fs::exists(after_turn2 + "/c.glasession")) << "shutdown policy: nothing until shutdown";
    }
    EXPECT_TRUE(next_turn_matches(dir, past2)) << "and every policy writes all at shutdown";
  }
}

TEST_P(SessionTest, CorruptOrForeignSessionFilesAreRefusedByName) {
  SKIP_WITHOUT_BACKEND();
  const std::string dir = testing::MakeTempDir(std::string("bad_sessions_") + GetParam().backend + GetParam().model);
  SchedulerOptions o = Options();
  o.sessions.dir = dir;
  {
    Scheduler s(*backend_, o);
    for (const char* id : {"good", "flipped", "short", "foreign", "renamed"}) {
      ASSERT_TRUE(testing::CreateSession(s, id).ok());
      ASSERT_TRUE(Run(s, Greedy(Text(12, 13), 2, id)).status.ok());
    }
  }
  {  // one bit of the state flipped
    std::fstream f(dir + "/flipped.glasession", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(200);
    char c;
    f.get(c);
    f.seekp(200);
    f.put(static_cast<char>(c ^ 4));
  }
  std::filesystem::resize_file(dir + "/short.glasession", 100);
  {  // the same file, written for another model
    const std::string path = dir + "/foreign.glasession";
    std::vector<float> state(static_cast<size_t>(backend_->pool().state_words()), 0.5f);
    SessionRecord r;
    r.id = "foreign";
    r.tokens = 3;
    ASSERT_TRUE(WriteSessionFile(path, o.sessions.model_fingerprint ^ 1, r, state, StateDType::kF32).ok());
  }
  {  // a pending token outside the vocabulary (every turn failed INTERNAL on it before)
    const std::string path = dir + "/pending.glasession";
    std::vector<float> state(static_cast<size_t>(backend_->pool().state_words()), 0.5f);
    SessionRecord r;
    r.id = "pending";
    r.tokens = 3;
    r.pending = backend_->config().vocab_size;
    ASSERT_TRUE(WriteSessionFile(path, o.sessions.model_fingerprint, r, state, StateDType::kF32).ok());
  }
  std::filesystem::rename(dir + "/renamed.glasession", dir + "/other.glasession");
  std::ofstream(dir + "/junk.glasession") << "not a session";
  // A FIFO blocked start-up (opened and read blocking); a link could lead anywhere.
  ASSERT_EQ(mkfifo((dir + "/fifo.glasession").c_str(), 0600), 0);
  std::filesystem::create_symlink(dir + "/good.glasession", dir + "/link.glasession");
  Scheduler s(*backend_, o);
  const auto& refused = s.refused_session_files();
  ASSERT_EQ(refused.size(), 8u);
  EXPECT_TRUE(std::any_of(refused.begin(), refused.end(), [](const std::string& m) {
    return m.find("fifo.glasession") != std::string::npos && m.find("not a regular file") != std::string::npos;
  })) << ::testing::PrintToString(refused);
  EXPECT_TRUE(std::any_of(refused.begin(), refused.end(), [](const std::string& m) {
    return m.find("link.glasession") != std::string::npos && m.find("symbolic link") != std::string::npos;
  })) << ::testing::PrintToString(refused);
  EXPECT_TRUE(std::any_of(refused.begin(), refused.end(), [](const std::string& m) {
    return m.find("pending.glasession") != std::string::npos && m.find("outside the vocabulary") != std::string::npos;
  })) << ::testing::PrintToString(refused);
  auto mentions = [&](const std::string& file, const std::string& why) {
    for (const auto& m : refused)
      if (m.find(file) != std::string::npos && m.find(why) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(mentions("flipped.glasession", "checksum"));
  EXPECT_TRUE(mentions("short.glasession", "bytes"));
  EXPECT_TRUE(mentions("foreign.glasession", "another model"));
  EXPECT_TRUE(mentions("other.glasession", "renamed"));
  EXPECT_TRUE(mentions("junk.glasession", "magic"));
  const auto list = testing::ListSessions(s);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, "good");
  EXPECT_EQ(Run(s, Greedy(Text(3, 1), 2, "flipped")).status.code(), absl::StatusCode::kNotFound);
}

TEST_P(SessionTest, ExpiredSessionsAreDeleted) {
  SKIP_WITHOUT_BACKEND();
  Scheduler s(*backend_, Options());
  ASSERT_TRUE(testing::CreateSession(s, "brief", 1).ok());
  ASSERT_TRUE(testing::CreateSession(s, "lasting", 0).ok());  // 0: no expiry
  std::this_thread::sleep_for(std::chrono::milliseconds(2300));
  const auto list = testing::ListSessions(s);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, "lasting");
  EXPECT_EQ(s.stats().sessions.expired, 1u);
}

TEST_P(SessionTest, PrefixCacheHitsGiveTheTokensOfMisses) {
  SKIP_WITHOUT_BACKEND();
  SchedulerOptions o = Options();
  o.prefix_cache_block = 16;
  o.prefix_cache_bytes = 64 * backend_->pool().state_bytes();
  const auto system = Text(70, 30);  // 4 whole blocks + 6
  std::vector<GenerationSpec> specs;
  for (int i = 0; i < 5; ++i) {
    GenerationSpec g = Greedy(Cat({system, Text(5 + 3 * i, 31 + i)}), 6);
    if (i == 4) {
      g.sampling.temperature = 0.9f;
      g.sampling.seed = 5;
    }
    specs.push_back(g);
  }
  std::vector<Collected> plain;
  {
    Scheduler s(*backend_, Options());
    for (const auto& g : specs) plain.push_back(Run(s, g));
  }
  Scheduler s(*backend_, o);
  for (size_t i = 0; i < specs.size(); ++i) {
    const Collected c = Run(s, specs[i]);
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_EQ(c.tokens, plain[i].tokens) << "request " << i;
    // Seen once: nothing; seen twice: the second saves the 64-token prefix; then hits.
    EXPECT_EQ(c.usage.cached_prompt_tokens, i < 2 ? 0 : 64) << "request " << i;
  }
  const PrefixCacheStats st = s.stats().prefix_cache;
  EXPECT_EQ(st.hits, 3u);
  EXPECT_EQ(st.misses, 2u);
  EXPECT_EQ(st.saved_tokens, 3u * 64);
  EXPECT_EQ(st.entries, 1);
  // An empty session's first turn uses the cache too; a session with a past does not.
  ASSERT_TRUE(testing::CreateSession(s, "sys").ok());
  const Collected first = Run(s, Greedy(specs[0].prompt, 6, "sys"));
  EXPECT_EQ(first.usage.cached_prompt_tokens, 64);
  EXPECT_EQ(first.tokens, plain[0].tokens);
}

TEST_P(SessionTest, PreemptedSequenceResumesExactlyWhereItWas) {
  SKIP_WITHOUT_BACKEND();
  backend_ = MakeBackend(1);
  const GenerationSpec low = Greedy(Text(40, 50), 1500);  // long enough to be running when `high` comes
  GenerationSpec high = Greedy(Text(20, 51), 5);
  high.priority = 2;
  Collected alone_low, alone_high;
  {
    Scheduler s(*backend_, Options());
    alone_low = Run(s, low);
    alone_high = Run(s, high);
  }
  Scheduler s(*backend_, Options());
  auto lf = SubmitCollect(s, low);
  while (s.stats().running == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  const Collected h = Run(s, high);
  const Collected l = lf.get();
  ASSERT_TRUE(h.status.ok() && l.status.ok());
  EXPECT_EQ(h.tokens, alone_high.tokens);
  EXPECT_EQ(l.tokens, alone_low.tokens);
  EXPECT_GE(s.stats().preemptions, 1u);

  SchedulerOptions no = Options();
  no.preemption = false;
  Scheduler q(*backend_, no);
  auto lf2 = SubmitCollect(q, low);
  while (q.stats().running == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  EXPECT_EQ(Run(q, high).tokens, alone_high.tokens);
  EXPECT_EQ(lf2.get().tokens, alone_low.tokens);
  EXPECT_EQ(q.stats().preemptions, 0u);
}

TEST_P(SessionTest, TimeSlicingLetsAWaitingRequestInWithoutChangingAnyOutput) {
  SKIP_WITHOUT_BACKEND();
  backend_ = MakeBackend(1);
  const GenerationSpec long_one = Greedy(Text(30, 52), 1500);
  const GenerationSpec short_one = Greedy(Text(12, 53), 4);  // same priority
  Collected alone_long, alone_short;
  {
    Scheduler s(*backend_, Options());
    alone_long = Run(s, long_one);
    alone_short = Run(s, short_one);
  }
  SchedulerOptions o = Options();
  o.preempt_after = std::chrono::milliseconds(20);
  Scheduler s(*backend_, o);
  auto lf = SubmitCollect(s, long_one);
  while (s.stats().running == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  auto sf = SubmitCollect(s, short_one);
  const Collected sh = sf.get();
  EXPECT_EQ(lf.wait_for(std::chrono::seconds(0)), std::future_status::timeout)  // it got in before the long one ended
      << "the long request ended first: the machine is too fast for this test's 1,500 tokens";
  const Collected lo = lf.get();
  EXPECT_EQ(sh.tokens, alone_short.tokens);
  EXPECT_EQ(lo.tokens, alone_long.tokens);
  EXPECT_GE(s.stats().preemptions, 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, SessionTest,
                         ::testing::Values(Case{"cpu", "tiny"}, Case{"cpu", "conv"}, Case{"cuda", "tiny"},
                                           Case{"cuda", "conv"}),
                         [](const auto& info) { return std::string(info.param.backend) + "_" + info.param.model; });

}  // namespace
}  // namespace gla
