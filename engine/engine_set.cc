#include "engine/engine_set.h"

#include <algorithm>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gla {
namespace {

uint64_t Fnv1a64(std::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// MurmurHash3's 64-bit finalizer: FNV-1a alone leaves a change in the last byte (the engine index)
// in the low bits, and the highest score would then favour one engine (the test saw half of all
// sessions on one of three).
uint64_t Mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

}  // namespace

int HomeOf(const std::string& session, int engines) {
  int best = 0;
  uint64_t best_score = 0;
  for (int i = 0; i < engines; ++i) {
    const uint64_t score = Mix(Fnv1a64(absl::StrCat(session, "\n", i)));
    if (i == 0 || score > best_score) best = i, best_score = score;
  }
  return best;
}

EngineSet::EngineSet(std::vector<Scheduler*> engines, bool shared_store)
    : engines_(std::move(engines)), shared_store_(shared_store),
      in_flight_(new std::atomic<int>[engines_.size()]()) {}

int EngineSet::LeastLoaded() {
  const int n = size();
  const int start = static_cast<int>(turn_.fetch_add(1) % static_cast<uint32_t>(n));
  int best = start;
  double best_load = 0;
  for (int k = 0; k < n; ++k) {
    const int i = (start + k) % n;
    const double slots = std::max(1, engines_[static_cast<size_t>(i)]->backend().pool().capacity());
    const double load = in_flight_[static_cast<size_t>(i)].load() / slots;
    if (k == 0 || load < best_load) best = i, best_load = load;
  }
  return best;
}

bool EngineSet::Busy(int e) const {
  const int slots = std::max(1, engines_[static_cast<size_t>(e)]->backend().pool().capacity());
  return in_flight_[static_cast<size_t>(e)].load() >= slots;
}

std::vector<UpdateSink> EngineSet::Counted(int engine, std::vector<UpdateSink> sinks) {
  for (UpdateSink& sink : sinks) {
    sink = [counts = in_flight_, engine, inner = std::move(sink)](GenerationUpdate&& u) {
      // Out of the count before the client hears of the end: one that submits again at once sees it.
      if (u.finished) counts[static_cast<size_t>(engine)].fetch_sub(1);
      inner(std::move(u));
    };
  }
  return sinks;
}

absl::StatusOr<std::shared_ptr<RequestHandle>> EngineSet::Submit(GenerationSpec spec, UpdateSink sink) {
  std::vector<GenerationSpec> specs;
  specs.push_back(std::move(spec));
  std::vector<UpdateSink> sinks;
  sinks.push_back(std::move(sink));
  absl::StatusOr<std::vector<std::shared_ptr<RequestHandle>>> handles = SubmitGroup(std::move(specs), std::move(sinks));
  if (!handles.ok()) return handles.status();
  return std::move(handles->front());
}

absl::StatusOr<std::vector<std::shared_ptr<RequestHandle>>> EngineSet::SubmitGroup(std::vector<GenerationSpec> specs,
                                                                                   std::vector<UpdateSink> sinks) {
  if (specs.empty()) return absl::InvalidArgumentError("a group needs at least one spec");
  int e = 0;
  if (specs.front().session.empty()) {
    e = LeastLoaded();
  } else {
    e = Home(specs.front().session);
    // With a store any engine can run a session's turn: rather than queue behind a home whose
    // slots are all taken, it goes where a slot is free (its state comes from the store there).
    if (shared_store_ && size() > 1 && Busy(e)) {
      const int other = LeastLoaded();
      if (!Busy(other)) {
        e = other;
        turns_off_home_.fetch_add(1);
      }
    }
  }
  const int n = static_cast<int>(specs.size());
  // Counted before the engine can finish any of them (a sink may run before SubmitGroup returns).
  in_flight_[static_cast<size_t>(e)].fetch_add(n);
  auto handles = engines_[static_cast<size_t>(e)]->SubmitGroup(std::move(specs), Counted(e, std::move(sinks)));
  if (!handles.ok()) in_flight_[static_cast<size_t>(e)].fetch_sub(n);  // none was queued
  return handles;
}

void EngineSet::CreateSession(std::string id, int64_t ttl_s, Scheduler::SessionDone done) {
  if (id.empty()) id = NewSessionId();  // named here, so that it is made on its home (the store's form)
  const int home = Home(id);
  engines_[static_cast<size_t>(home)]->CreateSession(std::move(id), ttl_s, std::move(done));
}

void EngineSet::ForkSession(std::string source, std::string id, int64_t ttl_s, Scheduler::SessionDone done) {
  const int from = Home(source);
  if (id.empty()) {  // a name whose home is the source's: the fork is one engine's copy
    do id = NewSessionId();
    while (!shared_store_ && Home(id) != from);
  }
  const int to = Home(id);
  if (shared_store_ || to == from) {
    engines_[static_cast<size_t>(from)]->ForkSession(std::move(source), std::move(id), ttl_s, std::move(done));
    return;
  }
  // Checked before the source is copied out, as a fork on one engine checks it.
  if (absl::Status s = CheckSessionId(id); !s.ok()) return done(s);
  Scheduler* target = engines_[static_cast<size_t>(to)];
  engines_[static_cast<size_t>(from)]->ExportSession(
      std::move(source), [target, id = std::move(id), ttl_s, done = std::move(done)](absl::StatusOr<SessionCopy> copy) mutable {
        if (!copy.ok()) {
          done(copy.status());
          return;
        }
        target->ImportSession(*std::move(copy), std::move(id), ttl_s, std::move(done));
      });
}

void EngineSet::DeleteSession(std::string id, std::function<void(absl::Status)> done) {
  const int home = Home(id);
  engines_[static_cast<size_t>(home)]->DeleteSession(std::move(id), std::move(done));
}

void EngineSet::ListSessions(std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done) {
  if (shared_store_ || size() == 1) {  // one list: the store's, or the one engine's
    engines_.front()->ListSessions(std::move(done));
    return;
  }
  struct Merge {
    std::mutex mu;
    int left = 0;
    absl::Status error;
    std::vector<SessionInfo> all;
    std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done;
  };
  auto m = std::make_shared<Merge>();
  m->left = size();
  m->done = std::move(done);
  for (Scheduler* e : engines_) {
    e->ListSessions([m](absl::StatusOr<std::vector<SessionInfo>> part) {
      std::unique_lock<std::mutex> lock(m->mu);
      if (!part.ok() && m->error.ok()) m->error = part.status();
      if (part.ok()) m->all.insert(m->all.end(), part->begin(), part->end());
      if (--m->left > 0) return;
      lock.unlock();  // the last part: no other callback touches m now
      if (!m->error.ok()) {
        m->done(m->error);
        return;
      }
      std::sort(m->all.begin(), m->all.end(), [](const SessionInfo& a, const SessionInfo& b) { return a.id < b.id; });
      m->done(std::move(m->all));
    });
  }
}

SchedulerStats EngineSet::stats() const {
  SchedulerStats t;
  for (Scheduler* e : engines_) {
    const SchedulerStats s = e->stats();
    t.queued += s.queued;
    t.running += s.running;
    t.slots += s.slots;
    t.slots_in_use += s.slots_in_use;
    t.steps += s.steps;
    t.completed += s.completed;
    t.preemptions += s.preemptions;
    t.prefill_tokens += s.prefill_tokens;
    t.forks += s.forks;
    // With a store every engine sees (and counts) the same sessions: counted once.
    const int sessions = t.sessions.sessions;
    t.sessions += s.sessions;
    if (shared_store_ && e != engines_.front()) t.sessions.sessions = sessions;
    t.prefix_cache += s.prefix_cache;
  }
  t.sessions.turns_off_home = turns_off_home_.load();
  return t;
}

std::string EngineSet::devices() const {
  if (size() == 1) return engines_.front()->backend().device();
  std::string out;
  for (int i = 0; i < size(); ++i)
    absl::StrAppend(&out, i == 0 ? "" : "; ", i, ": ", engines_[static_cast<size_t>(i)]->backend().device());
  return out;
}

int64_t EngineSet::weight_bytes() const {
  int64_t n = 0;
  for (Scheduler* e : engines_) n += e->backend().weight_bytes();
  return n;
}

int64_t EngineSet::state_pool_bytes() const {
  int64_t n = 0;
  for (Scheduler* e : engines_) n += e->backend().state_pool_bytes();
  return n;
}

int64_t EngineSet::workspace_bytes() const {
  int64_t n = 0;
  for (Scheduler* e : engines_) n += e->backend().workspace_bytes();
  return n;
}

bool EngineSet::DeviceMemory(int64_t* used, int64_t* total) const {
  bool any = false;
  *used = *total = 0;
  for (Scheduler* e : engines_) {
    int64_t u = 0, t = 0;
    if (!e->backend().DeviceMemory(&u, &t)) continue;
    any = true;
    *used += u;
    *total += t;
  }
  return any;
}

std::vector<std::string> EngineSet::refused_session_files() const {
  std::vector<std::string> out;
  for (Scheduler* e : engines_) out.insert(out.end(), e->refused_session_files().begin(), e->refused_session_files().end());
  return out;
}

std::vector<int> EngineSet::in_flight() const {
  std::vector<int> out;
  for (size_t i = 0; i < engines_.size(); ++i) out.push_back(in_flight_[i].load());
  return out;
}

void EngineSet::Shutdown(std::chrono::milliseconds grace) {
  std::vector<std::thread> stops;
  for (Scheduler* e : engines_) stops.emplace_back([e, grace] { e->Shutdown(grace); });
  for (std::thread& t : stops) t.join();
}

}  // namespace gla
