#include "server/metrics.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gla {

namespace {

// Families whose values their owners keep (scheduler, backend, job runner), read at scrape time.
prometheus::MetricFamily Family(const std::string& name, const std::string& help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help) {
  return Family(name, help, prometheus::MetricType::Gauge);
}
prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help) {
  return Family(name, help, prometheus::MetricType::Counter);
}

// One sample of the family, as its type wants it.
void Add(prometheus::MetricFamily& f, double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (f.type == prometheus::MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

// Latency buckets: 1 ms to ~30 s, roughly doubling.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

}  // namespace

// The HTTP side: one thread answering GET /metrics over non-blocking sockets, every connection
// at once in one poll loop (an idle or slow connection delayed every scrape behind it when they
// were served one at a time). A connection gets 2 s to send its request and take the answer,
// then it is closed; at most kMaxConnections are open, the oldest closed for a new one. Written
// here rather than through prometheus-cpp's civetweb exposer, which refused to start inside glad
// (mg_start failing after its bind) and takes no port 0.
class ServerMetrics::HttpEndpoint {
 public:
  HttpEndpoint(int listen_fd, std::function<std::string()> body) : fd_(listen_fd), body_(std::move(body)) {
    if (pipe(stop_) != 0) stop_[0] = stop_[1] = -1;
    SetNonBlocking(fd_);
    thread_ = std::thread([this] { Loop(); });
  }
  ~HttpEndpoint() {
    if (stop_[1] >= 0) (void)!write(stop_[1], "x", 1);
    thread_.join();
    for (const Connection& c : conns_) close(c.fd);
    close(fd_);
    if (stop_[0] >= 0) close(stop_[0]);
    if (stop_[1] >= 0) close(stop_[1]);
  }

 private:
  static constexpr size_t kMaxConnections = 256;
  static constexpr size_t kMaxRequestBytes = 16384;
  static constexpr auto kConnectionTime = std::chrono::seconds(2);
  using Clock = std::chrono::steady_clock;

  struct Connection {
    int fd;
    Clock::time_point deadline;
    std::string in, out;
    size_t sent = 0;
    bool answering = false;  // the request is read; `out` is being written
  };

  static void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

  void Loop() {
    std::vector<pollfd> fds;
    for (;;) {
      const auto now = Clock::now();
      // Connections past their time are closed.
      std::erase_if(conns_, [&](const Connection& c) {
        if (now < c.deadline) return false;
        close(c.fd);
        return true;
      });
      fds.clear();
      fds.push_back({fd_, POLLIN, 0});
      fds.push_back({stop_[0], POLLIN, 0});
      int timeout_ms = -1;
      for (const Connection& c : conns_) {
        fds.push_back({c.fd, static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now).count() + 1;
        timeout_ms = timeout_ms < 0 ? static_cast<int>(left) : std::min(timeout_ms, static_cast<int>(left));
      }
      if (poll(fds.data(), fds.size(), timeout_ms) < 0) {  // a negative fd (no stop pipe) is skipped
        if (errno == EINTR) continue;
        return;
      }
      if (stop_[0] >= 0 && fds[1].revents != 0) return;
      // Existing connections first (fds[2..] line up with conns_ as they were at poll time).
      std::vector<bool> done(conns_.size(), false);
      for (size_t i = 0; i < conns_.size(); ++i)
        if (fds[i + 2].revents != 0) done[i] = !Advance(conns_[i]);
      for (size_t i = conns_.size(); i-- > 0;)
        if (done[i]) {
          close(conns_[i].fd);
          conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
        }
      if (fds[0].revents != 0) {
        for (;;) {
          const int c = accept(fd_, nullptr, nullptr);
          if (c < 0) break;
          SetNonBlocking(c);
          if (conns_.size() >= kMaxConnections) {  // the oldest goes
            close(conns_.front().fd);
            conns_.erase(conns_.begin());
          }
          conns_.push_back({c, Clock::now() + kConnectionTime, {}, {}, 0, false});
        }
      }
    }
  }

  // Reads or writes what the socket takes now. False: the connection is finished (or broken).
  bool Advance(Connection& c) {
    if (!c.answering) {
      char buf[2048];
      for (;;) {
        const ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
        if (n == 0) return false;
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
          if (errno == EINTR) continue;
          return false;
        }
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= kMaxRequestBytes) break;
      }
      c.out = Answer(c.in);
      c.in.clear();
      c.answering = true;
    }
    while (c.sent < c.out.size()) {
      const ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      c.sent += static_cast<size_t>(n);
    }
    return false;  // answered: Connection: close
  }

  std::string Answer(const std::string& req) {
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (req.rfind("GET /metrics ", 0) == 0 || req.rfind("GET /metrics?", 0) == 0) {
      body = body_();
    } else if (req.rfind("GET ", 0) == 0) {
      status = "404 Not Found";
      type = "text/plain";
      body = "glad serves its metrics at /metrics\n";
    } else {
      status = "405 Method Not Allowed";
      type = "text/plain";
      body = "GET /metrics\n";
    }
    return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type, "\r\nContent-Length: ", body.size(),
                        "\r\nConnection: close\r\n\r\n", body);
  }

  int fd_;
  int stop_[2] = {-1, -1};
  std::function<std::string()> body_;
  std::vector<Connection> conns_;
  std::thread thread_;
};

