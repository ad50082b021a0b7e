// End to end: gla.v1.FineTune on a real glad on loopback. Jobs from token sequences on the
// reference checkpoint (succeed with falling loss; adapter listed and on disk), cancel, queue
// bound, every refusal, generation going on while a job trains, health/reflection, adapters
// loaded with --adapter; text and data_file jobs on a random model with a tokenizer; gla-loadgen's
// serving-with-a-job measurement.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "health.grpc.pb.h"
#include "models/safetensors.h"
#include "reflection.grpc.pb.h"
#include "tests/support/glad_process.h"
#include "tests/support/random_model.h"
#include "tests/support/spm_train.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace fs = std::filesystem;
using testing::GladProcess;
using std::chrono::milliseconds;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif

std::vector<int32_t> RefIds(const char* name) {
  auto f = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
  auto v = *ToInt64(*f->Find(name));
  return std::vector<int32_t>(v.begin(), v.end());
}

// Repetitive documents a small adapter learns within a few dozen steps.
void AddDocuments(v1::TokenSequences* seqs, int n = 6, int length = 50) {
  for (int d = 0; d < n; ++d) {
    v1::TokenIds* ids = seqs->add_sequences();
    for (int i = 0; i < length; ++i) ids->add_ids((7 * i + 3 * d) % 40 + 100);
  }
}

v1::CreateFineTuneJobRequest TokenJob(const std::string& name, int64_t steps) {
  v1::CreateFineTuneJobRequest r;
  r.set_adapter_name(name);
  v1::FineTuneHyperParameters* hp = r.mutable_hyperparameters();
  hp->set_rank(4);
  hp->set_max_steps(steps);
  hp->set_warmup_steps(2);
  hp->set_batch_sequences(2);
  hp->set_sequence_length(24);
  hp->set_learning_rate(1e-2);
  AddDocuments(r.mutable_token_sequences());
  return r;
}

struct Created {
  grpc::Status status;
  v1::FineTuneJob job;
};

Created Create(v1::FineTune::Stub& stub, const v1::CreateFineTuneJobRequest& req) {
  grpc::ClientContext ctx;
  Created c;
  c.status = stub.CreateFineTuneJob(&ctx, req, &c.job);
  return c;
}

v1::FineTuneJob Get(v1::FineTune::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetFineTuneJobRequest req;
  req.set_job_id(id);
  v1::FineTuneJob job;
  EXPECT_TRUE(stub.GetFineTuneJob(&ctx, req, &job).ok());
  return job;
}

grpc::Status Cancel(v1::FineTune::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::CancelFineTuneJobRequest req;
  req.set_job_id(id);
  v1::FineTuneJob job;
  return stub.CancelFineTuneJob(&ctx, req, &job);
}

struct Watched {
  std::vector<v1::FineTuneProgress> events;
  grpc::Status status;
};

// Watches a job; `until` (when given) ends the watch early, cancelling the call, once it is true.
Watched Watch(v1::FineTune::Stub& stub, const std::string& id, int deadline_ms = 120000,
              const std::function<bool(const v1::FineTuneProgress&)>& until = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(deadline_ms));
  v1::WatchFineTuneJobRequest req;
  req.set_job_id(id);
  Watched w;
  auto reader = stub.WatchFineTuneJob(&ctx, req);
  v1::FineTuneProgress p;
  while (reader->Read(&p)) {
    w.events.push_back(p);
    if (until && until(p)) {
      ctx.TryCancel();
      break;
    }
  }
  w.status = reader->Finish();
  return w;
}

std::vector<std::string> AdapterNames(v1::FineTune::Stub& stub, std::vector<v1::Adapter>* out = nullptr) {
  grpc::ClientContext ctx;
  v1::ListAdaptersResponse resp;
  EXPECT_TRUE(stub.ListAdapters(&ctx, {}, &resp).ok());
  std::vector<std::string> names;
  for (const auto& a : resp.adapters()) {
    names.push_back(a.name());
    if (out) out->push_back(a);
  }
  return names;
}

