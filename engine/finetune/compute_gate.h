// Shares the compute device between serving (the scheduler's steps) and fine-tuning (a job's
// optimizer steps).
//
// Policy:
//  1. Mutual exclusion: a serving step and a training step never run at the same time. Neither is
//     preempted: a step that has started runs to its end, so serving may wait up to one training
//     step (and a job up to one serving step).
//  2. While serving has work (running or queued sequences), a training step may start only while
//     training's share of the busy time stays within `training_share` (glad --finetune_share,
//     default 0.25). The share is kept as a balance, in seconds, over the time both sides want the
//     device: each serving step adds share * its duration, each training step during which serving
//     had work subtracts (1 - share) * its duration, and training may start while the balance is
//     >= 0. Over any stretch of contention training therefore gets `share` of the busy time,
//     whatever the two step lengths are. Serving earns credit only while a job wants the device
//     (SetTrainingDemand), and the balance is capped at share * window_s, so that a long serving
//     burst cannot bank a long training burst: the window is how much history counts. A share of
//     0 means no training step at all while serving has work.
//  3. When serving has no work, training steps run back to back (and are not charged) — once
//     training owes nothing (balance >= 0) or serving has had no work for `idle_grace_s` (default
//     50 ms). Without that condition a client that sends its next request right after the last one
//     finished would open a gap before every request, and each gap would start a training step
//     the request then waits for (gla-loadgen --finetune lora on the reference checkpoint, CPU,
//     before this rule: TTFT p50 +47% at concurrency 1 and tokens/s -37% at concurrency 4, more than
//     the 25% share; after it serving keeps 79-94% of its tokens/s: docs/fine-tuning.md).
//  4. Serving yields to a waiting training step that is owed its turn (balance >= 0) — otherwise
//     the scheduler, which takes the gate again right after releasing it, would never let a
//     waiting job in.
// The scheduler wraps each step in BeginServing/EndServing (which implies demand) and calls
// SetServingDemand after each loop turn (false before it sleeps idle); the job runner sets
// SetTrainingDemand while a job runs and wraps each Trainer::Step in BeginTraining/EndTraining.
// The trainer runs on the CPU whatever the serving backend; on the cuda backend the exclusion is
// conservative (the GPU idles during a training step) but keeps the share and the CPU the
// scheduler thread needs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

namespace gla {

class ComputeGate {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  struct Options {
    double training_share = 0.25;  // in [0, 1) (clamped); 0 = train only while serving is idle
    double window_s = 1.0;         // cap of the balance: share * window_s seconds of credit
    double idle_grace_s = 0.05;    // serving idle this long: training runs even while it owes (rule 3)
    Clock clock;                   // steady_clock::now when empty (tests inject a fake clock)
  };
  struct Stats {
    double serving_busy_s = 0.0, training_busy_s = 0.0;  // totals
    // Training time while serving had work (the contended time the share limits).
    double training_contended_s = 0.0;
    double balance_s = 0.0;
    uint64_t serving_steps = 0, training_steps = 0;
    double max_serving_wait_s = 0.0;  // the longest BeginServing waited (for a training step)
    uint64_t training_yields = 0;      // times a training step let serving in mid-step
  };

  ComputeGate() : ComputeGate(Options{}) {}
  explicit ComputeGate(Options options);

  // ---- Serving (the scheduler thread)
  // Whether serving has sequences running or waiting. The scheduler sets it before each step and
  // clears it when it goes idle, so that an idle server lets training run back to back.
  void SetServingDemand(bool has_work);
  // Blocks while a training step runs or a waiting one is owed its turn.
  void BeginServing();
  void EndServing();

  // ---- Training (the job runner)
  // Whether a job is running (wants the device between its steps too).
  void SetTrainingDemand(bool has_work);
  // Blocks until a training step may start. Returns false without taking the gate once `stop()`
  // is true (checked at least every 50 ms, and at once after Wake()).
  bool BeginTraining(const std::function<bool()>& stop);
  void EndTraining();

  // Wakes waiters so that they re-check their stop condition (a job was cancelled).
  void Wake();
  // Inside a training step: lets a serving step that waits for the gate run now, then takes the
  // gate back (false, without it, once `stop()` is true). The training job calls it between the
  // layers of a step, so serving waits at most one layer of one window, not a whole step.
  bool YieldToServing(const std::function<bool()>& stop);

  // The policy's answer right now (for tests): may a training step start?
  bool TrainingMayStart() const;
  Stats stats() const;

 private:
  enum class Holder { kNone, kServing, kTraining };
  std::chrono::steady_clock::time_point Now() const;
  bool TrainingMayStartLocked() const;  // the share rule only (not whether the gate is free)
  void ReleaseTrainingLocked();         // the gate back from training, its time charged
  // Waits (under `lock`) until a training step may take the gate, and takes it; false once stop().
  bool TakeForTrainingLocked(std::unique_lock<std::mutex>& lock, const std::function<bool()>& stop);

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Holder holder_ = Holder::kNone;
  bool serving_demand_ = false;
  std::chrono::steady_clock::time_point serving_idle_since_{};  // when serving_demand_ last became false
  bool training_demand_ = false;
  int training_waiting_ = 0;
  int serving_waiting_ = 0;
  // Set when serving wanted the device at any time during the current training step: that step
  // is charged to training's share.
  bool demand_during_training_ = false;
  std::chrono::steady_clock::time_point step_start_;
  Stats stats_;
};

}  // namespace gla
