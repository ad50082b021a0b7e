// Runs a real glad on loopback for end-to-end tests: port 0, the chosen port read from its log.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "gla/v1/gla.grpc.pb.h"

namespace gla::testing {

// The glad binary the tests run: $GLA_GLAD_PATH (bundled binaries on the GPU machine) or this build's.
std::string GladPath();

class GladProcess {
 public:
  // Starts glad with --listen 127.0.0.1:0 plus `args`; waits until it is listening.
  explicit GladProcess(const std::vector<std::string>& args);
  ~GladProcess();  // SIGTERM, then SIGKILL if it does not exit

  bool ok() const { return port_ > 0; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::unique_ptr<v1::Gla::Stub> stub() const { return v1::Gla::NewStub(channel_); }
  std::string log() const;  // what glad wrote to stderr so far
  int pid() const { return pid_; }
  // Sends SIGTERM and returns the exit code (-1 if it had to be killed or did not exit normally).
  int Terminate(int wait_ms = 20000);
  // kill -9: no drain, no shutdown writes (a crash, as far as glad can tell).
  void Kill();

 private:
  int pid_ = -1;
  int port_ = 0;
  std::string log_path_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace gla::testing
