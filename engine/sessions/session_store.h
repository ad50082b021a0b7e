// Stateful sessions (issue 8): a conversation kept as one recurrent state instead of its text.
// A session's latest state lives in exactly one place:
//   - a pool slot (after a turn, while the pool has room: the next turn starts with one device
//     copy),
//   - a HostState (page-locked on the GPU), when the pool needed the slot (LRU),
//   - a file in --session_dir, when host memory went over its budget (LRU) or the server shut
//     down; without a session directory, the least recently used idle session is dropped then,
//   - nowhere, while it holds no tokens.
// A turn runs on a slot of its own: the session's slot itself when its state is in one (a backup
// copy goes to host memory on the copy stream meanwhile, so no second slot is needed), else a
// free slot loaded from host memory or disk. Only a turn that ends well (EOS, stop, length)
// replaces the session's state; a cancelled or failed turn leaves the session as it was (the
// backup). The token sampled last is kept `pending` and becomes the first token of the
// next turn's prompt: the session's past is exactly its prompts and outputs in order.
//
// With a shared state tier (SessionOptions::store, `--state_store`; shared_sessions.h) the store
// holds every session and is the truth: this replica's slots and host memory keep copies, each
// knowing the store version it holds. A turn takes the session's lease in the store, checks the
// version and reads the state from the store only when the local copy is older (another replica
// ran a turn since) or missing; its end writes the new state through to the store before the last
// message goes out, then gives the lease back. Create, fork and delete act on the store first. When
// the store is gone, every session call is UNAVAILABLE saying so, and requests without a session
// are not affected. The store's calls are made on the store thread (after SetPoster: the *Async
// calls below; the synchronous ones make them on the caller's), each bounded by the client's
// timeouts; after a failure the client refuses at once for a moment (RedisOptions::retry_after_s).
//
// Loop-thread only (the scheduler's): no locking.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sessions/redis_client.h"
#include "engine/sessions/session_file.h"
#include "engine/sessions/shared_sessions.h"
#include "engine/sessions/store_thread.h"
#include "engine/state_pool.h"

namespace gla {

// When a session's state reaches --session_dir (Redis' appendfsync, for sessions):
//   kAlways   every completed turn (and create / fork) is written through, atomically and
//             fsync'ed, before the turn's last message is sent: kill -9 loses no turn a client
//             saw complete.
//   kInterval changed sessions are written every `sync_interval_s` (at most that much lost).
//   kShutdown only at shutdown and when host memory runs over its budget (a crash loses every
//             session changed since it was last written).
enum class SessionDurability { kAlways, kInterval, kShutdown };

struct SessionOptions {
  int max_sessions = 1024;
  int64_t host_bytes = int64_t{2} << 30;  // budget for states at rest in host memory
  std::string dir;                        // "" = no disk tier (sessions do not survive a restart)
  int64_t default_ttl_s = 3600;           // idle time after which a session is deleted; 0 = never
  uint64_t model_fingerprint = 0;         // session files written for another model are refused
  int32_t vocab_size = 0;                 // a file's pending token must be below it (set by the scheduler)
  SessionDurability durability = SessionDurability::kAlways;  // with a dir
  double sync_interval_s = 1.0;           // kInterval
  // The shared state tier (--state_store): null = sessions are this replica's own. Exclusive with
  // `dir` (the store keeps every session; a local copy past the host budget is simply dropped).
  std::shared_ptr<RedisClient> store;
  std::string replica;          // this replica's name in leases (ReplicaName() when empty)
  int64_t lease_ms = 30000;     // a turn's lease; renewed every third of it while the turn runs
  // Several engines in one process (engine_set.h) share `dir`: each loads, and cleans up after, only
  // the sessions this says it is home to. Null: every session in `dir` is this store's.
  std::function<bool(const std::string& id)> owns;
};

// A session id of the server's making ("s-" and 16 hex digits, random).
std::string NewSessionId();
// INVALID_ARGUMENT unless `id` is a session id a client may choose (1-64 characters of
// [A-Za-z0-9._-], not starting with '.': a file name in --session_dir, a key part in the store).
absl::Status CheckSessionId(const std::string& id);

// A session's record and state copied out of one store for another (engine_set.h: a fork whose new
// id another engine is home to). `state` is empty for a session with no past.
struct SessionCopy {
  SessionRecord record;
  std::vector<float> state;
};

struct SessionInfo {
  std::string id, adapter;
  int64_t tokens = 0;
  // "gpu" / "cpu" (a pool slot of that backend), "host", "disk", "empty"; "store" for a session of
  // the shared tier this replica holds no current copy of
  std::string where;
  bool busy = false;
  double created_unix_s = 0, last_used_unix_s = 0, expires_unix_s = 0;  // 0 = never
  int64_t ttl_s = 0;
};

struct SessionStats {
  int sessions = 0, in_slots = 0, in_host = 0, on_disk = 0;
  int64_t host_bytes = 0;
  uint64_t swapped_out = 0, written = 0, dropped = 0, expired = 0;
  // The shared tier: turns that read the state from the store (no current local copy), turns and
  // creations written to it, local copies let go (the store keeps them), calls that failed.
  uint64_t store_reads = 0, store_writes = 0, store_released = 0, store_errors = 0;
  // Seconds spent reading the states of store_reads and writing those of store_writes (their means:
  // what a resumed turn waits before its first step, and a turn's last message after its last token;
  // creations write no state and pull the write mean down).
  double store_read_s = 0, store_write_s = 0;
  // Several engines sharing a store (engine_set.h): turns run away from their home engine because
  // its slots were all taken (set by the EngineSet, not by a store).
  uint64_t turns_off_home = 0;
  // Summed with another store's (engine_set.h): every field.
  SessionStats& operator+=(const SessionStats& o) {
    sessions += o.sessions, in_slots += o.in_slots, in_host += o.in_host, on_disk += o.on_disk;
    host_bytes += o.host_bytes;
    swapped_out += o.swapped_out, written += o.written, dropped += o.dropped, expired += o.expired;
    store_reads += o.store_reads, store_writes += o.store_writes, store_released += o.store_released;
    store_errors += o.store_errors;
    store_read_s += o.store_read_s, store_write_s += o.store_write_s;
    turns_off_home += o.turns_off_home;
    return *this;
  }
};

class SessionStore {
 public:
  struct Session {
    SessionRecord record;
    int slot = -1;                     // its state is in this pool slot
    std::shared_ptr<HostState> host;   // or here
    bool on_disk = false;              // or in its file (only when slot < 0 and !host)
    bool file_current = false;         // its file holds its current state (always when on_disk)
    bool busy = false;                 // a request on it has not ended
    uint64_t store_version = 0;        // shared tier: the store version this copy holds
    bool leased = false;               // shared tier: this replica holds its lease (a turn runs)
  };

