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

// The file's bytes; NOT_FOUND "<path>: cannot open" when it cannot be opened.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// `parts` written one after the other to `path` + ".tmp", fsync'ed, renamed over `path`, and the
// directory fsync'ed: once this returns OK the new file survives a crash or power loss.
absl::Status WriteFileAtomically(const std::string& path, const std::vector<std::span<const uint8_t>>& parts);
absl::Status WriteFileAtomically(const std::string& path, const std::string& text);

// fsync of a directory, so that a rename or unlink in it survives a crash.
absl::Status SyncDirectory(const std::string& dir);

}  // namespace gla
