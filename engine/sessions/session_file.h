// A session at rest on disk: <--session_dir>/<id>.glasession. One file per session, written
// whole to a temporary name and renamed, so a crash leaves the old file or the new one.
//
// Layout (little-endian): "GLASESS1" | u32 format version (1) | u64 model fingerprint |
// i64 state floats | i64 tokens | i32 pending token (-1: none) | u32 n + n bytes session id |
// u32 n + n bytes adapter name | f64 created | f64 last used (Unix s) | i64 ttl s |
// state floats (f32) | u64 Hash64 of everything before it.
// A file is refused, by name and reason, when it is short, long, fails its checksum, or was
// written for another model (fingerprint) or another state size.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/statusor.h"

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

absl::Status WriteSessionFile(const std::string& path, uint64_t model_fingerprint, const SessionRecord& record,
                              std::span<const float> state);

// Reads and checks a file. `state` (of the expected size) receives the floats; pass an empty span
// to check the file and read its record only. DATA_LOSS / FAILED_PRECONDITION name the file.
absl::StatusOr<SessionRecord> ReadSessionFile(const std::string& path, uint64_t model_fingerprint,
                                              int64_t state_floats, std::span<float> state);

}  // namespace gla
