// Fine-tune jobs: the compute gate's sharing policy (deterministic, on a fake clock; and its
// mutual exclusion with real threads), and the job runner against the real Trainer on the
// reference checkpoint: events, success (adapter on disk and in the registry), cancel, queue
// bound, validation, sharing the device with a stand-in for serving.
#include <gtest/gtest.h>

#include <fstream>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "engine/adapter_registry.h"
#include "engine/backend.h"
#include "engine/finetune/compute_gate.h"
#include "engine/finetune/jobs.h"
#include "engine/scheduler.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---- ComputeGate policy on a fake clock (single thread: every call below returns at once).

struct FakeClock {
  Clock::time_point now{};
  void Advance(double seconds) {
    now += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }
};

ComputeGate::Options GateOptions(FakeClock* clock, double share, double window_s = 1.0) {
  ComputeGate::Options o;
  o.training_share = share;
  o.window_s = window_s;
  o.clock = [clock] { return clock->now; };
  return o;
}

void ServingStep(ComputeGate& gate, FakeClock& clock, double seconds) {
  gate.BeginServing();
  clock.Advance(seconds);
  gate.EndServing();
}

void TrainingStep(ComputeGate& gate, FakeClock& clock, double seconds) {
  ASSERT_TRUE(gate.BeginTraining(nullptr));
  clock.Advance(seconds);
  gate.EndTraining();
}

TEST(ComputeGate, TrainingRunsBackToBackWhileServingIsIdle) {
  FakeClock clock;
  ComputeGate gate(GateOptions(&clock, 0.25));
  gate.SetTrainingDemand(true);
  gate.SetServingDemand(false);
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(gate.TrainingMayStart()) << "step " << i;
    TrainingStep(gate, clock, 0.5);
  }
  EXPECT_EQ(gate.stats().training_contended_s, 0.0);  // idle serving: nothing charged
  EXPECT_EQ(gate.stats().balance_s, 0.0);
}

// A short gap between requests is not idleness: while training owes time, it waits out the grace
// before taking an idle device (otherwise every gap would start a step the next request waits for).
TEST(ComputeGate, AGapBetweenRequestsDoesNotLetAnOwingJobIn) {
  FakeClock clock;
  ComputeGate::Options o = GateOptions(&clock, 0.25, 10.0);
  o.idle_grace_s = 0.05;
  ComputeGate gate(o);
  gate.SetTrainingDemand(true);
  gate.SetServingDemand(true);
  TrainingStep(gate, clock, 1.0);  // contended: owes 0.75 s
  ASSERT_LT(gate.stats().balance_s, 0.0);
  gate.SetServingDemand(false);  // the request finished; the client's next one is on its way
  EXPECT_FALSE(gate.TrainingMayStart());
  clock.Advance(0.04);
  EXPECT_FALSE(gate.TrainingMayStart()) << "40 ms of idle is a gap";
  gate.SetServingDemand(true);  // the next request
  ServingStep(gate, clock, 0.2);
  gate.SetServingDemand(false);
  clock.Advance(0.049);
  EXPECT_FALSE(gate.TrainingMayStart()) << "the grace counts from the last time serving went idle";
  clock.Advance(0.002);
  EXPECT_TRUE(gate.TrainingMayStart()) << "idle for longer than the grace: the device is training's";
  TrainingStep(gate, clock, 0.5);
  EXPECT_LT(gate.stats().balance_s, 0.0) << "an uncontended step is not charged (nor forgiven)";
}

TEST(ComputeGate, TrainingTakesItsShareWhileServingHasWork) {
  FakeClock clock;
  ComputeGate gate(GateOptions(&clock, 0.25, 10.0));
  gate.SetTrainingDemand(true);
  gate.SetServingDemand(true);
  EXPECT_TRUE(gate.TrainingMayStart());  // nothing owed yet
  TrainingStep(gate, clock, 1.0);        // owes 0.75 s of (1 - share)-weighted time
  EXPECT_DOUBLE_EQ(gate.stats().balance_s, -0.75);
  // Serving must now run three times as long as that step before training may start again.
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(gate.TrainingMayStart()) << "after " << i << " s of serving";
    ServingStep(gate, clock, 1.0);
  }
  EXPECT_FALSE(gate.TrainingMayStart());
  ServingStep(gate, clock, 1.0);
  EXPECT_TRUE(gate.TrainingMayStart());
}

