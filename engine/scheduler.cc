#include "engine/scheduler.h"

#include <algorithm>
#include <atomic>
#include <future>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/finetune/compute_gate.h"
#include "engine/text_assembler.h"

namespace gla {

using SteadyClock = std::chrono::steady_clock;

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kNone: break;
  }
  return "none";
}

struct Scheduler::Request : RequestHandle {
  Request(GenerationSpec s, UpdateSink k, Scheduler* owner) : spec(std::move(s)), sink(std::move(k)), sched(owner) {}
  void Cancel() override {
    cancelled = true;
    std::lock_guard<std::mutex> lock(sched->mu_);
    sched->cv_.notify_all();
  }

  GenerationSpec spec;
  UpdateSink sink;
  Scheduler* sched;
  std::atomic<bool> cancelled{false};
  // Loop thread only.
  int slot = -1;
  size_t prefilled = 0;  // prompt tokens already through the model
  std::vector<int32_t> output;
  TokenHistory history;
  std::unique_ptr<TextAssembler> text;
  SteadyClock::time_point arrival, admitted, first_token;
  SteadyClock::time_point since;  // running: since it got its slot; waiting: since it began to wait
  bool done = false;
  bool started = false;       // admitted once (a preempted request is re-admitted)
  int client_prompt_tokens = 0;
  SessionStore::Session* session = nullptr;  // the session it continues (marked busy)
  int64_t session_tokens = 0;                // the session's past before this request
  int carried = 0;                           // 1: the session's pending token went before the prompt
  bool session_slot = false;                 // runs on the session's own slot (its state is there)
  int sampled = 0;                           // tokens sampled (EOS included)
  std::optional<int32_t> last_sampled;
  std::shared_ptr<HostState> loading;        // the slot is being loaded from this; sits out until Ready
  std::shared_ptr<HostState> saved;          // preempted: its state, until re-admitted
  int cached = 0;                            // prompt tokens whose state came from the prefix cache
  int snapshot_at = 0;                       // prefill stops here once to save a prefix state (0: no)
  // n > 1 (SubmitGroup). The leader's siblings wait in waiting_, parked, until the step that ends
  // the leader's prompt: there each samples its first token from the leader's last row of logits,
  // and then starts from a copy of the leader's state.
  std::vector<std::weak_ptr<Request>> siblings;
  bool parked = false;
  std::vector<SampledToken> scored;  // prompt scores, until the first update carries them
  // Structured output: where the text stands in the constraint, and the ids allowed next (the
  // step's StepItem points at it).
  std::unique_ptr<constraints::Matcher> matcher;
  constraints::TokenMask mask;
  // What the mask made during the step says of the token the step samples: take it, or end here
  // (complete, and no token continues the text; or no token continues an incomplete text).
  enum class MaskOutcome { kSample, kComplete, kDeadEnd } mask_outcome = MaskOutcome::kSample;
};

namespace {
SessionOptions WithVocab(SessionOptions o, int32_t vocab_size) {
  o.vocab_size = vocab_size;  // a session file's pending token is checked against it
  return o;
}
}  // namespace

Scheduler::Scheduler(Backend& backend, const SchedulerOptions& options)
    : backend_(backend), options_(options),
      sessions_(backend.pool(), WithVocab(options.sessions, backend.config().vocab_size), backend.name()),
      prefix_cache_(backend.pool(), options.prefix_cache_block, options.prefix_cache_bytes),
      mask_workers_(options.mask_threads) {
  stats_.slots = backend_.pool().capacity();
  prefix_cache_.ShareThrough(options.sessions.store, options.sessions.model_fingerprint,  // --state_store
                             backend.weight_format(), backend.name());
  prefix_cache_.SharePeers(options.prefix_peers);                                          // --devices
  sessions_.SetPoster([this](std::function<void()> task) { return Post(std::move(task)); });
  refused_session_files_ = sessions_.LoadDirectory();
  stats_.sessions = sessions_.stats();
  // A loop that cannot use its device serves nothing (a step on another GPU's memory would be
  // worse than an error): it ends at once and every call says why. The constructor returns only
  // once the thread knows, so no request is taken before.
  // (The promise lives in the thread: set_value may still be touching it when wait() returns.)
  std::promise<void> bound;
  std::future<void> known = bound.get_future();
  thread_ = std::thread([this, bound = std::move(bound)]() mutable {
    if (absl::Status b = backend_.BindThread(); !b.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      unusable_ = absl::UnavailableError(absl::StrCat("the engine cannot use its device: ", b.message()));
    }
    bound.set_value();
    Loop();
  });
  known.wait();
}

Scheduler::~Scheduler() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::shared_ptr<RequestHandle>> Scheduler::Submit(GenerationSpec spec, UpdateSink sink) {
  std::vector<GenerationSpec> specs;
  specs.push_back(std::move(spec));
  std::vector<UpdateSink> sinks;
  sinks.push_back(std::move(sink));
  auto handles = SubmitGroup(std::move(specs), std::move(sinks));
  if (!handles.ok()) return handles.status();
  return std::move(handles->front());
}

