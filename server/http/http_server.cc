#include "server/http/http_server.h"

#include <utility>  // before Boost 1.74's Asio, which uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <deque>
#include <mutex>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gla::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

namespace {

std::string Head(int status, absl::string_view content_type, std::optional<size_t> length, bool keep_alive) {
  std::string h = absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\nContent-Type: ", content_type,
                               "\r\n");
  if (length.has_value()) {
    absl::StrAppend(&h, "Content-Length: ", *length, "\r\n");
  } else {
    absl::StrAppend(&h, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
  }
  if (!keep_alive) absl::StrAppend(&h, "Connection: close\r\n");
  return h + "\r\n";
}

std::string Chunk(absl::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return absl::StrCat(size, data, "\r\n");
}

// ALPN: HTTP/1.1, the one protocol served, when the client offers it; a client that offers only
// others (h2) gets no ALPN answer and decides for itself.
int SelectHttp11(SSL*, const unsigned char** out, unsigned char* out_size, const unsigned char* offered,
                 unsigned int offered_size, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, out_size, kHttp11, sizeof kHttp11, offered, offered_size) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

// Every TLS connection's settings: TLS 1.2 or later, no compression (CRIME), no renegotiation (a
// client could make the server redo handshakes at will); the client's certificate required and
// verified against client_ca when one is given.
absl::Status ConfigureTls(const TlsPems& pems, asio::ssl::context& ctx) {
  SSL_CTX* raw = ctx.native_handle();
  SSL_CTX_set_min_proto_version(raw, TLS1_2_VERSION);
  SSL_CTX_set_options(raw, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_alpn_select_cb(raw, SelectHttp11, nullptr);
  // Resuming a session under client verification needs an id context, or OpenSSL fails the handshake.
  static const unsigned char kSessionContext[] = "glad-http";
  SSL_CTX_set_session_id_context(raw, kSessionContext, sizeof kSessionContext - 1);
  // An encrypted key fails to load instead of asking for a passphrase on the terminal.
  ctx.set_password_callback([](size_t, asio::ssl::context::password_purpose) { return std::string(); });
  beast::error_code ec;
  ctx.use_certificate_chain(asio::buffer(pems.cert_chain), ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS certificate chain: ", ec.message()));
  ctx.use_private_key(asio::buffer(pems.private_key), asio::ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS private key: ", ec.message()));
  if (SSL_CTX_check_private_key(raw) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the TLS private key is not the certificate's");
  }
  if (!pems.client_ca.empty()) {
    ctx.add_certificate_authority(asio::buffer(pems.client_ca), ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("TLS client CA: ", ec.message()));
    ctx.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  return absl::OkStatus();
}

// What the server holds of a connection, whatever its transport: for the drain.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual void Begin() = 0;
  // Close at once when idle; otherwise after the answer in progress.
  virtual void Drain() = 0;
  virtual void ForceClose() = 0;
};

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

}  // namespace

struct Server::Impl {
  ServerOptions options;
  Handler handler;
  std::optional<asio::ssl::context> tls;  // set: every connection speaks TLS (outlives the connections)
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;
  std::atomic<int> open{0};
  std::atomic<bool> stopping{false};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::mutex sessions_mu;
  std::vector<std::weak_ptr<Connection>> sessions;  // for the drain

  void Accept();
  // Runs what is still queued (closed sessions' last handlers) while every member is alive: a
  // session freed by io_context's destructor would touch `open` after it is gone.
  ~Impl() {
    beast::error_code ec;
    acceptor.close(ec);
    work.reset();
    io.restart();
    io.run();
  }
};

namespace {

// One connection: reads requests one at a time, hands each to the handler, writes its answer
// (which the handler may produce from any thread: everything funnels through the strand).
// `Stream` is beast::tcp_stream (plaintext) or TlsStream; TLS adds the handshake first and
// close_notify last, the rest is the same code.
template <class Stream>
class Session : public Responder, public Connection, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // `socket` was accepted onto a strand of its own: the stream's executor is that strand, and every
  // handler and post here goes through it (one strand per connection: no locks). `tls`: the
  // server's asio::ssl::context, for a TlsStream.
  template <class... TlsContext>
  Session(Server::Impl& server, tcp::socket socket, TlsContext&... tls)
      : server_(server), stream_(std::move(socket), tls...), strand_(Lowest().get_executor()) {
    beast::error_code ec;
    // Each SSE event is written as soon as it exists: Nagle's algorithm would hold it back until
    // the client's delayed ACK (40 ms on Linux): measured, every TTFT over HTTP was 42 ms.
    Lowest().socket().set_option(tcp::no_delay(true), ec);
    const tcp::endpoint ep = Lowest().socket().remote_endpoint(ec);
    if (!ec)
      peer_ = absl::StrCat(ep.address().is_v6() ? "ipv6:[" : "ipv4:", ep.address().to_string(),
                           ep.address().is_v6() ? "]:" : ":", ep.port());
    server_.open.fetch_add(1);
  }
  ~Session() override { server_.open.fetch_sub(1); }

  void Begin() override {
    asio::dispatch(strand_, [self = Self()] {
      if constexpr (kTls) {
        self->StartTls();
      } else {
        self->ReadRequest();
      }
    });
  }

  // Drain: close at once when idle (waiting for a request, or in the handshake); otherwise after
  // the answer in progress (keep_alive_ off). A lingering close ends by itself.
  void Drain() override {
    asio::post(strand_, [self = Self()] {
      self->keep_alive_ = false;
      if (!self->answering_ && !self->linger_) self->Close();
    });
  }
  void ForceClose() override {
    asio::post(strand_, [self = Self()] { self->Gone(); });
  }

  // ---- Responder (any thread)
  void Respond(int status, absl::string_view content_type, std::string body) override {
    asio::post(strand_, [self = Self(), status, type = std::string(content_type), body = std::move(body)]() mutable {
      if (self->closed_ || self->head_sent_) return;
      self->head_sent_ = true;
      self->Queue(Head(status, type, body.size(), self->keep_alive_) + body);
      self->ended_ = true;
      self->Flush();
    });
  }
  void StartStream(int status, absl::string_view content_type) override {
    asio::post(strand_, [self = Self(), status, type = std::string(content_type)] {
      if (self->closed_ || self->head_sent_) return;
      self->head_sent_ = true;
      self->Queue(Head(status, type, std::nullopt, self->keep_alive_));
      self->Flush();
    });
  }
  void Write(std::string data) override {
    if (data.empty()) return;  // a zero-size chunk would end the stream
    asio::post(strand_, [self = Self(), data = std::move(data)] {
      if (self->closed_ || !self->head_sent_ || self->ended_) return;
      self->Queue(Chunk(data));
      self->Flush();
    });
  }
  void End() override {
    asio::post(strand_, [self = Self()] {
      if (self->closed_ || !self->head_sent_ || self->ended_) return;
      self->ended_ = true;
      self->Queue("0\r\n\r\n");
      self->Flush();
    });
  }
  void OnClientGone(std::function<void()> gone) override {
    asio::post(strand_, [self = Self(), gone = std::move(gone)]() mutable {
      if (self->closed_) {
        gone();
        return;
      }
      self->on_gone_ = std::move(gone);
    });
  }

 private:
  std::shared_ptr<Session> Self() { return this->shared_from_this(); }
  // The TCP stream under TLS (or the stream itself): its timers, its socket.
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  // TLS first, under the idle timeout (a client that connects and says nothing, or stops halfway
  // through the handshake, is dropped like an idle one). Bytes that are not a TLS handshake (a
  // plaintext request) get a plaintext 400 saying so, where a failed handshake would show the
  // client only a closed connection.
  void StartTls() {
    if (closed_ || server_.stopping.load()) return Close();
    Lowest().expires_after(server_.options.idle_timeout);
    beast::async_detect_ssl(
        Lowest(), buffer_, asio::bind_executor(strand_, [self = Self()](beast::error_code ec, bool tls) {
          if (self->closed_) return;
          if (ec) return self->Close();
          if (!tls) return self->Refuse(400, "this port serves HTTPS: the request came in plaintext");
          self->stream_.async_handshake(
              asio::ssl::stream_base::server, self->buffer_.data(),
              asio::bind_executor(self->strand_, [self](beast::error_code ec, size_t used) {
                if (self->closed_) return;
                // An untrusted or missing client certificate (mutual TLS), no common version or
                // cipher, garbage, the timeout: OpenSSL has sent its alert where it could.
                if (ec) return self->Close();
                self->buffer_.consume(used);
                self->tls_up_ = true;
                self->ReadRequest();
              }));
        }));
  }

  void ReadRequest() {
    if (closed_ || server_.stopping.load()) return Close();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.max_header_bytes));
    parser_->body_limit(server_.options.max_body_bytes);
    Lowest().expires_after(server_.options.idle_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      asio::bind_executor(strand_, [self = Self()](beast::error_code ec, size_t) {
                        self->OnRead(ec);
                      }));
  }

  void OnRead(beast::error_code ec) {
    if (closed_) return;
    if (ec == bhttp::error::body_limit) return Refuse(413, "the request body is over the server's limit");
    if (ec == bhttp::error::header_limit) return Refuse(431, "the request head is over the server's limit");
    if (ec) {
      // Bytes that are not HTTP: 400. The end of the stream, a timeout, a reset, a TLS failure:
      // nothing to answer.
      if (ec.category() == bhttp::make_error_code(bhttp::error::end_of_stream).category() &&
          ec != bhttp::error::end_of_stream && parser_->got_some())
        return Refuse(400, "malformed HTTP request");
      return Close();
    }
    bhttp::request<bhttp::string_body> req = parser_->release();
    keep_alive_ = req.keep_alive() && !server_.stopping.load();
    Request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.body = std::move(req.body());
    if (auto it = req.find(bhttp::field::authorization); it != req.end()) r.authorization = std::string(it->value());
    r.peer = peer_;
    answering_ = true;
    head_sent_ = ended_ = false;
    on_gone_ = nullptr;
    Lowest().expires_never();
    WatchForHangUp();
    server_.handler(std::move(r), Self());
  }

  // While an answer is being made, a client that closes its end is noticed without consuming a
  // pipelined next request: when the socket turns readable, a one-byte MSG_PEEK tells EOF (0),
  // data (> 0: a next request, read after this answer) and a spurious wake-up (EAGAIN: Asio's
  // edge-triggered reactor may report readiness it saw before the request was read) apart. Under
  // TLS the peeked byte is a TLS record's (a request, or an alert such as close_notify, which
  // cannot be read without reading the request behind it): only EOF or an error means gone.
  void WatchForHangUp() {
    Lowest().socket().async_wait(tcp::socket::wait_read,
                                 asio::bind_executor(strand_, [self = Self()](beast::error_code ec) {
                                   if (self->closed_ || !self->answering_ || ec) return;
                                   char byte;
                                   const ssize_t n = ::recv(self->Lowest().socket().native_handle(), &byte, 1,
                                                            MSG_PEEK | MSG_DONTWAIT);
                                   if (n > 0) return;  // a pipelined request: left for after this answer
                                   if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                                     return self->WatchForHangUp();
                                   self->Gone();  // EOF or a reset
                                 }));
  }

  void Refuse(int status, absl::string_view why) {
    keep_alive_ = false;
    linger_ = true;  // the client may still be sending the body we refused
    answering_ = true;
    head_sent_ = ended_ = true;
    const std::string body = absl::StrCat(R"({"error":{"message":")", why, R"(","type":"invalid_request_error"}})");
    Queue(Head(status, "application/json", body.size(), false) + body);
    Flush();
  }

  void Queue(std::string bytes) {
    queued_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    if (queued_bytes_ > server_.options.max_queued_bytes) Gone();  // a client that does not read
  }

  void Flush() {
    if (closed_ || writing_) return;
    if (out_.empty()) {
      if (ended_ && answering_) AnswerDone();
      return;
    }
    writing_ = true;
    Lowest().expires_after(server_.options.write_timeout);
    auto written = asio::bind_executor(strand_, [self = Self()](beast::error_code ec, size_t n) {
      self->writing_ = false;
      self->Lowest().expires_never();  // no clock between writes (a slow generation)
      if (self->closed_) return;
      if (ec) return self->Gone();
      self->queued_bytes_ -= n;
      self->out_.pop_front();
      self->Flush();
    });
    // Through TLS once it is up; before that (the 400 to a plaintext request) straight to the socket.
    if constexpr (kTls) {
      if (!tls_up_) return asio::async_write(Lowest(), asio::buffer(out_.front()), std::move(written));
    }
    asio::async_write(stream_, asio::buffer(out_.front()), std::move(written));
  }

  void AnswerDone() {
    answering_ = false;
    on_gone_ = nullptr;
    if (!keep_alive_ && linger_) return Linger();
    if (!keep_alive_) return Close();
    // The hang-up watch may still be pending: cancel it before reading on.
    beast::error_code ec;
    Lowest().socket().cancel(ec);
    ReadRequest();
  }

  // After refusing a request whose body is still arriving: closing now would reset the connection
  // (unread bytes), and the client would see the reset instead of our answer. So the sending side
  // is shut (after close_notify, under TLS) and what still comes is read from the socket and
  // dropped, for at most 2 s and 16 MiB, then we close.
  void Linger() {
    SendCloseNotify([self = Self()] {
      if (self->closed_) return;  // cut short (ForceClose)
      beast::error_code ec;
      self->Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
      self->Lowest().expires_after(std::chrono::seconds(2));
      self->linger_budget_ = size_t{16} << 20;
      self->DrainInput();
    });
  }
  void DrainInput() {
    Lowest().async_read_some(asio::buffer(scratch_),
                             asio::bind_executor(strand_, [self = Self()](beast::error_code ec, size_t n) {
                               if (ec || n >= self->linger_budget_) return self->Close();
                               self->linger_budget_ -= n;
                               self->DrainInput();
                             }));
  }

  // The client went away (or is dropped); or a close in progress is cut short (ForceClose). No
  // close_notify: the client is gone or does not read. Reported to the handler when its answer had
  // not ended (a client may read the last bytes and close before their write's handler has run).
  void Gone() {
    if (!closed_ && answering_ && !ended_ && on_gone_) {
      auto gone = std::move(on_gone_);
      on_gone_ = nullptr;
      gone();
    }
    closed_ = true;
    CloseSocket();
  }

  // Ends the connection: close_notify under TLS (SendCloseNotify), then the socket.
  void Close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    Lowest().socket().cancel(ec);  // the read of a next request, the hang-up watch
    SendCloseNotify([self = Self()] { self->CloseSocket(); });
  }

