// What a finished fine-tune job leaves on disk: a directory under the adapter root, written under
// a temporary name and renamed into place, so that a half-written result never carries its final
// name (and a crash leaves only a dot-directory that no adapter name can clash with).
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/weights.h"

namespace gla {

// Creates <root>/.<name>.<tag>.tmp, lets `write` fill it, renames it to <root>/<name> and returns
// that path. ALREADY_EXISTS (nothing written) when <root>/<name> exists; any error removes the
// temporary directory.
absl::StatusOr<std::string> WriteDirectoryAtomically(const std::string& root, const std::string& name,
                                                     const std::string& tag,
                                                     const std::function<absl::Status(const std::string& dir)>& write);

// A full checkpoint of trained weights: model.safetensors (F32) plus the base model's
// config.json, and its tokenizer.model and generation_config.json where it has them.
absl::Status WriteFullCheckpoint(const std::string& dir, const std::string& base_model_dir, const GlaConfig& config,
                                 const ModelWeights& weights);

}  // namespace gla
