// glad's configuration: every flag of glad (defined in options.cc, where `glad --help` finds
// them), read from the environment and the command line and checked, as one struct. main.cc
// builds the server from it and reads no flag itself.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "engine/scheduler.h"
#include "engine/state_storage.h"
#include "server/log.h"
#include "server/request_guard.h"
#include "server/request_validation.h"
#include "server/tls_files.h"

namespace gla {

// --finetune_device.
enum class FineTuneDevice { kAuto, kCuda, kCpu };

struct ServerOptions {
  // Serving.
  std::string model;    // --model: a model directory (not checked here: the backend reads it)
  std::string listen;   // --listen HOST:PORT
  std::string backend;  // "cuda" or "cpu": --backend auto is resolved here
  int device = 0;       // --device: the cuda backend's GPU, and GPU fine-tuning's (devices[0] with --devices)
  std::vector<int> devices;  // --devices: one engine each (engine_set.h); {device} without it
  WeightFormat weights = WeightFormat::kNative;  // --weights
  StateDType state_dtype = StateDType::kF32;      // --state_dtype
  bool cuda_graphs = true;
  bool chunked_prefill = true;
  bool persistent_decode = true;
  int persistent_decode_max_batch = 4;  // --persistent_decode_max_batch
  bool gemm_tuning = true;  // --gemm_tuning: ProjectionPaths::tuned_bf16_gemms
  std::string gemm_tuning_cache;  // --gemm_tuning_cache: CudaModelOptions::gemm_tuning_cache
  int slots = 16;
  int state_memory_mb = 0;  // > 0: the state pool is sized from this budget instead of `slots`
  int threads = 0;          // CPU backend BLAS threads
  // All but compute_gate and sessions.model_fingerprint, which need the gate and the model.
  SchedulerOptions scheduler;
  ServerLimits limits;
  double shutdown_grace_s = 10.0;

  // Fine-tuning (gla.v1.FineTune).
  std::string adapter_dir;        // exists when set (created)
  std::string finetune_data_dir;  // a directory when set
  double finetune_share = 0.25;   // in [0, 1)
  int64_t finetune_max_tokens = 1000000;
  int finetune_max_queued = 8;
  FineTuneDevice finetune_device = FineTuneDevice::kAuto;  // kCuda only with the cuda backend
  std::vector<std::string> adapters;  // --adapter NAME=DIR as given: checked once the model is loaded

  // The OpenAI HTTP API.
  std::string http_listen;  // empty: none
  int http_threads = 2;
  size_t http_max_body_bytes = size_t{8} << 20;
  std::string served_model_name;  // never empty after parsing
  std::string chat_template;      // a template file; empty: the checkpoint's, or the plain default

  // Logs and metrics.
  LogFormat log_format = LogFormat::kText;  // already in effect (SetLogFormat) when parsing returns
  std::string metrics_listen;               // empty: no metrics endpoint

  // Security and limits.
  // The --tls_* files' contents, checked; nullopt: plaintext. Both the gRPC and the HTTP port serve
  // them (mutual TLS when client_ca is set).
  std::optional<TlsPems> tls;
  std::shared_ptr<grpc::ServerCredentials> credentials;  // gRPC's, from `tls`
  GuardOptions guard;       // bearer token, per-client rate
  int max_message_bytes = 64 << 20;
};

// Reads glad's flags: GLAD_<FLAG> environment variables first, then the command line, which wins
// (Abseil prints --help and exits from here, and exits on an unknown flag). Then checks every
// flag that can be checked without the model, in a fixed order (of several bad flags, the first
// is named). Side effects, in that order: the log format takes effect as soon as it is read (the
// errors after it are written in it), --backend auto logs what it chose, --adapter_dir and
// --session_dir are created. Every error is one line naming the flag (or the GLAD_ variable):
// INVALID_ARGUMENT, or NOT_FOUND for a TLS or token file that cannot be read.
absl::StatusOr<ServerOptions> ParseServerOptions(int argc, char** argv);

}  // namespace gla
