// Fine-tune jobs: a queue of training runs (LoRA, or full for small models), executed one at a
// time on a worker thread.
//
// A job goes QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED (or QUEUED -> CANCELLED). Its
// events (each state change and each optimizer step) are kept in order so that every watcher sees
// every one of them, however late it starts watching. Each Trainer::Step runs inside the
// ComputeGate so that serving keeps its share of the device. On success a LoRA adapter is written
// to <adapter_dir>/<name>/ (through a temporary directory and a rename, so a half-written adapter
// is never under its final name), loaded back from there — what is served is what is on disk —
// and added to the AdapterRegistry with source "job:<id>". A full run writes a checkpoint there
// instead (checked by loading it back; not registered: the registry holds adapters).
// Each job's record is also written to <adapter_dir>/.jobs/ at each state change (job_record.h):
// after a restart finished jobs are listed as they ended, and jobs that were queued or running
// come back FAILED ("interrupted"). Shutdown (or the destructor) cancels the running and queued ones.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/adapter_registry.h"
#include "engine/finetune/compute_gate.h"
#include "engine/finetune/trainer.h"
#include "models/config.h"

namespace gla {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
const char* JobStateName(JobState s);  // "queued", "running", ...
inline bool IsFinal(JobState s) { return s != JobState::kQueued && s != JobState::kRunning; }

// What a job is asked to do. Documents are token sequences; shorter than two tokens are skipped.
struct FineTuneSpec {
  std::string adapter_name;
  TrainOptions options;
  std::vector<std::vector<int32_t>> documents;
};

// One step of a job's history: a state change, or an optimizer step (state kRunning).
struct JobEvent {
  JobState state = JobState::kQueued;
  TrainProgress progress;
  std::string error;  // kFailed: why
};

// A snapshot of a job.
struct JobInfo {
  std::string id;
  std::string adapter_name;
  JobState state = JobState::kQueued;
  TrainOptions options;
  TrainProgress progress;  // the latest
  std::string error;       // kFailed
  std::string output_dir;  // kSucceeded: the adapter's (or full checkpoint's) directory
  bool cancel_requested = false;
  int64_t documents = 0, data_tokens = 0;
  std::chrono::system_clock::time_point created;
  std::optional<std::chrono::system_clock::time_point> started, ended;
};

struct FineTuneJobsOptions {
  std::string model_dir;      // the served checkpoint: each job loads its base weights from it
  std::string adapter_dir;    // where adapters are written; empty: Create is FAILED_PRECONDITION
  int max_queued = 8;         // jobs waiting to start; more are RESOURCE_EXHAUSTED
  int64_t max_tokens = 1'000'000;  // training data per job
  TrainDevice train_device;        // where jobs train (the CPU unless a CUDA device is named)
  // Method::kFull holds four fp32 copies of the weights (weights, gradients, AdamW moments):
  // refused for models with more parameters than this.
  int64_t max_full_parameters = 100'000'000;
  size_t max_events = 100'000;     // events kept per job (the oldest go first)
  size_t max_finished_jobs = 256;  // finished jobs remembered (the oldest are forgotten: NOT_FOUND)
  // Called (on the thread that ended it, no lock held) when a job reaches a final state: logging.
  std::function<void(const JobInfo&)> on_end;
};

class FineTuneJobs {
 public:
  // `config` is the served model's (for validation before a job is queued). `gate` may be null
  // (no serving to share with: tests).
  FineTuneJobs(FineTuneJobsOptions options, GlaConfig config, AdapterRegistry& registry, ComputeGate* gate);
  ~FineTuneJobs();  // Shutdown()

  // Validates and queues a job. INVALID_ARGUMENT: bad name, options or data (empty, over
  // max_tokens, ids outside the vocabulary); ALREADY_EXISTS: the adapter name is loaded, is the
  // output of a queued or running job, or its directory exists; RESOURCE_EXHAUSTED: max_queued jobs
  // wait already; FAILED_PRECONDITION: no adapter_dir, or kFull for a model over
  // max_full_parameters; UNAVAILABLE: after Shutdown.
  absl::StatusOr<JobInfo> Create(FineTuneSpec spec);
  absl::StatusOr<JobInfo> Get(const std::string& id) const;  // NOT_FOUND
  // Loads the PEFT adapter in the directory `relative` inside adapter_dir (no absolute path, no
  // '..', no symbolic link that leads out) and lists it as `name` (source "load"). INVALID_ARGUMENT:
  // a bad name or path, or files the loader refuses (the file and field named); ALREADY_EXISTS: the
  // name is loaded (unless replace: then sequences running with the old one keep it) or a queued or
  // running job is making an adapter of that name; FAILED_PRECONDITION: no adapter_dir.
  absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& name, const std::string& relative, bool replace);
  // Queued: CANCELLED at once. Running: stops at the next step boundary (the answer may still say
  // kRunning, with cancel_requested). Finished: unchanged. NOT_FOUND for an unknown id.
  absl::StatusOr<JobInfo> Cancel(const std::string& id);

  struct Events {
    std::vector<JobEvent> events;
    size_t next = 0;     // pass as `from` to continue
    bool final = false;  // the last event returned has a final state: nothing follows
  };
  // The job's events from index `from` on (events trimmed by max_events are skipped). Blocks until
  // there is at least one, or `deadline` passes, or stop() is true (checked every 100 ms): then
  // `events` is empty. NOT_FOUND for an unknown id; UNAVAILABLE after Shutdown.
  absl::StatusOr<Events> WaitForEvents(const std::string& id, size_t from,
                                       std::chrono::steady_clock::time_point deadline,
                                       const std::function<bool()>& stop) const;

  std::vector<JobInfo> List() const;  // oldest first
  // Job records in adapter_dir/.jobs that could not be read at start-up, one message each.
  const std::vector<std::string>& refused_records() const { return refused_records_; }
  // Cancels every job (the running one at its next step boundary) and stops the worker. Idempotent.
  void Shutdown();

 private:
  struct Job;
  void WorkerLoop();
  void Run(Job& job);
  void RunJob(Job& job);  // Run's body; throws only what Run catches
  absl::Status SaveAdapter(Job& job, const LoraAdapter& adapter);      // write, reload, register
  absl::Status SaveCheckpoint(Job& job, const ModelWeights& weights);  // write, reload
  void Publish(Job& job, JobEvent event);  // Append, then on_end for a final state
  bool Append(Job& job, JobEvent event);   // under mu_: adds an event, updates the job, wakes watchers
  void Forget();                           // drops the oldest finished jobs past max_finished_jobs
  void LoadRecords();                      // the constructor: jobs of an earlier run, from adapter_dir
  static JobInfo Snapshot(const Job& job);

  const FineTuneJobsOptions options_;
  const GlaConfig config_;
  AdapterRegistry& registry_;
  ComputeGate* gate_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;           // the worker: a job was queued, or shutdown
  mutable std::condition_variable event_cv_;  // watchers: an event was published, or shutdown
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // guarded by mu_
  std::deque<std::shared_ptr<Job>> queue_;            // guarded by mu_
  std::deque<std::string> finished_;                  // ids, oldest first; guarded by mu_
  uint64_t next_id_ = 0;                              // guarded by mu_
  bool stopping_ = false;                             // guarded by mu_
  std::vector<std::string> refused_records_;
  std::thread worker_;
};

}  // namespace gla