  // `slot_kind` names the pool's memory in listings ("gpu" or "cpu").
  SessionStore(StatePool& pool, SessionOptions options, std::string slot_kind);

  // Registers the session files of options.dir (checked whole: header, size, checksum, model).
  // Returns one message per refused file, naming it; refused files are left where they are.
  std::vector<std::string> LoadDirectory();

  // Empty id: the server makes one. ttl_s < 0: the default. INVALID_ARGUMENT for a bad id,
  // ALREADY_EXISTS, RESOURCE_EXHAUSTED past max_sessions.
  absl::StatusOr<SessionInfo> Create(std::string id, int64_t ttl_s);
  // FAILED_PRECONDITION while a request runs on it; NOT_FOUND. Removes its file too.
  absl::Status Delete(const std::string& id);
  // Sorted by id. With the shared tier: every session in the store (UNAVAILABLE without it).
  absl::StatusOr<std::vector<SessionInfo>> List();
  // A new session with a copy of `src`'s state (FAILED_PRECONDITION while a request runs on src).
  absl::StatusOr<SessionInfo> Fork(const std::string& src, std::string id, int64_t ttl_s);
  // A fork in two halves, for a new id another store is home to: Export copies `src` out (as Fork:
  // NOT_FOUND, FAILED_PRECONDITION while busy); Import makes the new session from the copy here (as
  // Fork: the id checked, ttl_s < 0 keeps the source's). Local sessions only (FAILED_PRECONDITION
  // with the shared tier, where Fork does it in the store).
  absl::StatusOr<SessionCopy> Export(const std::string& src);
  absl::StatusOr<SessionInfo> Import(SessionCopy copy, std::string id, int64_t ttl_s);