class FineTuneE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(testing::MakeTempDir("finetune-e2e"));
    fs::create_directories(*root_ + "/data");
    std::ofstream(*root_ + "/data/train.txt") << "some text\n";
    std::ofstream(*root_ + "/outside.txt") << "secret\n";
    fs::create_symlink(*root_ + "/outside.txt", *root_ + "/data/escape.txt");
    server_ = new GladProcess({"--model", testing::TinyModelDir(), "--threads", "1", "--max_new_tokens", "100000",
                               "--adapter_dir", *root_ + "/adapters", "--finetune_data_dir", *root_ + "/data",
                               "--finetune_max_tokens", "5000", "--finetune_max_queued", "2"});
  }
  void SetUp() override { ASSERT_TRUE(server_ != nullptr && server_->ok()) << (server_ ? server_->log() : ""); }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Terminate(), 0) << server_->log();
    delete server_;
    delete root_;
  }
  static std::unique_ptr<v1::FineTune::Stub> FineTune() { return v1::FineTune::NewStub(server_->channel()); }
  static GladProcess* server_;
  static std::string* root_;
};
GladProcess* FineTuneE2E::server_ = nullptr;
std::string* FineTuneE2E::root_ = nullptr;

TEST_F(FineTuneE2E, TokenJobSucceedsWithFallingLossAndItsAdapterIsServed) {
  auto ft = FineTune();
  const Created c = Create(*ft, TokenJob("tokens-lora", 30));
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_EQ(c.job.state(), v1::FINE_TUNE_JOB_STATE_QUEUED);
  EXPECT_EQ(c.job.documents(), 6u);
  EXPECT_EQ(c.job.data_tokens(), 300u);
  EXPECT_EQ(c.job.hyperparameters().alpha(), 16.0);  // defaults echoed
  EXPECT_EQ(c.job.hyperparameters().target_modules_size(), 4);

  const Watched w = Watch(*ft, c.job.id());
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_GE(w.events.size(), 33u);
  EXPECT_EQ(w.events.front().state(), v1::FINE_TUNE_JOB_STATE_QUEUED);
  EXPECT_EQ(w.events.back().state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED) << w.events.back().error();
  std::vector<double> losses;
  for (const auto& e : w.events)
    if (e.state() == v1::FINE_TUNE_JOB_STATE_RUNNING && e.step() > 0) {
      EXPECT_EQ(e.step(), static_cast<int64_t>(losses.size()) + 1);  // every step, in order
      EXPECT_EQ(e.total_steps(), 30);
      EXPECT_GT(e.tokens_per_second(), 0.0);
      losses.push_back(e.loss());
    }
  ASSERT_EQ(losses.size(), 30u);
  std::printf("[ measure ] loss %.3f -> %.3f\n", losses.front(), losses.back());
  EXPECT_LT(losses.back(), losses.front() - 0.5);

  const v1::FineTuneJob job = Get(*ft, c.job.id());
  EXPECT_EQ(job.state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.progress().step(), 30);
  EXPECT_GT(job.end_time_s(), 0.0);
  const std::string dir = *root_ + "/adapters/tokens-lora";
  EXPECT_EQ(fs::canonical(job.output_dir()), fs::canonical(dir));
  EXPECT_TRUE(fs::exists(dir + "/adapter_config.json"));
  EXPECT_TRUE(fs::exists(dir + "/adapter_model.safetensors"));
  std::vector<v1::Adapter> adapters;
  const auto names = AdapterNames(*ft, &adapters);
  ASSERT_NE(std::find(names.begin(), names.end(), "tokens-lora"), names.end());
  for (const auto& a : adapters)
    if (a.name() == "tokens-lora") {
      EXPECT_EQ(a.source(), "job:" + c.job.id());
      EXPECT_EQ(a.rank(), 4);
    }
  // The name is taken now.
  EXPECT_EQ(Create(*ft, TokenJob("tokens-lora", 3)).status.error_code(), grpc::StatusCode::ALREADY_EXISTS);

  // Generation can name the adapter at once; the base model answers otherwise, and an unknown
  // name is NOT_FOUND.
  auto gla = server_->stub();
  auto generate = [&](const std::string& adapter, std::vector<int32_t>* out) {
    v1::GenerateRequest g;
    const auto prompt = RefIds("greedy.prompt_ids");
    g.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
    g.set_max_new_tokens(16);
    g.set_ignore_eos(true);
    g.set_adapter(adapter);
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    const grpc::Status st = gla->Generate(&ctx, g, &resp);
    out->assign(resp.token_ids().begin(), resp.token_ids().end());
    return st;
  };
  std::vector<int32_t> base_out, tuned_out, missing_out;
  ASSERT_TRUE(generate("", &base_out).ok());
  ASSERT_TRUE(generate("tokens-lora", &tuned_out).ok());
  EXPECT_EQ(base_out, RefIds("greedy.output_ids"));
  EXPECT_NE(tuned_out, base_out);
  EXPECT_EQ(generate("no-such-adapter", &missing_out).error_code(), grpc::StatusCode::NOT_FOUND);
  // Watching a finished job replays it and ends.
  EXPECT_EQ(Watch(*ft, c.job.id()).events.size(), w.events.size());
}

