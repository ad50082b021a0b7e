#include "server/http/http_server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <array>
#include <deque>
#include <mutex>

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

}  // namespace

struct Server::Impl {
  ServerOptions options;
  Handler handler;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;
  std::atomic<int> open{0};
  std::atomic<bool> stopping{false};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::mutex sessions_mu;
  std::vector<std::weak_ptr<class Session>> sessions;  // for the drain

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

// One connection: reads requests one at a time, hands each to the handler, writes its answer
// (which the handler may produce from any thread: everything funnels through the strand).
class Session : public Responder, public std::enable_shared_from_this<Session> {
 public:
  // `socket` was accepted onto a strand of its own: the stream's executor is that strand, and every
  // handler and post here goes through it (one strand per connection: no locks).
  Session(Server::Impl& server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)), strand_(stream_.get_executor()) {
    beast::error_code ec;
    // Each SSE event is written as soon as it exists: Nagle's algorithm would hold it back until
    // the client's delayed ACK (40 ms on Linux): measured, every TTFT over HTTP was 42 ms.
    stream_.socket().set_option(tcp::no_delay(true), ec);
    const tcp::endpoint ep = stream_.socket().remote_endpoint(ec);
    if (!ec)
      peer_ = absl::StrCat(ep.address().is_v6() ? "ipv6:[" : "ipv4:", ep.address().to_string(),
                           ep.address().is_v6() ? "]:" : ":", ep.port());
    server_.open.fetch_add(1);
  }
  ~Session() override { server_.open.fetch_sub(1); }

  void Begin() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->ReadRequest(); });
  }

  // Drain: close at once when idle; otherwise after the answer in progress (keep_alive_ off).
  void Drain() {
    asio::post(strand_, [self = shared_from_this()] {
      self->keep_alive_ = false;
      if (!self->answering_) self->Close();
    });
  }
  void ForceClose() {
    asio::post(strand_, [self = shared_from_this()] { self->Gone(); });
  }

  // ---- Responder (any thread)
  void Respond(int status, absl::string_view content_type, std::string body) override {
    asio::post(strand_, [self = shared_from_this(), status, type = std::string(content_type),
                         body = std::move(body)]() mutable {
      if (self->closed_ || self->head_sent_) return;
      self->head_sent_ = true;
      self->Queue(Head(status, type, body.size(), self->keep_alive_) + body);
      self->ended_ = true;
      self->Flush();
    });
  }
  void StartStream(int status, absl::string_view content_type) override {
    asio::post(strand_, [self = shared_from_this(), status, type = std::string(content_type)] {
      if (self->closed_ || self->head_sent_) return;
      self->head_sent_ = true;
      self->Queue(Head(status, type, std::nullopt, self->keep_alive_));
      self->Flush();
    });
  }
  void Write(std::string data) override {
    if (data.empty()) return;  // a zero-size chunk would end the stream
    asio::post(strand_, [self = shared_from_this(), data = std::move(data)] {
      if (self->closed_ || !self->head_sent_ || self->ended_) return;
      self->Queue(Chunk(data));
      self->Flush();
    });
  }
  void End() override {
    asio::post(strand_, [self = shared_from_this()] {
      if (self->closed_ || !self->head_sent_ || self->ended_) return;
      self->ended_ = true;
      self->Queue("0\r\n\r\n");
      self->Flush();
    });
  }
  void OnClientGone(std::function<void()> gone) override {
    asio::post(strand_, [self = shared_from_this(), gone = std::move(gone)]() mutable {
      if (self->closed_) {
        gone();
        return;
      }
      self->on_gone_ = std::move(gone);
    });
  }

 private:
  void ReadRequest() {
    if (closed_ || server_.stopping.load()) return Close();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.max_header_bytes));
    parser_->body_limit(server_.options.max_body_bytes);
    stream_.expires_after(server_.options.idle_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      asio::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->OnRead(ec);
                      }));
  }

  void OnRead(beast::error_code ec) {
    if (closed_) return;
    if (ec == bhttp::error::body_limit) return Refuse(413, "the request body is over the server's limit");
    if (ec == bhttp::error::header_limit) return Refuse(431, "the request head is over the server's limit");
    if (ec) {
      // End of stream, timeout, reset, or bytes that are not HTTP: nothing to answer.
      if (ec != bhttp::error::end_of_stream && ec != beast::error::timeout && ec != asio::error::eof &&
          ec != asio::error::connection_reset && ec != asio::error::operation_aborted && parser_->got_some())
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
    stream_.expires_never();
    WatchForHangUp();
    server_.handler(std::move(r), shared_from_this());
  }

  // While an answer is being made, a client that closes its end is noticed without consuming a
  // pipelined next request: when the socket turns readable, a one-byte MSG_PEEK tells EOF (0),
  // data (> 0: a next request, read after this answer) and a spurious wake-up (EAGAIN: Asio's
  // edge-triggered reactor may report readiness it saw before the request was read) apart.
  void WatchForHangUp() {
    stream_.socket().async_wait(tcp::socket::wait_read,
                                asio::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec) {
                                  if (self->closed_ || !self->answering_ || ec) return;
                                  char byte;
                                  const ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1,
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
    stream_.expires_after(server_.options.write_timeout);
    asio::async_write(stream_, asio::buffer(out_.front()),
                      asio::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t n) {
                        self->writing_ = false;
                        self->stream_.expires_never();  // no clock between writes (a slow generation)
                        if (self->closed_) return;
                        if (ec) return self->Gone();
                        self->queued_bytes_ -= n;
                        self->out_.pop_front();
                        self->Flush();
                      }));
  }

  void AnswerDone() {
    answering_ = false;
    on_gone_ = nullptr;
    if (!keep_alive_ && linger_) return Linger();
    if (!keep_alive_) return Close();
    // The hang-up watch may still be pending: cancel it before reading on.
    beast::error_code ec;
    stream_.socket().cancel(ec);
    ReadRequest();
  }

  // After refusing a request whose body is still arriving: closing now would reset the connection
  // (unread bytes), and the client would see the reset instead of our answer. So the sending side
  // is shut and what still comes is read and dropped, for at most 2 s and 16 MiB, then we close.
  void Linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    linger_budget_ = size_t{16} << 20;
    DrainInput();
  }
  void DrainInput() {
    stream_.async_read_some(asio::buffer(scratch_),
                            asio::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec || n >= self->linger_budget_) return self->Close();
                              self->linger_budget_ -= n;
                              self->DrainInput();
                            }));
  }

  // The client went away (or is dropped) before the answer ended.
  void Gone() {
    if (closed_) return;
    if (answering_ && on_gone_) {
      auto gone = std::move(on_gone_);
      on_gone_ = nullptr;
      gone();
    }
    Close();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    out_.clear();
    queued_bytes_ = 0;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  Server::Impl& server_;
  beast::tcp_stream stream_;
  beast::tcp_stream::executor_type strand_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string peer_;
  std::deque<std::string> out_;
  size_t queued_bytes_ = 0;
  bool keep_alive_ = true, answering_ = false, head_sent_ = false, ended_ = false, writing_ = false, closed_ = false,
       linger_ = false;
  size_t linger_budget_ = 0;
  std::array<char, 16384> scratch_;
  std::function<void()> on_gone_;
};

void Server::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping.load()) return;
    if (!ec) {
      auto session = std::make_shared<Session>(*this, std::move(socket));
      {
        std::lock_guard<std::mutex> lock(sessions_mu);
        std::erase_if(sessions, [](const std::weak_ptr<Session>& w) { return w.expired(); });
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
  std::vector<std::shared_ptr<Session>> live;
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
