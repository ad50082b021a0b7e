// gla-loadgen's HTTP side: one streamed POST /v1/completions over a kept-alive connection, its
// Server-Sent Events timed as they arrive (what a client of the OpenAI API sees).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gla {

struct HttpStreamed {
  std::string error;      // empty: the stream ended with [DONE]
  int64_t tokens = 0;     // token ids received (the request asks for return_token_ids)
  std::vector<double> ttft, itl;
};

class HttpStreamClient {
 public:
  HttpStreamClient(std::string host, int port);
  ~HttpStreamClient();
  // GET `target`'s body ("" on failure).
  std::string Get(const std::string& target);
  HttpStreamed Stream(const std::string& target, const std::string& json_body);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace gla