absl::StatusOr<std::vector<std::shared_ptr<RequestHandle>>> Scheduler::SubmitGroup(std::vector<GenerationSpec> specs,
                                                                                   std::vector<UpdateSink> sinks) {
  if (specs.empty() || specs.size() != sinks.size())
    return absl::InvalidArgumentError("a group needs as many sinks as specs, and at least one");
  for (size_t i = 0; i < specs.size(); ++i) {
    const GenerationSpec& s = specs[i];
    if (s.max_new_tokens < 0 || (s.max_new_tokens == 0 && s.prompt_logprobs < 0))
      return absl::InvalidArgumentError("max_new_tokens must be >= 1 (0 only to score the prompt)");
    if (s.prompt_logprobs >= 0 && !s.session.empty())
      return absl::InvalidArgumentError("prompt scoring continues no session");
    if (i == 0) continue;
    if (!s.session.empty() || !specs[0].session.empty())
      return absl::InvalidArgumentError("the generations of a group continue no session");
    if (s.prompt != specs[0].prompt || s.adapter != specs[0].adapter)
      return absl::InvalidArgumentError("the generations of a group share their prompt and adapter");
    if (s.prompt_logprobs != specs[0].prompt_logprobs)
      return absl::InvalidArgumentError("the generations of a group ask for the same prompt_logprobs");
  }
  for (const GenerationSpec& s : specs) {
    if (s.constraint == nullptr) continue;
    const Tokenizer* tok = backend_.tokenizer();
    if (tok == nullptr) return absl::InvalidArgumentError("structured output needs the model's tokenizer; it has none");
    std::call_once(vocab_once_, [&] {
      constraints::TokenBytes tb;
      tok->TokenBytes(&tb.bytes, &tb.at_start, &tb.invisible_at_start);
      vocab_ = std::make_unique<const constraints::ConstraintVocabulary>(std::move(tb));
    });
  }
  std::vector<std::shared_ptr<Request>> reqs;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  const auto now = SteadyClock::now();
  for (size_t i = 0; i < specs.size(); ++i) {
    auto r = std::make_shared<Request>(std::move(specs[i]), std::move(sinks[i]), this);
    r->arrival = r->since = now;
    r->client_prompt_tokens = static_cast<int>(r->spec.prompt.size());
    if (i > 0) {
      r->parked = true;
      reqs.front()->siblings.push_back(r);
    }
    reqs.push_back(r);
    handles.push_back(r);
  }
  const int n = static_cast<int>(reqs.size());
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return RefusalLocked();
  if (stats_.queued + n > options_.queue_size)
    return absl::ResourceExhaustedError(absl::StrCat("queue full (", options_.queue_size, " requests waiting",
                                                     n > 1 ? absl::StrCat("; this one brings ", n) : "", ")"));
  stats_.queued += n;
  for (auto& r : reqs) incoming_.push_back(std::move(r));
  cv_.notify_all();
  return handles;
}

void Scheduler::Shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      grace_end_ = SteadyClock::now() + grace;
    } else if (grace_end_ && SteadyClock::now() + grace < *grace_end_) {
      grace_end_ = SteadyClock::now() + grace;
    }
    cv_.notify_all();
  }
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool Scheduler::Post(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  if (loop_ended_ || !unusable_.ok()) return false;  // (an unusable engine runs nothing, not even a session call)
  tasks_.push_back(std::move(task));
  cv_.notify_all();
  return true;
}

void Scheduler::PublishStats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<int>(running_.size());
  stats_.slots_in_use = backend_.pool().in_use();
  stats_.preemptions = preemptions_;
  stats_.prefill_tokens = prefill_tokens_;
  stats_.forks = forks_;
  stats_.sessions = sessions_.stats();
  stats_.prefix_cache = prefix_cache_.stats();
}

absl::Status Scheduler::RefusalLocked() const {
  return unusable_.ok() ? absl::UnavailableError("server is shutting down") : unusable_;
}

absl::Status Scheduler::Refusal() const {
  std::lock_guard<std::mutex> lock(mu_);
  return RefusalLocked();
}

void Scheduler::CreateSession(std::string id, int64_t ttl_s, SessionDone done) {
  auto d = std::make_shared<SessionDone>(std::move(done));
  if (!Post([this, id = std::move(id), ttl_s, d]() mutable {
        sessions_.CreateAsync(std::move(id), ttl_s, [this, d](absl::StatusOr<SessionInfo> r) {
          PublishStats();  // before the answer: a ModelInfo right after it sees the change
          (*d)(std::move(r));
        });
      }))
    (*d)(Refusal());
}

void Scheduler::ForkSession(std::string source, std::string id, int64_t ttl_s, SessionDone done) {
  auto d = std::make_shared<SessionDone>(std::move(done));
  if (!Post([this, source = std::move(source), id = std::move(id), ttl_s, d]() mutable {
        sessions_.ForkAsync(source, std::move(id), ttl_s, [this, d](absl::StatusOr<SessionInfo> r) {
          PublishStats();
          (*d)(std::move(r));
        });
      }))
    (*d)(Refusal());
}

