// Sessions and the prefix-state cache through a real glad (CPU backend, the reference model, token
// ids): the gRPC surface, a conversation continued across a restart with --session_dir, a corrupt
// session file refused by name in the log, and gla-cli's session commands.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/glad_process.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::GladProcess;

std::vector<int32_t> Text(int n, int seed) {
  std::vector<int32_t> t;
  for (int j = 0; j < n; ++j) t.push_back((j * 37 + seed * 101 + (j * j) % 13) % 250 + 3);
  return t;
}

v1::GenerateRequest Request(const std::vector<int32_t>& prompt, int max_new, const std::string& session = "") {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  r.set_max_new_tokens(max_new);
  r.set_ignore_eos(true);
  r.set_session(session);
  return r;
}

std::vector<int32_t> Cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

struct Result {
  grpc::Status status;
  v1::GenerateResponse resp;
  std::vector<int32_t> ids() const { return {resp.token_ids().begin(), resp.token_ids().end()}; }
};

Result Generate(v1::Gla::Stub& stub, const v1::GenerateRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  Result r;
  r.status = stub.Generate(&ctx, req, &r.resp);
  return r;
}

grpc::Status Create(v1::Gla::Stub& stub, const std::string& id, v1::Session* out = nullptr) {
  grpc::ClientContext ctx;
  v1::CreateSessionRequest req;
  req.set_session_id(id);
  v1::Session s;
  auto st = stub.CreateSession(&ctx, req, &s);
  if (out) *out = s;
  return st;
}

v1::ListSessionsResponse List(v1::Gla::Stub& stub) {
  grpc::ClientContext ctx;
  v1::ListSessionsResponse r;
  EXPECT_TRUE(stub.ListSessions(&ctx, {}, &r).ok());
  return r;
}

std::vector<std::string> ServerArgs(const std::string& dir) {
  return {"--model", testing::TinyModelDir(), "--backend", "cpu", "--slots", "4", "--threads", "1",
          "--session_dir", dir, "--prefix_cache_block", "16", "--max_new_tokens", "100000"};
}