// Steps of unequal, co-prime lengths, taken whenever the policy allows: training's share of the
// contended busy time converges to the configured share, whatever the step lengths.
TEST(ComputeGate, LongRunShareMatchesTheSetting) {
  for (double share : {0.1, 0.25, 0.5}) {
    for (auto [serve_s, train_s] : {std::pair{0.003, 0.017}, std::pair{0.020, 0.007}, std::pair{0.001, 0.5}}) {
      FakeClock clock;
      ComputeGate gate(GateOptions(&clock, share));
      gate.SetTrainingDemand(true);
      gate.SetServingDemand(true);
      for (int i = 0; i < 100000; ++i) {
        if (gate.TrainingMayStart()) TrainingStep(gate, clock, train_s);
        else ServingStep(gate, clock, serve_s);
      }
      const ComputeGate::Stats st = gate.stats();
      const double got = st.training_busy_s / (st.training_busy_s + st.serving_busy_s);
      EXPECT_NEAR(got, share, 0.01) << "share " << share << ", steps " << serve_s << " / " << train_s;
      EXPECT_GT(st.serving_steps, 0u);
      EXPECT_GT(st.training_steps, 0u);
    }
  }
}

TEST(ComputeGate, ServingAloneBanksAtMostOneWindowOfCredit) {
  FakeClock clock;
  ComputeGate gate(GateOptions(&clock, 0.25, 1.0));
  gate.SetServingDemand(true);
  for (int i = 0; i < 100; ++i) ServingStep(gate, clock, 1.0);  // no job: nothing earned
  EXPECT_EQ(gate.stats().balance_s, 0.0);
  gate.SetTrainingDemand(true);
  for (int i = 0; i < 100; ++i) ServingStep(gate, clock, 1.0);  // a job waits: capped at share * window
  EXPECT_DOUBLE_EQ(gate.stats().balance_s, 0.25);
  // The burst that credit buys: 0.25 / (0.75 * 0.1) = 3.3, so four 0.1 s steps, then serving again.
  int burst = 0;
  while (gate.TrainingMayStart() && burst < 100) {
    TrainingStep(gate, clock, 0.1);
    ++burst;
  }
  EXPECT_EQ(burst, 4);
}

TEST(ComputeGate, ZeroShareTrainsOnlyWhileServingIsIdle) {
  FakeClock clock;
  ComputeGate gate(GateOptions(&clock, 0.0));
  gate.SetTrainingDemand(true);
  gate.SetServingDemand(true);
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(gate.TrainingMayStart());
    ServingStep(gate, clock, 1.0);
  }
  gate.SetServingDemand(false);
  EXPECT_TRUE(gate.TrainingMayStart());
}

TEST(ComputeGate, StepThatServingWaitedForIsCharged) {
  FakeClock clock;
  ComputeGate gate(GateOptions(&clock, 0.25));
  gate.SetTrainingDemand(true);
  ASSERT_TRUE(gate.BeginTraining(nullptr));  // serving idle at the start...
  gate.SetServingDemand(true);               // ...but a request arrives during the step
  clock.Advance(2.0);
  gate.EndTraining();
  EXPECT_DOUBLE_EQ(gate.stats().training_contended_s, 2.0);
  EXPECT_DOUBLE_EQ(gate.stats().balance_s, -1.5);
}

