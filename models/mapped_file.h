// A read-only memory map of a whole file (RAII). Tensors of a checkpoint are read through it.
// FromBytes holds bytes already in memory behind the same interface (parsers fed from memory:
// the fuzz harnesses, where an exactly sized heap buffer lets AddressSanitizer see any overread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace gla {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  // `name` stands for the path in error messages.
  static std::shared_ptr<const MappedFile> FromBytes(std::string name, std::string bytes);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
  std::unique_ptr<uint8_t[]> owned_;  // FromBytes: data_ points here (nothing is mapped)
};

}  // namespace gla
