// Helpers shared by the libFuzzer harnesses (docs/fuzzing.md): a per-process temporary
// directory, removed at exit, for the parsers that only read files.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace gla::fuzz {

// $TMPDIR/gla-fuzz-XXXXXX, made on first use and removed (with what is in it) when the process
// exits normally. deploy/fuzz.sh points TMPDIR at a scratch directory of its own and deletes it,
// so that a crashing run (which exits without atexit handlers) leaves nothing behind either.
inline const std::string& TempDir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/gla-fuzz-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("gla fuzz: mkdtemp");
      std::abort();
    }
    return tmpl;
  }();
  static const bool registered = [] {
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(TempDir(), ignored);
    });
    return true;
  }();
  (void)registered;
  return dir;
}

// Writes `bytes` to `path` (truncating); aborts on failure, which is the harness's fault.
inline void WriteFileOrDie(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) {
    std::fprintf(stderr, "gla fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// A harness's own check failed: print why and abort, which libFuzzer reports as a crash with
// the input saved.
#define GLA_FUZZ_CHECK(cond, ...)                                  \
  do {                                                             \
    if (!(cond)) {                                                 \
      std::fprintf(stderr, "gla fuzz check failed: %s: ", #cond);  \
      std::fprintf(stderr, __VA_ARGS__);                           \
      std::fprintf(stderr, "\n");                                  \
      std::abort();                                                \
    }                                                              \
  } while (0)

}  // namespace gla::fuzz
