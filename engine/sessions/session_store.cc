#include "engine/sessions/session_store.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/adapter_registry.h"
#include "models/file_io.h"
#include "models/status_macros.h"

namespace gla {

namespace {

double NowUnix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

SessionStore::SessionStore(StatePool& pool, SessionOptions options, std::string slot_kind)
    : pool_(pool), options_(std::move(options)), slot_kind_(std::move(slot_kind)) {
  if (options_.store != nullptr)
    shared_ = std::make_unique<SharedSessions>(options_.store, Expect(),
                                               options_.replica.empty() ? ReplicaName() : options_.replica,
                                               std::max<int64_t>(options_.lease_ms, 1));
  if (options_.store != nullptr) store_thread_ = std::make_unique<StoreThread>();
}

std::string SessionStore::PathOf(const std::string& id) const {
  return (std::filesystem::path(options_.dir) / (id + kSessionFileSuffix)).string();
}

SessionInfo SessionStore::Describe(const Session& s) const {
  SessionInfo i;
  i.id = s.record.id;
  i.adapter = s.record.adapter;
  i.tokens = s.record.tokens;
  i.where = s.slot >= 0 ? slot_kind_ : s.host ? "host" : s.on_disk ? "disk" : "empty";
  i.busy = s.busy;
  i.created_unix_s = s.record.created_unix_s;
  i.last_used_unix_s = s.record.last_used_unix_s;
  i.ttl_s = s.record.ttl_s;
  i.expires_unix_s = s.record.ttl_s > 0 ? s.record.last_used_unix_s + static_cast<double>(s.record.ttl_s) : 0.0;
  return i;
}

std::vector<std::string> SessionStore::LoadDirectory() {
  std::vector<std::string> refused;
  if (options_.dir.empty()) return refused;
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  std::vector<fs::path> files;
  // Another engine's session (engine_set.h) is neither loaded nor cleaned up after here.
  auto mine = [this](const fs::path& file) { return !options_.owns || options_.owns(file.stem().string()); };
  for (const auto& e : fs::directory_iterator(options_.dir, ec)) {
    if (e.path().extension() == kSessionFileSuffix && mine(e.path())) files.push_back(e.path());
    // A write that a crash cut short: the file it was to replace (if any) is whole.
    if (e.path().extension() == ".tmp" && e.path().stem().extension() == kSessionFileSuffix && mine(e.path().stem()))
      fs::remove(e.path(), ec);
  }
  if (ec) {
    refused.push_back(absl::StrCat("session directory ", options_.dir, ": ", ec.message()));
    return refused;
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    auto rec = ReadSessionFile(f.string(), Expect(), {});
    if (!rec.ok()) {
      refused.push_back(std::string(rec.status().message()));
      continue;
    }
    if (rec->id != f.stem().string()) {
      refused.push_back(absl::StrCat("session file ", f.string(), ": holds session '", rec->id, "' (a renamed file)"));
      continue;
    }
    if (absl::Status s = AdapterRegistry::ValidateName(rec->id); !s.ok() || sessions_.count(rec->id) != 0) {
      refused.push_back(absl::StrCat("session file ", f.string(), ": bad session id"));
      continue;
    }
    if (static_cast<int>(sessions_.size()) >= options_.max_sessions) {
      refused.push_back(absl::StrCat("session file ", f.string(), ": over the limit of ", options_.max_sessions, " sessions"));
      continue;
    }
    auto s = std::make_unique<Session>();
    s->record = *rec;
    s->on_disk = s->file_current = true;
    sessions_.emplace(rec->id, std::move(s));
  }
  return refused;
}

std::string NewSessionId() {
  std::random_device rd;
  return absl::StrFormat("s-%08x%08x", rd(), rd());
}

absl::Status CheckSessionId(const std::string& id) {
  if (!AdapterRegistry::ValidateName(id).ok())
    return absl::InvalidArgumentError(
        absl::StrCat("session_id '", id, "' must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"));
  return absl::OkStatus();
}

absl::Status SessionStore::CheckNewId(std::string* id) const {
  if (id->empty()) {
    do *id = NewSessionId();
    while (sessions_.count(*id) != 0);
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckSessionId(*id));
  if (sessions_.count(*id) != 0) return absl::AlreadyExistsError(absl::StrCat("session '", *id, "' exists"));
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> SessionStore::Insert(std::unique_ptr<Session> s) {
  if (static_cast<int>(sessions_.size()) >= options_.max_sessions)
    return absl::ResourceExhaustedError(absl::StrCat("the server holds its limit of ", options_.max_sessions,
                                                     " sessions (delete some, or raise --max_sessions)"));
  // A session the client was told exists survives a crash too (kAlways).
  if (write_through()) RETURN_IF_ERROR(WriteToDisk(*s));
  Session& ref = *s;
  sessions_.emplace(s->record.id, std::move(s));
  EnforceHostBudget();
  auto it = sessions_.find(ref.record.id);
  if (it == sessions_.end())
    return absl::ResourceExhaustedError("the session's state does not fit in the host memory budget (--session_memory_mb)");
  return Describe(*it->second);
}

absl::StatusOr<SessionInfo> SessionStore::Create(std::string id, int64_t ttl_s) {
  if (shared()) {
    absl::StatusOr<SessionInfo> r = absl::InternalError("no answer");
    CreateShared(std::move(id), ttl_s, /*here=*/true, [&r](absl::StatusOr<SessionInfo> v) { r = std::move(v); });
    return r;
  }
  if (absl::Status s = CheckNewId(&id); !s.ok()) return s;
  auto s = std::make_unique<Session>();
  s->record.id = id;
  s->record.created_unix_s = s->record.last_used_unix_s = NowUnix();
  s->record.ttl_s = ttl_s < 0 ? options_.default_ttl_s : ttl_s;
  return Insert(std::move(s));
}

void SessionStore::Erase(std::map<std::string, std::unique_ptr<Session>>::iterator it) {
  Session& s = *it->second;
  if (s.slot >= 0) pool_.Release(s.slot);
  if (!options_.dir.empty() && std::remove(PathOf(s.record.id).c_str()) == 0 && write_through())
    SyncDirectory(options_.dir).IgnoreError();  // a deleted session stays deleted after a crash
  sessions_.erase(it);
}

absl::Status SessionStore::Delete(const std::string& id) {
  if (shared()) {
    absl::Status r = absl::InternalError("no answer");
    DeleteShared(id, /*here=*/true, [&r](absl::Status v) { r = std::move(v); });
    return r;
  }
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session '", id, "'"));
  if (it->second->busy)
    return absl::FailedPreconditionError(absl::StrCat("session '", id, "' has a request running; cancel it first"));
  Erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SessionInfo>> SessionStore::List() {
  if (shared()) {
    absl::StatusOr<std::vector<SessionInfo>> r = absl::InternalError("no answer");
    ListShared(/*here=*/true, [&r](absl::StatusOr<std::vector<SessionInfo>> v) { r = std::move(v); });
    return r;
  }
  std::vector<SessionInfo> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(Describe(*s));
  return out;
}

SessionRecord SessionStore::ForkedRecord(const SessionRecord& src, const std::string& id, int64_t ttl_s) {
  SessionRecord r = src;
  r.id = id;
  r.created_unix_s = r.last_used_unix_s = NowUnix();
  r.ttl_s = ttl_s < 0 ? src.ttl_s : ttl_s;
  return r;
}

absl::StatusOr<std::shared_ptr<HostState>> SessionStore::CopyState(const Session& src) {
  if (src.slot < 0 && !src.host && !src.on_disk) return std::shared_ptr<HostState>();  // no past
  ASSIGN_OR_RETURN(std::unique_ptr<HostState> host, pool_.NewHostState());
  std::shared_ptr<HostState> dst = std::move(host);
  if (src.slot >= 0) {
    RETURN_IF_ERROR(pool_.SaveToHost(src.slot, *dst));
  } else if (src.host) {
    RETURN_IF_ERROR(src.host->Wait());
    std::memcpy(dst->data(), src.host->data(), static_cast<size_t>(pool_.state_bytes()));
  } else {
    RETURN_IF_ERROR(ReadSessionFile(PathOf(src.record.id), Expect(), {dst->data(), static_cast<size_t>(dst->words())}).status());
  }
  return dst;
}

absl::StatusOr<SessionInfo> SessionStore::Fork(const std::string& src_id, std::string id, int64_t ttl_s) {
  if (shared()) return ForkShared(src_id, std::move(id), ttl_s);
  auto it = sessions_.find(src_id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session '", src_id, "'"));
  Session& src = *it->second;
  if (src.busy)
    return absl::FailedPreconditionError(absl::StrCat("session '", src_id, "' has a request running; fork it when it ends"));
  if (absl::Status s = CheckNewId(&id); !s.ok()) return s;
  auto s = std::make_unique<Session>();
  s->record = ForkedRecord(src.record, id, ttl_s);
  ASSIGN_OR_RETURN(s->host, CopyState(src));
  return Insert(std::move(s));
}

absl::StatusOr<SessionCopy> SessionStore::Export(const std::string& src_id) {
  if (shared()) return absl::FailedPreconditionError("sessions in the state store are forked there");
  auto it = sessions_.find(src_id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session '", src_id, "'"));
  const Session& src = *it->second;
  if (src.busy)
    return absl::FailedPreconditionError(absl::StrCat("session '", src_id, "' has a request running; fork it when it ends"));
  SessionCopy copy;
  copy.record = src.record;
  ASSIGN_OR_RETURN(std::shared_ptr<HostState> state, CopyState(src));
  if (state != nullptr) {
    RETURN_IF_ERROR(state->Wait());
    copy.state.assign(state->data(), state->data() + state->words());
  }
  return copy;
}

absl::StatusOr<SessionInfo> SessionStore::Import(SessionCopy copy, std::string id, int64_t ttl_s) {
  if (shared()) return absl::FailedPreconditionError("sessions in the state store are forked there");
  if (!copy.state.empty() && static_cast<int64_t>(copy.state.size()) != pool_.state_words())
    return absl::InvalidArgumentError(absl::StrCat("a session copy of ", copy.state.size(), " words; this model's state has ",
                                                   pool_.state_words()));
  if (absl::Status s = CheckNewId(&id); !s.ok()) return s;
  auto s = std::make_unique<Session>();
  s->record = ForkedRecord(copy.record, id, ttl_s);
  if (!copy.state.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<HostState> host, pool_.NewHostState());
    std::memcpy(host->data(), copy.state.data(), copy.state.size() * sizeof(float));
    s->host = std::move(host);
  }
  return Insert(std::move(s));
}

absl::StatusOr<SessionStore::Session*> SessionStore::BeginTurn(const std::string& id, const std::string& adapter) {
  if (shared()) return BeginTurnShared(id, adapter);
  auto it = sessions_.find(id);
  if (it == sessions_.end())
    return absl::NotFoundError(absl::StrCat("no session '", id, "' (deleted, expired, or never created)"));
  Session& s = *it->second;
  if (s.busy)
    return absl::FailedPreconditionError(
        absl::StrCat("session '", id, "' already has a request running (one turn at a time: wait for it to end)"));
  if (s.record.tokens > 0 && s.record.adapter != adapter)
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", id, "' holds a past computed with ",
        s.record.adapter.empty() ? std::string("the base model") : absl::StrCat("adapter '", s.record.adapter, "'"),
        "; this request names ", adapter.empty() ? std::string("no adapter") : absl::StrCat("adapter '", adapter, "'")));
  s.busy = true;
  s.record.last_used_unix_s = NowUnix();
  return &s;
}

std::optional<int> SessionStore::TakeSlot(Session& s) {
  if (s.slot < 0) return std::nullopt;
  auto host = pool_.NewHostState();
  if (!host.ok()) return std::nullopt;
  std::shared_ptr<HostState> backup = std::move(*host);
  if (!pool_.SaveToHost(s.slot, *backup).ok()) return std::nullopt;
  const int slot = s.slot;
  s.slot = -1;
  s.host = std::move(backup);
  return slot;
}

absl::StatusOr<std::shared_ptr<HostState>> SessionStore::Restore(Session& s, int slot) {
  if (s.slot >= 0) {
    if (absl::Status st = pool_.Copy(s.slot, slot); !st.ok()) return st;
    return std::shared_ptr<HostState>();
  }
  if (!s.host && s.on_disk) {  // back from disk into host memory first
    auto host = pool_.NewHostState();
    if (!host.ok()) return host.status();
    std::shared_ptr<HostState> h = std::move(*host);
    auto rec = ReadSessionFile(PathOf(s.record.id), Expect(), {h->data(), static_cast<size_t>(h->words())});
    if (!rec.ok()) return rec.status();
    s.host = std::move(h);
  }
  if (!s.host) return std::shared_ptr<HostState>();  // empty past: the zeroed slot is it
  if (absl::Status st = pool_.LoadFromHost(*s.host, slot); !st.ok()) return st;
  return s.host;
}

SessionRecord SessionStore::NextRecord(const Session& s, int64_t tokens_added, std::optional<int32_t> pending,
                                       const std::string& adapter) const {
  SessionRecord next = s.record;
  next.tokens += tokens_added;
  next.pending = pending;
  next.adapter = adapter;
  next.last_used_unix_s = NowUnix();
  return next;
}

absl::Status SessionStore::Commit(Session& s, int slot, int64_t tokens_added, std::optional<int32_t> pending,
                                  const std::string& adapter) {
  SessionRecord next = NextRecord(s, tokens_added, pending, adapter);
  if (shared()) {
    // Before the turn's last message goes out; only while the lease is still ours and the store
    // still at the version the turn started from.
    absl::StatusOr<std::span<const float>> state = StateOf(s, slot);
    absl::Status st = state.ok() ? shared_->Commit(next, s.store_version, *state) : state.status();
    if (!st.ok())
      return StoreError(absl::Status(st.code(), absl::StrCat(st.message(), "; session '", s.record.id,
                                                              "' is as it was before this turn")),
                        "writing the turn's state");
    ++s.store_version;
    ++counters_.store_writes;
    if (s.leased) UnleaseLater(s.record.id);  // else it expires
    s.leased = false;
  } else if (write_through()) {
    // Before the turn's last message goes out (the scheduler sends it after this returns).
    if (absl::Status st = WriteRecord(s, next, slot); !st.ok())
      return absl::UnavailableError(absl::StrCat("the turn's state could not be written to the session directory (",
                                                 st.message(), "); session '", s.record.id,
                                                 "' is as it was before this turn"));
  } else {
    s.file_current = false;
    // kShutdown: the stale file goes (a crash must not bring back an older past silently);
    // kInterval keeps it until the next flush replaces it (that much is the policy's loss).
    if (has_dir() && options_.durability == SessionDurability::kShutdown && s.on_disk)
      std::remove(PathOf(s.record.id).c_str());
  }
  if (s.slot >= 0) pool_.Release(s.slot);
  s.slot = slot;
  s.host.reset();
  s.on_disk = false;
  s.record = std::move(next);
  s.busy = false;
  EnforceHostBudget();
  return absl::OkStatus();
}

void SessionStore::Abort(Session& s) {
  if (s.leased) UnleaseLater(s.record.id);  // else it expires
  s.leased = false;
  s.busy = false;
  EnforceHostBudget();
}

bool SessionStore::FreeOneSlot() {
  Session* victim = nullptr;
  for (auto& [id, s] : sessions_)
    if (s->slot >= 0 && (victim == nullptr || s->record.last_used_unix_s < victim->record.last_used_unix_s))
      victim = s.get();
  if (victim == nullptr) return false;
  auto host = pool_.NewHostState();
  if (!host.ok()) return false;
  std::shared_ptr<HostState> h = std::move(*host);
  if (!pool_.SaveToHost(victim->slot, *h).ok()) return false;
  pool_.Release(victim->slot);
  victim->slot = -1;
  victim->host = std::move(h);
  ++counters_.swapped_out;
  EnforceHostBudget();
  return true;
}

absl::StatusOr<std::span<const float>> SessionStore::StateOf(const Session& s, int slot) {
  if (slot >= 0) {
    if (!scratch_) {
      auto host = pool_.NewHostState();
      if (!host.ok()) return host.status();
      scratch_ = std::move(*host);
    }
    RETURN_IF_ERROR(pool_.SaveToHost(slot, *scratch_));
    RETURN_IF_ERROR(scratch_->Wait());
    return std::span<const float>(scratch_->data(), static_cast<size_t>(scratch_->words()));
  }
  if (s.host) {
    RETURN_IF_ERROR(s.host->Wait());
    return std::span<const float>(s.host->data(), static_cast<size_t>(s.host->words()));
  }
  if (s.on_disk) return absl::InternalError("StateOf: the state is only in the file");
  if (s.record.tokens > 0 || s.record.pending)
    return absl::InternalError(absl::StrCat("session '", s.record.id, "' has a past but no state"));
  return std::span<const float>();  // a session with no past stores no state
}

absl::Status SessionStore::WriteRecord(Session& s, const SessionRecord& record, int slot) {
  std::span<const float> state;  // empty: a session with no past stores no state
  if (slot >= 0 || s.host) {
    absl::StatusOr<std::span<const float>> st = StateOf(s, slot);
    if (!st.ok()) return st.status();
    state = *st;
  } else if (s.on_disk) {
    return absl::InternalError("WriteRecord: the state is only in the file");
  } else if (record.tokens > 0 || record.pending) {
    return absl::InternalError(absl::StrCat("session '", record.id, "' has a past but no state to write"));
  }
  RETURN_IF_ERROR(WriteSessionFile(PathOf(record.id), options_.model_fingerprint, record, state, pool_.state_dtype()));
  s.file_current = true;
  ++counters_.written;
  return absl::OkStatus();
}

absl::Status SessionStore::WriteToDisk(Session& s) {
  if (s.file_current) return absl::OkStatus();  // the file holds this state already
  return WriteRecord(s, s.record, s.slot);
}

void SessionStore::EnforceHostBudget() {
  for (;;) {
    int64_t held = 0;
    Session* victim = nullptr;
    for (auto& [id, s] : sessions_) {
      if (!s->host) continue;
      held += pool_.state_bytes();
      if (!s->busy && s->slot < 0 && (victim == nullptr || s->record.last_used_unix_s < victim->record.last_used_unix_s))
        victim = s.get();
    }
    if (held <= options_.host_bytes || victim == nullptr) return;
    if (shared()) {  // the store holds it: the next turn reads it from there
      ++counters_.store_released;
      Erase(sessions_.find(victim->record.id));
    } else if (has_dir() && WriteToDisk(*victim).ok()) {
      victim->host.reset();
      victim->on_disk = true;
    } else {
      ++counters_.dropped;
      victim->host.reset();  // Erase below; keep the file (if any) consistent by removing it there
      Erase(sessions_.find(victim->record.id));
    }
  }
}

void SessionStore::Expire() {
  const double now = NowUnix();
  if (now - last_expire_ < 1.0) return;
  last_expire_ = now;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const Session& s = *it->second;
    auto next = std::next(it);
    if (!s.busy && s.record.ttl_s > 0 && now > s.record.last_used_unix_s + static_cast<double>(s.record.ttl_s)) {
      ++counters_.expired;
      Erase(it);
    }
    it = next;
  }
}

void SessionStore::SaveAll() {
  if (options_.dir.empty()) return;
  for (auto& [id, s] : sessions_) WriteToDisk(*s).IgnoreError();  // current files are skipped
}

void SessionStore::Flush() {
  if (!has_dir() || options_.durability != SessionDurability::kInterval) return;
  const double now = NowUnix();
  if (now - last_flush_ < options_.sync_interval_s) return;
  last_flush_ = now;
  for (auto& [id, s] : sessions_)
    if (!s->busy && !s->file_current) WriteToDisk(*s).IgnoreError();
}

SessionStats SessionStore::stats() const {
  SessionStats st = counters_;
  st.sessions = static_cast<int>(sessions_.size());
  for (const auto& [id, s] : sessions_) {
    if (s->slot >= 0) ++st.in_slots;
    else if (s->host) ++st.in_host;
    else if (s->on_disk) ++st.on_disk;
    if (s->host) st.host_bytes += pool_.state_bytes();
  }
  return st;
}

// ---- The shared tier.

absl::Status SessionStore::StoreError(const absl::Status& s, const std::string& doing) {
  ++counters_.store_errors;
  if (s.code() == absl::StatusCode::kUnavailable)
    return absl::UnavailableError(absl::StrCat("sessions are unavailable: the state store did not answer ", doing,
                                               " (", s.message(), "); requests without a session are served"));
  return s;
}

absl::StatusOr<SessionStore::Session*> SessionStore::InsertCopy(std::unique_ptr<Session> s) {
  if (auto it = sessions_.find(s->record.id); it != sessions_.end()) Erase(it);  // an older copy
  while (static_cast<int>(sessions_.size()) >= options_.max_sessions) {
    Session* victim = nullptr;
    for (auto& [id, c] : sessions_)
      if (!c->busy && (victim == nullptr || c->record.last_used_unix_s < victim->record.last_used_unix_s)) victim = c.get();
    if (victim == nullptr)
      return absl::ResourceExhaustedError(absl::StrCat("this replica runs turns on its limit of ", options_.max_sessions,
                                                       " sessions (raise --max_sessions)"));
    ++counters_.store_released;
    Erase(sessions_.find(victim->record.id));
  }
  Session* ref = s.get();
  sessions_.emplace(s->record.id, std::move(s));
  return ref;
}

// ---- Create, delete, list: each a store part (the store thread's when there is one: it touches
// only shared_ and its arguments) and a loop part.

namespace {
// What a store part found: its status, and whether that is the store's own failure (counted, said
// UNAVAILABLE by StoreError on the loop).
struct StoreOutcome {
  absl::Status status;
  bool store_failed = false;
};
struct Created : StoreOutcome {
  SessionRecord record;
  double seconds = 0;
};
struct Deleted : StoreOutcome {
  bool removed = false;
};
struct Listed : StoreOutcome {
  std::vector<SharedSessions::Entry> entries;
};

// A new session in the store (`state`: its past; empty: none); `chosen`: a name of ours, another
// tried when one is taken.
Created CreateInStore(SharedSessions& shared, SessionRecord record, bool chosen, std::span<const float> state = {}) {
  Created c;
  const auto t0 = std::chrono::steady_clock::now();
  for (int attempt = 0;; ++attempt) {
    if (chosen) record.id = NewSessionId();
    absl::StatusOr<bool> created = shared.Create(record, state);
    if (!created.ok()) {
      c.status = created.status(), c.store_failed = true;
      break;
    }
    if (*created) {
      c.record = std::move(record);
      break;
    }
    if (!chosen || attempt == 3) {
      c.status = absl::AlreadyExistsError(absl::StrCat("session '", record.id, "' exists"));
      break;
    }
  }
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return c;
}

Deleted DeleteInStore(SharedSessions& shared, const std::string& id) {
  Deleted d;
  absl::StatusOr<bool> leased = shared.Lease(id);
  if (!leased.ok()) {
    d.status = leased.status(), d.store_failed = true;
  } else if (!*leased) {
    d.status = absl::FailedPreconditionError(
        absl::StrCat("session '", id, "' has a request running on another replica; cancel it first"));
  } else {
    absl::StatusOr<bool> removed = shared.Remove(id);
    shared.Unlease(id).IgnoreError();
    if (!removed.ok()) d.status = removed.status(), d.store_failed = true;
    else d.removed = *removed;
  }
  return d;
}
}  // namespace

template <typename T>
void SessionStore::OnStoreThread(bool here, std::function<T()> work, std::function<void(T)> then) {
  if (here || !async()) return then(work());
  ++store_jobs_;
  store_thread_->Run([this, work = std::move(work), then = std::move(then)]() mutable {
    auto result = std::make_shared<T>(work());
    poster_([this, result, then = std::move(then)]() mutable {  // (the loop outlives every job)
      --store_jobs_;
      then(std::move(*result));
    });
  });
}

void SessionStore::CreateShared(std::string id, int64_t ttl_s, bool here,
                                std::function<void(absl::StatusOr<SessionInfo>)> done) {
  const bool chosen = id.empty();
  if (absl::Status s = chosen ? absl::OkStatus() : CheckSessionId(id); !s.ok()) return done(s);
  SessionRecord record;
  record.id = id;
  record.created_unix_s = record.last_used_unix_s = NowUnix();
  record.ttl_s = ttl_s < 0 ? options_.default_ttl_s : ttl_s;
  OnStoreThread<Created>(here, [shared = shared_.get(), record, chosen] { return CreateInStore(*shared, record, chosen); },
                         [this, done = std::move(done)](Created c) {
                           if (!c.status.ok()) return done(c.store_failed ? StoreError(c.status, "creating the session") : c.status);
                           auto s = std::make_unique<Session>();
                           s->record = std::move(c.record);
                           s->store_version = 1;
                           ++counters_.store_writes;
                           counters_.store_write_s += c.seconds;
                           absl::StatusOr<Session*> copy = InsertCopy(std::move(s));
                           // (Not kept here is not lost: it is in the store, and any replica continues it.)
                           if (!copy.ok()) return done(copy.status());
                           done(Describe(**copy));
                         });
}

void SessionStore::DeleteShared(const std::string& id, bool here, std::function<void(absl::Status)> done) {
  auto it = sessions_.find(id);
  if ((it != sessions_.end() && it->second->busy) || preparing_.count(id) != 0)
    return done(absl::FailedPreconditionError(absl::StrCat("session '", id, "' has a request running; cancel it first")));
  preparing_.insert(id);  // no turn starts here meanwhile
  OnStoreThread<Deleted>(here, [shared = shared_.get(), id] { return DeleteInStore(*shared, id); },
                         [this, id, done = std::move(done)](Deleted d) {
                           preparing_.erase(id);
                           if (!d.status.ok()) return done(d.store_failed ? StoreError(d.status, "deleting the session") : d.status);
                           if (auto it = sessions_.find(id); it != sessions_.end() && !it->second->busy) Erase(it);
                           if (!d.removed) return done(absl::NotFoundError(absl::StrCat("no session '", id, "'")));
                           done(absl::OkStatus());
                         });
}

void SessionStore::ListShared(bool here, std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done) {
  // A listing that large is not a listing anyone reads; it stays bounded.
  const size_t limit = std::max<size_t>(10000, static_cast<size_t>(options_.max_sessions) * 16);
  OnStoreThread<Listed>(
      here, [shared = shared_.get(), limit] {
        Listed l;
        absl::StatusOr<std::vector<SharedSessions::Entry>> entries = shared->List(limit);
        if (entries.ok()) l.entries = std::move(*entries);
        else l.status = entries.status(), l.store_failed = true;
        return l;
      },
      [this, done = std::move(done)](Listed l) {
        if (!l.status.ok()) return done(StoreError(l.status, "listing the sessions"));
        std::vector<SessionInfo> out;
        for (const SharedSessions::Entry& e : l.entries) {
          auto it = sessions_.find(e.record.id);
          if (it != sessions_.end() && (it->second->store_version == e.version || it->second->busy)) {
            out.push_back(Describe(*it->second));
            continue;
          }
          Session copy;
          copy.record = e.record;
          SessionInfo i = Describe(copy);
          i.where = "store";
          out.push_back(std::move(i));
        }
        done(std::move(out));
      });
}

absl::Status SessionStore::CheckForkShared(const std::string& src_id, const std::string& id) const {
  auto it = sessions_.find(src_id);
  if ((it != sessions_.end() && it->second->busy) || preparing_.count(src_id) != 0)
    return absl::FailedPreconditionError(absl::StrCat("session '", src_id, "' has a request running; fork it when it ends"));
  return id.empty() ? absl::OkStatus() : CheckSessionId(id);
}

absl::StatusOr<SessionInfo> SessionStore::ForkShared(const std::string& src_id, std::string id, int64_t ttl_s) {
  RETURN_IF_ERROR(CheckForkShared(src_id, id));
  // Read under the source's lease, as a turn would: no turn elsewhere changes it halfway.
  absl::StatusOr<Session*> src = BeginTurnShared(src_id, "", /*check_adapter=*/false);
  if (!src.ok()) return src.status();
  absl::StatusOr<SessionInfo> r = absl::InternalError("no answer");
  EndFork(**src, std::move(id), ttl_s, /*here=*/true, [&r](absl::StatusOr<SessionInfo> v) { r = std::move(v); });
  return r;
}

void SessionStore::ForkAsync(const std::string& src_id, std::string id, int64_t ttl_s,
                             std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (!async()) return done(Fork(src_id, std::move(id), ttl_s));
  if (absl::Status s = CheckForkShared(src_id, id); !s.ok()) return done(s);
  BeginTurnAsync(
      src_id, "",
      [this, id = std::move(id), ttl_s, done = std::move(done)](absl::StatusOr<Session*> src) mutable {
        if (!src.ok()) return done(src.status());
        EndFork(**src, std::move(id), ttl_s, /*here=*/false, std::move(done));
      },
      /*check_adapter=*/false);
}

void SessionStore::EndFork(Session& from, std::string id, int64_t ttl_s, bool here,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  const std::string src_id = from.record.id;
  auto s = std::make_shared<std::unique_ptr<Session>>(std::make_unique<Session>());
  (*s)->record = ForkedRecord(from.record, id, ttl_s);
  absl::StatusOr<std::shared_ptr<HostState>> copy = CopyState(from);  // a slot's copy is waited for here
  absl::Status copied = copy.status();
  if (copied.ok() && *copy != nullptr) copied = (*copy)->Wait();
  std::shared_ptr<HostState> state = copied.ok() ? *copy : nullptr;
  (*s)->host = state;
  const bool chosen = id.empty();
  // The store's part: the new session written (its state read from `state`, which the job holds),
  // the source's lease given back before the answer (this is a call, not a turn: it waits for it).
  OnStoreThread<Created>(
      here,
      [shared = shared_.get(), record = (*s)->record, chosen, state, copied, src_id] {
        Created c;
        if (copied.ok())
          c = CreateInStore(*shared, record, chosen,
                            state ? std::span<const float>(state->data(), static_cast<size_t>(state->words()))
                                  : std::span<const float>());
        else
          c.status = copied;
        shared->Unlease(src_id).IgnoreError();
        return c;
      },
      [this, s, src_id, done = std::move(done)](Created c) {
        if (auto it = sessions_.find(src_id); it != sessions_.end()) {  // busy until now: still here
          it->second->leased = false;
          Abort(*it->second);  // it is as it was
        }
        if (!c.status.ok()) return done(c.store_failed ? StoreError(c.status, "writing the fork") : c.status);
        counters_.store_write_s += c.seconds;
        ++counters_.store_writes;
        std::unique_ptr<Session> made = std::move(*s);
        made->record.id = c.record.id;
        made->store_version = 1;
        Session listed;  // what the answer describes when the copy is let go at once
        listed.record = made->record;
        const std::string new_id = made->record.id;
        absl::StatusOr<Session*> inserted = InsertCopy(std::move(made));
        if (!inserted.ok()) return done(inserted.status());
        EnforceHostBudget();  // (a copy past the budget is let go: the store has it)
        auto it = sessions_.find(new_id);
        if (it == sessions_.end()) {
          SessionInfo i = Describe(listed);
          i.where = "store";
          return done(i);
        }
        done(Describe(*it->second));
      });
}

absl::StatusOr<SessionStore::Session*> SessionStore::BeginTurnShared(const std::string& id, const std::string& adapter,
                                                                     bool check_adapter) {
  absl::StatusOr<std::shared_ptr<TurnStart>> start = StartTurn(id);
  if (!start.ok()) return start.status();
  LeaseAndRead(*shared_, id, **start);
  return EndStartTurn(id, adapter, check_adapter, **start);
}

void SessionStore::UnleaseLater(const std::string& id) {
  if (store_thread_ == nullptr) {
    shared_->Unlease(id).IgnoreError();
    return;
  }
  store_thread_->Run([shared = shared_.get(), id] { shared->Unlease(id).IgnoreError(); });
}

absl::StatusOr<std::shared_ptr<SessionStore::TurnStart>> SessionStore::StartTurn(const std::string& id) {
  auto it = sessions_.find(id);
  if ((it != sessions_.end() && it->second->busy) || preparing_.count(id) != 0)
    return absl::FailedPreconditionError(
        absl::StrCat("session '", id, "' already has a request running (one turn at a time: wait for it to end)"));
  auto start = std::make_shared<TurnStart>();
  start->local_version = it != sessions_.end() ? it->second->store_version : 0;
  if (it != sessions_.end()) it->second->busy = true;  // nothing lets it go or runs on it meanwhile
  preparing_.insert(id);
  if (auto host = pool_.NewHostState(); host.ok()) start->host = std::move(*host);  // in case a read is needed
  return start;
}

void SessionStore::LeaseAndRead(SharedSessions& shared, const std::string& id, TurnStart& t) {
  absl::StatusOr<SharedSessions::LeaseFound> found = shared.LeaseAndFind(id);  // one round trip
  if (!found.ok()) {
    t.status = found.status(), t.store_failed = true;
    return;
  }
  if (found->outcome == SharedSessions::LeaseFound::kNoSession) {
    t.status = absl::NotFoundError(absl::StrCat("no session '", id, "' (deleted, expired, or never created)"));
    return;  // (no lease was taken)
  }
  if (found->outcome == SharedSessions::LeaseFound::kHeldElsewhere) {
    t.status = absl::FailedPreconditionError(absl::StrCat(
        "session '", id, "' already has a request running on another replica (one turn at a time: wait for it to end)"));
    return;
  }
  t.entry = std::move(found->entry);
  const SessionRecord& r = t.entry.record;
  if (t.entry.version != t.local_version && (r.tokens > 0 || r.pending)) {
    if (t.host == nullptr) {
      t.status = absl::ResourceExhaustedError("no host memory for the session's state");
    } else {  // (the lease keeps the version found above: no turn elsewhere can commit meanwhile)
      const auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<SharedSessions::Entry> read =
          shared.Read(id, {t.host->data(), static_cast<size_t>(t.host->words())}, &t.entry);
      t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!read.ok()) t.status = read.status(), t.store_failed = true;
      else t.entry.record = std::move(read->record), t.read = true;
    }
  }
  if (!t.status.ok()) shared.Unlease(id).IgnoreError();
}

absl::StatusOr<SessionStore::Session*> SessionStore::EndStartTurn(const std::string& id, const std::string& adapter,
                                                                  bool check_adapter, TurnStart& t) {
  preparing_.erase(id);
  auto it = sessions_.find(id);
  Session* s = it != sessions_.end() ? it->second.get() : nullptr;
  if (s != nullptr) s->busy = false;
  auto fail = [&](absl::Status st) {
    UnleaseLater(id);  // the lease was taken: give it back
    return st;
  };
  if (!t.status.ok()) {
    if (t.status.code() == absl::StatusCode::kNotFound && s != nullptr) Erase(it);  // deleted elsewhere
    return t.store_failed ? StoreError(t.status, "reading the session") : t.status;
  }
  const SharedSessions::Entry& e = t.entry;
  if (check_adapter && e.record.tokens > 0 && e.record.adapter != adapter)
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "session '", id, "' holds a past computed with ",
        e.record.adapter.empty() ? std::string("the base model") : absl::StrCat("adapter '", e.record.adapter, "'"),
        "; this request names ", adapter.empty() ? std::string("no adapter") : absl::StrCat("adapter '", adapter, "'"))));
  if (s == nullptr || s->store_version != e.version) {  // no copy here, or an older one
    auto copy = std::make_unique<Session>();
    copy->record = e.record;
    if (t.read) {
      copy->host = std::move(t.host);
      ++counters_.store_reads;
      counters_.store_read_s += t.seconds;
    }
    copy->store_version = e.version;
    absl::StatusOr<Session*> inserted = InsertCopy(std::move(copy));
    if (!inserted.ok()) return fail(inserted.status());
    s = *inserted;
  }
  t.host.reset();  // (an unused buffer goes back here, on the loop)
  s->busy = true;
  s->leased = true;
  s->record.last_used_unix_s = NowUnix();
  return s;
}