TEST(SessionE2E, ConversationForkBusyRefusalsAndPrefixCache) {
  const std::string dir = testing::MakeTempDir("session_e2e_a");
  GladProcess glad(ServerArgs(dir));
  ASSERT_TRUE(glad.ok()) << glad.log();
  auto stub = glad.stub();
  v1::Session made;
  ASSERT_TRUE(Create(*stub, "chat", &made).ok());
  EXPECT_EQ(made.session_id(), "chat");
  EXPECT_EQ(made.location(), "empty");
  EXPECT_GT(made.expire_time_s(), made.create_time_s());  // the default TTL
  EXPECT_EQ(Create(*stub, "chat").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Create(*stub, "bad/id").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::Session generated;
  ASSERT_TRUE(Create(*stub, "", &generated).ok());
  EXPECT_FALSE(generated.session_id().empty());

  const auto p1 = Text(20, 1), p2 = Text(7, 2);
  const Result t1 = Generate(*stub, Request(p1, 5, "chat"));
  ASSERT_TRUE(t1.status.ok()) << t1.status.error_message();
  const Result t2 = Generate(*stub, Request(p2, 6, "chat"));
  ASSERT_TRUE(t2.status.ok()) << t2.status.error_message();
  EXPECT_EQ(t2.resp.usage().session_tokens(), 25u);
  EXPECT_EQ(t2.ids(), Generate(*stub, Request(Cat({p1, t1.ids(), p2}), 6)).ids());

  // Branch: the fork continues like the original would have.
  {
    grpc::ClientContext ctx;
    v1::ForkSessionRequest req;
    req.set_source_session_id("chat");
    req.set_session_id("branch");
    v1::Session s;
    ASSERT_TRUE(stub->ForkSession(&ctx, req, &s).ok());
    EXPECT_EQ(s.tokens(), 20u + 5 + 7 + 6);
  }
  const auto p3 = Text(9, 3);
  const Result a = Generate(*stub, Request(p3, 4, "chat"));
  const Result b = Generate(*stub, Request(p3, 4, "branch"));
  EXPECT_EQ(a.ids(), b.ids());

  // One turn at a time: a second request on a busy session is FAILED_PRECONDITION.
  {
    grpc::ClientContext ctx;
    auto reader = stub->GenerateStream(&ctx, Request(Text(4, 4), 90000, "chat"));
    v1::GenerateStreamResponse m;
    ASSERT_TRUE(reader->Read(&m));  // running
    const Result busy = Generate(*stub, Request(p3, 2, "chat"));
    EXPECT_EQ(busy.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << busy.status.error_message();
    EXPECT_NE(busy.status.error_message().find("chat"), std::string::npos);
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    reader->Finish();
  }
  EXPECT_EQ(Generate(*stub, Request(p3, 2, "nobody")).status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Generate(*stub, Request(p3, 2, "../x")).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext ctx;
    v1::DeleteSessionRequest req;
    req.set_session_id("branch");
    v1::DeleteSessionResponse resp;
    EXPECT_TRUE(stub->DeleteSession(&ctx, req, &resp).ok());
  }
  // The cancelled turn left "chat" as it was after turn 3 (p3 + 4 tokens).
  const auto l = List(*stub);
  ASSERT_EQ(l.sessions_size(), 2);
  const v1::Session& chat = l.sessions(0).session_id() == "chat" ? l.sessions(0) : l.sessions(1);
  EXPECT_EQ(chat.tokens(), 20u + 5 + 7 + 6 + 9 + 4);
  EXPECT_FALSE(chat.busy());

  // The prefix cache: a shared 48-token header, cached on its second sighting, hit after.
  const auto header = Text(48, 9);
  for (int i = 0; i < 4; ++i) {
    const Result r = Generate(*stub, Request(Cat({header, Text(5, 10 + i)}), 4));
    ASSERT_TRUE(r.status.ok());
    EXPECT_EQ(r.resp.usage().cached_prompt_tokens(), i < 2 ? 0u : 48u) << i;
  }
  grpc::ClientContext ctx;
  v1::ModelInfoResponse info;
  ASSERT_TRUE(stub->ModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.prefix_cache().hits(), 2u);
  EXPECT_EQ(info.prefix_cache().saved_tokens(), 96u);
  // The header, and the conversation's first block: seen by turn 1 (an empty session uses the
  // cache too) and again by the whole-text request that checked turn 2.
  EXPECT_EQ(info.prefix_cache().entries(), 2u);
  EXPECT_EQ(info.prefix_cache().block_tokens(), 16u);
  EXPECT_EQ(info.sessions().sessions(), 2u);
  EXPECT_EQ(glad.Terminate(), 0) << glad.log();
}

TEST(SessionE2E, SessionSurvivesARestartAndCorruptFilesAreRefusedByName) {
  const std::string dir = testing::MakeTempDir("session_e2e_b");
  const auto p1 = Text(30, 5), p2 = Text(11, 6);
  std::vector<int32_t> o1;
  {
    GladProcess glad(ServerArgs(dir));
    ASSERT_TRUE(glad.ok()) << glad.log();
    auto stub = glad.stub();
    ASSERT_TRUE(Create(*stub, "kept").ok());
    const Result t1 = Generate(*stub, Request(p1, 6, "kept"));
    ASSERT_TRUE(t1.status.ok());
    o1 = t1.ids();
    EXPECT_EQ(glad.Terminate(), 0) << glad.log();
  }
  ASSERT_TRUE(std::filesystem::exists(dir + "/kept.glasession"));
  std::ofstream(dir + "/broken.glasession") << "GLASESS1 but nothing after it";
  GladProcess glad(ServerArgs(dir));
  ASSERT_TRUE(glad.ok()) << glad.log();
  EXPECT_NE(glad.log().find("broken.glasession"), std::string::npos) << glad.log();
  auto stub = glad.stub();
  const auto l = List(*stub);
  ASSERT_EQ(l.sessions_size(), 1);
  EXPECT_EQ(l.sessions(0).location(), "disk");
  EXPECT_EQ(l.sessions(0).tokens(), 36u);
  const Result t2 = Generate(*stub, Request(p2, 6, "kept"));
  ASSERT_TRUE(t2.status.ok()) << t2.status.error_message();
  EXPECT_EQ(t2.ids(), Generate(*stub, Request(Cat({p1, o1, p2}), 6)).ids());

  // gla-cli: sessions, session-create, generate --session.
  auto cli = [&](const std::string& args) {
    return testing::RunCommand(absl::StrCat(GLA_CLI_PATH, " ", args, " --addr ", glad.address()));
  };
  EXPECT_EQ(cli("session-create --id from-cli").code, 0);
  const auto turn = cli("generate --session from-cli --prompt-ids 5,6,7 --max-new-tokens 3 --ignore-eos 1");
  EXPECT_EQ(turn.code, 0) << turn.err;
  const auto listed = cli("sessions");
  EXPECT_NE(listed.out.find("from-cli tokens=6"), std::string::npos) << listed.out;
  const auto again = cli("session-create --id from-cli");
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("ALREADY_EXISTS"), std::string::npos) << again.err;
  EXPECT_EQ(glad.Terminate(), 0) << glad.log();
}

v1::Session Fork(v1::Gla::Stub& stub, const std::string& source, const std::string& id, grpc::Status* status) {
  grpc::ClientContext ctx;
  v1::ForkSessionRequest req;
  req.set_source_session_id(source);
  req.set_session_id(id);
  v1::Session s;
  *status = stub.ForkSession(&ctx, req, &s);
  return s;
}

// glad --devices: one engine per entry behind one server (engine/engine_set.h). A conversation gives
// the tokens of one request holding its text on whichever engine its session lives; forks cross
// engines; a restart with another engine count finds every session. On the CPU backend here; the
// GPU machine runs it with GLA_E2E_BACKEND=cuda and GLA_E2E_DEVICE_LISTS="0,1,... 0" (its GPUs, then
// fewer: deploy/gpu-check.sh devices).
TEST(SessionE2E, SeveralEnginesShareOneSessionNamespaceAcrossRestarts) {
  const std::string dir = testing::MakeTempDir("session_e2e_devices");
  const char* backend_env = std::getenv("GLA_E2E_BACKEND");
  const char* lists_env = std::getenv("GLA_E2E_DEVICE_LISTS");
  const std::string backend = backend_env != nullptr ? backend_env : "cpu";
  const std::vector<std::string> lists = absl::StrSplit(lists_env != nullptr ? lists_env : "0,1,2 0,1", ' ');
  ASSERT_EQ(lists.size(), 2u) << "GLA_E2E_DEVICE_LISTS: two --devices lists, the second after a restart";
  auto args = [&](const std::string& devices) {
    std::vector<std::string> a = ServerArgs(dir);
    a.insert(a.end(), {"--devices", devices});
    for (std::string& v : a)
      if (v == "cpu") v = backend;  // ServerArgs' --backend
    return a;
  };
  auto engines_in = [](const std::string& list) { return static_cast<uint32_t>(std::count(list.begin(), list.end(), ',') + 1); };
  const auto p1 = Text(18, 11), p2 = Text(6, 12);
  std::map<std::string, std::vector<int32_t>> first;  // each session's first output
  {
    GladProcess glad(args(lists[0]));
    ASSERT_TRUE(glad.ok()) << glad.log();
    auto stub = glad.stub();
    grpc::ClientContext ctx;
    v1::ModelInfoResponse info;
    ASSERT_TRUE(stub->ModelInfo(&ctx, {}, &info).ok());
    const uint32_t n = engines_in(lists[0]);
    EXPECT_EQ(info.engines(), n);
    EXPECT_EQ(info.backend(), backend);
    EXPECT_EQ(info.slots(), 4 * n);
    if (n > 1) {
      EXPECT_NE(info.device().find(absl::StrCat(n - 1, ": ")), std::string::npos) << info.device();
    }
    std::printf("engines: %s\n", info.device().c_str());
    for (int k = 0; k < 6; ++k) {
      const std::string id = absl::StrCat("talk-", k);
      ASSERT_TRUE(Create(*stub, id).ok());
      const Result t = Generate(*stub, Request(Cat({p1, Text(k + 1, 20 + k)}), 4, id));
      ASSERT_TRUE(t.status.ok()) << t.status.error_message();
      first[id] = t.ids();
    }
    EXPECT_EQ(Create(*stub, "talk-3").error_code(), grpc::StatusCode::ALREADY_EXISTS);
    // Forks to ids of every home: each continues as its source would.
    for (int k = 0; k < 4; ++k) {
      grpc::Status st;
      const v1::Session f = Fork(*stub, "talk-0", absl::StrCat("fork-", k), &st);
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_EQ(f.tokens(), 18u + 1 + 4);
    }
    grpc::Status st;
    Fork(*stub, "talk-0", "fork-2", &st);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
    const Result from_source = Generate(*stub, Request(p2, 5, "fork-0"));
    for (int k = 1; k < 4; ++k) EXPECT_EQ(Generate(*stub, Request(p2, 5, absl::StrCat("fork-", k))).ids(), from_source.ids()) << k;
    EXPECT_EQ(List(*stub).sessions_size(), 10);
    EXPECT_EQ(glad.Terminate(), 0) << glad.log();
  }
  GladProcess glad(args(lists[1]));
  ASSERT_TRUE(glad.ok()) << glad.log();
  auto stub = glad.stub();
  EXPECT_EQ(List(*stub).sessions_size(), 10);
  for (const auto& [id, out] : first) {
    const int k = id.back() - '0';
    const Result t = Generate(*stub, Request(p2, 5, id));
    ASSERT_TRUE(t.status.ok()) << id << ": " << t.status.error_message();
    EXPECT_EQ(t.ids(), Generate(*stub, Request(Cat({p1, Text(k + 1, 20 + k), out, p2}), 5)).ids()) << id;
  }
  // The prefix cache across engines: requests without a session take turns on the n idle engines,
  // so each has seen a 48-token header once after n requests; request n caches it on its engine
  // and shares it; the next n - 1, on the other engines, start from the shared state; then the
  // first engine hits its own copy.
  auto prefix_stats = [&] {
    grpc::ClientContext ctx;
    v1::ModelInfoResponse info;
    EXPECT_TRUE(stub->ModelInfo(&ctx, {}, &info).ok());
    return info.prefix_cache();
  };
  const v1::PrefixCacheStats before = prefix_stats();  // the checks above shared their first block
  const auto header = Text(48, 40);
  const uint32_t n = engines_in(lists[1]);
  std::vector<uint32_t> cached, expected;
  for (uint32_t i = 0; i <= 2 * n; ++i) {
    expected.push_back(i <= n ? 0 : 48);
    const Result r = Generate(*stub, Request(Cat({header, Text(5, 41 + i)}), 3));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    cached.push_back(r.resp.usage().cached_prompt_tokens());
  }
  EXPECT_EQ(cached, expected);
  const v1::PrefixCacheStats after = prefix_stats();
  EXPECT_EQ(after.peer_hits() - before.peer_hits(), n - 1);
  EXPECT_EQ(after.peer_publishes() - before.peer_publishes(), n > 1 ? 1u : 0u);
  EXPECT_EQ(glad.Terminate(), 0) << glad.log();
  // What --devices refuses, by name, before anything loads.
  for (const auto& [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {"--devices 0,0", "device 0 twice"}, {"--devices 0,x", "'x' is not a device index"},
           {"--device 1 --devices 0,1", "--device and --devices"},
           {"--devices " + [] {
              std::string many = "0";
              for (int i = 1; i < 5000; ++i) absl::StrAppend(&many, ",", i);  // refused at its 65th entry
              return many;
            }(),
            "more than 64 devices"}}) {
    const auto r = testing::RunCommand(absl::StrCat(testing::GladPath(), " --backend cpu --model ", testing::TinyModelDir(),
                                                    " --listen 127.0.0.1:0 ", flags));
    EXPECT_EQ(r.code, 1) << flags;
    EXPECT_NE(r.err.find(says), std::string::npos) << flags << ": " << r.err;
  }
}

// kill -9 at random points of a conversation load, three times over: after each restart every
// turn a client saw complete is in its session, exactly (the session's next turn equals one
// request holding the whole past). A turn the server completed but whose answer the kill cut off
// may be there too; its output is then known (greedy), and the token counts tell which.
TEST(SessionE2E, EveryTurnAClientSawCompleteSurvivesKillNine) {
  const std::string dir = testing::MakeTempDir("crash_sessions");
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937 rng(seed);
  struct Turn {
    std::vector<int32_t> prompt;
    int max_new = 0;
  };
  struct Conversation {
    std::string id;
    std::vector<int32_t> past;   // prompts and outputs of the turns the client saw complete
    std::optional<Turn> open;    // a turn whose answer did not come back
    int seen = 0;
  };
  std::vector<Conversation> convs(4);
  for (size_t i = 0; i < convs.size(); ++i) convs[i].id = absl::StrCat("conv-", i);
  int checked_turns = 0, server_ahead = 0;
  for (int round = 0; round <= 3; ++round) {
    // The check below sends a conversation's whole past as one request: however long the load
    // made it before the kill (thousands of tokens when the machine is fast), it must be accepted.
    std::vector<std::string> args = ServerArgs(dir);
    args.insert(args.end(), {"--max_prompt_tokens", "1000000"});
    GladProcess glad(args);
    ASSERT_TRUE(glad.ok()) << glad.log();
    auto stub = glad.stub();
    std::map<std::string, uint64_t> tokens;
    const v1::ListSessionsResponse listed = List(*stub);
    for (const auto& s : listed.sessions()) tokens[s.session_id()] = s.tokens();
    for (Conversation& c : convs) {
      if (round == 0) {
        ASSERT_TRUE(Create(*stub, c.id).ok());
        continue;
      }
      ASSERT_EQ(tokens.count(c.id), 1u) << c.id << " is gone after kill -9\n" << glad.log();
      if (tokens[c.id] != c.past.size()) {  // the open turn completed on the server
        ASSERT_TRUE(c.open.has_value()) << c.id << ": " << tokens[c.id] << " tokens, the client saw " << c.past.size();
        const auto whole = Cat({c.past, c.open->prompt});
        const Result out = Generate(*stub, Request(whole, c.open->max_new));
        ASSERT_TRUE(out.status.ok()) << out.status.error_message();
        c.past = Cat({whole, out.ids()});
        ++server_ahead;
      }
      ASSERT_EQ(tokens[c.id], c.past.size()) << c.id << ": a turn the client saw complete is missing";
      // Exactly that past: the next turn equals one request holding all of it.
      const auto q = Text(3, round * 10 + static_cast<int>(c.id.back()));
      const Result turn = Generate(*stub, Request(q, 4, c.id));
      const Result whole = Generate(*stub, Request(Cat({c.past, q}), 4));
      ASSERT_TRUE(turn.status.ok() && whole.status.ok())
          << "turn: " << turn.status.error_code() << " " << turn.status.error_message() << "; one request ("
          << c.past.size() + q.size() << " tokens): " << whole.status.error_code() << " " << whole.status.error_message();
      EXPECT_EQ(turn.ids(), whole.ids()) << c.id << " after restart " << round;
      c.past = Cat({c.past, q, turn.ids()});
      c.open.reset();
      ++checked_turns;
    }
    if (round == 3) break;
    // The load: each conversation takes turns back to back until glad dies under it.
    std::mutex mu;
    std::vector<std::thread> clients;
    for (size_t i = 0; i < convs.size(); ++i) {
      clients.emplace_back([&, i, s = rng()] {
        std::mt19937 r(s);
        auto client_stub = v1::Gla::NewStub(glad.channel());
        for (int k = 0;; ++k) {
          Turn t{Text(1 + static_cast<int>(r() % 12), static_cast<int>(r() % 1000)), 1 + static_cast<int>(r() % 6)};
          {
            std::lock_guard<std::mutex> l(mu);
            convs[i].open = t;
          }
          const Result res = Generate(*client_stub, Request(t.prompt, t.max_new, convs[i].id));
          if (!res.status.ok()) return;  // glad is gone: this turn stays open
          std::lock_guard<std::mutex> l(mu);
          convs[i].past = Cat({convs[i].past, t.prompt, res.ids()});
          convs[i].open.reset();
          ++convs[i].seen;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1200));
    glad.Kill();
    for (auto& t : clients) t.join();
  }
  int seen = 0;
  for (const Conversation& c : convs) seen += c.seen;
  std::printf("%d turns seen complete under load, %d checked after restarts, %d completed on the server "
              "after the client lost its answer\n", seen, checked_turns, server_ahead);
  EXPECT_GT(seen, 20) << "the load should have completed turns before each kill";
}

}  // namespace
}  // namespace gla
