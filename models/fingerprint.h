// A 64-bit identity of a model's weights, cheap to compute at start-up: what a saved session
// state is valid for (a state computed by other weights is meaningless to these).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace gla {

// Hashes config.json and, for every *.safetensors file in the directory (by name), its name, size
// and 16 samples of 4 KiB spread over it (hashing all of a 2.6 GB checkpoint would take seconds;
// two checkpoints of one shape differ in every sample). Errors name the unreadable file.
absl::StatusOr<uint64_t> ModelFingerprint(const std::string& model_dir);

// 64-bit hash of bytes (word-at-a-time multiply-rotate; not cryptographic): file checksums and
// the fingerprint. Chain by passing the previous result as `seed`.
uint64_t Hash64(std::span<const uint8_t> bytes, uint64_t seed = 0);

}  // namespace gla
