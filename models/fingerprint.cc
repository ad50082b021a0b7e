#include "models/fingerprint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/file_io.h"

namespace gla {

uint64_t Hash64(std::span<const uint8_t> bytes, uint64_t seed) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = seed ^ (bytes.size() * kMul);
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);  // an empty span's data may be null
  h = (h ^ tail ^ (uint64_t{bytes.size() - i} << 56)) * kMul;
  h ^= h >> 32;
  return h;
}

namespace {

absl::StatusOr<uint64_t> HashFileSamples(const std::filesystem::path& path, uint64_t seed) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  const std::string name = path.filename().string();
  uint64_t h = Hash64({reinterpret_cast<const uint8_t*>(name.data()), name.size()}, seed);
  h = Hash64({reinterpret_cast<const uint8_t*>(&size), sizeof(size)}, h);
  constexpr int kSamples = 16;
  constexpr int64_t kSample = 4096;
  std::vector<uint8_t> buf(kSample);
  for (int s = 0; s < kSamples; ++s) {
    const int64_t at = size <= kSample ? 0 : (size - kSample) * s / (kSamples - 1);
    const int64_t n = std::min(kSample, size - at);
    in.seekg(at);
    if (!in.read(reinterpret_cast<char*>(buf.data()), n)) return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
    h = Hash64({buf.data(), static_cast<size_t>(n)}, h);
  }
  return h;
}

}  // namespace

absl::StatusOr<uint64_t> ModelFingerprint(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(model_dir, ec))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list ", model_dir, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  auto config = ReadWholeFile((fs::path(model_dir) / "config.json").string());
  if (!config.ok()) return config.status();
  uint64_t h = Hash64({reinterpret_cast<const uint8_t*>(config->data()), config->size()}, 0x676c61);
  for (const auto& f : files) {
    auto fh = HashFileSamples(f, h);
    if (!fh.ok()) return fh.status();
    h = *fh;
  }
  return h;
}

}  // namespace gla
