// Reading a small file whole (configs, adapter configs, training text, PEM files, secrets), and
// writing a file so that a crash leaves the old one or the new one, whole (session states,
// adapters, checkpoints, job records).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gla {

// What a config, template, key or tokenizer file may weigh: far above any real one (configs are
// kilobytes, SentencePiece models a few megabytes), far below what a hostile directory could
// make a server hold.
inline constexpr int64_t kMaxSmallFileBytes = int64_t{256} << 20;

// The file's bytes (symbolic links followed: model directories from a hub cache are links);
// NOT_FOUND "<path>: cannot open" when it cannot be opened, INVALID_ARGUMENT naming the path when it
// is not a regular file (a FIFO, a device or a directory, which would block or never end a read) or
// is larger than `max_bytes`, checked on the open file before reading: a FIFO is refused without
// blocking, and what was checked is what is read.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, int64_t max_bytes = kMaxSmallFileBytes);

// `parts` written one after the other to `path` + ".tmp", fsync'ed, renamed over `path`, and the
// directory fsync'ed: once this returns OK the new file survives a crash or power loss.
absl::Status WriteFileAtomically(const std::string& path, const std::vector<std::span<const uint8_t>>& parts);
absl::Status WriteFileAtomically(const std::string& path, const std::string& text);

// fsync of a directory, so that a rename or unlink in it survives a crash.
absl::Status SyncDirectory(const std::string& dir);

}  // namespace gla
