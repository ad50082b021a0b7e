// glad's Prometheus metrics, served on their own HTTP port (--metrics_listen): prometheus-cpp's core
// (a Debian package) holds the counters and histograms and writes the text format; a small HTTP
// endpoint here answers GET /metrics. Request counters and latency histograms are recorded by the services as calls
// end; the state gauges (queue, running sequences, slots, GPU memory, fine-tune jobs) are read from
// their owners when Prometheus scrapes, so serving pays nothing for them between scrapes.
//
//   gla_requests_total{method, code}                 generation requests by method and gRPC status
//   gla_prompt_tokens_total, gla_generated_tokens_total
//   gla_time_to_first_token_seconds, gla_inter_token_latency_seconds, gla_request_duration_seconds
//   gla_queue_depth, gla_running_sequences, gla_state_slots{state="used"|"total"}, gla_engine_steps_total
//   gla_device_memory_bytes{kind="used"|"total"}     (CUDA backend)
//   gla_finetune_jobs{state}, gla_finetune_tokens_per_second
//   gla_sessions{location="slot"|"host"|"disk"|"empty"}, gla_session_host_bytes,
//   gla_session_events_total{event="swapped_out"|"written"|"dropped"|"expired"},
//   gla_state_store_events_total{event="read"|"written"|"released"|"error"},
//   gla_state_store_seconds_total{op="read"|"write"},
//   gla_prefix_cache_store_lookups_total{result="hit"|"miss"|"error"}, gla_prefix_cache_store_writes_total
//   gla_prefix_cache_lookups_total{result="hit"|"miss"}, gla_prefix_cache_saved_tokens_total,
//   gla_prefix_cache_entries, gla_prefix_cache_bytes, gla_preemptions_total
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sessions/prefix_cache.h"
#include "engine/sessions/session_store.h"

namespace prometheus {
class Counter;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace gla {

// What the gauges show, read at scrape time.
struct ServerSnapshot {
  int queued = 0, running = 0, slots = 0, slots_in_use = 0;
  uint64_t steps = 0;
  bool has_device_memory = false;
  int64_t device_memory_used = 0, device_memory_total = 0;
  std::vector<std::pair<std::string, int>> finetune_jobs;  // state -> jobs in it
  double finetune_tokens_per_second = 0.0;                   // of the running job (0: none)
  SessionStats sessions;
  PrefixCacheStats prefix_cache;
  uint64_t preemptions = 0;
};

class ServerMetrics {
 public:
  // `snapshot` is called from the HTTP server's threads on every scrape.
  explicit ServerMetrics(std::function<ServerSnapshot()> snapshot);
  ~ServerMetrics();

  // Starts the HTTP endpoint (GET /metrics) on HOST:PORT (port 0: any free port); returns the port.
  absl::StatusOr<int> Serve(const std::string& listen);

  // One generation request ended (also one refused before it ran: tokens 0, no latencies).
  void RequestEnded(const char* method, const std::string& code, int prompt_tokens, int generated_tokens,
                    double ttft_s, double total_s);
  // Time between two tokens of one sequence (one sample per generated token after the first).
  void TokenInterval(double seconds);

  // The text exposition of every metric (what a scrape returns), for tests.
  std::string Text() const;

 private:
  class Gauges;
  class HttpEndpoint;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Gauges> gauges_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Counter *prompt_tokens_, *generated_tokens_;
  prometheus::Histogram *ttft_, *itl_, *duration_;
  std::unique_ptr<HttpEndpoint> http_;  // last: destroyed (its thread joined) before what it reads
};

}  // namespace gla
