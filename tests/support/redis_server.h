// A redis-server of the test's own (Debian's, started on loopback), for the shared state tier's
// tests: no persistence, killed with the test process even when that dies.
#pragma once

#include <sys/types.h>

#include <string>

#include "engine/sessions/redis_client.h"

namespace gla::testing {

// A TCP port on 127.0.0.1 that nothing listens on now (-1 if none could be found).
int FreePort();

class RedisServer {
 public:
  explicit RedisServer(int port);  // started; Ready() says when it answers
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  void Start();
  void Stop(int signal);  // and waits for it
  // Whether it answers within a few seconds.
  bool Ready() const;
  int port() const { return port_; }
  RedisAddress address() const { return {"127.0.0.1", port_, 0}; }
  std::string url() const;

 private:
  int port_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace gla::testing
