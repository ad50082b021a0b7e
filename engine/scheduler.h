// Continuous batching. Requests join between steps; each step packs one decode token for every
// running sequence plus prefill chunks of newly admitted ones, up to a per-step token budget
// (decodes first, so running sequences are never starved by a long prompt). Admission is FIFO
// within a priority while state slots are free; past `queue_size` waiting requests, Submit
// answers RESOURCE_EXHAUSTED. A cancelled request or an expired deadline frees its slot at the
// next step. One thread runs the loop and owns the backend and its state pool.
//
// States outside the running batch (issue 8), all owned by the loop thread:
//   - sessions (engine/sessions/session_store.h): a request naming a session starts from its
//     saved state and leaves its own there when it ends well; one request per session at a time
//     (a second is FAILED_PRECONDITION). Session RPCs run on the loop thread between steps.
//   - the prefix-state cache (engine/sessions/prefix_cache.h): a prompt that starts with a cached
//     block prefix starts from a copy of its state.
//   - n generations of one prompt (SubmitGroup): the prompt is prefilled once; each generation
//     samples its first token from that prefill's last row of logits, and the others start from
//     copies of its state (one state copy each, whatever the prompt's length).
//   - preemption: when no slot is free (after idle sessions gave theirs back) and a waiting request
//     has a higher priority than a running one (or, with preempt_after, has waited that long), the
//     running one's state is swapped to host memory and it waits again; re-admitted, it resumes
//     exactly where it stopped (no recompute).
// Swaps run on the pool's copy stream; a sequence whose state is still loading sits out a step.
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
#include "engine/mask_workers.h"
#include "engine/constraints/constraint.h"
#include "engine/sessions/prefix_cache.h"
#include "engine/sessions/session_store.h"

namespace gla {

enum class FinishReason { kNone, kEos, kStop, kLength, kCancelled };
const char* FinishReasonName(FinishReason r);

struct GenerationSpec {
  std::string id;
  std::vector<int32_t> prompt;  // validated: non-empty, ids in the vocabulary
  SamplingParams sampling;
  int max_new_tokens = 16;  // >= 1, or 0 with prompt_logprobs >= 0: score the prompt, generate nothing
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<std::chrono::system_clock::time_point> deadline;
  int priority = 0;  // higher is admitted first
  // LoRA adapter to generate with (null: the base model); held until the request ends.
  std::shared_ptr<const LoraAdapter> adapter;
  std::string adapter_name;  // its name ("" = none): a session remembers it
  // Continue this session (empty: none). Its pending token (the last one sampled) goes before
  // `prompt`; a session with no past gets `bos_if_session_empty` first when set.
  std::string session;
  std::optional<int32_t> bos_if_session_empty;
  // Prompt scoring: >= 0 returns the log-probability of every prompt token after the first (and
  // this many alternatives each); -1: none. Not with a session. A scored prompt is prefilled in
  // full (the prefix cache cannot give logits for the tokens it skips).
  int prompt_logprobs = -1;
  // Structured output (engine/constraints/constraint.h): the output's text is kept inside the
  // constraint's language; the end (EOS, a stop token id) may be sampled only where the text is
  // complete, and a text that cannot go on ends there (reason kStop). Null: none. Needs a
  // tokenizer (INVALID_ARGUMENT otherwise).
  std::shared_ptr<const constraints::Constraint> constraint;
};

struct Usage {
  int prompt_tokens = 0, completion_tokens = 0;
  double time_to_first_token_s = 0, total_time_s = 0, queue_time_s = 0;
  int cached_prompt_tokens = 0;  // prompt tokens not prefilled: their state came from the prefix cache
  int64_t session_tokens = 0;    // tokens in the session's past before this request
};

// What a request produced in one step. The last update has finished = true.
struct GenerationUpdate {
  std::vector<int32_t> tokens;
  std::string text;  // valid UTF-8; may be empty
  std::vector<SampledToken> logprobs;  // parallel to tokens when requested
  // With prompt_logprobs: the scores of prompt tokens 1 .. T-1, all in the first update.
  std::vector<SampledToken> prompt_logprobs;
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
  SessionOptions sessions;
  int prefix_cache_block = 64;      // tokens per cached block (the chunk kernels' chunk)
  int64_t prefix_cache_bytes = 0;   // host memory for cached prefix states; 0 = no prefix cache
  // The engines of one server share base-model prefix states through this (engine_set.h; null: not).
  std::shared_ptr<PeerPrefixStates> prefix_peers;
  bool preemption = true;           // swap a lower-priority running sequence out for a waiting one
  // > 0 (and preemption on): a request that has waited this long for a slot also preempts the
  // longest-running sequence of no higher priority that has run this long (time slicing).
  std::chrono::milliseconds preempt_after{0};
  // Threads that make structured output's token masks while the device steps (the scheduler's
  // own thread works on them too): 0 makes them on the scheduler thread alone.
  int mask_threads = 3;
};

struct SchedulerStats {
  int queued = 0, running = 0, slots = 0, slots_in_use = 0;
  uint64_t steps = 0, completed = 0;
  uint64_t preemptions = 0;  // running sequences swapped out for a waiting request
  uint64_t prefill_tokens = 0;  // prompt tokens run through the model
  uint64_t forks = 0;           // states copied to start a sibling of an n > 1 request
  SessionStats sessions;
  PrefixCacheStats prefix_cache;
};

class Scheduler {
 public:
  Scheduler(Backend& backend, const SchedulerOptions& options);
  ~Scheduler();  // Shutdown(0)