TEST(ComputeGate, BeginTrainingGivesUpWhenStopped) {
  FakeClock clock;
  ComputeGate gate(GateOptions(&clock, 0.0));
  gate.SetServingDemand(true);  // share 0 and serving busy: training would wait forever
  std::atomic<bool> stop{false};
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(30));
    stop = true;
    gate.Wake();
  });
  EXPECT_FALSE(gate.BeginTraining([&] { return stop.load(); }));
  t.join();
  EXPECT_EQ(gate.stats().training_steps, 0u);
  gate.BeginServing();  // the gate was not taken
  gate.EndServing();
}

// Real threads, real clock: serving (busy all the time) and training never overlap, and neither
// starves: serving keeps stepping, training gets roughly its share.
TEST(ComputeGate, MutualExclusionUnderContention) {
  ComputeGate::Options o;
  o.training_share = 0.25;
  ComputeGate gate(o);
  std::atomic<int> inside{0};
  std::atomic<bool> overlap{false}, done{false};
  auto busy = [&](milliseconds d) {
    if (inside.fetch_add(1) != 0) overlap = true;
    std::this_thread::sleep_for(d);
    inside.fetch_sub(1);
  };
  gate.SetTrainingDemand(true);
  std::thread serving([&] {
    while (!done) {
      gate.SetServingDemand(true);
      gate.BeginServing();
      busy(milliseconds(1));
      gate.EndServing();
    }
    gate.SetServingDemand(false);
  });
  int training_steps = 0;
  const auto end = Clock::now() + milliseconds(800);
  while (Clock::now() < end) {
    ASSERT_TRUE(gate.BeginTraining(nullptr));
    busy(milliseconds(3));
    gate.EndTraining();
    ++training_steps;
  }
  done = true;
  serving.join();
  EXPECT_FALSE(overlap);
  const ComputeGate::Stats st = gate.stats();
  EXPECT_GT(st.serving_steps, 50u);
  EXPECT_GT(training_steps, 10);
  const double share = st.training_busy_s / (st.training_busy_s + st.serving_busy_s);
  EXPECT_GT(share, 0.15);
  EXPECT_LT(share, 0.35);
}

