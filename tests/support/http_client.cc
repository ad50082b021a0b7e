#include "tests/support/http_client.h"

#include <utility>  // before Boost 1.74's Asio, which uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <cctype>
#include <optional>

namespace gla::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct HttpClient::Impl {
  asio::io_context io;
  std::optional<asio::ssl::context> tls;  // set: HTTPS
  std::string tls_error;                  // why `tls` could not be set up
  // The connection: one of the two, made anew by each Connect().
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  int port;
  std::chrono::milliseconds timeout;
  bool connected = false;

  beast::tcp_stream& Tcp() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
  // f(stream), on the connection's stream whichever it is.
  template <class F>
  auto On(F&& f) {
    return secure ? f(*secure) : f(*plain);
  }

  bool Connect(std::string* error) {
    if (connected) return true;
    if (!tls_error.empty()) {
      *error = tls_error;
      return false;
    }
    plain.reset();
    secure.reset();
    if (tls) {
      secure.emplace(io, *tls);
    } else {
      plain.emplace(io);
    }
    beast::error_code ec;
    Tcp().expires_after(timeout);
    Tcp().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)), ec);
    if (!ec && secure) {
      secure->set_verify_callback(asio::ssl::host_name_verification("127.0.0.1"));
      secure->handshake(asio::ssl::stream_base::client, ec);
    }
    if (ec) {
      *error = ec.message();
      Tcp().close();
      return false;
    }
    connected = true;
    return true;
  }
};

HttpClient::HttpClient(int port, std::chrono::milliseconds timeout) : impl_(std::make_unique<Impl>()) {
  impl_->port = port;
  impl_->timeout = timeout;
}

HttpClient::HttpClient(int port, const HttpTls& tls, std::chrono::milliseconds timeout) : HttpClient(port, timeout) {
  asio::ssl::context& ctx = impl_->tls.emplace(asio::ssl::context::tls_client);
  ctx.set_verify_mode(asio::ssl::verify_peer);
  beast::error_code ec;
  ctx.load_verify_file(tls.ca_file, ec);
  if (!ec && !tls.cert_file.empty()) ctx.use_certificate_chain_file(tls.cert_file, ec);
  if (!ec && !tls.key_file.empty()) ctx.use_private_key_file(tls.key_file, asio::ssl::context::pem, ec);
  if (ec) impl_->tls_error = "TLS client setup: " + ec.message();
}

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  if (!impl_->connected) return;
  beast::error_code ec;
  impl_->Tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  impl_->Tcp().close();
  impl_->connected = false;
  impl_->buffer.clear();
}

HttpResponse HttpClient::Request(const std::string& method, const std::string& target, const std::string& body,
                                 const std::vector<std::pair<std::string, std::string>>& headers) {
  HttpResponse out;
  if (!impl_->Connect(&out.error)) return out;
  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, "127.0.0.1");
  if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  beast::error_code ec;
  impl_->Tcp().expires_after(impl_->timeout);
  impl_->On([&](auto& stream) { bhttp::write(stream, req, ec); });
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(size_t{1} << 30);
  if (!ec) impl_->On([&](auto& stream) { bhttp::read(stream, impl_->buffer, parser, ec); });
  if (ec) {
    out.error = ec.message();
    Close();
    return out;
  }
  auto res = parser.release();
  out.status = res.result_int();
  out.body = std::move(res.body());
  for (const auto& f : res) {
    std::string name(f.name_string());
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    out.headers[name] = std::string(f.value());
  }
  if (!res.keep_alive()) Close();
  return out;
}

bool HttpClient::StartStreamAndRead(const std::string& target, const std::string& json, int events) {
  std::string error;
  if (!impl_->Connect(&error)) return false;
  bhttp::request<bhttp::string_body> req(bhttp::verb::post, target, 11);
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::content_type, "application/json");
  req.body() = json;
  req.prepare_payload();
  beast::error_code ec;
  impl_->Tcp().expires_after(impl_->timeout);
  impl_->On([&](auto& stream) { bhttp::write(stream, req, ec); });
  if (ec) return false;
  // Raw bytes until `events` blank-line-terminated events have come.
  std::string seen;
  char buf[4096];
  while (!ec) {
    const size_t n = impl_->On([&](auto& stream) { return stream.read_some(asio::buffer(buf), ec); });
    seen.append(buf, n);
    size_t count = 0, at = 0;
    while ((at = seen.find("data: ", at)) != std::string::npos) {
      ++count;
      at += 6;
    }
    if (static_cast<int>(count) >= events) return true;
  }
  return false;
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < body.size()) {
    size_t end = body.find('\n', at);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(at, end - at);
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
    at = end + 1;
  }
  return out;
}

}  // namespace gla::testing