  // Under TLS, once the handshake is done: close_notify, so that the client can tell the end of
  // our stream from a cut connection. It is sent without waiting for the client's own (a client
  // may never send it), within 2 s; then `next`. Without TLS, `next` at once.
  template <class Next>
  void SendCloseNotify(Next next) {
    if constexpr (kTls) {
      if (tls_up_ && Lowest().socket().is_open()) {
        tls_up_ = false;
        // As if the client's close_notify had come: SSL_shutdown sends ours and is done.
        SSL_set_shutdown(stream_.native_handle(), SSL_RECEIVED_SHUTDOWN);
        Lowest().expires_after(std::chrono::seconds(2));
        stream_.async_shutdown(
            asio::bind_executor(strand_, [self = Self(), next = std::move(next)](beast::error_code) mutable {
              self->Lowest().expires_never();
              next();
            }));
        return;
      }
    }
    next();
  }

  void CloseSocket() {
    beast::error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    Lowest().close();
    // A write in flight keeps its bytes until its handler runs: Asio's write may take another
    // step (under TLS, SSL_write reads the buffer) before it sees the closed socket.
    out_.erase(writing_ && !out_.empty() ? out_.begin() + 1 : out_.begin(), out_.end());
    queued_bytes_ = 0;
  }

  Server::Impl& server_;
  Stream stream_;
  beast::tcp_stream::executor_type strand_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string peer_;
  std::deque<std::string> out_;
  size_t queued_bytes_ = 0;
  bool keep_alive_ = true, answering_ = false, head_sent_ = false, ended_ = false, writing_ = false, closed_ = false,
       linger_ = false, tls_up_ = false;
  size_t linger_budget_ = 0;
  std::array<char, 16384> scratch_;
  std::function<void()> on_gone_;
};

}  // namespace

