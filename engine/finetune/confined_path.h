// Paths from requests, confined to a directory the operator configured: a fine-tune job's
// data_file (--finetune_data_dir) and an adapter loaded at run time (--adapter_dir). No request
// path reaches the filesystem outside them.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace gla {

enum class PathKind { kRegularFile, kDirectory };

// `relative` resolved inside `root` with every symbolic link followed. INVALID_ARGUMENT
// "<field> '<relative>': <why>" for an empty path, a NUL byte, an absolute path, a '..'
// component, a path that leads outside `root` (through a symbolic link), one that does not exist
// or is not of `kind`. FAILED_PRECONDITION when `root` cannot be resolved. `root_name` words the
// directory in messages ("the server's data directory").
absl::StatusOr<std::filesystem::path> ResolveInside(const std::string& root, const std::string& relative,
                                                    const std::string& field, const std::string& root_name,
                                                    PathKind kind);

}  // namespace gla