// Adapters loaded and unloaded while the server runs: from inside --adapter_dir only, refused by
// name when their files are bad, replaced on request, gone for new requests once unloaded.
TEST_F(FineTuneE2E, LoadAndUnloadAdaptersAtRunTime) {
  auto ft = FineTune();
  const Created c = Create(*ft, TokenJob("made-here", 6));
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  ASSERT_EQ(Watch(*ft, c.job.id()).events.back().state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED);
  const std::string adapters = *root_ + "/adapters";
  auto load = [&](const std::string& name, const std::string& path, bool replace, v1::Adapter* out = nullptr) {
    v1::LoadAdapterRequest req;
    req.set_name(name);
    req.set_path(path);
    req.set_replace(replace);
    grpc::ClientContext ctx;
    v1::Adapter resp;
    const grpc::Status st = ft->LoadAdapter(&ctx, req, &resp);
    if (out != nullptr) *out = resp;
    return st;
  };
  auto unload = [&](const std::string& name) {
    v1::UnloadAdapterRequest req;
    req.set_name(name);
    grpc::ClientContext ctx;
    v1::UnloadAdapterResponse resp;
    return ft->UnloadAdapter(&ctx, req, &resp).error_code();
  };
  auto generate = [&](const std::string& adapter) {
    v1::GenerateRequest g;
    g.mutable_token_ids()->add_ids(5);
    g.mutable_token_ids()->add_ids(9);
    g.set_max_new_tokens(4);
    g.set_adapter(adapter);
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    return server_->stub()->Generate(&ctx, g, &resp).error_code();
  };

  auto listed = [&](const std::string& name) {  // other tests of this suite may have added theirs
    const auto names = AdapterNames(*ft);
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  // The job's directory under another name.
  v1::Adapter a;
  const grpc::Status ok = load("copy", "made-here", false, &a);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(a.source(), "load");
  EXPECT_EQ(a.rank(), 4);
  EXPECT_TRUE(listed("copy") && listed("made-here"));
  EXPECT_EQ(generate("copy"), grpc::StatusCode::OK);

  // Refusals, each naming its cause; nothing changes.
  fs::create_directories(adapters + "/broken");
  std::ofstream(adapters + "/broken/adapter_config.json") << "{ not json";
  fs::create_directory_symlink(*root_ + "/data", adapters + "/escape");
  // A real folder inside whose files are symbolic links to an adapter outside --adapter_dir.
  const std::string outside = *root_ + "/outside-adapter";
  fs::copy(adapters + "/made-here", outside, fs::copy_options::recursive);
  fs::create_directories(adapters + "/linked-files");
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::create_symlink(outside + "/" + f, adapters + "/linked-files/" + f);
  struct Bad {
    std::string name, path, needle;
    grpc::StatusCode code;
  };
  const Bad bads[] = {{"x", "/etc", "relative", grpc::StatusCode::INVALID_ARGUMENT},
                      {"x", "../data", "'..'", grpc::StatusCode::INVALID_ARGUMENT},
                      {"x", "escape", "outside", grpc::StatusCode::INVALID_ARGUMENT},
                      {"x", "linked-files", "adapter_config.json': leads outside", grpc::StatusCode::INVALID_ARGUMENT},
                      {"x", "nowhere", "no such directory", grpc::StatusCode::INVALID_ARGUMENT},
                      {"x", "broken", "adapter_config.json", grpc::StatusCode::INVALID_ARGUMENT},
                      {".x", "made-here", "name", grpc::StatusCode::INVALID_ARGUMENT},
                      {"copy", "made-here", "already", grpc::StatusCode::ALREADY_EXISTS}};
  for (const Bad& b : bads) {
    const grpc::Status st = load(b.name, b.path, false);
    EXPECT_EQ(st.error_code(), b.code) << b.path << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(b.needle), std::string::npos) << b.path << ": " << st.error_message();
  }
  EXPECT_FALSE(listed("x") || listed(".x"));

  // replace takes the name over; unload takes it off (new requests are NOT_FOUND).
  ASSERT_TRUE(load("made-here", "made-here", true, &a).ok());
  EXPECT_EQ(a.source(), "load");
  EXPECT_EQ(unload("copy"), grpc::StatusCode::OK);
  EXPECT_EQ(unload("copy"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(generate("copy"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(generate("made-here"), grpc::StatusCode::OK);
  EXPECT_TRUE(listed("made-here"));
  EXPECT_FALSE(listed("copy"));
}

// gla-cli's fine-tune commands end to end: a job from a local ids file watched to its end, the
// adapter listed and used, loaded under another name and unloaded; errors exit 1 with the reason.
TEST_F(FineTuneE2E, GlaCliFineTuneCommands) {
  const char* env = std::getenv("GLA_CLI_PATH");  // the bundled build on the GPU machine
  const std::string cli = env != nullptr ? env : GLA_CLI_PATH;
  const std::string dir = testing::MakeTempDir("cli-finetune");
  {
    std::ofstream ids(dir + "/docs.ids");
    for (int d = 0; d < 6; ++d) {
      for (int i = 0; i < 50; ++i) ids << (i ? "," : "") << (7 * i + 3 * d) % 40 + 100;
      ids << "\n";
    }
  }
  auto run = [&](const std::string& args, int* code) {
    const std::string out = dir + "/out.txt";
    const int st = std::system((cli + " " + args + " --addr " + server_->address() + " > " + out + " 2>&1").c_str());
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    std::stringstream text;
    text << std::ifstream(out).rdbuf();
    return text.str();
  };
  int code = 0;
  std::string out = run("finetune --name cli-made --ids-file " + dir + "/docs.ids" +
                            " --rank 4 --steps 4 --batch 2 --seq-len 24 --lr 0.01",
                        &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("running step 4/4"), std::string::npos) << out;
  EXPECT_NE(out.find("state=succeeded"), std::string::npos) << out;
  out = run("adapters", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("cli-made rank=4"), std::string::npos) << out;
  out = run("jobs", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("adapter=cli-made state=succeeded"), std::string::npos) << out;
  out = run("generate --prompt-ids 5,9 --max-new-tokens 3 --adapter cli-made", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("completion_tokens=3"), std::string::npos) << out;
  out = run("load-adapter --name cli-copy --path cli-made", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("cli-copy rank=4"), std::string::npos) << out;
  out = run("unload-adapter --name cli-copy", &code);
  EXPECT_EQ(code, 0) << out;
  out = run("generate --prompt-ids 5,9 --max-new-tokens 3 --adapter cli-copy", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
  out = run("load-adapter --name z --path ../x", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("'..'"), std::string::npos) << out;
  out = run("finetune --name z --ids-file " + dir + "/docs.ids --method bogus", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("--method bogus"), std::string::npos) << out;
  out = run("job --id ft-does-not-exist", &code);
  EXPECT_EQ(code, 1) << out;
}

// FULL (a small model): a checkpoint another glad can serve; not an adapter.
TEST_F(FineTuneE2E, FullJobWritesAServableCheckpoint) {
  auto ft = FineTune();
  v1::CreateFineTuneJobRequest req = TokenJob("tokens-full", 8);
  req.set_method(v1::FINE_TUNE_METHOD_FULL);
  req.mutable_hyperparameters()->clear_rank();
  req.mutable_hyperparameters()->set_learning_rate(3e-3);
  const Created c = Create(*ft, req);
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_EQ(c.job.method(), v1::FINE_TUNE_METHOD_FULL);
  EXPECT_FALSE(c.job.hyperparameters().has_rank());  // LoRA options do not apply
  const Watched w = Watch(*ft, c.job.id());
  ASSERT_FALSE(w.events.empty());
  ASSERT_EQ(w.events.back().state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED) << w.events.back().error();
  const std::string dir = Get(*ft, c.job.id()).output_dir();
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  const auto names = AdapterNames(*ft);
  EXPECT_EQ(std::find(names.begin(), names.end(), "tokens-full"), names.end());
  GladProcess tuned({"--model", dir, "--threads", "1"});
  ASSERT_TRUE(tuned.ok()) << tuned.log();
  v1::GenerateRequest g;
  g.mutable_token_ids()->add_ids(100);
  g.set_max_new_tokens(4);
  g.set_ignore_eos(true);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(tuned.stub()->Generate(&ctx, g, &resp).ok());
  EXPECT_EQ(resp.token_ids_size(), 4);
}

TEST_F(FineTuneE2E, CancelStopsALongJob) {
  auto ft = FineTune();
  const Created c = Create(*ft, TokenJob("long-cancelled", 1000000));
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  // Watch until it has taken a few steps, then cancel and watch it end.
  const Watched early = Watch(*ft, c.job.id(), 60000, [](const v1::FineTuneProgress& p) { return p.step() >= 3; });
  ASSERT_FALSE(early.events.empty());
  ASSERT_GE(early.events.back().step(), 3);
  ASSERT_TRUE(Cancel(*ft, c.job.id()).ok());
  const Watched w = Watch(*ft, c.job.id());
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  EXPECT_EQ(w.events.back().state(), v1::FINE_TUNE_JOB_STATE_CANCELLED);
  EXPECT_LT(w.events.back().step(), 1000000);
  const v1::FineTuneJob job = Get(*ft, c.job.id());
  EXPECT_EQ(job.state(), v1::FINE_TUNE_JOB_STATE_CANCELLED);
  EXPECT_TRUE(job.cancel_requested());
  EXPECT_FALSE(fs::exists(*root_ + "/adapters/long-cancelled"));
  const auto names = AdapterNames(*ft);
  EXPECT_EQ(std::find(names.begin(), names.end(), "long-cancelled"), names.end());
}

TEST_F(FineTuneE2E, GenerationGoesOnWhileAJobTrains) {
  auto ft = FineTune();
  auto gla = server_->stub();
  const Created c = Create(*ft, TokenJob("while-serving", 1000000));
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  Watch(*ft, c.job.id(), 60000, [](const v1::FineTuneProgress& p) { return p.step() >= 1; });
  const int64_t step_before = Get(*ft, c.job.id()).progress().step();

  // Greedy generation is unchanged by the training beside it: 4 streams at once, at least 8
  // rounds, and on until the job has finished a step while serving kept the device busy. Under
  // that load training gets its share (25%) in slices between the layers of a step, so how many
  // rounds a step takes depends on the machine (a sanitizer build is several times slower); the
  // 60 s bound is what says training is not starved.
  v1::GenerateRequest req;
  const auto prompt = RefIds("greedy.prompt_ids");
  req.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  req.set_max_new_tokens(16);
  req.set_ignore_eos(true);
  const auto expected = RefIds("greedy.output_ids");
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  v1::FineTuneJob during;
  int rounds = 0;
  for (;; ++rounds) {
    if (rounds >= 8) {
      during = Get(*ft, c.job.id());
      if (during.progress().step() > step_before || std::chrono::steady_clock::now() > give_up) break;
    }
    std::vector<std::thread> threads;
    std::atomic<int> good{0};
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        v1::GenerateResponse resp;
        const grpc::Status st = gla->Generate(&ctx, req, &resp);
        if (st.ok() && std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()) == expected) ++good;
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(good.load(), 4) << "round " << rounds;
  }
  // The job went on too (a step finished while serving was busy), and is still running.
  EXPECT_EQ(during.state(), v1::FINE_TUNE_JOB_STATE_RUNNING);
  EXPECT_GT(during.progress().step(), step_before) << "after " << rounds << " rounds of serving";
  ASSERT_TRUE(Cancel(*ft, c.job.id()).ok());
  EXPECT_EQ(Watch(*ft, c.job.id()).events.back().state(), v1::FINE_TUNE_JOB_STATE_CANCELLED);
}

TEST_F(FineTuneE2E, QueueIsBounded) {
  auto ft = FineTune();
  const Created running = Create(*ft, TokenJob("q-running", 1000000));
  ASSERT_TRUE(running.status.ok());
  Watch(*ft, running.job.id(), 60000, [](const v1::FineTuneProgress& p) { return p.step() >= 1; });
  const Created a = Create(*ft, TokenJob("q-a", 5)), b = Create(*ft, TokenJob("q-b", 5));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(Create(*ft, TokenJob("q-c", 5)).status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Cancel(*ft, a.job.id()).ok());  // a queued job: cancelled at once, never started
  const v1::FineTuneJob ca = Get(*ft, a.job.id());
  EXPECT_EQ(ca.state(), v1::FINE_TUNE_JOB_STATE_CANCELLED);
  EXPECT_EQ(ca.start_time_s(), 0.0);
  ASSERT_TRUE(Cancel(*ft, running.job.id()).ok());
  EXPECT_EQ(Watch(*ft, b.job.id()).events.back().state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED);
}

TEST_F(FineTuneE2E, BadRequestsAreRefusedWithTheRightCode) {
  auto ft = FineTune();
  auto code = [&](const v1::CreateFineTuneJobRequest& r) {
    const Created c = Create(*ft, r);
    if (c.status.ok()) Cancel(*ft, c.job.id());
    return c.status.error_code();
  };
  using grpc::StatusCode;
  auto with = [](const std::function<void(v1::CreateFineTuneJobRequest&)>& edit) {
    v1::CreateFineTuneJobRequest r = TokenJob("bad", 5);
    edit(r);
    return r;
  };
  // Hyper-parameters.
  EXPECT_EQ(code(with([](auto& r) { r.mutable_hyperparameters()->set_rank(0); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_hyperparameters()->set_learning_rate(-1); })),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_hyperparameters()->set_max_steps(0); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_hyperparameters()->set_warmup_steps(6); })),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_hyperparameters()->set_dropout(1.0); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_hyperparameters()->add_target_modules("attn"); })),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.set_adapter_name("../x"); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.set_adapter_name(""); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.set_method(static_cast<v1::FineTuneMethod>(9)); })),
            StatusCode::INVALID_ARGUMENT);
  // Data: none, empty, too short, too much, outside the vocabulary.
  EXPECT_EQ(code(with([](auto& r) { r.clear_data(); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_token_sequences()->Clear(); })), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) {
              r.mutable_token_sequences()->Clear();
              r.mutable_token_sequences()->add_sequences()->add_ids(5);
            })),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { AddDocuments(r.mutable_token_sequences(), 100, 50); })),  // > 5000 tokens
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_token_sequences()->mutable_sequences(0)->set_ids(0, 512); })),
            StatusCode::INVALID_ARGUMENT);
  // data_file: outside the data directory in every way; a good one needs a tokenizer this model lacks.
  for (const std::string& path : {*root_ + "/outside.txt", *root_ + "/data/train.txt", std::string("../outside.txt"),
                                  std::string("escape.txt"), std::string("missing.txt"), std::string("")})
    EXPECT_EQ(code(with([&](auto& r) { r.set_data_file(path); })), StatusCode::INVALID_ARGUMENT) << path;
  EXPECT_EQ(code(with([](auto& r) { r.set_data_file("train.txt"); })), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(code(with([](auto& r) { r.mutable_texts()->add_texts("hello"); })), StatusCode::FAILED_PRECONDITION);
  // The message names the field.
  const Created rank = Create(*ft, with([](auto& r) { r.mutable_hyperparameters()->set_rank(0); }));
  EXPECT_NE(rank.status.error_message().find("rank"), std::string::npos) << rank.status.error_message();
  const Created esc = Create(*ft, with([](auto& r) { r.set_data_file("escape.txt"); }));
  EXPECT_NE(esc.status.error_message().find("data_file"), std::string::npos) << esc.status.error_message();
}

