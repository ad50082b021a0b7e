// safetensors files: a strictly validated reader over mmap, and a writer.
//
// Layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
// then the data section; offsets are relative to its start. Open() checks the whole header
// (length bound, JSON, known dtypes, offsets inside the file and non-overlapping,
// dtype x shape = byte length, no duplicate names) before any tensor byte is touched.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/dtype.h"
#include "models/mapped_file.h"

namespace gla {

// Largest header we accept (the reference implementation uses the same bound).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping; valid while the file is open
  size_t nbytes = 0;
  std::string file;  // path of the file it lives in (for error messages)

  int64_t numel() const;
  std::string ShapeString() const;  // "[2, 64]"
};

class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  // The same checks over bytes already mapped or in memory (MappedFile::FromBytes).
  static absl::StatusOr<SafetensorsFile> Open(std::shared_ptr<const MappedFile> file);

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Element conversion; error (naming the tensor) when the dtype does not convert.
absl::StatusOr<std::vector<float>> ToFloat32(const TensorView& t);   // F32/F16/BF16/F64
absl::StatusOr<std::vector<double>> ToFloat64(const TensorView& t);  // F64/F32/F16/BF16
absl::StatusOr<std::vector<int64_t>> ToInt64(const TensorView& t);   // I64/I32/I16/I8/U8

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // exactly numel * DTypeSize(dtype)
};

// Writes atomically and durably (temp file + fsync + rename + directory fsync). Tensors are
// written in the order given.
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Convenience for the common case of an fp32 tensor held in a vector.
TensorToWrite F32Tensor(std::string name, std::vector<int64_t> shape, std::span<const float> v);

}  // namespace gla