// The scheduler runs every serving step inside the gate, says when it has work, and waits for a
// training step in flight.
TEST(ComputeGate, SchedulerStepsGoThroughTheGate) {
  ComputeGate gate;
  auto backend = MakeCpuBackend(testing::TinyModelDir(), {.slots = 2, .threads = 1});
  ASSERT_TRUE(backend.ok()) << backend.status();
  SchedulerOptions so;
  so.compute_gate = &gate;
  Scheduler scheduler(**backend, so);
  auto generate = [&](std::atomic<int>* tokens) {
    auto done = std::make_shared<std::promise<void>>();
    GenerationSpec spec;
    spec.prompt = {1, 17, 42};
    spec.max_new_tokens = 8;
    spec.ignore_eos = true;
    auto h = scheduler.Submit(std::move(spec), [done, tokens](GenerationUpdate&& u) {
      *tokens += static_cast<int>(u.tokens.size());
      if (u.finished) done->set_value();
    });
    EXPECT_TRUE(h.ok());
    return done->get_future();
  };
  std::atomic<int> tokens{0};
  ASSERT_EQ(generate(&tokens).wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(tokens.load(), 8);
  EXPECT_GE(gate.stats().serving_steps, 8u);
  // Idle again: the scheduler has withdrawn its demand (training would run back to back).
  for (int i = 0; i < 100 && !gate.TrainingMayStart(); ++i) std::this_thread::sleep_for(milliseconds(5));
  EXPECT_TRUE(gate.TrainingMayStart());

  // While a training step holds the gate, the request waits; it goes on once the step ends.
  ASSERT_TRUE(gate.BeginTraining(nullptr));
  std::atomic<int> held{0};
  auto pending = generate(&held);
  EXPECT_EQ(pending.wait_for(milliseconds(200)), std::future_status::timeout);
  EXPECT_EQ(held.load(), 0);
  gate.EndTraining();
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(held.load(), 8);
  EXPECT_GT(gate.stats().training_contended_s, 0.1);  // serving wanted the device during that step
}

// ---- FineTuneJobs against the real Trainer on the reference checkpoint.

GlaConfig TinyConfig() {
  auto c = LoadGlaConfig(testing::TinyModelDir());
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// Repetitive documents a small adapter learns quickly (as in trainer_test).
std::vector<std::vector<int32_t>> Documents(int n = 6, int length = 50) {
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < n; ++d) {
    std::vector<int32_t> doc;
    for (int i = 0; i < length; ++i) doc.push_back(static_cast<int32_t>((7 * i + 3 * d) % 40 + 100));
    docs.push_back(doc);
  }
  return docs;
}

FineTuneSpec Spec(const std::string& name, int64_t steps) {
  FineTuneSpec s;
  s.adapter_name = name;
  s.options.lora.targets = {LoraTarget::kQ, LoraTarget::kK, LoraTarget::kV, LoraTarget::kO};
  s.options.lora.r = 4;
  s.options.max_steps = steps;
  s.options.warmup_steps = std::min<int64_t>(2, steps);
  s.options.batch_sequences = 2;
  s.options.sequence_length = 24;
  s.options.learning_rate = 1e-2;
  s.documents = Documents();
  return s;
}

class Jobs : public ::testing::Test {
 protected:
  void SetUp() override {
    adapter_dir_ = testing::MakeTempDir(std::string("finetune-jobs-") +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  std::unique_ptr<FineTuneJobs> Make(int max_queued = 4, int64_t max_tokens = 100000, ComputeGate* gate = nullptr,
                                     std::string adapter_dir = "-", int64_t max_full_parameters = 100'000'000) {
    FineTuneJobsOptions o;
    o.max_full_parameters = max_full_parameters;
    o.model_dir = testing::TinyModelDir();
    o.adapter_dir = adapter_dir == "-" ? adapter_dir_ : adapter_dir;
    o.max_queued = max_queued;
    o.max_tokens = max_tokens;
    return std::make_unique<FineTuneJobs>(o, TinyConfig(), registry_, gate);
  }
  // Every event of the job until it ends (or 120 s pass).
  static std::vector<JobEvent> WatchToEnd(const FineTuneJobs& jobs, const std::string& id) {
    std::vector<JobEvent> all;
    size_t next = 0;
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    while (Clock::now() < give_up) {
      auto r = jobs.WaitForEvents(id, next, Clock::now() + milliseconds(500), nullptr);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) break;
      all.insert(all.end(), r->events.begin(), r->events.end());
      next = r->next;
      if (r->final) break;
    }
    return all;
  }
  // Waits until the job has taken `steps` optimizer steps.
  static void WaitForStep(const FineTuneJobs& jobs, const std::string& id, int64_t steps) {
    const auto give_up = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < give_up) {
      auto j = jobs.Get(id);
      ASSERT_TRUE(j.ok());
      if (j->progress.step >= steps || IsFinal(j->state)) return;
      std::this_thread::sleep_for(milliseconds(5));
    }
    FAIL() << "job " << id << " did not reach step " << steps;
  }

  AdapterRegistry registry_;
  std::string adapter_dir_;
};

TEST_F(Jobs, RunsToSuccessSavesLoadsAndRegistersTheAdapter) {
  auto jobs = Make();
  auto job = jobs->Create(Spec("tiny-lora", 30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->id, "ft-1");
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->documents, 6);
  EXPECT_EQ(job->data_tokens, 300);
  const std::vector<JobEvent> events = WatchToEnd(*jobs, job->id);
  ASSERT_EQ(events.size(), 33u);  // queued, running, 30 steps, succeeded
  EXPECT_EQ(events[0].state, JobState::kQueued);
  EXPECT_EQ(events[1].state, JobState::kRunning);
  for (int s = 1; s <= 30; ++s) {
    EXPECT_EQ(events[1 + s].state, JobState::kRunning);
    EXPECT_EQ(events[1 + s].progress.step, s);
    EXPECT_EQ(events[1 + s].progress.total_steps, 30);
  }
  EXPECT_EQ(events.back().state, JobState::kSucceeded) << events.back().error;
  const double first = events[2].progress.loss, last = events.back().progress.loss;
  std::printf("[ measure ] job loss %.3f -> %.3f\n", first, last);
  EXPECT_LT(last, first - 0.5);

  auto done = jobs->Get(job->id);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state, JobState::kSucceeded);
  EXPECT_EQ(done->output_dir, adapter_dir_ + "/tiny-lora");
  EXPECT_TRUE(done->started.has_value() && done->ended.has_value());
  EXPECT_TRUE(fs::exists(done->output_dir + "/adapter_config.json"));
  EXPECT_TRUE(fs::exists(done->output_dir + "/adapter_model.safetensors"));
  // Only the final directory (the temporary one was renamed) beside the job records.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(adapter_dir_)) entries.push_back(e.path().filename().string());
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{".jobs", "tiny-lora"}));
  EXPECT_TRUE(fs::exists(adapter_dir_ + "/.jobs/" + done->id + ".json"));

  ASSERT_NE(registry_.Find("tiny-lora"), nullptr);
  const auto list = registry_.List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].source, "job:ft-1");
  EXPECT_EQ(list[0].r, 4);
  EXPECT_EQ(list[0].target_modules.size(), 4u);

  // A watcher that comes late still gets every event, from the first.
  EXPECT_EQ(WatchToEnd(*jobs, job->id).size(), events.size());
  // The name is taken now.
  EXPECT_EQ(jobs->Create(Spec("tiny-lora", 1)).status().code(), absl::StatusCode::kAlreadyExists);
}