void SessionStore::BeginTurnAsync(const std::string& id, const std::string& adapter,
                                  std::function<void(absl::StatusOr<Session*>)> done, bool check_adapter) {
  absl::StatusOr<std::shared_ptr<TurnStart>> start = StartTurn(id);
  if (!start.ok()) return done(start.status());
  ++store_jobs_;
  store_thread_->Run([this, id, adapter, check_adapter, start = *start, done = std::move(done)]() mutable {
    LeaseAndRead(*shared_, id, *start);  // thread-safe: the store and `start` only
    poster_([this, id, adapter, start, check_adapter, done = std::move(done)]() mutable {  // (the loop outlives every job)
      --store_jobs_;
      done(EndStartTurn(id, adapter, check_adapter, *start));
    });
  });
}

void SessionStore::CreateAsync(std::string id, int64_t ttl_s, std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (!async()) return done(Create(std::move(id), ttl_s));
  CreateShared(std::move(id), ttl_s, /*here=*/false, std::move(done));
}

void SessionStore::DeleteAsync(const std::string& id, std::function<void(absl::Status)> done) {
  if (!async()) return done(Delete(id));
  DeleteShared(id, /*here=*/false, std::move(done));
}

void SessionStore::ListAsync(std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done) {
  if (!async()) return done(List());
  ListShared(/*here=*/false, std::move(done));
}

