// A connection to a Redis server: the client of issue 22's shared state tier (sessions and prefix
// states that every replica can resume), on Debian's libhiredis. Only the commands the tier needs,
// each bounded by a timeout and answered as a Status: a store that is slow or gone is UNAVAILABLE
// with the reason (the caller decides what still works without it), never a hang or a crash.
//
// A lease is a key holding its owner's name with an expiry (SET NX PX): while a turn runs, its
// replica holds the session's lease; a replica that dies stops renewing it and the session is free
// again when it expires. Taking, renewing and giving back are single server-side scripts, so two
// replicas never both hold one.
//
// Thread-safe (one connection behind a mutex); after an I/O error the connection is dropped and the
// next call connects again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct redisContext;

namespace gla {

struct RedisAddress {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string ToString() const;
};

// redis://HOST[:PORT][/DB] (no user, password or query: refused by name rather than ignored).
absl::StatusOr<RedisAddress> ParseRedisUrl(std::string_view url);

struct RedisOptions {
  double connect_timeout_s = 1.0;
  double command_timeout_s = 2.0;  // a value is a session state: tens of MiB at 1.3B
  // After a call found the store gone or hung, calls within this many seconds fail at once
  // (UNAVAILABLE, saying so) instead of each waiting out a timeout: a hung store costs its callers
  // one timeout per interval, not one per call. 0: every call tries.
  double retry_after_s = 0.5;
};

// What a command answered: the reply types the tier's commands and scripts give.
struct RedisReply {
  enum Kind { kNil, kString, kInteger, kStatus, kArray } kind = kNil;
  std::string text;  // kString, kStatus
  int64_t integer = 0;
  std::vector<RedisReply> elements;  // kArray
};

class RedisClient {
 public:
  explicit RedisClient(RedisAddress address, RedisOptions options = {});
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  const RedisAddress& address() const { return address_; }
  const RedisOptions& options() const { return options_; }

  absl::Status Ping();
  // SET key value, with an expiry when ttl_ms > 0.
  absl::Status Put(std::string_view key, std::string_view value, int64_t ttl_ms = 0);
  // nullopt when the key is not there.
  absl::StatusOr<std::optional<std::string>> Get(std::string_view key);
  absl::Status Delete(std::string_view key);
  // `owner` takes the lease `key` for ttl_ms, or renews it when it already holds it: true. false
  // when another owner holds it.
  absl::StatusOr<bool> Acquire(std::string_view key, std::string_view owner, int64_t ttl_ms);
  // Extends the lease by ttl_ms only while `owner` holds it (never takes a free one): whether it did.
  absl::StatusOr<bool> Renew(std::string_view key, std::string_view owner, int64_t ttl_ms);
  // Gives the lease back when `owner` holds it: whether it did.
  absl::StatusOr<bool> Release(std::string_view key, std::string_view owner);
  // Large values (session and prefix states: up to tens of MiB) moved in ranges of at most
  // kRangeBytes: hiredis reads a reply into a buffer that grows 1 MiB at a time past 1 MiB, and
  // moves the unsent rest of a command forward after each partial write, so one GET or SET of 48 MiB
  // copies gigabytes; in ranges it copies each byte a few times. PutInRanges sizes the string
  // first (one SETRANGE at its last byte), then fills it; the key expires after ttl_ms (> 0) so a
  // writer that dies halfway leaves nothing for long. Not atomic: write to a scratch key, then
  // RENAME it in a script (shared_sessions.cc does). GetInRanges: nullopt when the key is missing
  // or empty; the caller checks a checksum (the value may change between ranges unless the caller
  // holds what guards it).
  static constexpr size_t kRangeBytes = size_t{1} << 20;
  absl::Status PutInRanges(std::string_view key, std::string_view value, int64_t ttl_ms);
  // A value longer than max_bytes is refused (DATA_LOSS) before any of it is read: the caller knows
  // the size it expects, and a store's wrong answer must not cost memory out of proportion.
  absl::StatusOr<std::optional<std::string>> GetInRanges(std::string_view key, size_t max_bytes = SIZE_MAX);
  // The same, its ranges read over several connections at once (one thread each): Redis answers
  // one while the others' replies are parsed and copied here. `clients` (at least one) reach the
  // same store.
  static absl::StatusOr<std::optional<std::string>> GetInRanges(const std::vector<RedisClient*>& clients,
                                                                std::string_view key, size_t max_bytes = SIZE_MAX);
  // DEL of several keys at once (atomic): how many were there.
  absl::StatusOr<int64_t> DeleteKeys(const std::vector<std::string>& keys);
  // A server-side script (EVAL): it runs atomically, so a check and the writes it guards are one step.
  absl::StatusOr<RedisReply> Eval(std::string_view script, const std::vector<std::string_view>& keys,
                                  const std::vector<std::string_view>& args);
  // The keys matching a glob `pattern` (SCAN, so the store is never blocked by one long call), at
  // most `limit` of them; RESOURCE_EXHAUSTED past it.
  absl::StatusOr<std::vector<std::string>> ScanKeys(std::string_view pattern, size_t limit);

 private:
  using Reply = RedisReply;
  // One command (binary-safe arguments); connects first when there is no connection. A server
  // error reply is INTERNAL with its text; no answer (down, timeout) UNAVAILABLE.
  absl::StatusOr<Reply> Command(const std::vector<std::string_view>& args);
  absl::Status ConnectLocked();
  void DropLocked();
  absl::Status Unavailable(std::string_view what) const;

  const RedisAddress address_;
  const RedisOptions options_;
  std::mutex mu_;
  redisContext* context_ = nullptr;
  // When the last call found the store gone (steady clock, s; 0: it answered) and why.
  double failed_at_ = 0;
  std::string failed_why_;
};

}  // namespace gla