// Full training writes a checkpoint glad can serve; it is not an adapter.
TEST_F(Jobs, FullRunWritesACheckpoint) {
  auto jobs = Make();
  FineTuneSpec s = Spec("tiny-full", 10);
  s.options.method = TrainOptions::Method::kFull;
  s.options.learning_rate = 3e-3;
  auto job = jobs->Create(std::move(s));
  ASSERT_TRUE(job.ok()) << job.status();
  const auto events = WatchToEnd(*jobs, job->id);
  ASSERT_EQ(events.size(), 13u);
  EXPECT_EQ(events.back().state, JobState::kSucceeded) << events.back().error;
  EXPECT_LT(events.back().progress.loss, events[2].progress.loss);
  const std::string dir = jobs->Get(job->id)->output_dir;
  EXPECT_EQ(dir, adapter_dir_ + "/tiny-full");
  auto ck = LoadCheckpoint(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto base = LoadCheckpoint(testing::TinyModelDir());
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(ck->config.vocab_size, base->config.vocab_size);
  EXPECT_NE(ck->weights.layers[0].q_proj.data, base->weights.layers[0].q_proj.data);  // trained
  EXPECT_EQ(registry_.Find("tiny-full"), nullptr);
}

TEST_F(Jobs, CancelStopsARunningJobAtAStepBoundary) {
  auto jobs = Make();
  auto job = jobs->Create(Spec("never", 1000000));
  ASSERT_TRUE(job.ok()) << job.status();
  WaitForStep(*jobs, job->id, 2);
  auto c = jobs->Cancel(job->id);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->cancel_requested);
  const auto events = WatchToEnd(*jobs, job->id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state, JobState::kCancelled);
  EXPECT_GE(events.back().progress.step, 2);
  EXPECT_EQ(jobs->Get(job->id)->state, JobState::kCancelled);
  EXPECT_EQ(registry_.Find("never"), nullptr);
  EXPECT_FALSE(fs::exists(adapter_dir_ + "/never"));
  // Cancelling again answers the finished job; its name is free again.
  EXPECT_EQ(jobs->Cancel(job->id)->state, JobState::kCancelled);
  EXPECT_TRUE(jobs->Create(Spec("never", 1)).ok());
}

