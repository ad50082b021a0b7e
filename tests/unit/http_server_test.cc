// glad's HTTP/1.1 server (server/http/http_server.h) in process, over TLS: requests with
// keep-alive, mutual TLS, the handshake under the idle timeout, a plaintext request on the TLS
// port, a refused body, close_notify when the server closes, and the hang-up watch. The
// certificates come from tests/support/test_certs.h; the client is tests/support/http_client.h
// or, where the test needs the bytes themselves, a socket.
#include "server/http/http_server.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <utility>  // before Boost 1.74's Asio, which uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <chrono>
#include <atomic>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/support/http_client.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using testing::HttpClient;
using testing::HttpTls;
using testing::ReadFile;

// A server on loopback with a 1 s idle timeout; TLS from the test certificate, mutual when asked.
std::unique_ptr<http::Server> StartServer(http::Handler handler, bool tls = true, bool mutual = false,
                                          size_t max_body_bytes = size_t{1} << 20) {
  http::ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.idle_timeout = 1s;
  o.max_body_bytes = max_body_bytes;
  if (tls)
    o.tls = TlsPems{ReadFile(testing::ServerTestCert().cert), ReadFile(testing::ServerTestCert().key),
                    mutual ? ReadFile(testing::ClientTestCa().cert) : ""};
  auto server = http::Server::Start(o, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// Answers "METHOD TARGET".
void Echo(http::Request r, std::shared_ptr<http::Responder> out) {
  out->Respond(200, "text/plain", r.method + " " + r.target);
}

// Trusts the server's certificate; `cert`: the client's own, for mutual TLS.
HttpTls ClientTls(const testing::CertFiles* cert = nullptr) {
  HttpTls t{testing::ServerTestCert().cert, "", ""};
  if (cert != nullptr) {
    t.cert_file = cert->cert;
    t.key_file = cert->key;
  }
  return t;
}

bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds within = 5s) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Whether the server closed `s` (end of stream or reset) within `within`, reading nothing else.
bool ClosedByServer(tcp::socket& s, std::chrono::milliseconds within) {
  pollfd p{s.native_handle(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(within.count())) != 1) return false;
  char byte;
  return ::recv(s.native_handle(), &byte, 1, MSG_DONTWAIT) <= 0;
}

tcp::endpoint Loopback(int port) { return {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}; }

TEST(HttpServerTls, ServesRequestsOverTlsWithKeepAlive) {
  auto server = StartServer(Echo);
  ASSERT_NE(server, nullptr);
  HttpClient c(server->port(), ClientTls());
  for (const char* target : {"/v1/models", "/health"}) {
    const auto r = c.Get(target);
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.body, std::string("GET ") + target);
  }
  EXPECT_EQ(server->connections(), 1) << "both requests on one connection";
  const auto post = c.Post("/v1/completions", R"({"prompt": [1, 2]})");
  EXPECT_EQ(post.status, 200) << post.error;
}

TEST(HttpServerTls, APlaintextRequestGetsAPlaintext400AndServingGoesOn) {
  auto server = StartServer(Echo);
  ASSERT_NE(server, nullptr);
  HttpClient plain(server->port());
  const auto r = plain.Get("/v1/models");
  EXPECT_EQ(r.status, 400) << r.error;
  EXPECT_NE(r.body.find("this port serves HTTPS"), std::string::npos) << r.body;
  EXPECT_EQ(r.headers.count("connection") ? r.headers.at("connection") : "", "close");
  HttpClient tls(server->port(), ClientTls());
  EXPECT_EQ(tls.Get("/health").status, 200);
  EXPECT_TRUE(Eventually([&] { return server->connections() == 1; })) << "the plaintext connection closed";
}

// A client that connects and sends nothing, or stops halfway through its ClientHello, holds its
// connection no longer than the idle timeout (1 s here); plaintext connections likewise.
TEST(HttpServerTls, ASilentOrStalledClientIsDroppedAfterTheIdleTimeout) {
  for (const bool tls : {true, false}) {
    SCOPED_TRACE(tls ? "TLS" : "plaintext");
    auto server = StartServer(Echo, tls);
    ASSERT_NE(server, nullptr);
    asio::io_context io;
    tcp::socket silent(io), stalled(io);
    silent.connect(Loopback(server->port()));
    stalled.connect(Loopback(server->port()));
    // A handshake record's header announcing 512 bytes that never come (for plaintext: half a head).
    const std::string partial = tls ? std::string("\x16\x03\x01\x02\x00", 5) : std::string("GET /health HT");
    asio::write(stalled, asio::buffer(partial));
    ASSERT_TRUE(Eventually([&] { return server->connections() == 2; }));
    const auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(ClosedByServer(silent, 5s));
    EXPECT_TRUE(ClosedByServer(stalled, 5s));
    EXPECT_GE(std::chrono::steady_clock::now() - start, 800ms) << "closed before the idle timeout";
    EXPECT_TRUE(Eventually([&] { return server->connections() == 0; }));
    HttpClient next = tls ? HttpClient(server->port(), ClientTls()) : HttpClient(server->port());
    EXPECT_EQ(next.Get("/health").status, 200) << "and the server goes on";
  }
}

TEST(HttpServerTls, MutualTlsRequiresACertificateFromTheClientCa) {
  auto server = StartServer(Echo, /*tls=*/true, /*mutual=*/true);
  ASSERT_NE(server, nullptr);
  const auto none = HttpClient(server->port(), ClientTls()).Get("/health");
  EXPECT_EQ(none.status, 0) << "no client certificate: " << none.body;
  EXPECT_FALSE(none.error.empty());
  // A certificate the client CA did not sign (the self-signed server one).
  const auto untrusted = HttpClient(server->port(), ClientTls(&testing::ServerTestCert())).Get("/health");
  EXPECT_EQ(untrusted.status, 0) << "an untrusted client certificate: " << untrusted.body;
  const auto signed_by_ca = HttpClient(server->port(), ClientTls(&testing::ClientTestCert())).Get("/health");
  EXPECT_EQ(signed_by_ca.status, 200) << signed_by_ca.error;
  EXPECT_EQ(signed_by_ca.body, "GET /health");
}

