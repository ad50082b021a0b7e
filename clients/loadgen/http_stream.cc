#include "clients/loadgen/http_stream.h"

#include <limits>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "nlohmann/json.hpp"

namespace gla {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

struct HttpStreamClient::Impl {
  std::string host;
  int port = 0;
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  bool connected = false;

  bool Connect(std::string* error) {
    if (connected) return true;
    beast::error_code ec;
    asio::ip::tcp::resolver resolver(io);
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (!ec) stream.connect(results, ec);
    if (!ec) stream.socket().set_option(asio::ip::tcp::no_delay(true), ec);  // requests go out whole, at once
    if (ec) {
      *error = ec.message();
      return false;
    }
    connected = true;
    return true;
  }
  void Reset() {
    beast::error_code ec;
    stream.socket().close(ec);
    connected = false;
    buffer.clear();
  }
};

HttpStreamClient::HttpStreamClient(std::string host, int port) : impl_(std::make_unique<Impl>()) {
  impl_->host = std::move(host);
  impl_->port = port;
}
HttpStreamClient::~HttpStreamClient() = default;

std::string HttpStreamClient::Get(const std::string& target) {
  std::string error;
  if (!impl_->Connect(&error)) return "";
  bhttp::request<bhttp::empty_body> req(bhttp::verb::get, target, 11);
  req.set(bhttp::field::host, impl_->host);
  beast::error_code ec;
  bhttp::write(impl_->stream, req, ec);
  bhttp::response<bhttp::string_body> res;
  if (!ec) bhttp::read(impl_->stream, impl_->buffer, res, ec);
  if (ec) {
    impl_->Reset();
    return "";
  }
  return res.body();
}

HttpStreamed HttpStreamClient::Stream(const std::string& target, const std::string& json_body) {
  HttpStreamed out;
  if (!impl_->Connect(&out.error)) return out;
  bhttp::request<bhttp::string_body> req(bhttp::verb::post, target, 11);
  req.set(bhttp::field::host, impl_->host);
  req.set(bhttp::field::content_type, "application/json");
  req.body() = json_body;
  req.prepare_payload();
  const auto t0 = Clock::now();
  auto last = t0;
  bool done = false;
  std::string pending;  // SSE bytes not yet ending in a blank line
  bhttp::response_parser<bhttp::empty_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  auto on_body = [&](std::uint64_t, beast::string_view body, beast::error_code&) -> std::size_t {
    pending.append(body.data(), body.size());
    size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string data = event.substr(6);
      if (data == "[DONE]") {
        done = true;
        continue;
      }
      const auto j = nlohmann::json::parse(data, nullptr, false);
      if (!j.is_object() || j.contains("error")) {
        if (out.error.empty()) out.error = data.substr(0, 200);
        continue;
      }
      size_t n = 0;
      for (const auto& c : j["choices"])
        if (c.contains("token_ids")) n += c["token_ids"].size();
      if (n == 0) continue;
      const auto now = Clock::now();
      const double dt = std::chrono::duration<double>(now - last).count();
      if (out.tokens == 0) out.ttft.push_back(dt);
      else for (size_t k = 0; k < n; ++k) out.itl.push_back(dt / static_cast<double>(n));
      out.tokens += static_cast<int64_t>(n);
      last = now;
    }
    return body.size();
  };
  auto on_chunk_header = [](std::uint64_t, beast::string_view, beast::error_code&) {};
  parser.on_chunk_header(on_chunk_header);
  parser.on_chunk_body(on_body);
  beast::error_code ec;
  bhttp::write(impl_->stream, req, ec);
  if (!ec) bhttp::read(impl_->stream, impl_->buffer, parser, ec);
  if (ec) {
    out.error = ec.message();
    impl_->Reset();
    return out;
  }
  if (parser.get().result_int() != 200 && out.error.empty())
    out.error = "HTTP " + std::to_string(parser.get().result_int());
  if (!done && out.error.empty()) out.error = "the stream ended without [DONE]";
  if (!parser.get().keep_alive()) impl_->Reset();
  return out;
}

}  // namespace gla
