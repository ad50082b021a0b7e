// Reading a small file whole (configs, adapter configs, training text, PEM files, secrets).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace gla {

// The file's bytes; NOT_FOUND "<path>: cannot open" when it cannot be opened.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace gla