// Over the limit: 413 over TLS, read by the client although it was still sending the body.
TEST(HttpServerTls, ABodyOverTheLimitGets413) {
  auto server = StartServer(Echo, /*tls=*/true, /*mutual=*/false, /*max_body_bytes=*/size_t{1} << 20);
  ASSERT_NE(server, nullptr);
  const auto r = HttpClient(server->port(), ClientTls()).Post("/v1/completions", std::string(size_t{3} << 20, 'a'));
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_TRUE(Eventually([&] { return server->connections() == 0; }));
}

// When the server closes a TLS connection (here the drain closing an idle one) it sends
// close_notify: the client reads a clean end of stream, not a truncation.
TEST(HttpServerTls, TheServerClosesWithCloseNotify) {
  auto server = StartServer(Echo);
  ASSERT_NE(server, nullptr);
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(testing::ServerTestCert().cert);
  ctx.set_verify_mode(asio::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(io, ctx);
  beast::get_lowest_layer(stream).connect(Loopback(server->port()));
  stream.handshake(asio::ssl::stream_base::client);
  bhttp::request<bhttp::empty_body> req(bhttp::verb::get, "/health", 11);
  bhttp::write(stream, req);
  beast::flat_buffer buffer;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(stream, buffer, res);
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_TRUE(res.keep_alive());
  server->StopAccepting();
  char byte;
  beast::error_code ec;
  stream.read_some(asio::buffer(&byte, 1), ec);
  EXPECT_EQ(ec, asio::error::eof) << ec.message() << " (ssl stream_truncated: no close_notify)";
  EXPECT_TRUE(Eventually([&] { return server->connections() == 0; }));
}

// A client that goes away mid-stream is reported to the handler under TLS too.
TEST(HttpServerTls, AClientThatHangsUpMidStreamIsReported) {
  std::promise<void> gone;
  auto server = StartServer([&gone](http::Request, std::shared_ptr<http::Responder> out) {
    out->OnClientGone([&gone] { gone.set_value(); });
    out->StartStream(200, "text/event-stream");
    out->Write("data: 1\n\n");  // and never ends
  });
  ASSERT_NE(server, nullptr);
  HttpClient c(server->port(), ClientTls());
  ASSERT_TRUE(c.StartStreamAndRead("/v1/completions", R"({"stream": true})", 1));
  c.Close();
  EXPECT_EQ(gone.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(Eventually([&] { return server->connections() == 0; }));
}

// 32 TLS streams at once, written from threads of their own (as the engine does): half are read to
// the end, half hang up after the first event (each hang-up reported once); then four more run
// into the drain and finish within its grace.
TEST(HttpServerTls, ConcurrentStreamsHangUpsAndTheDrain) {
  std::mutex mu;
  std::vector<std::thread> writers;
  std::atomic<int> gone{0};
  auto server = StartServer([&](http::Request, std::shared_ptr<http::Responder> out) {
    auto stop = std::make_shared<std::atomic<bool>>(false);
    out->OnClientGone([stop, &gone] {
      *stop = true;
      ++gone;
    });
    out->StartStream(200, "text/event-stream");
    std::lock_guard<std::mutex> lock(mu);
    writers.emplace_back([out, stop] {
      for (int i = 0; i < 100 && !*stop; ++i) {
        out->Write("data: " + std::to_string(i) + "\n\n");
        std::this_thread::sleep_for(3ms);
      }
      out->Write("data: [DONE]\n\n");
      out->End();
    });
  });
  ASSERT_NE(server, nullptr);
  std::atomic<int> done{0};
  auto read_to_the_end = [&] {
    const auto r = HttpClient(server->port(), ClientTls()).Post("/v1/completions", R"({"stream": true})");
    const auto events = testing::SseData(r.body);
    if (r.status == 200 && events.size() == 101 && events.back() == "[DONE]") ++done;
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < 32; ++i)
    clients.emplace_back([&, i] {
      if (i % 2 == 0) return read_to_the_end();
      HttpClient c(server->port(), ClientTls());
      if (c.StartStreamAndRead("/v1/completions", R"({"stream": true})", 1)) c.Close();
    });
  for (auto& t : clients) t.join();
  EXPECT_EQ(done.load(), 16);
  EXPECT_TRUE(Eventually([&] { return gone.load() == 16; })) << gone.load() << " hang-ups reported of 16";
  // The drain: streams in progress end within the grace.
  done = 0;
  clients.clear();
  for (int i = 0; i < 4; ++i) clients.emplace_back(read_to_the_end);
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> lock(mu);
    return writers.size() == 36;
  }));
  server->Shutdown(5000ms);
  for (auto& t : clients) t.join();
  EXPECT_EQ(done.load(), 4);
  EXPECT_EQ(server->connections(), 0);
  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : writers) t.join();
}

TEST(HttpServerTls, TlsFilesThatDoNotMatchAreRefusedAtStart) {
  http::ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls = TlsPems{ReadFile(testing::ServerTestCert().cert), ReadFile(testing::ClientTestCert().key), ""};
  const auto mismatched = http::Server::Start(o, Echo);
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument) << mismatched.status();
  o.tls = TlsPems{"not a certificate", ReadFile(testing::ServerTestCert().key), ""};
  EXPECT_EQ(http::Server::Start(o, Echo).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gla