TEST_F(FineTuneE2E, UnknownJobsAreNotFound) {
  auto ft = FineTune();
  grpc::ClientContext g;
  v1::GetFineTuneJobRequest gr;
  gr.set_job_id("ft-12345");
  v1::FineTuneJob job;
  EXPECT_EQ(ft->GetFineTuneJob(&g, gr, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Cancel(*ft, "nope").error_code(), grpc::StatusCode::NOT_FOUND);
  const Watched w = Watch(*ft, "nope");
  EXPECT_EQ(w.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(w.events.empty());
  EXPECT_EQ(Cancel(*ft, "").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(FineTuneE2E, HealthAndReflectionSeeTheService) {
  auto health = grpc::health::v1::Health::NewStub(server_->channel());
  grpc::ClientContext hctx;
  grpc::health::v1::HealthCheckResponse hresp;
  ASSERT_TRUE(health->Check(&hctx, {}, &hresp).ok());
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  auto refl = grpc::reflection::v1alpha::ServerReflection::NewStub(server_->channel());
  grpc::ClientContext rctx;
  auto rw = refl->ServerReflectionInfo(&rctx);
  grpc::reflection::v1alpha::ServerReflectionRequest rq;
  rq.set_list_services("");
  ASSERT_TRUE(rw->Write(rq));
  grpc::reflection::v1alpha::ServerReflectionResponse rr;
  ASSERT_TRUE(rw->Read(&rr));
  std::vector<std::string> names;
  for (const auto& s : rr.list_services_response().service()) names.push_back(s.name());
  EXPECT_NE(std::find(names.begin(), names.end(), "gla.v1.FineTune"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "gla.v1.Gla"), names.end());
  rw->WritesDone();
  EXPECT_TRUE(rw->Finish().ok());
}

// A server without --adapter_dir refuses jobs; --adapter loads adapters at start-up, and a bad
// one stops the server with one line naming it.
TEST(FineTuneE2ESmall, AdapterFlagsAndNoAdapterDir) {
  const std::string root = testing::MakeTempDir("finetune-e2e-flags");
  std::string adapter;
  {
    GladProcess trainer({"--model", testing::TinyModelDir(), "--threads", "1", "--adapter_dir", root + "/out"});
    ASSERT_TRUE(trainer.ok()) << trainer.log();
    auto ft = v1::FineTune::NewStub(trainer.channel());
    const Created c = Create(*ft, TokenJob("made", 3));
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    ASSERT_EQ(Watch(*ft, c.job.id()).events.back().state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED);
    adapter = Get(*ft, c.job.id()).output_dir();
    EXPECT_EQ(trainer.Terminate(), 0) << trainer.log();
    EXPECT_NE(trainer.log().find("fine-tune job id=" + c.job.id() + " adapter=made succeeded"), std::string::npos)
        << trainer.log();
  }
  GladProcess server({"--model", testing::TinyModelDir(), "--threads", "1", "--adapter", "one=" + adapter,
                      "--adapter=two=" + adapter});
  ASSERT_TRUE(server.ok()) << server.log();
  auto ft = v1::FineTune::NewStub(server.channel());
  std::vector<v1::Adapter> adapters;
  EXPECT_EQ(AdapterNames(*ft, &adapters), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(adapters[0].source(), "flag");
  EXPECT_EQ(Create(*ft, TokenJob("x", 3)).status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  {
    v1::LoadAdapterRequest req;  // adapters load at run time only from inside --adapter_dir
    req.set_name("three");
    req.set_path("x");
    grpc::ClientContext ctx;
    v1::Adapter resp;
    EXPECT_EQ(ft->LoadAdapter(&ctx, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }

  fs::create_directories(root + "/empty");
  GladProcess bad({"--model", testing::TinyModelDir(), "--adapter", "broken=" + root + "/empty"});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.log().find("glad: error: --adapter broken"), std::string::npos) << bad.log();
}

// Text data: `texts` and a data_file, tokenized by the model's tokenizer.
TEST(FineTuneE2EText, TextsAndDataFileJobsSucceed) {
  if (kUnderAsan) {
    GTEST_SKIP() << "skipped under AddressSanitizer: glad loads SentencePiece with RTLD_DEEPBIND, which the "
                    "sanitizer runtime refuses; the release build runs this test";
  }
  const std::string root = testing::MakeTempDir("finetune-e2e-text");
  const std::string model = root + "/model";
  const std::string cfg = R"({"hidden_size": 32, "num_hidden_layers": 2, "num_heads": 2, "vocab_size": 320,
                             "bos_token_id": 1, "eos_token_id": 2})";
  ASSERT_TRUE(testing::WriteRandomModel(model, {cfg, DType::kF32, 11, 1}).ok());
  fs::copy_file(testing::TrainSentencePiece("finetune-e2e"), model + "/tokenizer.model");
  fs::create_directories(root + "/data/sub");
  {
    std::ofstream f(root + "/data/sub/corpus.txt");
    for (int i = 0; i < 20; ++i) f << testing::SampleTexts()[i % testing::SampleTexts().size()] << "\n";
  }
  GladProcess server({"--model", model, "--threads", "1", "--adapter_dir", root + "/adapters", "--finetune_data_dir",
                      root + "/data"});
  ASSERT_TRUE(server.ok()) << server.log();
  auto ft = v1::FineTune::NewStub(server.channel());

  v1::CreateFineTuneJobRequest texts = TokenJob("from-texts", 20);
  for (int i = 0; i < 8; ++i) texts.mutable_texts()->add_texts(testing::SampleTexts()[i % testing::SampleTexts().size()]);
  const Created a = Create(*ft, texts);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.job.documents(), 8u);
  v1::CreateFineTuneJobRequest file = TokenJob("from-file", 20);
  file.set_data_file("sub/corpus.txt");
  const Created b = Create(*ft, file);
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(b.job.documents(), 20u);
  for (const Created* c : {&a, &b}) {
    const Watched w = Watch(*ft, c->job.id());
    ASSERT_FALSE(w.events.empty());
    EXPECT_EQ(w.events.back().state(), v1::FINE_TUNE_JOB_STATE_SUCCEEDED) << w.events.back().error();
  }
  EXPECT_EQ(AdapterNames(*ft), (std::vector<std::string>{"from-file", "from-texts"}));
  // Invalid UTF-8 in a text names it.
  v1::CreateFineTuneJobRequest bad = TokenJob("bad-text", 5);
  bad.mutable_texts()->add_texts("fine");
  bad.mutable_texts()->add_texts("bad \xff");
  const Created c = Create(*ft, bad);
  EXPECT_EQ(c.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(c.status.error_message().find("texts[1]"), std::string::npos) << c.status.error_message();
  EXPECT_EQ(server.Terminate(), 0) << server.log();
}

// gla-loadgen --finetune lora: each level alone, then with a LoRA job training (started, counted,
// cancelled by the tool); both rows complete every request.
TEST_F(FineTuneE2E, LoadgenMeasuresServingWhileAJobTrains) {
  const std::string out = testing::MakeTempDir("loadgen") + "/out";
  const char* env = std::getenv("GLA_LOADGEN_PATH");  // the bundled build on the GPU machine
  const std::string cmd = std::string(env != nullptr ? env : GLA_LOADGEN_PATH) + " --addr " + server_->address() +
                          " --concurrency 1 --requests 2 --prompt-len 8 --max-new-tokens 4 --finetune lora > " + out +
                          " 2>&1";
  const int st = std::system(cmd.c_str());
  std::stringstream text;
  text << std::ifstream(out).rdbuf();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << text.str() << server_->log();
  EXPECT_NE(text.str().find("| 1 | none | 2 | 2 | 0 |"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("| 1 | LoRA running: "), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("training tok/s | 2 | 2 | 0 |"), std::string::npos) << text.str();
  // The tool's job ran on the server and was cancelled (job ids are ft-1, ft-2, ...).
  auto stub = FineTune();
  bool found = false;
  for (int i = 1; i <= 100 && !found; ++i) {
    grpc::ClientContext ctx;
    v1::GetFineTuneJobRequest req;
    req.set_job_id("ft-" + std::to_string(i));
    v1::FineTuneJob job;
    if (!stub->GetFineTuneJob(&ctx, req, &job).ok() || job.adapter_name().rfind("loadgen-1-", 0) != 0) continue;
    found = true;
    EXPECT_EQ(job.state(), v1::FINE_TUNE_JOB_STATE_CANCELLED);
    EXPECT_GT(job.progress().step(), 0);
  }
  EXPECT_TRUE(found) << "no job of the tool's on the server";
}

}  // namespace
}  // namespace gla
