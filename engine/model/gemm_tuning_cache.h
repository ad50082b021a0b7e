// The GEMM algorithm choices of cuda::TunedBf16Gemm kept in a file across processes (glad
// --gemm_tuning_cache), so that a restarted server runs the algorithms its first run timed: the same
// bits as that run, and no tuning pause at its first steps. Choices made by timing can differ between
// two processes (two algorithms within each other's noise); with a cache only the first process
// times. TensorRT's timing cache and Triton's on-disk autotuning cache do the same.
//
// A record holds one projection shape and row count and what was chosen there: cublasGemmEx's
// default, or a cuBLASLt algorithm as its eight opaque words (cublasLtMatmulAlgo_t, which cuBLASLt
// documents as serializable for reuse with the same library version). Records are filed under a
// device key (GPU name, compute capability, cuBLASLt version): another GPU's or library's records
// are kept in the file but never used. Text, one record a line:
//   gla-gemm-tuning-cache 1
//   <device key>\t<N> <K> <x_stride> <y_stride> <y_bf16> <accumulate> <rows>\t<default | 8 hex words>
// A file that is not one (another header, a malformed line, not a regular file, over kMaxBytes) is
// refused with the reason at Open and never written over. Framework-free apart from absl::Status; no
// CUDA header.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gla {

struct GemmTuningKey {
  int64_t N = 0, K = 0, x_stride = 0, y_stride = 0;
  bool y_bf16 = false, accumulate = false;
  int64_t rows = 0;
  auto Tie() const { return std::tie(N, K, x_stride, y_stride, y_bf16, accumulate, rows); }
  bool operator<(const GemmTuningKey& o) const { return Tie() < o.Tie(); }
  bool operator==(const GemmTuningKey& o) const { return Tie() == o.Tie(); }
};

struct GemmTuningChoice {
  bool use_default = true;             // cublasGemmEx's default algorithm
  std::array<uint64_t, 8> algo = {};  // else the cuBLASLt algorithm's words
  bool operator==(const GemmTuningChoice& o) const { return use_default == o.use_default && algo == o.algo; }
};

// Every record of a cache file: device key -> (shape and rows -> choice).
using GemmTuningRecords = std::map<std::string, std::map<GemmTuningKey, GemmTuningChoice>>;

// The text of a cache file, and back. Parse refuses anything Format would not write, naming the line.
absl::StatusOr<GemmTuningRecords> ParseGemmTuningCache(std::string_view text);
std::string FormatGemmTuningCache(const GemmTuningRecords& records);

class GemmTuningCache {
 public:
  // A cache file is small (a record is ~200 bytes; a model tunes a few dozen); a larger one is
  // refused rather than read.
  static constexpr int64_t kMaxBytes = int64_t{4} << 20;

  // The cache at `path` for the records of `device_key` (tabs and newlines in it become spaces). A
  // missing file is an empty cache (created at the first Add); its folder must exist. INVALID_ARGUMENT
  // for a file that is not a cache, not a regular file or too large, and for an empty path. Removes
  // the temporary files of writers that died before their rename (`<name>.tmp.<pid>.<n>` beside it,
  // of no live process or of this process's pid, unchanged for ten minutes). A symlink is resolved at Open and its target
  // read and written (path() is the target's); a dangling one is INVALID_ARGUMENT.
  static absl::StatusOr<GemmTuningCache> Open(std::string path, std::string device_key);

  const std::string& path() const { return path_; }
  const std::string& device_key() const { return device_key_; }
  // The choice recorded for `key` under this device key, or null.
  const GemmTuningChoice* Find(const GemmTuningKey& key) const;
  // Records `choice` and writes the file: the file as it is now re-read, this cache's own Adds put
  // over it (another process or engine may have added or replaced records; this one's win for the
  // keys it added, and a record it only read at Open is never written back over a newer one), written
  // to a temporary file beside it and renamed over it, so a reader never sees half a file; Find then
  // answers as the file has it. Within a process, Adds to one path are serialized. An error leaves
  // the record in memory and the file as it was (also RESOURCE_EXHAUSTED where the file would pass
  // kMaxBytes, which Open would refuse).
  absl::Status Add(const GemmTuningKey& key, const GemmTuningChoice& choice);
  int size() const;

 private:
  GemmTuningCache(std::string path, std::string device_key, GemmTuningRecords records)
      : path_(std::move(path)), device_key_(std::move(device_key)), records_(std::move(records)) {}
  std::string path_, device_key_;
  GemmTuningRecords records_;
  std::map<GemmTuningKey, GemmTuningChoice> added_;  // this cache's Adds (under device_key_)
};

}  // namespace gla