TEST_F(Jobs, QueuedJobsWaitTheirTurnAndAreBounded) {
  auto jobs = Make(/*max_queued=*/1);
  auto first = jobs->Create(Spec("first", 1000000));
  ASSERT_TRUE(first.ok());
  WaitForStep(*jobs, first->id, 1);  // running: out of the queue
  auto second = jobs->Create(Spec("second", 5));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->state, JobState::kQueued);
  auto third = jobs->Create(Spec("third", 5));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  // A queued job that is cancelled never starts.
  auto c = jobs->Cancel(second->id);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state, JobState::kCancelled);
  const auto events = WatchToEnd(*jobs, second->id);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].state, JobState::kCancelled);
  EXPECT_FALSE(jobs->Get(second->id)->started.has_value());
  // The next one runs once the first is cancelled.
  auto fourth = jobs->Create(Spec("fourth", 3));
  ASSERT_TRUE(fourth.ok());
  ASSERT_TRUE(jobs->Cancel(first->id).ok());
  EXPECT_EQ(WatchToEnd(*jobs, fourth->id).back().state, JobState::kSucceeded);
  EXPECT_EQ(jobs->Get(first->id)->state, JobState::kCancelled);
}

TEST_F(Jobs, RefusesBadRequestsWithTheRightCode) {
  auto jobs = Make(4, /*max_tokens=*/1000);
  auto code = [&](FineTuneSpec s) { return jobs->Create(std::move(s)).status().code(); };
  using absl::StatusCode;
  FineTuneSpec s = Spec("x", 5);
  s.documents.clear();
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);  // no data
  s.documents = {{1}, {2}, {}};
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);  // nothing of two tokens
  s.documents = Documents(30, 50);                   // 1500 tokens > 1000
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  s.documents = {{1, 2, 512}};                       // outside the vocabulary
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  s = Spec("x", 5);
  s.options.lora.r = 0;
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  s = Spec("x", 5);
  s.options.learning_rate = -1;
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  s = Spec("x", 5);
  s.options.warmup_steps = 6;
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Spec("bad/name", 5)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Spec(".hidden", 5)), StatusCode::kInvalidArgument);
  s = Spec("x", 5);
  s.options.method = TrainOptions::Method::kFull;  // full training of a model over the size limit
  EXPECT_EQ(Make(4, 1000, nullptr, "-", 1000)->Create(s).status().code(), StatusCode::kFailedPrecondition);
  // The name of a loaded adapter, of a running job, of an existing directory.
  ASSERT_TRUE(registry_.Add({"loaded", "/nowhere", 4, 8, {"q_proj"}, "flag"}, std::make_shared<LoraAdapter>()).ok());
  EXPECT_EQ(code(Spec("loaded", 5)), StatusCode::kAlreadyExists);
  auto running = jobs->Create(Spec("busy", 1000000));
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(code(Spec("busy", 5)), StatusCode::kAlreadyExists);
  fs::create_directories(adapter_dir_ + "/on-disk");
  EXPECT_EQ(code(Spec("on-disk", 5)), StatusCode::kAlreadyExists);
  // Unknown ids.
  EXPECT_EQ(jobs->Get("ft-99").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(jobs->Cancel("ft-99").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(jobs->WaitForEvents("nope", 0, Clock::now(), nullptr).status().code(), StatusCode::kNotFound);
  // Without an adapter directory there is no fine-tuning.
  auto off = Make(4, 1000, nullptr, "");
  EXPECT_EQ(off->Create(Spec("y", 5)).status().code(), StatusCode::kFailedPrecondition);
  jobs->Shutdown();
  EXPECT_EQ(code(Spec("late", 5)), StatusCode::kUnavailable);
  EXPECT_EQ(jobs->Get(running->id)->state, JobState::kCancelled);
}

TEST_F(Jobs, ShutdownCancelsRunningAndQueuedJobs) {
  auto jobs = Make();
  auto a = jobs->Create(Spec("a", 1000000));
  auto b = jobs->Create(Spec("b", 10));
  ASSERT_TRUE(a.ok() && b.ok());
  WaitForStep(*jobs, a->id, 1);
  jobs->Shutdown();
  EXPECT_EQ(jobs->Get(a->id)->state, JobState::kCancelled);
  EXPECT_EQ(jobs->Get(b->id)->state, JobState::kCancelled);
  // Events already published are still there; after them the watch ends.
  auto r = jobs->WaitForEvents(b->id, 0, Clock::now() + milliseconds(100), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->final);
}

// A job and a stand-in for serving (1 ms steps, always busy) share the gate: the job progresses,
// serving never stops, and training's share of the busy time stays near the setting.
TEST_F(Jobs, SharesTheDeviceWithServing) {
  ComputeGate::Options o;
  o.training_share = 0.25;
  ComputeGate gate(o);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> serving_steps{0};
  std::thread serving([&] {
    while (!stop) {
      gate.SetServingDemand(true);
      gate.BeginServing();
      std::this_thread::sleep_for(milliseconds(1));
      gate.EndServing();
      ++serving_steps;
    }
    gate.SetServingDemand(false);
  });
  auto jobs = Make(4, 100000, &gate);
  auto job = jobs->Create(Spec("shared", 40));
  ASSERT_TRUE(job.ok());
  const auto events = WatchToEnd(*jobs, job->id);
  stop = true;
  serving.join();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state, JobState::kSucceeded) << events.back().error;
  const ComputeGate::Stats st = gate.stats();
  EXPECT_EQ(st.training_steps, 40u);
  const double share = st.training_contended_s / (st.training_contended_s + st.serving_busy_s);
  std::printf("[ measure ] training share %.3f (training %.3f s, serving %.3f s, %llu serving steps)\n", share,
              st.training_busy_s, st.serving_busy_s, static_cast<unsigned long long>(serving_steps.load()));
  EXPECT_GT(serving_steps.load(), 40u);
  EXPECT_LT(share, 0.4);
}