// The scrape-time gauges.
class ServerMetrics::Gauges : public prometheus::Collectable {
 public:
  explicit Gauges(std::function<ServerSnapshot()> snapshot) : snapshot_(std::move(snapshot)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    const ServerSnapshot s = snapshot_();
    std::vector<prometheus::MetricFamily> out;
    out.push_back(GaugeFamily("gla_queue_depth", "Requests waiting for a state slot."));
    Add(out.back(), s.queued);
    out.push_back(GaugeFamily("gla_running_sequences", "Sequences in the running batch (prefilling or decoding)."));
    Add(out.back(), s.running);
    out.push_back(GaugeFamily("gla_state_slots", "Per-sequence state slots of the state pool."));
    Add(out.back(), s.slots_in_use, {{"state", "used"}});
    Add(out.back(), s.slots, {{"state", "total"}});
    out.push_back(CounterFamily("gla_engine_steps_total", "Engine steps run (one batched forward each)."));
    Add(out.back(), static_cast<double>(s.steps));
    if (s.has_device_memory) {
      out.push_back(GaugeFamily("gla_device_memory_bytes", "GPU memory of the serving device."));
      Add(out.back(), static_cast<double>(s.device_memory_used), {{"kind", "used"}});
      Add(out.back(), static_cast<double>(s.device_memory_total), {{"kind", "total"}});
    }
    out.push_back(GaugeFamily("gla_finetune_jobs", "Fine-tune jobs the server remembers, by state."));
    for (const auto& [state, n] : s.finetune_jobs) Add(out.back(), n, {{"state", state}});
    out.push_back(GaugeFamily("gla_finetune_tokens_per_second", "Training tokens/s of the running fine-tune job."));
    Add(out.back(), s.finetune_tokens_per_second);
    out.push_back(GaugeFamily("gla_sessions", "Sessions, by where their state is (empty: no turn yet)."));
    Add(out.back(), s.sessions.in_slots, {{"location", "slot"}});
    Add(out.back(), s.sessions.in_host, {{"location", "host"}});
    Add(out.back(), s.sessions.on_disk, {{"location", "disk"}});
    Add(out.back(), s.sessions.sessions - s.sessions.in_slots - s.sessions.in_host - s.sessions.on_disk,
             {{"location", "empty"}});
    out.push_back(GaugeFamily("gla_session_host_bytes", "Host memory held by idle session states."));
    Add(out.back(), static_cast<double>(s.sessions.host_bytes));
    out.push_back(CounterFamily("gla_session_events_total",
                                "Session states swapped out of slots, written to disk, dropped over budget, expired; "
                                "turns run away from a busy home engine (--devices with --state_store)."));
    Add(out.back(), static_cast<double>(s.sessions.swapped_out), {{"event", "swapped_out"}});
    Add(out.back(), static_cast<double>(s.sessions.written), {{"event", "written"}});
    Add(out.back(), static_cast<double>(s.sessions.dropped), {{"event", "dropped"}});
    Add(out.back(), static_cast<double>(s.sessions.expired), {{"event", "expired"}});
    Add(out.back(), static_cast<double>(s.sessions.turns_off_home), {{"event", "off_home"}});
    out.push_back(CounterFamily("gla_state_store_events_total",
                                "The shared state tier (--state_store): session states read from the store, "
                                "written to it, local copies let go, store calls that failed."));
    Add(out.back(), static_cast<double>(s.sessions.store_reads), {{"event", "read"}});
    Add(out.back(), static_cast<double>(s.sessions.store_writes), {{"event", "written"}});
    Add(out.back(), static_cast<double>(s.sessions.store_released), {{"event", "released"}});
    Add(out.back(), static_cast<double>(s.sessions.store_errors), {{"event", "error"}});
    out.push_back(CounterFamily("gla_state_store_seconds_total",
                                "With --state_store: seconds spent reading session states from the store (before a "
                                "resumed turn's first step) and writing them (before a turn's last message)."));
    Add(out.back(), s.sessions.store_read_s, {{"op", "read"}});
    Add(out.back(), s.sessions.store_write_s, {{"op", "write"}});
    out.push_back(CounterFamily("gla_prefix_cache_lookups_total", "Prefix-state cache lookups, by result."));
    Add(out.back(), static_cast<double>(s.prefix_cache.hits), {{"result", "hit"}});
    Add(out.back(), static_cast<double>(s.prefix_cache.misses), {{"result", "miss"}});
    out.push_back(CounterFamily("gla_prefix_cache_store_lookups_total",
                                "With --state_store: lookups that missed this replica's prefix cache, by what the "
                                "shared store answered (error: it did not; a miss)."));
    Add(out.back(), static_cast<double>(s.prefix_cache.store_hits), {{"result", "hit"}});
    Add(out.back(), static_cast<double>(s.prefix_cache.store_misses), {{"result", "miss"}});
    Add(out.back(), static_cast<double>(s.prefix_cache.store_errors), {{"result", "error"}});
    out.push_back(CounterFamily("gla_prefix_cache_store_writes_total", "With --state_store: prefix states written to the shared store."));
    Add(out.back(), static_cast<double>(s.prefix_cache.store_writes));
    out.push_back(CounterFamily("gla_prefix_cache_peer_lookups_total",
                                "With --devices: lookups that missed their engine's prefix cache, by what the "
                                "other engines' shared states held."));
    Add(out.back(), static_cast<double>(s.prefix_cache.peer_hits), {{"result", "hit"}});
    Add(out.back(), static_cast<double>(s.prefix_cache.peer_misses), {{"result", "miss"}});
    out.push_back(CounterFamily("gla_prefix_cache_peer_publishes_total",
                                "With --devices: prefix states an engine shared with the others."));
    Add(out.back(), static_cast<double>(s.prefix_cache.peer_publishes));
    out.push_back(CounterFamily("gla_prefix_cache_saved_tokens_total", "Prompt tokens not prefilled thanks to cache hits."));
    Add(out.back(), static_cast<double>(s.prefix_cache.saved_tokens));
    out.push_back(GaugeFamily("gla_prefix_cache_entries", "Prefix states cached."));
    Add(out.back(), s.prefix_cache.entries);
    out.push_back(GaugeFamily("gla_prefix_cache_bytes", "Host memory of the cached prefix states."));
    Add(out.back(), static_cast<double>(s.prefix_cache.bytes));
    out.push_back(CounterFamily("gla_preemptions_total",
                                "Running sequences swapped to host memory for a higher-priority request."));
    Add(out.back(), static_cast<double>(s.preemptions));
    return out;
  }

