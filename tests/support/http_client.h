// A blocking HTTP/1.1 client for the end-to-end tests of glad's OpenAI API (Boost.Beast): one
// connection per client object (keep-alive across requests), chunked responses read whole, and
// the `data:` lines of Server-Sent Events split out; plaintext, or HTTPS (Beast's ssl_stream).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gla::testing {

struct HttpResponse {
  int status = 0;  // 0: no response (connection refused, reset, timeout)
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string error;                           // why status is 0
};

// HTTPS: the server's certificate must chain to `ca_file` and name 127.0.0.1; `cert_file` and
// `key_file` (PEM; empty: none) are the client's certificate for mutual TLS.
struct HttpTls {
  std::string ca_file;
  std::string cert_file, key_file;
};

class HttpClient {
 public:
  explicit HttpClient(int port, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  HttpClient(int port, const HttpTls& tls, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~HttpClient();
  HttpResponse Request(const std::string& method, const std::string& target, const std::string& body = "",
                       const std::vector<std::pair<std::string, std::string>>& headers = {});
  HttpResponse Post(const std::string& target, const std::string& json,
                    const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return Request("POST", target, json, headers);
  }
  HttpResponse Get(const std::string& target, const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return Request("GET", target, "", headers);
  }
  // Sends a request and returns once the response head and `events` SSE events have arrived,
  // leaving the rest unread (to test a client that goes away mid-stream: Close() next).
  bool StartStreamAndRead(const std::string& target, const std::string& json, int events);
  // Closes the connection (no TLS close_notify: to the server, as a client that went away).
  void Close();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The payloads of a Server-Sent Events body's `data:` lines, in order.
std::vector<std::string> SseData(const std::string& body);

}  // namespace gla::testing
