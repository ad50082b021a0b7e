// Shared helpers for the tests: where the reference data is, relative error, random inputs.
#pragma once

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace gla::testing {

// ../shared/reference beside the project root (GLA_SOURCE_DIR is set by tests/CMakeLists.txt), or
// $GLA_REFERENCE_DIR (binaries bundled for the GPU machine carry a copy).
inline std::string ReferenceDir() {
  const char* env = std::getenv("GLA_REFERENCE_DIR");
  return env != nullptr ? std::string(env) : std::string(GLA_SOURCE_DIR) + "/../shared/reference";
}
inline std::string TinyModelDir() { return ReferenceDir() + "/gla-tiny/model"; }

// ||out - ref|| / ||ref||; NaN anywhere gives +inf so a broken kernel can never pass a bound.
template <typename A, typename B>
double RelErr(const std::vector<A>& out, const std::vector<B>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double o = static_cast<double>(out[i]), r = static_cast<double>(ref[i]);
    if (std::isnan(o) || std::isnan(r)) return INFINITY;
    num += (o - r) * (o - r);
    den += r * r;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

inline std::vector<float> RandomVector(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A fresh empty directory under the test's temp dir.
std::string MakeTempDir(const std::string& name);

// What kill -9 would leave of `from`, a directory a live server is writing: its files copied into
// `to` (made; subdirectories too). A file the writer renames or removes between the listing and its
// copy (a finished temporary file) is skipped, as a crash would not have left it either; any other
// failure is returned as its message ("" on success).
std::string CopyLiveDirectory(const std::string& from, const std::string& to);

// A file's bytes ("" when it cannot be read).
std::string ReadFile(const std::string& path);

// Runs a shell command line; its exit code (-1 when it did not exit normally), stdout and stderr.
struct CommandResult {
  int code = -1;
  std::string out, err;
};
CommandResult RunCommand(const std::string& command);

}  // namespace gla::testing