void Server::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping.load()) return;
    if (!ec) {
      std::shared_ptr<Connection> session;
      if (tls.has_value()) {
        session = std::make_shared<Session<TlsStream>>(*this, std::move(socket), *tls);
      } else {
        session = std::make_shared<Session<beast::tcp_stream>>(*this, std::move(socket));
      }
      {
        std::lock_guard<std::mutex> lock(sessions_mu);
        std::erase_if(sessions, [](const std::weak_ptr<Connection>& w) { return w.expired(); });
        sessions.push_back(session);
      }
      session->Begin();
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options, Handler handler) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535)
    return absl::InvalidArgumentError(absl::StrCat("--http_listen '", options.listen, "': want HOST:PORT"));
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (options.threads < 1 || options.threads > 256)
    return absl::InvalidArgumentError("HTTP threads must be in [1, 256]");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  if (options.tls.has_value()) {
    if (absl::Status st = ConfigureTls(*options.tls, impl->tls.emplace(asio::ssl::context::tls_server)); !st.ok())
      return st;
  }
  beast::error_code ec;
  const asio::ip::address address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--http_listen '", options.listen, "': ", ec.message()));
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen, ": ", ec.message()));
  const int bound = impl->acceptor.local_endpoint().port();
  impl->Accept();
  for (int i = 0; i < options.threads; ++i) impl->threads.emplace_back([io = &impl->io] { io->run(); });
  return std::unique_ptr<Server>(new Server(std::move(impl), bound));
}

Server::Server(std::unique_ptr<Impl> impl, int port) : impl_(std::move(impl)), port_(port) {}

Server::~Server() { Shutdown(std::chrono::milliseconds(0)); }

int Server::connections() const { return impl_->open.load(); }

void Server::StopAccepting() {
  if (impl_->threads.empty() || impl_->stopping.exchange(true)) return;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard<std::mutex> lock(impl_->sessions_mu);
    for (auto& w : impl_->sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->Drain();
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  if (impl_->threads.empty()) return;
  StopAccepting();
  const auto until = std::chrono::steady_clock::now() + grace;
  while (impl_->open.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard<std::mutex> lock(impl_->sessions_mu);
    for (auto& w : impl_->sessions)
      if (auto s = w.lock()) s->ForceClose();
  }
  impl_->work.reset();
  // Closed sessions finish their handlers' posts and go; then run() returns.
  const auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (impl_->open.load() > 0 && std::chrono::steady_clock::now() < hard)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace gla::http