// A job of the largest kind (long windows, a big batch: one step takes many seconds) neither
// holds serving up for its step nor ignores a cancel: serving waiting for the device goes in
// between the layers of a window, and a cancel stops the step there. (The attack run before this:
// a 4-token Generate timed out after 90 s; cancel had no effect for 200 s.)
TEST_F(Jobs, ServingAndCancelGetInBetweenTheLayersOfAStep) {
  ComputeGate gate;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> served{0};
  std::thread serving([&] {
    while (!stop) {
      gate.SetServingDemand(true);
      gate.BeginServing();
      std::this_thread::sleep_for(milliseconds(2));  // a serving step (it earns training its share)
      gate.EndServing();
      ++served;
      std::this_thread::sleep_for(milliseconds(3));
    }
    gate.SetServingDemand(false);
  });
  auto jobs = Make(4, 1000000, &gate);
  FineTuneSpec spec = Spec("huge", 1000);
  spec.options.batch_sequences = 64;
  spec.options.sequence_length = 2048;
  spec.documents = Documents(4, 20000);
  auto job = jobs->Create(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  // Wait until training has let serving in mid-step a few times, still inside its first step.
  const auto give_up = Clock::now() + std::chrono::seconds(60);
  while (gate.stats().training_yields < 4 && Clock::now() < give_up) std::this_thread::sleep_for(milliseconds(5));
  const ComputeGate::Stats mid = gate.stats();
  EXPECT_GE(mid.training_yields, 4u);
  EXPECT_EQ(mid.training_steps, 0u) << "still inside the first step";
  const auto cancel_at = Clock::now();
  ASSERT_TRUE(jobs->Cancel(job->id).ok());
  const auto events = WatchToEnd(*jobs, job->id);
  const double cancel_s = std::chrono::duration<double>(Clock::now() - cancel_at).count();
  stop = true;
  serving.join();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state, JobState::kCancelled);
  EXPECT_EQ(events.back().progress.step, 0) << "cancelled inside its first step";
  const ComputeGate::Stats st = gate.stats();
  std::printf("[ measure ] inside one 64 x 2048 step: %llu serving steps, %llu yields, longest serving wait %.1f ms; "
              "cancel took %.1f ms\n",
              static_cast<unsigned long long>(served.load()), static_cast<unsigned long long>(st.training_yields),
              st.max_serving_wait_s * 1e3, cancel_s * 1e3);
  // One layer of one 2048-token window of the reference model, not a step of 64 windows.
  EXPECT_LT(st.max_serving_wait_s, 2.0);
  EXPECT_LT(cancel_s, 5.0);
}

