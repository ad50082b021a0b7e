#include "tests/support/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

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

std::string CopyLiveDirectory(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(to, ec);
  if (ec) return to + ": " + ec.message();
  fs::recursive_directory_iterator it(from, ec), end;
  if (ec) return from + ": " + ec.message();
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const fs::path target = fs::path(to) / fs::relative(it->path(), from);
    if (it->is_directory(ec)) {
      fs::create_directories(target, ec);
      if (ec) return target.string() + ": " + ec.message();
      continue;
    }
    fs::copy_file(it->path(), target, fs::copy_options::overwrite_existing, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) return it->path().string() + ": " + ec.message();
  }
  // A subdirectory removed while it was being listed ends the walk as a crash would have found it.
  if (ec && ec != std::errc::no_such_file_or_directory) return from + ": " + ec.message();
  return "";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CommandResult RunCommand(const std::string& command) {
  const std::string dir = MakeTempDir("command");
  const int status = std::system((command + " > " + dir + "/out 2> " + dir + "/err").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(dir + "/out"), ReadFile(dir + "/err")};
}

}  // namespace gla::testing