void Scheduler::ExportSession(std::string source, std::function<void(absl::StatusOr<SessionCopy>)> done) {
  auto d = std::make_shared<std::function<void(absl::StatusOr<SessionCopy>)>>(std::move(done));
  if (!Post([this, source = std::move(source), d] { (*d)(sessions_.Export(source)); })) (*d)(Refusal());
}

void Scheduler::ImportSession(SessionCopy copy, std::string id, int64_t ttl_s, SessionDone done) {
  auto d = std::make_shared<SessionDone>(std::move(done));
  auto c = std::make_shared<SessionCopy>(std::move(copy));
  if (!Post([this, c, id = std::move(id), ttl_s, d]() mutable {
        auto r = sessions_.Import(std::move(*c), std::move(id), ttl_s);
        PublishStats();
        (*d)(std::move(r));
      }))
    (*d)(Refusal());
}

void Scheduler::DeleteSession(std::string id, std::function<void(absl::Status)> done) {
  auto d = std::make_shared<std::function<void(absl::Status)>>(std::move(done));
  if (!Post([this, id = std::move(id), d] {
        sessions_.DeleteAsync(id, [this, d](absl::Status r) {
          PublishStats();
          (*d)(std::move(r));
        });
      }))
    (*d)(Refusal());
}

void Scheduler::ListSessions(std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done) {
  auto d = std::make_shared<std::function<void(absl::StatusOr<std::vector<SessionInfo>>)>>(std::move(done));
  if (!Post([this, d] { sessions_.ListAsync([d](absl::StatusOr<std::vector<SessionInfo>> r) { (*d)(std::move(r)); }); }))
    (*d)(Refusal());
}

void Scheduler::Finish(Request& r, FinishReason reason, absl::Status status, GenerationUpdate update) {
  if (r.done) return;
  r.done = true;
  if (status.ok() && r.text) update.text += r.text->Finish();
  const auto now = SteadyClock::now();
  auto secs = [](SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); };
  update.finished = true;
  update.reason = reason;
  update.status = std::move(status);
  update.usage.prompt_tokens = r.client_prompt_tokens;
  update.usage.cached_prompt_tokens = r.cached;
  update.usage.session_tokens = r.session_tokens;
  update.usage.completion_tokens = static_cast<int>(r.output.size());
  update.usage.total_time_s = secs(now - r.arrival);
  update.usage.queue_time_s = r.slot >= 0 ? secs(r.admitted - r.arrival) : secs(now - r.arrival);
  update.usage.time_to_first_token_s = r.output.empty() ? 0.0 : secs(r.first_token - r.arrival);
  const bool was_running = r.slot >= 0;
  // The shared tier: a turn that ended well is written on the store thread, and the lease of any
  // other is given back there; the turn's last message goes out after that (a failed write says
  // so). The slot is the write's meanwhile.
  if (r.session != nullptr && sessions_.async()) {
    SessionStore::Session& session = *r.session;
    r.session = nullptr;
    auto sink = std::make_shared<UpdateSink>(std::move(r.sink));
    auto last = std::make_shared<GenerationUpdate>(std::move(update));
    r.sink = [](GenerationUpdate&&) {};  // (Finish's own send below goes nowhere)
    update = GenerationUpdate{};
    update.finished = true;
    if (last->status.ok() && reason != FinishReason::kCancelled && r.slot >= 0 && r.last_sampled) {
      const int64_t added = static_cast<int64_t>(r.spec.prompt.size()) - r.carried + r.sampled;
      const int slot = r.slot;
      r.slot = -1;
      sessions_.CommitAsync(session, slot, added, r.last_sampled, r.spec.adapter_name, [this, sink, last](absl::Status st) {
        if (!st.ok()) last->status = std::move(st);  // the turn did not complete: the client is told
        PublishStats();
        (*sink)(std::move(*last));
      });
    } else {
      sessions_.AbortAsync(session, [this, sink, last] {
        PublishStats();
        (*sink)(std::move(*last));
      });
    }
  }
  if (r.session != nullptr) {
    // A turn that ended well leaves its state (and slot) to the session; any other leaves the
    // session as it was.
    bool committed = false;
    if (update.status.ok() && reason != FinishReason::kCancelled && r.slot >= 0 && r.last_sampled) {
      const int64_t added = static_cast<int64_t>(r.spec.prompt.size()) - r.carried + r.sampled;
      // With write-through durability the state is on disk when this returns, before the sink
      // below sends the turn's last message.
      absl::Status committed_status = sessions_.Commit(*r.session, r.slot, added, r.last_sampled, r.spec.adapter_name);
      committed = committed_status.ok();
      if (committed) r.slot = -1;
      else update.status = std::move(committed_status);  // the turn did not complete: the client is told
    }
    if (!committed) sessions_.Abort(*r.session);
    r.session = nullptr;
  }
  Unpark(r);
  r.loading.reset();
  r.saved.reset();
  if (r.slot >= 0) {
    backend_.pool().Release(r.slot);
    r.slot = -1;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.completed;
    stats_.slots_in_use = backend_.pool().in_use();
    // running_ itself is pruned at the next loop turn, which an idle server may not take soon:
    // the count a reader sees (ModelInfo, metrics) drops now.
    if (was_running && stats_.running > 0) --stats_.running;
    stats_.sessions = sessions_.stats();  // a turn's end moves its session's state
    stats_.prefix_cache = prefix_cache_.stats();
  }
  r.sink(std::move(update));
}