TEST_F(Jobs, StepSizesThatCannotFinishAreRefused) {
  auto jobs = Make();
  FineTuneSpec spec = Spec("too-big", 10);
  spec.options.batch_sequences = 4096;
  spec.options.sequence_length = 65536;
  const auto r = jobs->Create(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("tokens per step"), std::string::npos) << r.status();
}

// Job records survive a restart (and a crash: a copy of the adapter directory taken while a job
// runs is what kill -9 leaves): finished jobs are listed as they ended, a job that was running
// comes back FAILED "interrupted", and new ids continue after the old ones.
TEST_F(Jobs, RecordsSurviveARestartAndARunningJobComesBackInterrupted) {
  std::string done_id, running_id;
  const std::string crashed = testing::MakeTempDir("finetune-jobs-crashed");
  fs::remove_all(crashed);
  {
    auto jobs = Make();
    auto done = jobs->Create(Spec("kept", 3));
    ASSERT_TRUE(done.ok()) << done.status();
    done_id = done->id;
    const auto events = WatchToEnd(*jobs, done_id);
    ASSERT_EQ(events.back().state, JobState::kSucceeded) << events.back().error;
    auto running = jobs->Create(Spec("long", 1000000));
    ASSERT_TRUE(running.ok());
    running_id = running->id;
    WaitForStep(*jobs, running_id, 1);
    ASSERT_EQ(testing::CopyLiveDirectory(adapter_dir_, crashed), "");  // the crash
    ASSERT_TRUE(jobs->Cancel(running_id).ok());
  }
  for (const std::string& dir : {crashed, adapter_dir_}) {
    SCOPED_TRACE(dir);
    auto jobs = Make(4, 100000, nullptr, dir);
    EXPECT_TRUE(jobs->refused_records().empty()) << ::testing::PrintToString(jobs->refused_records());
    auto kept = jobs->Get(done_id);
    ASSERT_TRUE(kept.ok()) << kept.status();
    EXPECT_EQ(kept->state, JobState::kSucceeded);
    EXPECT_EQ(kept->adapter_name, "kept");
    EXPECT_EQ(kept->progress.step, 3);
    EXPECT_FALSE(kept->output_dir.empty());
    auto other = jobs->Get(running_id);
    ASSERT_TRUE(other.ok()) << other.status();
    if (dir == crashed) {
      EXPECT_EQ(other->state, JobState::kFailed);
      EXPECT_NE(other->error.find("interrupted"), std::string::npos) << other->error;
    } else {
      EXPECT_EQ(other->state, JobState::kCancelled) << "a clean shutdown records the cancel";
    }
    auto next = jobs->Create(Spec(dir == crashed ? "after-crash" : "after-restart", 1));
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(next->id, "ft-3") << "ids continue after ft-1 and ft-2";
    WatchToEnd(*jobs, next->id);
  }
  // A corrupt record is refused by name; the others load.
  std::ofstream(adapter_dir_ + "/.jobs/ft-9.json") << "{ not json";
  auto jobs = Make();
  ASSERT_EQ(jobs->refused_records().size(), 1u);
  EXPECT_NE(jobs->refused_records()[0].find("ft-9.json"), std::string::npos);
  EXPECT_TRUE(jobs->Get(done_id).ok());
}

}  // namespace
}  // namespace gla
