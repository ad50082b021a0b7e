// The one way into the engine, whatever the protocol (issue 20): admission (the request guard),
// validation (GenerateCall -> GenerationSpec, the adapter by name, the request id, the deadline),
// submission to the scheduler, and what every finished request leaves behind: how its call ends,
// one log line and its metrics. The protocol adapters (gRPC: server/gla_service.cc; HTTP:
// server/http/) translate to and from these and do nothing else; nothing here knows a protocol
// type, and nothing here includes an adapter.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/adapter_registry.h"
#include "engine/constraints/constraint.h"
#include "engine/engine_set.h"
#include "engine/scheduler.h"
#include "server/generate_call.h"
#include "server/metrics.h"
#include "server/request_guard.h"
#include "server/request_validation.h"

namespace gla {

struct ServiceInfo {
  std::string model_dir;
  int queue_size = 0;
  int step_token_budget = 0;
  const AdapterRegistry* adapters = nullptr;  // GenerateCall::adapter names one of these
  RequestGuard* guard = nullptr;               // token and rate checks on every request (null: none)
  ServerMetrics* metrics = nullptr;            // request counters and latencies (null: none)
  int prefix_cache_block = 0;                  // tokens per cached prefix block (ModelInfo)
};

class FrontDoor {
 public:
  // `engines`: one per device (engine_set.h), one for a single device.
  FrontDoor(EngineSet& engines, const ServerLimits& limits, const ServiceInfo& info)
      : engines_(engines), limits_(limits), info_(info) {}

  // The guard's verdict (OK without a guard): `authorization` is the request's header or
  // metadata value (nullopt: none sent), `peer` the client's address.
  absl::Status Admit(std::optional<std::string_view> authorization, std::string_view peer) const;

  // Validates a call and completes its spec: the LoRA adapter it names (kept alive by the spec
  // until the request ends), its output constraint compiled (once per distinct text: the cache),
  // a request id when the client gave none, the deadline.
  absl::StatusOr<GenerationSpec> Prepare(const GenerateCall& call);
  // n generations of one call (Scheduler::SubmitGroup takes them as one prefill): n in
  // [1, max_n]; with a seed, generation j draws with seed + j (reproducible and apart); n > 1
  // continues no session and takes no client request id (each generation gets its own).
  absl::StatusOr<std::vector<GenerationSpec>> PrepareGroup(const GenerateCall& call, int64_t n, const char* n_field);

  EngineSet& engines() { return engines_; }
  const ServerLimits& limits() const { return limits_; }
  const ServiceInfo& info() const { return info_; }
  std::string NextRequestId() { return "req-" + std::to_string(++next_id_); }
  const constraints::ConstraintCache& constraint_cache() const { return constraints_; }
  // A constraint's text (schema, pattern, grammar) past this is refused before it is compiled.
  static constexpr size_t kMaxConstraintBytes = size_t{1} << 20;

 private:
  EngineSet& engines_;
  const ServerLimits limits_;
  const ServiceInfo info_;
  std::atomic<uint64_t> next_id_{0};
  constraints::ConstraintCache constraints_{256};
};

// How a finished generation ends its call: the generation's error if it failed; when it was
// cancelled because the client went away, DEADLINE_EXCEEDED if that was within 100 ms of the
// client's deadline (its own timer fires a few ms before ours: the soak saw -10 to +7 ms on
// loopback) and CANCELLED otherwise; OK for everything else, cancellation by server shutdown
// included (finish_reason says so).
absl::Status FinalStatus(const GenerationUpdate& u, bool client_went_away,
                         std::optional<std::chrono::system_clock::time_point> deadline);

// "OK", "INVALID_ARGUMENT", ...: the code's name, as the metrics and the log label requests.
const char* StatusCodeName(absl::StatusCode code);

// One line per finished request (LogEvent "request").
void LogRequest(const std::string& id, const GenerationUpdate& u, const absl::Status& status);

// What the metrics see of one generation request: the intervals between its tokens and how it
// ended. Without metrics (null) it does nothing. Not thread-safe: callers hold their own lock.
class RequestRecord {
 public:
  RequestRecord(ServerMetrics* metrics, const char* method) : metrics_(metrics), method_(method) {}
  void Tokens(size_t n);
  void Ended(const absl::Status& status, const GenerationUpdate* u = nullptr);

 private:
  ServerMetrics* metrics_;
  const char* method_;
  bool seen_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace gla