void Scheduler::Intake(std::shared_ptr<Request> r) {
  if (r->spec.session.empty()) {
    waiting_.push_back(std::move(r));
    return;
  }
  auto begun = [this, r](absl::StatusOr<SessionStore::Session*> session) {
    if (!session.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        --stats_.queued;
      }
      Finish(*r, FinishReason::kCancelled, session.status());
      return;
    }
    r->session = *session;
    waiting_.push_back(r);
  };
  // With the shared tier the lease and the state come from the store on its own thread; the
  // request waits for them outside the queue, the loop goes on.
  if (sessions_.async()) sessions_.BeginTurnAsync(r->spec.session, r->spec.adapter_name, std::move(begun));
  else begun(sessions_.BeginTurn(r->spec.session, r->spec.adapter_name));
}

std::optional<int> Scheduler::AcquireSlot(const Request& waiting) {
  for (;;) {
    if (auto slot = backend_.pool().Acquire()) return slot;
    if (sessions_.FreeOneSlot()) continue;  // an idle session's state goes to host memory
    if (options_.preemption && Preempt(waiting)) continue;
    return std::nullopt;
  }
}

bool Scheduler::Preempt(const Request& waiting) {
  const int priority = waiting.spec.priority;
  // The lowest-priority running sequence below the waiting one's priority; of those, the last admitted.
  Request* victim = nullptr;
  for (auto& r : running_)
    if (r->spec.priority < priority && (victim == nullptr || r->spec.priority < victim->spec.priority ||
                                        (r->spec.priority == victim->spec.priority && r->admitted > victim->admitted)))
      victim = r.get();
  // Time slicing (preempt_after > 0): a request that has waited that long takes the slot of the
  // one of no higher priority that has run longest, once that one has run that long itself.
  const auto now = SteadyClock::now();
  if (victim == nullptr && options_.preempt_after.count() > 0 && now - waiting.since >= options_.preempt_after) {
    for (auto& r : running_)
      if (r->spec.priority <= priority && now - r->since >= options_.preempt_after &&
          (victim == nullptr || r->spec.priority < victim->spec.priority ||
           (r->spec.priority == victim->spec.priority && r->since < victim->since)))
        victim = r.get();
  }
  if (victim == nullptr) return false;
  auto host = backend_.pool().NewHostState();
  if (!host.ok()) return false;
  std::shared_ptr<HostState> saved = std::move(*host);
  if (!backend_.pool().SaveToHost(victim->slot, *saved).ok()) return false;
  backend_.pool().Release(victim->slot);
  victim->slot = -1;
  victim->saved = std::move(saved);
  victim->loading.reset();  // a load still in flight precedes the save on the copy stream
  victim->since = now;
  auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& r) { return r.get() == victim; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
  ++preemptions_;
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.queued;
  if (stats_.running > 0) --stats_.running;
  return true;
}

// The state a newly admitted request starts from: its session's, a cached prefix's, or zero.
absl::Status Scheduler::StartState(Request& r) {
  std::vector<int32_t>& prompt = r.spec.prompt;
  bool empty_past = true;
  if (r.session != nullptr) {
    const SessionRecord& rec = r.session->record;
    r.session_tokens = rec.tokens;
    empty_past = rec.tokens == 0;
    if (rec.pending) {
      prompt.insert(prompt.begin(), *rec.pending);
      r.carried = 1;
    } else if (empty_past && r.spec.bos_if_session_empty) {
      prompt.insert(prompt.begin(), *r.spec.bos_if_session_empty);
      ++r.client_prompt_tokens;  // the BOS counts as the request's own, as without a session
    }
    if (!r.session_slot) {
      auto loading = sessions_.Restore(*r.session, r.slot);
      if (!loading.ok()) return loading.status();
      r.loading = std::move(*loading);
    }
  }
  if (empty_past && prefix_cache_.enabled() && r.spec.prompt_logprobs < 0) {
    auto hit = prefix_cache_.Lookup(prompt, r.spec.adapter.get(), &r.snapshot_at);
    if (hit) {
      if (absl::Status s = backend_.pool().LoadFromHost(*hit->state, r.slot); !s.ok()) return s;
      r.loading = std::move(hit->state);
      r.prefilled = static_cast<size_t>(hit->tokens);
      r.cached = hit->tokens;
    }
  }
  return absl::OkStatus();
}