  // ---- For the scheduler.
  // The session a request names, marked busy. NOT_FOUND; FAILED_PRECONDITION when busy or when
  // its past was computed with another adapter than `adapter`.
  absl::StatusOr<Session*> BeginTurn(const std::string& id, const std::string& adapter);
  // The session's own slot for its turn, when its state is in one: the state stays there for the
  // turn and a backup starts on its way to host memory. nullopt: it is not in a slot (or no host
  // memory for the backup): take a free slot and Restore.
  std::optional<int> TakeSlot(Session& s);
  // Puts the session's state into `slot` (already zeroed). Returns the host buffer the slot is
  // loading from, to be held until Ready (null: nothing in flight).
  absl::StatusOr<std::shared_ptr<HostState>> Restore(Session& s, int slot);
  // The turn ended well: the session takes `slot` as its state. With kAlways durability the state
  // is written through first; when that fails the session is left as it was (the caller aborts
  // the turn) and the error says why.
  absl::Status Commit(Session& s, int slot, int64_t tokens_added, std::optional<int32_t> pending,
                      const std::string& adapter);
  void Abort(Session& s);  // the turn failed or was cancelled: the session stays as it was
  // Frees a pool slot that holds a session's state (least recently used first) by saving it to
  // host memory. False when no session holds one.
  bool FreeOneSlot();
  // Deletes idle sessions past their TTL. Cheap when called often (checks once a second).
  void Expire();
  // ---- The shared tier off the loop (after SetPoster): a turn's store calls run on the store
  // thread, their outcome comes back through `post` (the scheduler's Post) and `done` runs on the
  // loop. While one is out the session is busy; the scheduler's loop does not end while any is out
  // (store_jobs()).
  using Poster = std::function<bool(std::function<void()>)>;
  void SetPoster(Poster post) { poster_ = std::move(post); }
  bool async() const { return shared() && poster_ != nullptr; }
  int store_jobs() const { return store_jobs_; }
  // BeginTurn's work: the lease, the version, the state when this replica's copy is missing or
  // older; done(the session, busy and leased) or done(why not: as BeginTurn).
  // check_adapter false: a fork's read of its source (any adapter's past is forked as it is).
  void BeginTurnAsync(const std::string& id, const std::string& adapter,
                      std::function<void(absl::StatusOr<Session*>)> done, bool check_adapter = true);
  // Create, Delete and List with the store's part on the store thread (as they are without it).
  void CreateAsync(std::string id, int64_t ttl_s, std::function<void(absl::StatusOr<SessionInfo>)> done);
  void DeleteAsync(const std::string& id, std::function<void(absl::Status)> done);
  void ListAsync(std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done);
  // Fork, its store calls (the source's lease and read, the new session's write) on the store thread.
  void ForkAsync(const std::string& src, std::string id, int64_t ttl_s, std::function<void(absl::StatusOr<SessionInfo>)> done);
  // Abort's, when the session's lease is held: the lease goes back on the store thread, then
  // done() on the loop (so a client told its turn ended finds the session free on any replica).
  void AbortAsync(Session& s, std::function<void()> done);
  // Commit's work: `slot` (the turn's state) is the store thread's to write from; done(OK): the
  // session took the slot; done(error): the session is as it was and the slot was released.
  void CommitAsync(Session& s, int slot, int64_t tokens_added, std::optional<int32_t> pending,
                   const std::string& adapter, std::function<void(absl::Status)> done);

  // Shared tier: renews the leases of the turns running here (cheap when called often: once per
  // third of the lease).
  void RenewLeases();
  // Writes every session's state to options.dir (shutdown); no-op without a directory.
  void SaveAll();
  // kInterval: writes the sessions changed since their last write, once per sync interval
  // (cheap when called often). A no-op for the other policies.
  void Flush();

  SessionStats stats() const;
  bool has_dir() const { return !options_.dir.empty(); }
  bool shared() const { return shared_ != nullptr; }

 private:
  SessionInfo Describe(const Session& s) const;
  std::string PathOf(const std::string& id) const;
  absl::StatusOr<SessionInfo> Insert(std::unique_ptr<Session> s);
  // A copy of the session's state in a new host buffer (null: it has no past); it may still be on
  // its way from a slot (Wait before reading it).
  absl::StatusOr<std::shared_ptr<HostState>> CopyState(const Session& src);
  // The record of a fork of `src` named `id` (its clock restarted; ttl_s < 0: the source's).
  static SessionRecord ForkedRecord(const SessionRecord& src, const std::string& id, int64_t ttl_s);
  absl::Status CheckNewId(std::string* id) const;
  // Moves idle host-held states to disk (or drops their sessions) until host memory is in budget.
  void EnforceHostBudget();
  // Writes the session's state (from its slot, host copy, or nothing for an empty past) with
  // `record` to its file; marks it current.
  absl::Status WriteToDisk(Session& s);
  absl::Status WriteRecord(Session& s, const SessionRecord& record, int slot);
  SessionFileExpect Expect() const {
    return {options_.model_fingerprint, pool_.state_values(), pool_.state_dtype(), options_.vocab_size};
  }
  bool write_through() const { return has_dir() && options_.durability == SessionDurability::kAlways; }
  void Erase(std::map<std::string, std::unique_ptr<Session>>::iterator it);

