#include "tests/support/http_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cctype>

namespace gla::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct HttpClient::Impl {
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  int port;
  std::chrono::milliseconds timeout;
  bool connected = false;

  bool Connect(std::string* error) {
    if (connected) return true;
    beast::error_code ec;
    stream.expires_after(timeout);
    stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)), ec);
    if (ec) {
      *error = ec.message();
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

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  if (!impl_->connected) return;
  beast::error_code ec;
  impl_->stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  impl_->stream.close();
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
  impl_->stream.expires_after(impl_->timeout);
  bhttp::write(impl_->stream, req, ec);
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(size_t{1} << 30);
  if (!ec) bhttp::read(impl_->stream, impl_->buffer, parser, ec);
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
  impl_->stream.expires_after(impl_->timeout);
  bhttp::write(impl_->stream, req, ec);
  if (ec) return false;
  // Raw bytes until `events` blank-line-terminated events have come.
  std::string seen;
  char buf[4096];
  while (!ec) {
    size_t n = impl_->stream.read_some(asio::buffer(buf), ec);
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
