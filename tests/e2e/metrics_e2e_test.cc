// glad's Prometheus endpoint end to end: after known traffic (generations that succeed, one that is
// refused, unary and streaming) a scrape shows the right counts and token totals, the histograms
// counted once per request / token interval, the gauges present, and promtool (Debian's
// prometheus package) accepts the exposition; other paths are 404, a bad address a startup error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/glad_process.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

// GET path from 127.0.0.1:port; the whole response (status line, headers, body).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    (void)!send(fd, req.data(), req.size(), 0);
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// The value of the sample `name{labels}` (exact text before the value), or -1.
double Sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  return -1;
}

TEST(Metrics, ScrapeAfterTrafficShowsTheRightCountsAndPassesPromtool) {
  testing::GladProcess glad({"--model", testing::TinyModelDir(), "--metrics_listen", "127.0.0.1:0", "--slots", "6"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  const std::string log = glad.log();
  const std::string marker = "metrics on http://127.0.0.1:";
  const size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  const int port = std::atoi(log.c_str() + at + marker.size());
  ASSERT_GT(port, 0) << log;

  auto stub = glad.stub();
  v1::GenerateRequest req;
  for (int id : {1, 17, 42}) req.mutable_token_ids()->add_ids(id);
  req.set_max_new_tokens(4);
  req.set_ignore_eos(true);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    ASSERT_TRUE(stub->Generate(&ctx, req, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    auto reader = stub->GenerateStream(&ctx, req);
    v1::GenerateStreamResponse msg;
    while (reader->Read(&msg)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  {
    v1::GenerateRequest bad = req;
    bad.mutable_token_ids()->add_ids(1 << 20);  // outside the vocabulary
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    ASSERT_EQ(stub->Generate(&ctx, bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  {  // a session with one turn (its state keeps a slot) and an empty one
    for (const char* id : {"m", "n"}) {
      grpc::ClientContext ctx;
      v1::CreateSessionRequest cr;
      cr.set_session_id(id);
      v1::Session s;
      ASSERT_TRUE(stub->CreateSession(&ctx, cr, &s).ok());
    }
    v1::GenerateRequest turn = req;
    turn.set_session("m");
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    ASSERT_TRUE(stub->Generate(&ctx, turn, &resp).ok());
  }

  const std::string response = HttpGet(port, "/metrics");
  ASSERT_EQ(response.rfind("HTTP/1.1 200 OK", 0), 0u) << response.substr(0, 200);
  const std::string text = response.substr(response.find("\r\n\r\n") + 4);
  EXPECT_EQ(Sample(text, "gla_requests_total{code=\"OK\",method=\"Generate\"}"), 4);
  EXPECT_EQ(Sample(text, "gla_requests_total{code=\"OK\",method=\"GenerateStream\"}"), 1);
  EXPECT_EQ(Sample(text, "gla_requests_total{code=\"INVALID_ARGUMENT\",method=\"Generate\"}"), 1);
  EXPECT_EQ(Sample(text, "gla_prompt_tokens_total"), 15);
  EXPECT_EQ(Sample(text, "gla_generated_tokens_total"), 20);
  EXPECT_EQ(Sample(text, "gla_time_to_first_token_seconds_count"), 5) << "one per request that generated";
  EXPECT_EQ(Sample(text, "gla_inter_token_latency_seconds_count"), 15) << "three intervals per 4-token request";
  EXPECT_EQ(Sample(text, "gla_request_duration_seconds_count"), 5);
  EXPECT_EQ(Sample(text, "gla_state_slots{state=\"total\"}"), 6);
  EXPECT_EQ(Sample(text, "gla_queue_depth"), 0);
  EXPECT_EQ(Sample(text, "gla_running_sequences"), 0) << "every request has ended";
  EXPECT_EQ(Sample(text, "gla_state_slots{state=\"used\"}"), 1) << "the session's state keeps its slot";
  EXPECT_EQ(Sample(text, "gla_sessions{location=\"slot\"}"), 1);
  EXPECT_EQ(Sample(text, "gla_sessions{location=\"empty\"}"), 1);
  EXPECT_EQ(Sample(text, "gla_session_events_total{event=\"swapped_out\"}"), 0);
  EXPECT_EQ(Sample(text, "gla_prefix_cache_lookups_total{result=\"miss\"}"), 0) << "3-token prompts: under a block";
  EXPECT_EQ(Sample(text, "gla_preemptions_total"), 0);
  EXPECT_EQ(Sample(text, "gla_finetune_jobs{state=\"running\"}"), 0);
  EXPECT_GT(Sample(text, "gla_engine_steps_total"), 0);

  // promtool, from Debian's prometheus package (deploy/install-deps.sh installs it).
  const std::string dir = testing::MakeTempDir("metrics");
  std::ofstream(dir + "/metrics.txt") << text;
  const int st = std::system(("promtool check metrics < " + dir + "/metrics.txt > " + dir + "/promtool.txt 2>&1").c_str());
  std::ifstream pt(dir + "/promtool.txt");
  std::stringstream ptext;
  ptext << pt.rdbuf();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "promtool check metrics: " << ptext.str();

  EXPECT_EQ(HttpGet(port, "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(HttpGet(port, "/metrics").rfind("HTTP/1.1 200", 0), 0u) << "and it goes on serving";
}

int MetricsPort(const testing::GladProcess& glad) {
  const std::string log = glad.log();
  const std::string marker = "metrics on http://127.0.0.1:";
  const size_t at = log.find(marker);
  return at == std::string::npos ? -1 : std::atoi(log.c_str() + at + marker.size());
}

// Connects to 127.0.0.1:port, waiting at most 500 ms for the handshake; -1 if it did not finish
// (a listener whose accept queue is full drops the handshake, and the client retries a second later).
int ConnectWithin500Ms(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof(err);
    if (errno != EINPROGRESS || poll(&p, 1, 500) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
        err != 0) {
      close(fd);
      return -1;
    }
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
  return fd;
}

// Idle connections do not hold up a scrape (one connection at a time: one idle connection
// delayed a scrape by 1.8 s, 50 made it time out), nor does a burst of them arriving while glad
// is not running (an accept queue of 16 dropped the rest's handshakes: the scrape after them took
// a second more, once, on CI); a request whose deadline passes is counted as DEADLINE_EXCEEDED,
// not CANCELLED, and logged with its code.
TEST(Metrics, IdleConnectionsDoNotDelayAScrapeAndDeadlinesAreCountedAsSuch) {
  testing::GladProcess glad({"--model", testing::TinyModelDir(), "--metrics_listen", "127.0.0.1:0", "--threads", "1",
                             "--max_new_tokens", "1000000"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  const int port = MetricsPort(glad);
  ASSERT_GT(port, 0) << glad.log();
  // The burst arrives while glad is stopped, so every handshake waits in the kernel's accept queue.
  ASSERT_EQ(kill(glad.pid(), SIGSTOP), 0);
  std::vector<int> idle;
  for (int i = 0; i < 50; ++i) {
    const int fd = ConnectWithin500Ms(port);
    if (fd < 0) break;
    if (i % 2 == 1) (void)!send(fd, "GET /met", 8, 0);  // half of a request line, then nothing
    idle.push_back(fd);
  }
  ASSERT_EQ(kill(glad.pid(), SIGCONT), 0);
  ASSERT_EQ(idle.size(), 50u) << "a handshake was not taken while glad was stopped: its accept queue is too short";
  const auto start = std::chrono::steady_clock::now();
  const std::string response = HttpGet(port, "/metrics");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(response.rfind("HTTP/1.1 200 OK", 0), 0u) << response.substr(0, 200);
  // Served beside the idle ones, not after them (each of which is given 2 s).
  EXPECT_LT(seconds, 1.0) << "a scrape behind 50 idle connections took " << seconds << " s";
  for (int fd : idle) close(fd);

  auto stub = glad.stub();
  v1::GenerateRequest req;
  for (int id : {1, 17, 42}) req.mutable_token_ids()->add_ids(id);
  req.set_max_new_tokens(1000000);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  v1::GenerateResponse resp;
  EXPECT_EQ(stub->Generate(&ctx, req, &resp).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  std::string text;
  for (int i = 0; i < 100; ++i) {  // the server ends the request right after the client's deadline
    text = HttpGet(port, "/metrics");
    if (Sample(text, "gla_requests_total{code=\"DEADLINE_EXCEEDED\",method=\"Generate\"}") == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Sample(text, "gla_requests_total{code=\"DEADLINE_EXCEEDED\",method=\"Generate\"}"), 1) << text;
  EXPECT_EQ(Sample(text, "gla_requests_total{code=\"CANCELLED\",method=\"Generate\"}"), -1) << "no such series";
  EXPECT_NE(glad.log().find("status=4 deadline exceeded"), std::string::npos) << glad.log();
}

TEST(Metrics, UnusableAddressIsAStartupError) {
  // A port something else listens on, and an address that is no HOST:PORT: glad exits 1 at once.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string glad = "timeout 60 " + testing::GladPath() + " --model " + testing::TinyModelDir() +
                           " --listen 127.0.0.1:0 --metrics_listen ";
  for (const std::string& addr : {"127.0.0.1:" + std::to_string(ntohs(a.sin_port)), std::string("nonsense")}) {
    const int st = std::system((glad + addr + " > /dev/null 2>&1").c_str());
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << addr;
  }
  close(fd);
}

// --log_format json: every stderr line is one JSON object with ts, level, event and msg, and the
// events carry their fields (a collector needs no regular expressions).
TEST(Logs, JsonFormatIsOneObjectPerLineWithTheEventsFields) {
  testing::GladProcess glad({"--model", testing::TinyModelDir(), "--log_format", "json"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  auto stub = glad.stub();
  v1::GenerateRequest req;
  req.mutable_token_ids()->add_ids(1);
  req.set_max_new_tokens(2);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(stub->Generate(&ctx, req, &resp).ok());
  ASSERT_EQ(glad.Terminate(), 0);
  std::istringstream in(glad.log());
  std::map<std::string, nlohmann::json> events;
  int lines = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    ++lines;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << "not one JSON object: " << line;
    for (const char* key : {"ts", "level", "event", "msg"}) EXPECT_TRUE(j.contains(key)) << key << " in " << line;
    events[j.value("event", "")] = j;
  }
  EXPECT_GE(lines, 4);
  ASSERT_TRUE(events.count("listening")) << glad.log();
  EXPECT_EQ(events["listening"]["backend"], "cpu");
  EXPECT_GT(events["listening"]["port"].get<int>(), 0);
  ASSERT_TRUE(events.count("request")) << glad.log();
  EXPECT_EQ(events["request"]["completion_tokens"].get<int>(), 2);
  EXPECT_EQ(events["request"]["code"], "OK");
  EXPECT_TRUE(events.count("draining") && events.count("stopped")) << glad.log();
  // And a bad value is refused at startup.
  const int st = std::system((testing::GladPath() + " --model " + testing::TinyModelDir() +
                              " --listen 127.0.0.1:0 --log_format xml > /dev/null 2>&1").c_str());
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
}

}  // namespace
}  // namespace gla