  // ---- The shared tier's side of the calls above.
  // Each calls `done` before it returns when `here` (Create/Delete/List) or without a store thread,
  // else on the loop once the store thread has done the store's part.
  void CreateShared(std::string id, int64_t ttl_s, bool here, std::function<void(absl::StatusOr<SessionInfo>)> done);
  void DeleteShared(const std::string& id, bool here, std::function<void(absl::Status)> done);
  void ListShared(bool here, std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done);
  // Runs `work` on the store thread and `then` with its result on the loop; both at once, on this
  // thread, when `here` or without a store thread.
  template <typename T>
  void OnStoreThread(bool here, std::function<T()> work, std::function<void(T)> then);
  absl::StatusOr<SessionInfo> ForkShared(const std::string& src, std::string id, int64_t ttl_s);
  absl::Status CheckForkShared(const std::string& src, const std::string& id) const;
  // A fork's end once its source is busy and leased here: its state copied to host memory, the new
  // session written to the store (on the store thread unless `here`), the source let go, done().
  void EndFork(Session& from, std::string id, int64_t ttl_s, bool here, std::function<void(absl::StatusOr<SessionInfo>)> done);
  // check_adapter false: a fork's read of its source (any adapter's past is forked as it is).
  absl::StatusOr<Session*> BeginTurnShared(const std::string& id, const std::string& adapter, bool check_adapter = true);
  // A turn's start in three parts, so BeginTurnShared and BeginTurnAsync share them: StartTurn (the
  // loop: the session is marked taken), LeaseAndRead (the store's part: the lease, the version, the
  // state when this replica's copy is missing or older; on the store thread when there is one),
  // EndStartTurn (the loop: the local copy made current, the session busy and leased, or why not).
  struct TurnStart {
    uint64_t local_version = 0;          // the version this replica's copy holds (0: none)
    std::shared_ptr<HostState> host;     // for the state, if it must be read
    absl::Status status;                 // what the store's part found
    bool store_failed = false;           // status is the store's own failure
    SharedSessions::Entry entry;
    bool read = false;                   // entry's state is in `host`
    double seconds = 0;                  // the read's
  };
  absl::StatusOr<std::shared_ptr<TurnStart>> StartTurn(const std::string& id);
  static void LeaseAndRead(SharedSessions& shared, const std::string& id, TurnStart& t);
  absl::StatusOr<Session*> EndStartTurn(const std::string& id, const std::string& adapter, bool check_adapter,
                                        TurnStart& t);
  // A store error as the client sees it: UNAVAILABLE stays (the store is gone); counted.
  absl::Status StoreError(const absl::Status& s, const std::string& doing);
  // The state in a slot, a host copy or nothing (an empty past), as the words to write.
  absl::StatusOr<std::span<const float>> StateOf(const Session& s, int slot);
  // Adds a local copy of a store session, letting the least recently used idle copy go when the
  // replica holds max_sessions of them.
  absl::StatusOr<Session*> InsertCopy(std::unique_ptr<Session> s);
  // Gives a lease back without waiting (on the store thread when there is one).
  void UnleaseLater(const std::string& id);
  // What a commit makes of the session's record.
  SessionRecord NextRecord(const Session& s, int64_t tokens_added, std::optional<int32_t> pending,
                           const std::string& adapter) const;
  StatePool& pool_;
  const SessionOptions options_;
  const std::string slot_kind_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
  SessionStats counters_;
  double last_expire_ = 0;
  double last_flush_ = 0;
  std::shared_ptr<HostState> scratch_;  // a slot's state on its way to a file
  uint64_t next_id_ = 0;
  std::unique_ptr<SharedSessions> shared_;
  double last_renew_ = 0;
  Poster poster_;
  int store_jobs_ = 0;                // store-thread jobs whose outcome has not come back
  std::set<std::string> preparing_;   // sessions a BeginTurnAsync is out for
  // Last: destroyed first (it finishes its jobs, which use shared_ and post through poster_).
  std::unique_ptr<StoreThread> store_thread_;
};

}  // namespace gla
