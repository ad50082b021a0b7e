// Continuous batching. Requests join between steps; each step packs one decode token for every
// running sequence plus prefill chunks of newly admitted ones, up to a per-step token budget
// (decodes first, so running sequences are never starved by a long prompt). Admission is FIFO
// within a priority while state slots are free; past `queue_size` waiting requests, Submit
// answers RESOURCE_EXHAUSTED. A cancelled request or an expired deadline frees its slot at the
// next step. One thread runs the loop and owns the backend and its state pool.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace gla {

enum class FinishReason { kNone, kEos, kStop, kLength, kCancelled };
const char* FinishReasonName(FinishReason r);

struct GenerationSpec {
  std::string id;
  std::vector<int32_t> prompt;  // validated: non-empty, ids in the vocabulary
  SamplingParams sampling;
  int max_new_tokens = 16;  // >= 1
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<std::chrono::system_clock::time_point> deadline;
  int priority = 0;  // higher is admitted first
  // LoRA adapter to generate with (null: the base model); held until the request ends.
  std::shared_ptr<const LoraAdapter> adapter;
};

struct Usage {
  int prompt_tokens = 0, completion_tokens = 0;
  double time_to_first_token_s = 0, total_time_s = 0, queue_time_s = 0;
};

// What a request produced in one step. The last update has finished = true.
struct GenerationUpdate {
  std::vector<int32_t> tokens;
  std::string text;  // valid UTF-8; may be empty
  std::vector<SampledToken> logprobs;  // parallel to tokens when requested
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  absl::Status status;  // not OK: the call ends with this error (deadline, internal failure)
  Usage usage;          // on the last update
};

// Called on the scheduler thread: it must return quickly and never block on the client.
using UpdateSink = std::function<void(GenerationUpdate&&)>;

class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // Thread-safe; the request ends with reason kCancelled at the next step.
  virtual void Cancel() = 0;
};

class ComputeGate;

struct SchedulerOptions {
  int queue_size = 256;          // waiting (not yet admitted) requests
  int step_token_budget = 512;   // tokens per step, decodes included
  int min_prefill_tokens = 16;   // prefill progress per step even when decodes fill the budget
  // Shares the device with fine-tune jobs (engine/finetune/compute_gate.h): every step runs inside
  // the gate, and the gate is told whether serving has work. Null: no fine-tuning, no gate.
  ComputeGate* compute_gate = nullptr;
};

struct SchedulerStats {
  int queued = 0, running = 0, slots = 0, slots_in_use = 0;
  uint64_t steps = 0, completed = 0;
};

class Scheduler {
 public:
  Scheduler(Backend& backend, const SchedulerOptions& options);
  ~Scheduler();  // Shutdown(0)

  // RESOURCE_EXHAUSTED when the queue is full; UNAVAILABLE after Shutdown started.
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationSpec spec, UpdateSink sink);

  // Stops accepting, lets running and queued requests finish for up to `grace`, then cancels
  // the rest; returns when the loop has ended. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

  SchedulerStats stats() const;
  Backend& backend() { return backend_; }

 private:
  struct Request;
  void Loop();
  void AdmitWaiting();
  void DropEnded(std::chrono::system_clock::time_point now, bool cancel_all);
  void RunStep();
  void Accept(Request& r, const SampledToken& t);
  void Finish(Request& r, FinishReason reason, absl::Status status, GenerationUpdate update = {});

  Backend& backend_;
  const SchedulerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> incoming_;  // guarded by mu_
  bool stopping_ = false;                          // guarded by mu_
  std::optional<std::chrono::steady_clock::time_point> grace_end_;
  SchedulerStats stats_;                           // guarded by mu_

  // Loop thread only.
  std::deque<std::shared_ptr<Request>> waiting_;
  std::vector<std::shared_ptr<Request>> running_;
  std::thread thread_;
};

}  // namespace gla