void Scheduler::Begin(Request& r) {
  r.started = true;
  r.admitted = SteadyClock::now();
  r.history.AddPrompt(r.spec.prompt);
  r.text = std::make_unique<TextAssembler>(backend_.tokenizer(), r.spec.stop);
  if (r.spec.constraint != nullptr) r.matcher = r.spec.constraint->Start();
}

bool Scheduler::ConstrainNext(Request& r) {
  if (r.matcher == nullptr) return true;
  if (!r.matcher->Continues()) {  // no byte may follow: the text is complete (a matcher is never stuck)
    Finish(r, FinishReason::kStop, absl::OkStatus());
    return false;
  }
  // The mask itself is made while the step's forward pass runs (MakeMasks); the step's item
  // points at this buffer, which keeps its size from here on.
  r.mask.assign((std::max(backend_.vocab_limit(), 1) + 63) / 64, 0);
  r.mask_outcome = Request::MaskOutcome::kSample;
  masks_due_.push_back(&r);
  return true;
}

void Scheduler::MakeMasks() {
  mask_workers_.Run(masks_due_.size(), [this](size_t i) { MakeMask(*masks_due_[i]); });
}

void Scheduler::MakeMask(Request& r) const {
  const bool at_start = r.text != nullptr && r.text->AtStart();
  const constraints::TokenMask allowed = r.matcher->Allowed(*vocab_, at_start);
  const int limit = std::min(backend_.vocab_limit(), vocab_->vocab_size());
  std::fill(r.mask.begin(), r.mask.end(), 0);
  for (int w = 0; w < static_cast<int>(std::min(allowed.size(), r.mask.size())) && w * 64 < limit; ++w)
    r.mask[w] = allowed[w] & (limit - w * 64 >= 64 ? ~uint64_t{0} : (uint64_t{1} << (limit - w * 64)) - 1);
  const bool any = std::any_of(r.mask.begin(), r.mask.end(), [](uint64_t w) { return w != 0; });
  auto allow = [&](int32_t id) {
    if (id >= 0 && id < backend_.vocab_limit()) r.mask[id >> 6] |= uint64_t{1} << (id & 63);
  };
  if (r.matcher->CanEnd()) {
    if (!any) {  // complete, and no token continues it: ends without taking the step's token
      r.mask_outcome = Request::MaskOutcome::kComplete;
      allow(0);  // the sampler wants one id; the token is dropped
      return;
    }
    if (!r.spec.ignore_eos)
      for (int32_t id : backend_.config().eos_token_ids) allow(id);
    for (int32_t id : r.spec.stop_token_ids) allow(id);
  } else if (!any) {
    r.mask_outcome = Request::MaskOutcome::kDeadEnd;
    allow(0);
  }
}

void Scheduler::Fork(Request& leader, std::span<Request* const> siblings, std::span<const SampledToken> firsts) {
  std::shared_ptr<HostState> host;  // the leader's state, for siblings that find no free slot now
  for (size_t i = 0; i < siblings.size(); ++i) {
    Request& r = *siblings[i];
    auto at = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w.get() == &r; });
    if (at == waiting_.end()) continue;  // cannot happen: a parked sibling waits until this
    std::shared_ptr<Request> self = *at;
    waiting_.erase(at);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --stats_.queued;
    }
    r.parked = false;
    r.prefilled = r.spec.prompt.size();
    r.cached = static_cast<int>(r.prefilled);  // prompt tokens it did not prefill itself
    r.scored = leader.scored;                  // the prompt's scores, when asked for
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.forks = ++forks_;
    }
    if (r.spec.max_new_tokens == 0) {  // scores only (as its leader)
      FinishScored(r);
    } else {
      Accept(r, firsts[i]);
    }
    if (r.done) continue;  // its first token was its last: no state needed
    std::optional<int> slot = backend_.pool().Acquire();
    while (!slot && sessions_.FreeOneSlot()) slot = backend_.pool().Acquire();
    if (slot && backend_.pool().Copy(leader.slot, *slot).ok()) {
      r.slot = *slot;
      r.since = SteadyClock::now();
      running_.push_back(std::move(self));
      continue;
    }
    if (slot) backend_.pool().Release(*slot);
    if (!slot && host == nullptr) {  // one host copy serves every sibling that waits for a slot
      auto h = backend_.pool().NewHostState();
      if (h.ok() && backend_.pool().SaveToHost(leader.slot, **h).ok()) host = std::move(*h);
    }
    if (!slot && host != nullptr) {
      r.saved = host;  // re-admitted like a preempted sequence
    } else {
      r.prefilled = 0;  // no copy could be made: it prefills its prompt again before decoding on
      r.cached = 0;
    }
    waiting_.push_front(std::move(self));
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.queued;
  }
}