void SessionStore::AbortAsync(Session& s, std::function<void()> done) {
  if (!s.leased || store_thread_ == nullptr) {
    Abort(s);
    return done();
  }
  const std::string id = s.record.id;
  ++store_jobs_;
  store_thread_->Run([this, id, done = std::move(done)]() mutable {
    shared_->Unlease(id).IgnoreError();  // else it expires
    poster_([this, id, done = std::move(done)] {
      --store_jobs_;
      if (auto it = sessions_.find(id); it != sessions_.end()) {  // there: a busy session is never let go
        it->second->leased = false;
        Abort(*it->second);
      }
      done();
    });
  });
}

void SessionStore::CommitAsync(Session& s, int slot, int64_t tokens_added, std::optional<int32_t> pending,
                               const std::string& adapter, std::function<void(absl::Status)> done) {
  const std::string id = s.record.id;
  auto failed = [this, slot, id](Session* session, const absl::Status& st) {
    pool_.Release(slot);
    if (session != nullptr) Abort(*session);
    return absl::Status(st.code(), absl::StrCat(st.message(), "; session '", id, "' is as it was before this turn"));
  };
  absl::StatusOr<std::unique_ptr<HostState>> fresh = pool_.NewHostState();
  absl::Status copied = fresh.ok() ? pool_.SaveToHost(slot, **fresh) : fresh.status();
  if (!copied.ok()) return done(failed(&s, copied));
  std::shared_ptr<HostState> host = std::move(*fresh);
  const SessionRecord next = NextRecord(s, tokens_added, pending, adapter);
  const uint64_t version = s.store_version;
  ++store_jobs_;
  store_thread_->Run([this, id, slot, next, version, host = std::move(host), failed, done = std::move(done)]() mutable {
    // Before the turn's last message goes out (`done` sends it); only while the lease is still ours
    // and the store still at the version the turn started from.
    absl::Status st = host->Wait();
    const auto t0 = std::chrono::steady_clock::now();
    if (st.ok()) st = shared_->Commit(next, version, {host->data(), static_cast<size_t>(host->words())});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    shared_->Unlease(id).IgnoreError();  // either way, before the client hears the turn ended
    host.reset();  // (recycled here: the pool's host buffers may be given back from any thread)
    poster_([this, id, slot, next, st, seconds, failed, done = std::move(done)] {
      --store_jobs_;
      auto it = sessions_.find(id);  // there: a busy session is never let go
      Session* s = it != sessions_.end() ? it->second.get() : nullptr;
      if (s != nullptr) s->leased = false;  // given back above
      if (!st.ok() || s == nullptr) {
        return done(failed(s, s == nullptr ? absl::InternalError("the session went during its turn")
                                           : StoreError(st, "writing the turn's state")));
      }
      ++s->store_version;
      ++counters_.store_writes;
      counters_.store_write_s += seconds;
      if (s->slot >= 0) pool_.Release(s->slot);
      s->slot = slot;
      s->host.reset();
      s->on_disk = false;
      s->record = next;
      s->busy = false;
      EnforceHostBudget();
      done(absl::OkStatus());
    });
  });
}

void SessionStore::RenewLeases() {
  if (!shared()) return;
  const double now = NowUnix();
  if (now - last_renew_ < static_cast<double>(shared_->lease_ms()) / 3000.0) return;
  last_renew_ = now;
  std::vector<std::string> ids;
  for (auto& [id, s] : sessions_)
    if (s->leased) ids.push_back(id);
  if (ids.empty()) return;
  // Renew, never take: a lease given back meanwhile (a commit's) stays given back. A lease lost
  // shows at the commit, which then writes nothing and says why.
  auto renew = [shared = shared_.get(), ids] {
    for (const std::string& id : ids) shared->Renew(id).IgnoreError();
  };
  if (store_thread_ != nullptr) store_thread_->Run(std::move(renew));
  else renew();
}

}  // namespace gla
