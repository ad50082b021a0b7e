#include "tests/support/glad_process.h"

#include <atomic>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "tests/support/test_util.h"

namespace gla::testing {

std::string GladPath() {
  const char* env = std::getenv("GLA_GLAD_PATH");
  return env != nullptr ? env : GLAD_PATH;
}

GladProcess::GladProcess(const std::vector<std::string>& args) {
  // A folder of its own: two servers in one test process must not share (or delete) a log.
  static std::atomic<int> count{0};
  log_path_ = MakeTempDir("glad-" + std::to_string(count.fetch_add(1))) + "/glad.log";
  std::vector<std::string> argv = {GladPath(), "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = fork();
  if (pid_ == 0) {
    FILE* log = std::fopen(log_path_.c_str(), "w");
    dup2(fileno(log), 2);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  const std::string listening = "glad: listening on 127.0.0.1:";
  for (int i = 0; i < 600 && port_ == 0; ++i) {  // up to 60 s (sanitizer builds are slow)
    const std::string text = log();
    if (const size_t at = text.find(listening); at != std::string::npos) port_ = std::atoi(text.c_str() + at + listening.size());
    else if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    } else std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (port_ > 0) channel_ = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
}

std::string GladProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int GladProcess::Terminate(int wait_ms) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  for (int waited = 0; waited < wait_ms; waited += 10) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

void GladProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

GladProcess::~GladProcess() { Terminate(); }

}  // namespace gla::testing
