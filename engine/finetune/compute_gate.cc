#include "engine/finetune/compute_gate.h"

#include <algorithm>

namespace gla {

namespace {

ComputeGate::Options Clamped(ComputeGate::Options o) {
  // share 1 would let training take every turn while serving waits; keep serving alive.
  o.training_share = std::clamp(o.training_share, 0.0, 0.99);
  o.window_s = std::max(o.window_s, 0.0);
  o.idle_grace_s = std::max(o.idle_grace_s, 0.0);
  return o;
}

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

ComputeGate::ComputeGate(Options options) : options_(Clamped(std::move(options))) {}

std::chrono::steady_clock::time_point ComputeGate::Now() const {
  return options_.clock ? options_.clock() : std::chrono::steady_clock::now();
}

bool ComputeGate::TrainingMayStartLocked() const {
  if (!serving_demand_)  // serving idle: back to back, once nothing is owed or the idle is not a gap
    return stats_.balance_s >= 0.0 || Seconds(Now() - serving_idle_since_) >= options_.idle_grace_s;
  if (options_.training_share <= 0.0) return false;
  return stats_.balance_s >= 0.0;
}

bool ComputeGate::TrainingMayStart() const {
  std::lock_guard<std::mutex> lock(mu_);
  return holder_ == Holder::kNone && TrainingMayStartLocked();
}

ComputeGate::Stats ComputeGate::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ComputeGate::SetServingDemand(bool has_work) {
  std::lock_guard<std::mutex> lock(mu_);
  if (has_work == serving_demand_) return;
  serving_demand_ = has_work;
  if (!has_work) serving_idle_since_ = Now();
  if (has_work && holder_ == Holder::kTraining) demand_during_training_ = true;
  cv_.notify_all();
}

void ComputeGate::SetTrainingDemand(bool has_work) {
  std::lock_guard<std::mutex> lock(mu_);
  training_demand_ = has_work;
  cv_.notify_all();
}

void ComputeGate::BeginServing() {
  std::unique_lock<std::mutex> lock(mu_);
  serving_demand_ = true;  // a serving step is work, whatever the scheduler said last
  if (holder_ == Holder::kTraining) demand_during_training_ = true;
  ++serving_waiting_;
  const auto asked = Now();
  // Yield to a training step that is waiting and owed its turn (rule 4 in the header).
  cv_.wait(lock, [&] { return holder_ == Holder::kNone && !(training_waiting_ > 0 && TrainingMayStartLocked()); });
  --serving_waiting_;
  holder_ = Holder::kServing;
  step_start_ = Now();
  stats_.max_serving_wait_s = std::max(stats_.max_serving_wait_s, Seconds(step_start_ - asked));
}

void ComputeGate::EndServing() {
  std::lock_guard<std::mutex> lock(mu_);
  const double d = Seconds(Now() - step_start_);
  holder_ = Holder::kNone;
  stats_.serving_busy_s += d;
  ++stats_.serving_steps;
  if (training_demand_) {
    const double cap = options_.training_share * options_.window_s;
    stats_.balance_s = std::min(stats_.balance_s + options_.training_share * d, cap);
  }
  cv_.notify_all();
}

bool ComputeGate::BeginTraining(const std::function<bool()>& stop) {
  std::unique_lock<std::mutex> lock(mu_);
  return TakeForTrainingLocked(lock, stop);
}

bool ComputeGate::TakeForTrainingLocked(std::unique_lock<std::mutex>& lock, const std::function<bool()>& stop) {
  ++training_waiting_;
  cv_.notify_all();  // a serving step may now have to wait for this one (rule 4)
  for (;;) {
    if (stop && stop()) {
      --training_waiting_;
      cv_.notify_all();
      return false;
    }
    if (holder_ == Holder::kNone && TrainingMayStartLocked()) break;
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
  --training_waiting_;
  holder_ = Holder::kTraining;
  demand_during_training_ = serving_demand_;
  step_start_ = Now();
  return true;
}

void ComputeGate::EndTraining() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseTrainingLocked();
  ++stats_.training_steps;
  cv_.notify_all();
}

void ComputeGate::ReleaseTrainingLocked() {
  const double d = Seconds(Now() - step_start_);
  holder_ = Holder::kNone;
  stats_.training_busy_s += d;
  if (demand_during_training_ || serving_demand_) {  // serving wanted the device: charge the share
    stats_.training_contended_s += d;
    stats_.balance_s -= (1.0 - options_.training_share) * d;
  }
  demand_during_training_ = false;
}

bool ComputeGate::YieldToServing(const std::function<bool()>& stop) {
  std::unique_lock<std::mutex> lock(mu_);
  if (serving_waiting_ == 0) return !(stop && stop());
  ++stats_.training_yields;
  ReleaseTrainingLocked();
  const uint64_t served = stats_.serving_steps;
  cv_.notify_all();
  // Serving first: not even waiting for the gate (which would make serving defer to this step,
  // rule 4) until the waiting serving step has run; else this thread, awake already, would win
  // the race for the gate it has just released.
  while (stats_.serving_steps == served && serving_waiting_ > 0) {
    if (stop && stop()) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
  return TakeForTrainingLocked(lock, stop);
}

void ComputeGate::Wake() {
  std::lock_guard<std::mutex> lock(mu_);
  cv_.notify_all();
}

}  // namespace gla
