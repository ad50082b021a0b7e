// glad's HTTP/1.1 server (issue 20): Boost.Beast parses requests, Asio runs every connection
// asynchronously on a small thread pool (a thread per connection would not hold thousands of
// streams). It knows nothing of OpenAI or of the engine: a Handler gets each request and answers
// through a Responder, whole (Content-Length) or streamed (chunked: Server-Sent Events), from any
// thread. Keep-alive; bounded request heads and bodies; idle and slow-client timeouts; a slow
// reader's queued output is bounded; a client that goes away is reported to the handler (so its
// generation is cancelled); Shutdown drains: no new connections, answers in progress finish
// within the grace.
//
// TLS (ServerOptions::tls: the PEM files glad's gRPC port serves) goes through Asio's OpenSSL
// layer (boost::beast::ssl_stream), one session logic over either stream: TLS 1.2 or later, no
// compression, no renegotiation, ALPN "http/1.1"; with a client CA, a client certificate that
// chains to it is required (mutual TLS). The handshake has the idle timeout: a client that
// connects and says nothing, or stops halfway, is dropped like an idle one. A plaintext request
// on a TLS port gets a plaintext 400 that says so. Closing a TLS connection sends close_notify
// without waiting for the client's (a client may never answer; at most 2 s), so a client can tell
// our end from a cut. The hang-up watch looks at the socket under TLS as it does without: only an
// end of stream or an error there means the client is gone; a TLS client that sends close_notify
// before closing is therefore noticed at the next write instead of at once.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/tls_files.h"

namespace gla::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::string body;
  std::optional<std::string> authorization;  // the Authorization header; nullopt: none
  std::string peer;                          // "ipv4:1.2.3.4:5678" (the form the request guard reads)
};

// How a handler answers. Every method may be called from any thread, once the handler has it;
// after the client is gone they do nothing.
class Responder {
 public:
  virtual ~Responder() = default;
  // A whole response.
  virtual void Respond(int status, absl::string_view content_type, std::string body) = 0;
  // A streamed response: the head, then any number of Write()s, then End().
  virtual void StartStream(int status, absl::string_view content_type) = 0;
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;
  // `gone` runs once (on the server's threads) if the client disconnects, or is dropped for
  // reading too slowly, before the response has ended. Set it before the work it would cancel.
  virtual void OnClientGone(std::function<void()> gone) = 0;
};

using Handler = std::function<void(Request request, std::shared_ptr<Responder> responder)>;

struct ServerOptions {
  std::string listen = "127.0.0.1:8000";  // host:port; port 0 picks one
  int threads = 2;
  size_t max_body_bytes = size_t{8} << 20;         // larger: 413 before the body is read
  size_t max_header_bytes = size_t{64} << 10;      // larger: 431
  size_t max_queued_bytes = size_t{16} << 20;      // a streamed response's unsent bytes; beyond: dropped
  std::chrono::seconds idle_timeout{60};           // keep-alive wait for the next request's head
  std::chrono::seconds write_timeout{60};          // a client that takes no bytes this long is dropped
  std::optional<TlsPems> tls;                      // set: TLS on every connection (mutual with client_ca)
};

class Server {
 public:
  // Binds and starts serving; the port actually bound is port(). INVALID_ARGUMENT for a listen
  // address or TLS files that cannot be used, UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options, Handler handler);
  ~Server();  // Shutdown(0)

  int port() const { return port_; }
  // The drain's first half, at once: no new connections; idle ones close; the others close after
  // the answer in progress. Idempotent.
  void StopAccepting();
  // Stops accepting; connections with no answer in progress close; answers in progress get up to
  // `grace` to end, then every connection closes. Returns when the threads have stopped.
  void Shutdown(std::chrono::milliseconds grace);
  // Connections open now (for the drain and for tests).
  int connections() const;

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// "OK", "Bad Request", ... for the status line.
const char* ReasonPhrase(int status);

}  // namespace gla::http