  // RESOURCE_EXHAUSTED when the queue is full; UNAVAILABLE after Shutdown started.
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationSpec spec, UpdateSink sink);
  // n generations of one prompt (n = specs.size(), a sink each): the first is prefilled, every one
  // samples its first token from that prefill's logits, then its state is copied for the others. The specs must have the same
  // prompt and adapter and no session; they may differ in everything else (sampling, seed,
  // lengths, stops) but not in prompt_logprobs (the first scores the prompt; the others get a copy
  // of its scores). INVALID_ARGUMENT otherwise;
  // RESOURCE_EXHAUSTED when the queue cannot take all of them (none is queued then).
  absl::StatusOr<std::vector<std::shared_ptr<RequestHandle>>> SubmitGroup(std::vector<GenerationSpec> specs,
                                                                           std::vector<UpdateSink> sinks);

  // Stops accepting, lets running and queued requests finish for up to `grace`, then cancels
  // the rest; returns when the loop has ended. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

  SchedulerStats stats() const;
  Backend& backend() { return backend_; }

  // Session management, run on the loop thread between steps; `done` is called there (it must
  // return quickly). After shutdown, done gets UNAVAILABLE at once. Errors: see SessionStore.
  using SessionDone = std::function<void(absl::StatusOr<SessionInfo>)>;
  void CreateSession(std::string id, int64_t ttl_s, SessionDone done);
  void ForkSession(std::string source, std::string id, int64_t ttl_s, SessionDone done);
  void DeleteSession(std::string id, std::function<void(absl::Status)> done);
  // A fork's two halves across engines (engine_set.h; SessionStore::Export / Import): the source
  // copied out here, the new session made from the copy on the engine its id belongs to.
  void ExportSession(std::string source, std::function<void(absl::StatusOr<SessionCopy>)> done);
  void ImportSession(SessionCopy copy, std::string id, int64_t ttl_s, SessionDone done);
  void ListSessions(std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done);
  // The session files refused at start-up (one message each, naming the file).
  const std::vector<std::string>& refused_session_files() const { return refused_session_files_; }

 private:
  struct Request;
  void Loop();
  void AdmitWaiting();
  void DropEnded(std::chrono::system_clock::time_point now, bool cancel_all);
  void RunStep();
  void Accept(Request& r, const SampledToken& t);
  void Finish(Request& r, FinishReason reason, absl::Status status, GenerationUpdate update = {});
  // Runs `task` on the loop thread; false when the loop has ended (or the engine is unusable).
  bool Post(std::function<void()> task);
  // What a call the loop can no longer take is told: why the engine could not use its device, or
  // that the server is shutting down. RefusalLocked: with mu_ held.
  absl::Status Refusal() const;
  absl::Status RefusalLocked() const;
  void Intake(std::shared_ptr<Request> r);
  std::optional<int> AcquireSlot(const Request& waiting);
  bool Preempt(const Request& waiting);
  absl::Status StartState(Request& r);
  void Begin(Request& r);  // the per-request state of a first admission (history, text)
  // The step that ended the leader's prompt gave each sibling its first token (firsts): they start
  // from copies of the leader's state (device copies; a host copy when no slot is free).
  void Fork(Request& leader, std::span<Request* const> siblings, std::span<const SampledToken> firsts);
  void FinishScored(Request& r);  // a score-only request (max_new_tokens 0): its scores, and done
  void Unpark(Request& leader);  // the leader ended before its fork: its siblings run on their own
  // Structured output: false when r ended here (its text is complete and no byte may follow);
  // else r's mask is due this step (sized now, made by MakeMasks during the step).
  bool ConstrainNext(Request& r);
  // The due masks, on the mask workers (one request each; a request's mask touches only it and
  // the shared, read-only vocabulary and compiled constraint).
  void MakeMasks();
  void MakeMask(Request& r) const;
  void PublishStats();

  Backend& backend_;
  const SchedulerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> incoming_;  // guarded by mu_
  bool stopping_ = false;                          // guarded by mu_
  absl::Status unusable_;                          // guarded by mu_: why the loop ended before it began
  std::optional<std::chrono::steady_clock::time_point> grace_end_;
  SchedulerStats stats_;                           // guarded by mu_
  std::deque<std::function<void()>> tasks_;        // guarded by mu_
  bool loop_ended_ = false;                        // guarded by mu_

  // Loop thread only.
  std::deque<std::shared_ptr<Request>> waiting_;
  std::vector<std::shared_ptr<Request>> running_;
  SessionStore sessions_;
  PrefixCache prefix_cache_;
  uint64_t preemptions_ = 0;
  uint64_t prefill_tokens_ = 0, forks_ = 0;
  std::vector<std::string> refused_session_files_;
  // What each token adds to the text, for constraints: made once, by the first constrained
  // request (Submit's thread), read-only after.
  std::once_flag vocab_once_;
  std::unique_ptr<const constraints::ConstraintVocabulary> vocab_;
  std::vector<Request*> masks_due_;  // this step's constrained sampling requests
  MaskWorkers mask_workers_;
  std::thread thread_;
};

}  // namespace gla
