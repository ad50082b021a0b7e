// A session at rest on disk: <--session_dir>/<id>.glasession. One file per session, written
// whole to a temporary name and renamed, so a crash leaves the old file or the new one.
//
// Layout (little-endian): "GLASESS1" | u32 format version (2) | u32 state dtype (0 f32, 1 bf16) |
// u64 model fingerprint | i64 state words | i64 tokens | i32 pending token (-1: none) |
// u32 n + n bytes session id | u32 n + n bytes adapter name | f64 created | f64 last used (Unix s) |
// i64 ttl s | state words (engine/state_storage.h) | u64 Hash64 of everything before it.
// Version 1 (read, never written) had no dtype field: its states are f32. A state in the other
// dtype than the reader's pool is converted (bf16 -> f32 exactly, f32 -> bf16 rounded), so
// sessions survive a restart with another --state_dtype.
// A session with no past (no tokens, nothing pending) may store no state at all (state words 0).
// A file is refused, by name and reason, when it is not a regular file (a FIFO, a device or a
// symbolic link: never opened for reading), short, long, fails its checksum, holds a pending
// token outside the vocabulary, or was written for another model (fingerprint) or state size.
// Writes are durable: the temporary file is fsync'ed before the rename, the directory after it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/state_storage.h"

namespace gla {

struct SessionRecord {
  std::string id;
  std::string adapter;  // the adapter its past was computed with ("" = the base model)
  int64_t tokens = 0;
  std::optional<int32_t> pending;  // sampled last, not yet through the model
  double created_unix_s = 0, last_used_unix_s = 0;
  int64_t ttl_s = 0;  // 0 = no expiry
};

inline constexpr const char* kSessionFileSuffix = ".glasession";

// `state` is the whole state's words in `dtype`, or empty for a session with no past.
absl::Status WriteSessionFile(const std::string& path, uint64_t model_fingerprint, const SessionRecord& record,
                              std::span<const float> state, StateDType dtype);

// What a file must match to be read.
struct SessionFileExpect {
  uint64_t model_fingerprint = 0;
  int64_t state_values = 0;                   // the model's state size in values
  StateDType state_dtype = StateDType::kF32;  // what the reader's buffer holds
  int32_t vocab_size = 0;  // the pending token must be below it
  bool record_only = false;  // a record without its state (a store's listing entry) is accepted too
  int64_t state_words() const { return StateWords(state_values, state_dtype); }
};

// Reads and checks a file. `state` (expect.state_words() words) receives the state in
// expect.state_dtype (zeros for a file with no state); pass an empty span to check the file and
// read its record only.
// DATA_LOSS / FAILED_PRECONDITION name the file.
absl::StatusOr<SessionRecord> ReadSessionFile(const std::string& path, const SessionFileExpect& expect,
                                              std::span<float> state);

// The same layout as one buffer: a session in the shared state tier (engine/sessions/
// shared_sessions.h). An empty `state` writes the record alone (words 0).
std::string EncodeSession(uint64_t model_fingerprint, const SessionRecord& record, std::span<const float> state,
                          StateDType dtype);
// Checks and reads a buffer EncodeSession made, as ReadSessionFile a file; `name` starts every
// error ("session 'x' in the state store").
absl::StatusOr<SessionRecord> DecodeSession(std::string_view bytes, const SessionFileExpect& expect,
                                            std::span<float> state, const std::string& name);

}  // namespace gla