 private:
  std::function<ServerSnapshot()> snapshot_;
};

ServerMetrics::ServerMetrics(std::function<ServerSnapshot()> snapshot)
    : registry_(std::make_shared<prometheus::Registry>()), gauges_(std::make_shared<Gauges>(std::move(snapshot))) {
  requests_ = &prometheus::BuildCounter()
                   .Name("gla_requests_total")
                   .Help("Generation requests that ended, by method and gRPC status code.")
                   .Register(*registry_);
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("gla_prompt_tokens_total")
                        .Help("Prompt tokens of the generation requests that ran.")
                        .Register(*registry_)
                        .Add({});
  generated_tokens_ = &prometheus::BuildCounter()
                           .Name("gla_generated_tokens_total")
                           .Help("Tokens generated.")
                           .Register(*registry_)
                           .Add({});
  ttft_ = &prometheus::BuildHistogram()
               .Name("gla_time_to_first_token_seconds")
               .Help("From a request's arrival to its first generated token.")
               .Register(*registry_)
               .Add({}, LatencyBuckets());
  itl_ = &prometheus::BuildHistogram()
              .Name("gla_inter_token_latency_seconds")
              .Help("Between two generated tokens of one sequence.")
              .Register(*registry_)
              .Add({}, LatencyBuckets());
  duration_ = &prometheus::BuildHistogram()
                   .Name("gla_request_duration_seconds")
                   .Help("From a generation request's arrival to its last token.")
                   .Register(*registry_)
                   .Add({}, LatencyBuckets());
}

ServerMetrics::~ServerMetrics() = default;  // stops the HTTP thread first (http_ is declared last)

absl::StatusOr<int> ServerMetrics::Serve(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("--metrics_listen ", listen, ": not HOST:PORT"));
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = listen.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (const int e = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); e != 0)
    return absl::InvalidArgumentError(absl::StrCat("--metrics_listen ", listen, ": ", gai_strerror(e)));
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // The kernel's largest accept queue, not a small one: with 16, a burst of connections arriving
    // while the loop was busy overflowed it, and the kernel dropped the next handshake, which the
    // client retried a second later (CI: a scrape behind 50 idle connections took 1.03 s).
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      why = std::strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("--metrics_listen ", listen, ": cannot listen (", why, ")"));
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                     : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  http_ = std::make_unique<HttpEndpoint>(fd, [this] { return Text(); });
  return bound_port;
}

void ServerMetrics::RequestEnded(const char* method, const std::string& code, int prompt_tokens, int generated_tokens,
                                 double ttft_s, double total_s) {
  requests_->Add({{"method", method}, {"code", code}}).Increment();
  if (prompt_tokens > 0) prompt_tokens_->Increment(prompt_tokens);
  if (generated_tokens > 0) {
    generated_tokens_->Increment(generated_tokens);
    ttft_->Observe(ttft_s);
  }
  if (total_s > 0) duration_->Observe(total_s);
}

void ServerMetrics::TokenInterval(double seconds) { itl_->Observe(seconds); }

std::string ServerMetrics::Text() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : gauges_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace gla