void Scheduler::FinishScored(Request& r) {
  GenerationUpdate u;
  u.prompt_logprobs = std::move(r.scored);
  r.scored.clear();
  Finish(r, FinishReason::kLength, absl::OkStatus(), std::move(u));
}

void Scheduler::Unpark(Request& leader) {
  for (const std::weak_ptr<Request>& w : leader.siblings)
    if (std::shared_ptr<Request> r = w.lock()) r->parked = false;
  leader.siblings.clear();
}

void Scheduler::AdmitWaiting() {
  for (;;) {
    // Highest priority first, FIFO within it; siblings parked for their leader's fork wait.
    auto it = waiting_.end();
    for (auto i = waiting_.begin(); i != waiting_.end(); ++i)
      if (!(*i)->parked && (it == waiting_.end() || (*i)->spec.priority > (*it)->spec.priority)) it = i;
    if (it == waiting_.end()) return;
    std::shared_ptr<Request> r = *it;  // `it` does not survive a preemption (it adds to waiting_)
    // A session whose state sits in a slot lends it to its turn; others take a free slot.
    std::optional<int> slot;
    if (!r->started && r->session != nullptr) slot = sessions_.TakeSlot(*r->session);
    r->session_slot = slot.has_value();
    if (!slot) slot = AcquireSlot(*r);
    if (!slot) return;
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), r));
    {
      std::lock_guard<std::mutex> lock(mu_);
      --stats_.queued;
    }
    r->slot = *slot;
    r->since = SteadyClock::now();
    absl::Status st;
    if (!r->started) {
      st = StartState(*r);
      Begin(*r);
    } else if (r->saved == nullptr) {  // a sibling whose state could not be copied: prefills again
      st = backend_.pool().Zero(r->slot);
    } else {  // preempted earlier (or a sibling that waited for a slot): its state from host memory
      st = backend_.pool().LoadFromHost(*r->saved, r->slot);
      r->loading = std::move(r->saved);
    }
    if (!st.ok()) {
      Finish(*r, FinishReason::kCancelled, std::move(st));
      continue;
    }
    running_.push_back(std::move(r));
  }
}

void Scheduler::DropEnded(std::chrono::system_clock::time_point now, bool cancel_all) {
  auto ended = [&](Request& r) {
    if (r.cancelled || cancel_all) {
      Finish(r, FinishReason::kCancelled, absl::OkStatus());
    } else if (r.spec.deadline && now > *r.spec.deadline) {
      Finish(r, FinishReason::kCancelled, absl::DeadlineExceededError("deadline exceeded"));
    }
    return r.done;
  };
  size_t before = waiting_.size();
  std::erase_if(waiting_, [&](const auto& r) { return ended(*r); });
  if (waiting_.size() != before) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.queued -= static_cast<int>(before - waiting_.size());
  }
  std::erase_if(running_, [&](const auto& r) { return ended(*r); });
}

void Scheduler::Accept(Request& r, const SampledToken& t) {
  if (r.matcher != nullptr && r.mask_outcome != Request::MaskOutcome::kSample) {  // its mask said: end here
    if (r.mask_outcome == Request::MaskOutcome::kComplete) {
      Finish(r, FinishReason::kStop, absl::OkStatus());
    } else {
      Finish(r, FinishReason::kStop,
             absl::FailedPreconditionError("the output cannot go on within its constraint: no token of this model's "
                                           "vocabulary continues it"));
    }
    return;
  }
  const int32_t token = t.token;
  ++r.sampled;
  r.last_sampled = token;
  if (r.output.empty()) r.first_token = SteadyClock::now();
  GenerationUpdate u;
  u.prompt_logprobs = std::move(r.scored);
  r.scored.clear();
  const auto& eos = backend_.config().eos_token_ids;
  if (!r.spec.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
    Finish(r, FinishReason::kEos, absl::OkStatus(), std::move(u));  // EOS is not part of the output
    return;
  }
  const bool stop_id = std::find(r.spec.stop_token_ids.begin(), r.spec.stop_token_ids.end(), token) !=
                       r.spec.stop_token_ids.end();
  if (r.matcher != nullptr && !stop_id && !r.matcher->Advance(vocab_->Bytes(token, r.text && r.text->AtStart()))) {
    // The mask allowed only tokens the constraint takes: a sampler that broke it is a bug.
    Finish(r, FinishReason::kCancelled,
           absl::InternalError(absl::StrCat("token ", token, " was sampled outside the output's constraint")),
           std::move(u));
    return;
  }
  r.output.push_back(token);
  r.history.AddOutput(token);
  u.tokens.push_back(token);
  if (r.spec.sampling.logprobs >= 0) u.logprobs.push_back(t);
  bool stop_text = false;
  if (!stop_id) u.text = r.text->Push(token, &stop_text);
  if (stop_id || stop_text) {
    if (stop_text) r.text.reset();  // nothing after the stop string is shown
    Finish(r, FinishReason::kStop, absl::OkStatus(), std::move(u));
  } else if (static_cast<int>(r.output.size()) >= r.spec.max_new_tokens) {
    Finish(r, FinishReason::kLength, absl::OkStatus(), std::move(u));
  } else {
    r.sink(std::move(u));
  }
}

