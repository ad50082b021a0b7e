// Sessions in the shared state tier (issue 22): every replica started with the same
// `--state_store redis://...` sees the same sessions, so any of them continues any conversation.
// The store holds, per session and per model (the model's fingerprint is part of every key):
//   gla:<fingerprint>:m:<id>  its record and version: "<version>\n" + the record in the session
//                             file's layout without its state (cheap to read: a listing, a check)
//   gla:<fingerprint>:s:<id>  its record and state, the session file's layout (session_file.h)
//   gla:<fingerprint>:l:<id>  its lease: the replica running a turn on it, with an expiry
//   gla:<fingerprint>:t:<id>:<replica>  a state on its way in (written in ranges, then renamed to s:
//                             by the script that checks the lease and version; expires in a minute)
// A turn holds the lease from its start to its end; the state it leaves is written only while
// the lease is still this replica's and the version is the one the turn started from, in one
// server-side script: two replicas never interleave turns of one session, and a replica that
// lost its lease (it stalled past the expiry and another took over) cannot overwrite the newer
// past. Every completed turn is in the store before its last message is sent.
//
// Thread-safe (the client is); SessionStore calls it from the scheduler's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sessions/redis_client.h"
#include "engine/sessions/session_file.h"

namespace gla {

class SharedSessions {
 public:
  // `owner` names this replica in leases (unique per process: host, pid and a random part);
  // `expect` is what every entry must match (this model's fingerprint, state size, vocabulary).
  SharedSessions(std::shared_ptr<RedisClient> client, SessionFileExpect expect, std::string owner, int64_t lease_ms);

  struct Entry {
    SessionRecord record;
    uint64_t version = 0;  // 1 when created; each completed turn adds one
  };

  // A new session (version 1) with `state` (empty: no past). false: one with its id exists.
  absl::StatusOr<bool> Create(const SessionRecord& record, std::span<const float> state);
  // Takes the session's lease for this replica, or renews it when it holds it already: true.
  // false: another replica holds it (a turn runs there).
  absl::StatusOr<bool> Lease(const std::string& id);
  absl::Status Unlease(const std::string& id);  // gives it back when this replica holds it
  // Extends the lease while this replica holds it (never takes a free one): false when it does not.
  absl::StatusOr<bool> Renew(const std::string& id);
  // The session's record and version (nullopt: no such session).
  absl::StatusOr<std::optional<Entry>> Find(const std::string& id);
  // A turn's start in one call: the session's record and version, and its lease taken or renewed
  // for this replica. `entry` is set only when kLeased; kNoSession takes no lease.
  struct LeaseFound {
    enum Outcome { kNoSession, kHeldElsewhere, kLeased } outcome = kNoSession;
    Entry entry;
  };
  absl::StatusOr<LeaseFound> LeaseAndFind(const std::string& id);
  // Its record, version and state (`state` of the model's state size receives it; zeros for a
  // session with no past). NOT_FOUND. `known`: its record and version as this replica just found
  // them under its lease (which no other writer can change), not read again.
  absl::StatusOr<Entry> Read(const std::string& id, std::span<float> state, const Entry* known = nullptr);
  // A completed turn: `record` with `state` becomes version expected_version + 1, only while this
  // replica holds the lease and the store is at expected_version (else ABORTED, saying which).
  absl::Status Commit(const SessionRecord& record, uint64_t expected_version, std::span<const float> state);
  // Deletes the session (the caller holds its lease). false: it was not there.
  absl::StatusOr<bool> Remove(const std::string& id);
  // Every session of this model in the store, sorted by id; RESOURCE_EXHAUSTED past `limit`.
  absl::StatusOr<std::vector<Entry>> List(size_t limit);

  const std::string& owner() const { return owner_; }
  int64_t lease_ms() const { return lease_ms_; }
  const RedisClient& client() const { return *client_; }

 private:
  std::string Key(char kind, const std::string& id) const;
  std::string Scratch(const std::string& id) const;  // where this replica writes a state before its script moves it
  std::string Meta(const SessionRecord& record, uint64_t version) const;
  absl::StatusOr<Entry> ParseMeta(const std::string& id, std::string_view value) const;
  // The expiry of a session's keys: its TTL from now (0: none).
  static std::string ExpiryMs(const SessionRecord& record);

  std::shared_ptr<RedisClient> client_;
  // A state is read over these at once (client_ first; RedisClient::GetInRanges).
  std::vector<std::unique_ptr<RedisClient>> readers_;
  std::vector<RedisClient*> read_over_;
  const SessionFileExpect expect_;
  const std::string owner_;
  const int64_t lease_ms_;
  const std::string prefix_;  // "gla:<fingerprint>:"
};

// A name for this process in leases: "<host>:<pid>:<random>".
std::string ReplicaName();

}  // namespace gla
