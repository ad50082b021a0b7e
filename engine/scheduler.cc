#include "engine/scheduler.h"

#include <algorithm>
#include <atomic>

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
  bool done = false;
};

Scheduler::Scheduler(Backend& backend, const SchedulerOptions& options) : backend_(backend), options_(options) {
  stats_.slots = backend_.pool().capacity();
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::shared_ptr<RequestHandle>> Scheduler::Submit(GenerationSpec spec, UpdateSink sink) {
  auto r = std::make_shared<Request>(std::move(spec), std::move(sink), this);
  r->arrival = SteadyClock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("server is shutting down");
  if (stats_.queued >= options_.queue_size)
    return absl::ResourceExhaustedError(absl::StrCat("queue full (", options_.queue_size, " requests waiting)"));
  ++stats_.queued;
  incoming_.push_back(r);
  cv_.notify_all();
  return std::shared_ptr<RequestHandle>(r);
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

void Scheduler::Finish(Request& r, FinishReason reason, absl::Status status, GenerationUpdate update) {
  if (r.done) return;
  r.done = true;
  if (status.ok() && r.text) update.text += r.text->Finish();
  const auto now = SteadyClock::now();
  auto secs = [](SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); };
  update.finished = true;
  update.reason = reason;
  update.status = std::move(status);
  update.usage.prompt_tokens = static_cast<int>(r.spec.prompt.size());
  update.usage.completion_tokens = static_cast<int>(r.output.size());
  update.usage.total_time_s = secs(now - r.arrival);
  update.usage.queue_time_s = r.slot >= 0 ? secs(r.admitted - r.arrival) : secs(now - r.arrival);
  update.usage.time_to_first_token_s = r.output.empty() ? 0.0 : secs(r.first_token - r.arrival);
  const bool was_running = r.slot >= 0;
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
  }
  r.sink(std::move(update));
}

void Scheduler::AdmitWaiting() {
  while (!waiting_.empty()) {
    // Highest priority first, FIFO within it.
    auto it = std::max_element(waiting_.begin(), waiting_.end(), [](const auto& a, const auto& b) {
      return a->spec.priority < b->spec.priority;  // max_element keeps the first of equals
    });
    auto slot = backend_.pool().Acquire();
    if (!slot) return;
    std::shared_ptr<Request> r = *it;
    waiting_.erase(it);
    r->slot = *slot;
    r->admitted = SteadyClock::now();
    r->history.AddPrompt(r->spec.prompt);
    r->text = std::make_unique<TextAssembler>(backend_.tokenizer(), r->spec.stop);
    running_.push_back(std::move(r));
    std::lock_guard<std::mutex> lock(mu_);
    --stats_.queued;
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
  const int32_t token = t.token;
  if (r.output.empty()) r.first_token = SteadyClock::now();
  GenerationUpdate u;
  const auto& eos = backend_.config().eos_token_ids;
  if (!r.spec.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
    Finish(r, FinishReason::kEos, absl::OkStatus(), std::move(u));  // EOS is not part of the output
    return;
  }
  r.output.push_back(token);
  r.history.AddOutput(token);
  u.tokens.push_back(token);
  if (r.spec.sampling.logprobs >= 0) u.logprobs.push_back(t);
  const bool stop_id = std::find(r.spec.stop_token_ids.begin(), r.spec.stop_token_ids.end(), token) !=
                       r.spec.stop_token_ids.end();
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
  std::vector<StepItem> items;
  std::vector<Request*> owners;
  int budget = options_.step_token_budget;
  for (auto& r : running_)  // decodes first
    if (r->prefilled == r->spec.prompt.size()) {
      items.push_back({std::span<const int32_t>(&r->output.back(), 1), r->slot, true, &r->spec.sampling, &r->history,
                       r->output.size(), r->spec.adapter});
      owners.push_back(r.get());
      --budget;
    }
  int prefill_budget = std::max(budget, options_.min_prefill_tokens);
  for (auto& r : running_) {
    if (r->prefilled == r->spec.prompt.size() || prefill_budget <= 0) continue;
    const size_t n = std::min<size_t>(r->spec.prompt.size() - r->prefilled, prefill_budget);
    const bool last = r->prefilled + n == r->spec.prompt.size();
    items.push_back({std::span<const int32_t>(r->spec.prompt).subspan(r->prefilled, n), r->slot, last,
                     &r->spec.sampling, &r->history, 0, r->spec.adapter});
    owners.push_back(r.get());
    prefill_budget -= static_cast<int>(n);
  }
  if (items.empty()) return;
  std::vector<SampledToken> out;
  // Fine-tuning shares the device: wait for a training step in flight (or one that is owed its
  // turn) to end, and keep training out while this step runs.
  if (options_.compute_gate != nullptr) options_.compute_gate->BeginServing();
  absl::Status st = backend_.Step(items, &out);
  if (options_.compute_gate != nullptr) options_.compute_gate->EndServing();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
  }
  if (!st.ok()) {
    for (Request* r : owners) Finish(*r, FinishReason::kCancelled, absl::InternalError(st.message()));
  } else {
    for (size_t i = 0; i < items.size(); ++i) {
      Request& r = *owners[i];
      if (r.prefilled < r.spec.prompt.size()) r.prefilled += items[i].tokens.size();
      if (items[i].sample) Accept(r, out[i]);
    }
  }
  std::erase_if(running_, [](const auto& r) { return r->done; });
}

void Scheduler::Loop() {
  for (;;) {
    bool cancel_all = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto has_work = [&] { return !incoming_.empty() || !running_.empty() || !waiting_.empty() || stopping_; };
      // Idle: sleep until a request arrives. Waiting-only: wake periodically for cancels/deadlines.
      if (running_.empty() && !waiting_.empty()) cv_.wait_for(lock, std::chrono::milliseconds(20));
      else cv_.wait(lock, has_work);
      while (!incoming_.empty()) {
        waiting_.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
      if (stopping_ && running_.empty() && waiting_.empty()) return;
      cancel_all = stopping_ && grace_end_ && SteadyClock::now() >= *grace_end_;
    }
    DropEnded(std::chrono::system_clock::now(), cancel_all);
    AdmitWaiting();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.running = static_cast<int>(running_.size());
      stats_.slots_in_use = backend_.pool().in_use();
    }
    RunStep();
    // Tell the fine-tune gate whether serving still has work: when it has none (before the loop
    // sleeps), training steps may run back to back. RunStep's BeginServing says "work" itself.
    if (options_.compute_gate != nullptr)
      options_.compute_gate->SetServingDemand(!running_.empty() || !waiting_.empty());
  }
}

}  // namespace gla