void Scheduler::RunStep() {
  masks_due_.clear();
  std::vector<StepItem> items;
  std::vector<Request*> owners;  // null for a sibling's item (siblings below)
  int budget = options_.step_token_budget;
  // Rows of logits (and of the sampler): one is kept for every running sequence; a scored prompt
  // chunk takes one per token, and the siblings of a group one each, from what is left.
  int spare_rows = backend_.max_logit_rows() - static_cast<int>(running_.size());
  // The parked siblings sampling from item i's last row this step: item i's leader forks after it.
  std::map<size_t, std::vector<Request*>> siblings;
  // A sequence whose state is still being copied in sits this step out.
  auto ready = [](Request& r) {
    if (r.loading && !r.loading->Ready()) return false;
    r.loading.reset();
    return true;
  };
  std::vector<bool> in_step(running_.size());
  for (size_t i = 0; i < running_.size(); ++i) in_step[i] = ready(*running_[i]);
  for (size_t i = 0; i < running_.size(); ++i) {  // decodes first
    auto& r = running_[i];
    if (in_step[i] && r->prefilled == r->spec.prompt.size()) {
      if (!ConstrainNext(*r)) continue;  // its constrained text ended
      items.push_back({std::span<const int32_t>(&r->output.back(), 1), r->slot, true, &r->spec.sampling, &r->history,
                       r->output.size(), r->spec.adapter});
      if (r->matcher != nullptr) items.back().allowed = r->mask.data();
      owners.push_back(r.get());
      --budget;
    }
  }
  int prefill_budget = std::max(budget, options_.min_prefill_tokens);
  for (size_t i = 0; i < running_.size(); ++i) {
    auto& r = running_[i];
    if (!in_step[i] || r->prefilled == r->spec.prompt.size() || prefill_budget <= 0) continue;
    const size_t T = r->spec.prompt.size();
    size_t n = std::min<size_t>(T - r->prefilled, prefill_budget);
    if (r->snapshot_at > 0 && r->prefilled < static_cast<size_t>(r->snapshot_at))  // stop at the prefix to cache
      n = std::min<size_t>(n, r->snapshot_at - r->prefilled);
    const bool scoring = r->spec.prompt_logprobs >= 0;
    if (scoring) n = std::min<size_t>(n, static_cast<size_t>(std::max(spare_rows + 1, 0)));
    // The siblings still waiting for this leader (cancelled ones have left).
    std::vector<Request*> group;
    for (const std::weak_ptr<Request>& w : r->siblings)
      if (std::shared_ptr<Request> sib = w.lock(); sib != nullptr && !sib->done && sib->parked) group.push_back(sib.get());
    bool last = r->prefilled + n == T;
    if (last && static_cast<int>(group.size()) > spare_rows - (scoring ? static_cast<int>(n) - 1 : 0))
      n -= 1, last = false;  // no sampler rows left for the siblings: end the prompt in a later step
    if (n == 0) continue;
    // A sequence that already has its first token (a sibling whose state could not be copied)
    // prefills without sampling, then decodes on from that token.
    StepItem item{std::span<const int32_t>(r->spec.prompt).subspan(r->prefilled, n), r->slot,
                  last && r->spec.max_new_tokens > 0 && r->output.empty(), &r->spec.sampling, &r->history, 0,
                  r->spec.adapter};
    if (item.sample) {
      if (!ConstrainNext(*r)) continue;
      if (r->matcher != nullptr) item.allowed = r->mask.data();
    }
    if (scoring) {  // the token after each of these, where the prompt has one
      item.score_targets = std::span<const int32_t>(r->spec.prompt).subspan(r->prefilled + 1, std::min(n, T - 1 - r->prefilled));
      item.score_top = r->spec.prompt_logprobs;
      item.scored = &r->scored;
      spare_rows -= static_cast<int>(n) - 1;
    }
    items.push_back(item);
    owners.push_back(r.get());
    prefill_budget -= static_cast<int>(n);
    if (last && !group.empty()) {
      if (!item.sample) {  // a leader that generates nothing: its siblings sample from a row of their own
        items.back().sample = true;
        items.back().params = &r->spec.sampling;
      }
      const int from = static_cast<int>(items.size()) - 1;
      std::vector<Request*> sampling;  // the siblings whose constraint lets them sample
      for (Request* sib : group) {
        Begin(*sib);
        if (!ConstrainNext(*sib)) continue;
        sampling.push_back(sib);
        StepItem si;
        si.slot = -1;
        si.sample = true;
        si.params = &sib->spec.sampling;
        si.history = &sib->history;
        si.step = 0;
        si.sample_from = from;
        if (sib->matcher != nullptr) si.allowed = sib->mask.data();
        items.push_back(si);
        owners.push_back(nullptr);
      }
      spare_rows -= static_cast<int>(sampling.size());
      siblings[static_cast<size_t>(from)] = std::move(sampling);
      r->siblings.clear();
    }
  }
  if (items.empty()) {
    if (!running_.empty()) std::this_thread::yield();  // all of them are loading their state
    return;
  }
  std::vector<SampledToken> out;
  // Fine-tuning shares the device: wait for a training step in flight (or one that is owed its
  // turn) to end, and keep training out while this step runs.
  if (options_.compute_gate != nullptr) options_.compute_gate->BeginServing();
  // Structured output: the masks are made on the mask workers while the device runs the forward
  // pass (Backend::Step calls back before sampling).
  absl::Status st = masks_due_.empty() ? backend_.Step(items, &out) : backend_.Step(items, &out, [this] { MakeMasks(); });
  masks_due_.clear();
  if (options_.compute_gate != nullptr) options_.compute_gate->EndServing();
  {
    // Counted before any sink runs: a client that saw its answer sees the step in the stats.
    uint64_t prompt_tokens = 0;
    for (size_t i = 0; i < items.size(); ++i)
      if (owners[i] != nullptr && owners[i]->prefilled < owners[i]->spec.prompt.size()) prompt_tokens += items[i].tokens.size();
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
    if (st.ok()) stats_.prefill_tokens = prefill_tokens_ += prompt_tokens;
  }
  if (!st.ok()) {
    for (Request* r : owners)
      if (r != nullptr) Finish(*r, FinishReason::kCancelled, absl::InternalError(st.message()));
    for (auto& [from, group] : siblings)
      for (Request* sib : group) Finish(*sib, FinishReason::kCancelled, absl::InternalError(st.message()));
  } else {
    for (size_t i = 0; i < items.size(); ++i) {
      if (owners[i] == nullptr) continue;  // a sibling's: its leader's turn below handles it
      Request& r = *owners[i];
      if (r.prefilled < r.spec.prompt.size()) r.prefilled += items[i].tokens.size();
      if (r.snapshot_at > 0 && r.prefilled == static_cast<size_t>(r.snapshot_at)) {
        // Best effort: a prefix that cannot be cached (no host memory) is simply not cached.
        (void)prefix_cache_.Insert(std::span<const int32_t>(r.spec.prompt).first(r.snapshot_at), r.spec.adapter, r.slot);
        r.snapshot_at = 0;
      }
      if (auto g = siblings.find(i); g != siblings.end())  // before the leader's own token may end it
        Fork(r, g->second, std::span<const SampledToken>(out).subspan(i + 1, g->second.size()));
      if (items[i].sample && r.spec.max_new_tokens > 0) {
        Accept(r, out[i]);
      } else if (r.spec.max_new_tokens == 0 && r.prefilled == r.spec.prompt.size()) {  // scored, nothing to generate
        FinishScored(r);
      }
    }
  }
  std::erase_if(running_, [](const auto& r) { return r->done; });
}

