#include "tests/support/test_util.h"

#include <filesystem>
#include <unistd.h>

namespace gla::testing {

std::string MakeTempDir(const std::string& name) {
  namespace fs = std::filesystem;
  const char* base = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(base ? base : fs::temp_directory_path().string()) /
                       ("gla-test-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

}  // namespace gla::testing