void Scheduler::Loop() {
  for (;;) {
    bool cancel_all = false, exit = false;
    std::deque<std::shared_ptr<Request>> arrived;
    std::deque<std::function<void()>> tasks;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto has_work = [&] {
        return !incoming_.empty() || !tasks_.empty() || !running_.empty() || !waiting_.empty() || stopping_;
      };
      // Idle: sleep until a request or a task arrives (sessions: wake once a second to expire
      // them). Waiting-only: wake periodically for cancels/deadlines.
      if (running_.empty() && !waiting_.empty()) cv_.wait_for(lock, std::chrono::milliseconds(20));
      else if (stats_.sessions.sessions > 0) cv_.wait_for(lock, std::chrono::seconds(1), has_work);
      else cv_.wait(lock, has_work);
      arrived.swap(incoming_);
      tasks.swap(tasks_);
      // (Store jobs out: their outcomes come back as tasks, and their requests wait for them.)
      exit = stopping_ && running_.empty() && waiting_.empty() && arrived.empty() && sessions_.store_jobs() == 0;
      if (exit) loop_ended_ = true;  // no task can be posted after this
      else cancel_all = stopping_ && grace_end_ && SteadyClock::now() >= *grace_end_;
    }
    for (auto& r : arrived) Intake(std::move(r));
    for (auto& t : tasks) t();
    if (exit) {
      sessions_.SaveAll();  // with --session_dir, every session survives the restart
      PublishStats();
      return;
    }
    DropEnded(std::chrono::system_clock::now(), cancel_all);
    sessions_.Expire();
    sessions_.Flush();        // --session_durability interval
    sessions_.RenewLeases();  // --state_store: the leases of the turns running here
    AdmitWaiting();
    PublishStats();
    RunStep();
    // Tell the fine-tune gate whether serving still has work: when it has none (before the loop
    // sleeps), training steps may run back to back. RunStep's BeginServing says "work" itself.
    if (options_.compute_gate != nullptr)
      options_.compute_gate->SetServingDemand(!running_.empty() || !waiting_.empty());
  }
}

}  // namespace gla
