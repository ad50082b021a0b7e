// glad's flags and the checks on them. The flags are defined in this file, and only here:
// `glad --help` lists the flags of this file (see ReadFlags), and GLAD_<FLAG> environment
// variables set them.
#include "server/options.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/backend.h"
#include "models/status_macros.h"
#include "server/credentials.h"

ABSL_FLAG(std::string, model, GLA_DEFAULT_MODEL_DIR,
          "model directory (config.json, model.safetensors[.index.json], tokenizer.model); the default is the "
          "Brown Corpus model that ships with glad (models/gla-brown)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "address to listen on; port 0 picks a free port");
ABSL_FLAG(std::string, backend, "auto", "cuda, cpu, or auto (cuda when this build has CUDA and a GPU is usable)");
ABSL_FLAG(int32_t, device, 0, "CUDA device index (cuda backend)");
ABSL_FLAG(std::string, devices, "",
          "one engine per device behind this server, e.g. 0,1,2,3 (cuda backend: GPU indices; cpu backend: that many "
          "engines sharing the cores). A session lives on the engine its id hashes to; other requests go to the least "
          "loaded. Exclusive with --device; fine-tuning uses the first");
ABSL_FLAG(std::string, weights, "native",
          "how the projections' weights are kept: native (fp32 on the cpu backend, bf16 on cuda), int8 (weight-only, "
          "one scale per output row, quantized at load) or fp8 (E4M3, one scale per output row, rounded at load; on "
          "cuda, FP8 rows on Hopper's FP8 tensor cores; the cpu backend computes in fp32 on those values; "
          "docs/quantization.md)");
ABSL_FLAG(std::string, state_dtype, "f32",
          "how the state pool keeps each sequence's recurrent state: f32, or bf16 (half the memory, so --state_memory_mb "
          "holds twice the sequences; updated in fp32 and rounded at each step's end; sessions, the state store and "
          "the prefix cache keep the same; both backends; docs/quantization.md)");
ABSL_FLAG(bool, cuda_graphs, true, "replay decode steps as CUDA graphs captured per batch-size bucket (cuda backend)");
ABSL_FLAG(bool, chunked_prefill, true,
          "prefill with the tensor-core chunkwise GLA kernel where the head shape allows it (dk 64/128/256); "
          "false: the fused-recurrent kernel (cuda backend)");
ABSL_FLAG(bool, persistent_decode, true,
          "batch-1 decode steps as one persistent kernel for the whole model where the GPU (Hopper on) and the "
          "model's shapes allow it; false: a kernel per operation (cuda backend)");
ABSL_FLAG(int32_t, persistent_decode_max_batch, 4,
          "with --persistent_decode: decode steps of 2 up to this many sequences (at most 8) through the batched "
          "persistent kernel (tensor-core projections) instead of a CUDA graph of per-operation kernels; 1: batch 1 "
          "only (cuda backend)");
ABSL_FLAG(bool, gemm_tuning, true,
          "bf16 weights: time cuBLASLt's algorithms for each projection and step size on the model's own matrices "
          "and keep the fastest (every decode batch size up to --slots and power-of-two step size, at startup: "
          "before listening); false: cuBLAS's default algorithm. Choices made by timing can differ between two processes, and "
          "with them the last bits of the results: false makes a restarted server's results equal to the bit "
          "(cuda backend)");
ABSL_FLAG(std::string, gemm_tuning_cache, "",
          "with --gemm_tuning: keep the GEMM algorithm choices in this file across restarts (created if missing; "
          "its folder must exist; a symlink is followed and its target written): a restarted server runs the algorithms the first run timed, so its results equal "
          "that run's to the bit and its startup does not pause to tune; records are filed per GPU model and "
          "cuBLASLt version; a file that is not such a cache is a startup error (cuda backend, bf16 weights: refused "
          "with --backend cpu; said in the log and left alone where --backend auto finds no GPU or --weights is "
          "fp8 or int8)");
ABSL_FLAG(int32_t, slots, 16, "state slots = sequences served at once (ignored when --state_memory_mb is set)");
ABSL_FLAG(int32_t, state_memory_mb, 0,
          "size the state pool from a memory budget (MiB; GPU memory for the cuda backend) instead of --slots");
ABSL_FLAG(int32_t, queue_size, 256, "requests that may wait for a slot; more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, step_token_budget, 512, "tokens per engine step (decodes first, then prefill chunks)");
ABSL_FLAG(int32_t, threads, 0, "CPU backend BLAS threads (0 = one per core)");
ABSL_FLAG(int32_t, max_prompt_tokens, 8192, "longest prompt accepted");
ABSL_FLAG(int32_t, max_new_tokens, 1024, "most tokens one request may generate (and the default)");
ABSL_FLAG(int32_t, max_n, 16,
          "most generations one request may ask for (n; one prefill, then a state copy each), 1-128");
ABSL_FLAG(double, shutdown_grace_s, 10.0, "on SIGTERM, how long in-flight requests may run before they are cancelled");
// Fine-tuning (gla.v1.FineTune).
ABSL_FLAG(std::string, adapter_dir, "",
          "where fine-tune jobs write their LoRA adapters (<dir>/<name>/; created if missing); unset: "
          "CreateFineTuneJob is FAILED_PRECONDITION (trained adapters are not dropped into a temp dir)");
ABSL_FLAG(std::string, finetune_data_dir, "",
          "directory a CreateFineTuneJob data_file is read from (paths relative to it, never outside); "
          "unset: no data_file is accepted");
ABSL_FLAG(double, finetune_share, 0.25,
          "the most of the busy time fine-tune steps take while there are requests to serve, in [0, 1); "
          "jobs run back to back while serving is idle");
ABSL_FLAG(int64_t, finetune_max_tokens, 1000000, "most training tokens one fine-tune job may be given");
ABSL_FLAG(std::string, finetune_device, "auto",
          "where fine-tune jobs train: cuda (the serving GPU), cpu, or auto (cuda when the backend is cuda and the "
          "GPU training kernels take the model's head sizes, else cpu)");
ABSL_FLAG(int32_t, finetune_max_queued, 8, "fine-tune jobs that may wait to start; more are RESOURCE_EXHAUSTED");
// Prometheus metrics (server/metrics.h).
ABSL_FLAG(std::string, log_format, "text",
          "text: readable lines on stderr; json: one JSON object per line (ts, level, event, msg, fields)");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT of the Prometheus endpoint (GET /metrics; port 0 picks a free port); unset: no metrics");
// The OpenAI HTTP API (server/http/, docs/api.md).
ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT of the OpenAI-compatible HTTP API (/v1/completions, /v1/models, /health; port 0 picks a free "
          "port; HTTPS with --tls_cert); unset: gRPC only");
ABSL_FLAG(int32_t, http_max_body_mb, 8,
          "largest HTTP request body (MiB); larger: 413 before it is read (a JSON body takes several times its "
          "size once parsed, so this stays well below --max_message_mb)");
ABSL_FLAG(int32_t, http_threads, 2, "threads serving HTTP connections (asynchronous: a few hold thousands of streams)");
ABSL_FLAG(std::string, chat_template, "",
          "a Jinja chat template file for /v1/chat/completions (wins over the checkpoint's tokenizer_config.json; "
          "with neither, a plain \"role: content\" default)");
ABSL_FLAG(std::string, served_model_name, "",
          "the base model's id in the HTTP API's /v1/models and \"model\" field; unset: the --model directory's name");
// Security and limits (server/request_guard.h).
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve TLS (with --tls_key) on --listen and --http_listen; unset: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: also require and verify client certificates (mutual TLS; needs --tls_cert)");
ABSL_FLAG(std::string, auth_token, "",
          "bearer token every RPC must carry (metadata 'authorization: Bearer <token>'; gRPC health stays open "
          "for probes, server reflection is off); set it through GLAD_AUTH_TOKEN or --auth_token_file rather "
          "than on a command line others can read");
ABSL_FLAG(std::string, auth_token_file, "", "file whose first line is the bearer token (a mounted secret)");
ABSL_FLAG(int32_t, max_message_mb, 64, "largest request message accepted (MiB): fine-tune data travels in requests");
ABSL_FLAG(double, rate_limit, 0.0, "requests per second one client address may make (0: no limit)");
ABSL_FLAG(double, rate_limit_burst, 0.0, "requests one client may make at once (0: max(1, --rate_limit))");
ABSL_FLAG(std::string, session_dir, "",
          "directory for session states at rest: idle sessions past --session_memory_mb go there, and every "
          "session is written there on shutdown and read back at start-up (unset: sessions live in memory only)");
ABSL_FLAG(std::string, session_durability, "always",
          "with --session_dir, when session states reach the disk: always (every completed turn is written and "
          "fsync'ed before its last message is sent: kill -9 loses no turn a client saw complete), interval "
          "(changed sessions every --session_sync_interval_s), shutdown (at shutdown and past the host budget only)");
ABSL_FLAG(double, session_sync_interval_s, 1.0, "--session_durability interval: seconds between writes (at most this much lost)");
ABSL_FLAG(int32_t, session_memory_mb, 2048,
          "host memory for idle session states (past it, the least recently used go to --session_dir, or are deleted)");
ABSL_FLAG(int64_t, session_ttl_s, 3600, "idle seconds after which a session is deleted (0 = never); CreateSession may set its own");
ABSL_FLAG(std::string, state_store, "",
          "redis://HOST[:PORT][/DB]: the shared state tier. Every replica given the same store sees the same "
          "sessions (any replica continues any session; each completed turn is written there before its last "
          "message is sent). Exclusive with --session_dir. Unset: sessions are this server's own");
ABSL_FLAG(double, state_lease_s, 30.0,
          "--state_store: how long a replica's claim on a session outlives it (a turn renews it every third of "
          "this; a replica that dies frees its sessions after it)");
ABSL_FLAG(double, state_store_timeout_s, 2.0,
          "--state_store: longest wait for one store call (a session state is tens of MiB at 1.3B)");
ABSL_FLAG(int32_t, max_sessions, 1024, "sessions the server holds at once; more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, prefix_cache_mb, 1024,
          "host memory for the prefix-state cache: states after frequently used prompt prefixes (0 = off)");
ABSL_FLAG(int32_t, prefix_cache_block, 64, "prompt prefixes are cached at multiples of this many tokens");
ABSL_FLAG(bool, preemption, true,
          "when no slot is free, swap a lower-priority running sequence to host memory for a higher-priority request "
          "(it resumes exactly where it stopped)");
ABSL_FLAG(int32_t, preempt_after_ms, 0,
          "with --preemption: a request that has waited this long for a slot also swaps out the longest-running "
          "sequence of no higher priority that has run this long (time slicing; 0 = only for priority)");
ABSL_FLAG(int32_t, mask_threads, 3,
          "structured output: threads that make the token masks while the device runs each step (the scheduler's "
          "thread helps; 0 = that thread alone)");
// Parsed by TakeAdapterFlags below (absl flags keep only the last of a repeated flag); declared so
// that --help lists it.
ABSL_FLAG(std::string, adapter, "",
          "NAME=DIR: load the PEFT LoRA adapter in DIR at start-up under NAME (repeatable)");

namespace gla {
namespace {

// Abseil's --help lists the flags of a file named after the program (glad.cc, main.cc); glad's
// are in this one. --helpfull adds Abseil's own.
bool IsGladFlagFile(absl::string_view file) { return absl::EndsWith(file, "server/options.cc"); }

// --devices "0,1,3": distinct device indices, at most 64; empty: the one --device names.
absl::StatusOr<std::vector<int>> ParseDevices(const std::string& list, int device) {
  if (list.empty()) return std::vector<int>{device};
  if (device != 0) return absl::InvalidArgumentError("--device and --devices: give one of them");
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    // (Checked as it grows: a list of millions is refused at its 65th entry, not searched through.)
    if (out.size() == 64) return absl::InvalidArgumentError(absl::StrCat("--devices: more than 64 devices"));
    int d = -1;
    if (!absl::SimpleAtoi(part, &d) || d < 0 || d > 1023)
      return absl::InvalidArgumentError(absl::StrCat("--devices '", list, "': '", part, "' is not a device index"));
    if (std::find(out.begin(), out.end(), d) != out.end())
      return absl::InvalidArgumentError(absl::StrCat("--devices '", list, "': device ", d, " twice"));
    out.push_back(d);
  }
  return out;
}

// Removes every --adapter NAME=DIR (or --adapter=NAME=DIR) from argv and returns the values:
// absl flags keep only the last occurrence of a flag, and this one is repeatable.
std::vector<std::string> TakeAdapterFlags(int* argc, char** argv) {
  std::vector<std::string> values;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--") == 0) {  // the rest are not flags
      while (i < *argc) argv[out++] = argv[i++];
      break;
    }
    if (std::strcmp(a, "--adapter") == 0 || std::strcmp(a, "-adapter") == 0) {
      values.emplace_back(i + 1 < *argc ? argv[++i] : "");
    } else if (std::strncmp(a, "--adapter=", 10) == 0) {
      values.emplace_back(a + 10);
    } else if (std::strncmp(a, "-adapter=", 9) == 0) {
      values.emplace_back(a + 9);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  return values;
}

// Every glad flag may also come from the environment as GLAD_<NAME> (GLAD_LISTEN, GLAD_AUTH_TOKEN,
// ...): containers are configured that way. Read before the command line, which wins.
absl::Status FlagsFromEnvironment() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsGladFlagFile(flag->Filename())) continue;  // Abseil's own flags stay out
    const std::string var = "GLAD_" + absl::AsciiStrToUpper(name);
    const char* value = std::getenv(var.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) return absl::InvalidArgumentError(absl::StrCat(var, ": ", error));
  }
  return absl::OkStatus();
}

// Abseil's part: the environment, then the command line. Returns the --adapter values, which
// Abseil would have reduced to the last one.
absl::StatusOr<std::vector<std::string>> ReadFlags(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "GLA inference server. glad [--model DIR] [--listen HOST:PORT] ...; every flag may also be set through the "
      "environment as GLAD_<FLAG> (GLAD_LISTEN=..., GLAD_AUTH_TOKEN=...), the command line winning");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = usage.contains_helpshort_flags = IsGladFlagFile;
  absl::SetFlagsUsageConfig(usage);
  std::vector<std::string> adapters = TakeAdapterFlags(&argc, argv);
  RETURN_IF_ERROR(FlagsFromEnvironment());
  absl::ParseCommandLine(argc, argv);
  return adapters;
}

// The log format takes effect at once: the errors after it are written in the format asked for.
absl::Status LogsFromFlags(ServerOptions& o) {
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (const std::string f = absl::GetFlag(FLAGS_log_format); f == "json") {
    o.log_format = LogFormat::kJson;
    SetLogFormat(LogFormat::kJson);
  } else if (f != "text") {
    return absl::InvalidArgumentError(absl::StrCat("--log_format must be text or json, not '", f, "'"));
  }
  return absl::OkStatus();
}

// The model, the backend (auto resolved) and the sizes of the serving engine.
absl::Status ServingFromFlags(ServerOptions& o) {
  o.model = absl::GetFlag(FLAGS_model);
  if (o.model.empty()) return absl::InvalidArgumentError("--model is empty: name a model directory");
  o.backend = absl::GetFlag(FLAGS_backend);
  if (o.backend != "auto" && o.backend != "cuda" && o.backend != "cpu")
    return absl::InvalidArgumentError(absl::StrCat("--backend ", o.backend, " is not one of auto, cuda, cpu"));
  if (o.backend == "auto") {
    std::string why;
    o.backend = CudaBackendAvailable(&why) ? "cuda" : "cpu";
    if (o.backend == "cpu")
      LogEvent(LogLevel::kInfo, "backend", absl::StrCat("glad: --backend auto: cpu (", why, ")"), {{"why", why}});
  }
  // Flag names use underscores.
  for (auto [name, v] : {std::pair{"queue_size", absl::GetFlag(FLAGS_queue_size)},
                         std::pair{"step_token_budget", absl::GetFlag(FLAGS_step_token_budget)},
                         std::pair{"max_prompt_tokens", absl::GetFlag(FLAGS_max_prompt_tokens)},
                         std::pair{"max_new_tokens", absl::GetFlag(FLAGS_max_new_tokens)}})
    if (v < 1) return absl::InvalidArgumentError(absl::StrCat("--", name, " must be at least 1"));
  o.slots = absl::GetFlag(FLAGS_slots);
  if (o.slots < 1) return absl::InvalidArgumentError("--slots must be at least 1");
  o.state_memory_mb = absl::GetFlag(FLAGS_state_memory_mb);
  if (o.state_memory_mb < 0) return absl::InvalidArgumentError("--state_memory_mb must not be negative");
  o.listen = absl::GetFlag(FLAGS_listen);
  o.device = absl::GetFlag(FLAGS_device);
  ASSIGN_OR_RETURN(o.devices, ParseDevices(absl::GetFlag(FLAGS_devices), o.device));
  o.device = o.devices.front();
  ASSIGN_OR_RETURN(o.weights, ParseWeightFormat(absl::GetFlag(FLAGS_weights)));
  const std::string state_dtype = absl::GetFlag(FLAGS_state_dtype);
  const std::optional<StateDType> parsed_state_dtype = ParseStateDType(state_dtype);
  if (!parsed_state_dtype)
    return absl::InvalidArgumentError(absl::StrCat("--state_dtype '", state_dtype, "': expected f32 or bf16"));
  o.state_dtype = *parsed_state_dtype;
  o.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  o.chunked_prefill = absl::GetFlag(FLAGS_chunked_prefill);
  o.persistent_decode = absl::GetFlag(FLAGS_persistent_decode);
  o.persistent_decode_max_batch = absl::GetFlag(FLAGS_persistent_decode_max_batch);
  if (o.persistent_decode_max_batch < 1 || o.persistent_decode_max_batch > 8)
    return absl::InvalidArgumentError(absl::StrCat("--persistent_decode_max_batch ", o.persistent_decode_max_batch,
                                                   ": expected 1 to 8"));
  o.gemm_tuning = absl::GetFlag(FLAGS_gemm_tuning);
  o.gemm_tuning_cache = absl::GetFlag(FLAGS_gemm_tuning_cache);
  if (!o.gemm_tuning && !o.gemm_tuning_cache.empty())
    return absl::InvalidArgumentError("--gemm_tuning_cache keeps --gemm_tuning's choices: it needs --gemm_tuning");
  // The CPU backend times no GEMMs: a cache named with --backend cpu is a mistake said at once; one
  // named in a configuration shared with GPU hosts, on a host where --backend auto found no GPU, is
  // said in the log and left alone (not created).
  if (o.backend == "cpu" && !o.gemm_tuning_cache.empty()) {
    if (absl::GetFlag(FLAGS_backend) == "cpu")
      return absl::InvalidArgumentError("--gemm_tuning_cache applies to --backend cuda: the CPU backend tunes no GEMMs");
    LogEvent(LogLevel::kWarning, "backend",
             absl::StrCat("glad: --gemm_tuning_cache ", o.gemm_tuning_cache, " ignored: --backend auto chose cpu"),
             {{"gemm_tuning_cache", o.gemm_tuning_cache}});
  }
  // One-byte weights run no bf16 projection GEMMs: nothing to tune or keep (said, not refused: the
  // same configuration may serve bf16 weights elsewhere).
  if (o.backend == "cuda" && o.weights != WeightFormat::kNative && !o.gemm_tuning_cache.empty())
    LogEvent(LogLevel::kWarning, "backend",
             absl::StrCat("glad: --gemm_tuning_cache ", o.gemm_tuning_cache, " ignored: --weights ",
                          WeightFormatName(o.weights), " runs no bf16 projection GEMMs"),
             {{"gemm_tuning_cache", o.gemm_tuning_cache}});
  o.threads = absl::GetFlag(FLAGS_threads);
  o.scheduler.queue_size = absl::GetFlag(FLAGS_queue_size);
  o.scheduler.step_token_budget = absl::GetFlag(FLAGS_step_token_budget);
  o.limits.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  o.limits.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  o.limits.max_n = absl::GetFlag(FLAGS_max_n);
  // Each generation of a group takes a sampler row in the step that ends its prompt (the CUDA
  // backend keeps 256 beyond the decode rows).
  if (o.limits.max_n < 1 || o.limits.max_n > 128) return absl::InvalidArgumentError("--max_n must be in [1, 128]");
  o.shutdown_grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  return absl::OkStatus();
}

absl::Status HttpFromFlags(ServerOptions& o) {
  o.http_listen = absl::GetFlag(FLAGS_http_listen);
  if (!o.http_listen.empty()) {
    const size_t colon = o.http_listen.rfind(':');
    int port = -1;
    if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(o.http_listen.substr(colon + 1), &port) ||
        port < 0 || port > 65535)
      return absl::InvalidArgumentError(absl::StrCat("--http_listen '", o.http_listen, "': want HOST:PORT"));
  }
  const int body_mb = absl::GetFlag(FLAGS_http_max_body_mb);
  if (body_mb < 1 || body_mb > 1024) return absl::InvalidArgumentError("--http_max_body_mb must be in [1, 1024]");
  o.http_max_body_bytes = static_cast<size_t>(body_mb) << 20;
  o.http_threads = absl::GetFlag(FLAGS_http_threads);
  if (o.http_threads < 1 || o.http_threads > 256) return absl::InvalidArgumentError("--http_threads must be in [1, 256]");
  o.chat_template = absl::GetFlag(FLAGS_chat_template);
  o.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (o.served_model_name.empty()) {
    std::filesystem::path dir(o.model);
    o.served_model_name = (dir.has_filename() ? dir : dir.parent_path()).filename().string();
    if (o.served_model_name.empty()) o.served_model_name = "gla";
  }
  return absl::OkStatus();
}

absl::Status FineTuneLimitsFromFlags(ServerOptions& o) {
  o.finetune_share = absl::GetFlag(FLAGS_finetune_share);
  if (!(o.finetune_share >= 0.0 && o.finetune_share < 1.0))
    return absl::InvalidArgumentError("--finetune_share must be in [0, 1)");
  o.finetune_max_tokens = absl::GetFlag(FLAGS_finetune_max_tokens);
  if (o.finetune_max_tokens < 2) return absl::InvalidArgumentError("--finetune_max_tokens must be at least 2");
  o.finetune_max_queued = absl::GetFlag(FLAGS_finetune_max_queued);
  if (o.finetune_max_queued < 1) return absl::InvalidArgumentError("--finetune_max_queued must be at least 1");
  return absl::OkStatus();
}

// Message size, rate limit, TLS and token: the TLS and token files are read and checked now.
absl::Status SecurityFromFlags(ServerOptions& o) {
  const int max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  if (max_message_mb < 1 || max_message_mb > 2047)
    return absl::InvalidArgumentError("--max_message_mb must be in [1, 2047]");
  o.max_message_bytes = max_message_mb * 1048576;
  o.guard.rate_per_s = absl::GetFlag(FLAGS_rate_limit);
  o.guard.burst = absl::GetFlag(FLAGS_rate_limit_burst);
  if (!(o.guard.rate_per_s >= 0.0) || !(o.guard.burst >= 0.0))
    return absl::InvalidArgumentError("--rate_limit and --rate_limit_burst must not be negative");
  const TlsFiles files{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_client_ca)};
  ASSIGN_OR_RETURN(o.tls, LoadTlsPems(files));
  o.credentials = GrpcServerCredentials(o.tls);
  ASSIGN_OR_RETURN(o.guard.token, LoadAuthToken(absl::GetFlag(FLAGS_auth_token), absl::GetFlag(FLAGS_auth_token_file)));
  return absl::OkStatus();
}

// `what` ("--session_dir") exists as a directory afterwards, or the error says why not.
absl::Status CreateDirectory(const std::string& dir, const char* what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    return absl::InvalidArgumentError(absl::StrCat(what, " ", dir, ": cannot create it (", ec.message(), ")"));
  return absl::OkStatus();
}

absl::Status FineTuneDirsFromFlags(ServerOptions& o) {
  o.finetune_data_dir = absl::GetFlag(FLAGS_finetune_data_dir);
  if (!o.finetune_data_dir.empty() && !std::filesystem::is_directory(o.finetune_data_dir))
    return absl::InvalidArgumentError(
        absl::StrCat("--finetune_data_dir ", o.finetune_data_dir, " is not a directory"));
  o.adapter_dir = absl::GetFlag(FLAGS_adapter_dir);
  if (!o.adapter_dir.empty()) RETURN_IF_ERROR(CreateDirectory(o.adapter_dir, "--adapter_dir"));
  return absl::OkStatus();
}

// --state_store and its lease and timeout. The store is not reached here: glad starts without
// it (sessions say UNAVAILABLE until it answers).
absl::Status StateStoreFromFlags(SessionOptions& so) {
  const std::string url = absl::GetFlag(FLAGS_state_store);
  const double lease_s = absl::GetFlag(FLAGS_state_lease_s), timeout_s = absl::GetFlag(FLAGS_state_store_timeout_s);
  if (!(lease_s >= 1 && lease_s <= 3600)) return absl::InvalidArgumentError("--state_lease_s must be in [1, 3600]");
  if (!(timeout_s >= 0.01 && timeout_s <= 60)) return absl::InvalidArgumentError("--state_store_timeout_s must be in [0.01, 60]");
  if (url.empty()) return absl::OkStatus();
  if (!so.dir.empty())
    return absl::InvalidArgumentError("--state_store and --session_dir are exclusive: with a store, the store keeps every session");
  absl::StatusOr<RedisAddress> address = ParseRedisUrl(url);
  if (!address.ok()) return absl::InvalidArgumentError(absl::StrCat("--state_store: ", address.status().message()));
  RedisOptions ro;
  ro.command_timeout_s = timeout_s;
  ro.connect_timeout_s = std::min(timeout_s, 1.0);
  so.store = std::make_shared<RedisClient>(*address, ro);
  so.lease_ms = static_cast<int64_t>(lease_s * 1000);
  return absl::OkStatus();
}

// Sessions, the prefix cache and preemption: the scheduler's options.
absl::Status SessionsFromFlags(ServerOptions& o) {
  SchedulerOptions& so = o.scheduler;
  so.sessions.dir = absl::GetFlag(FLAGS_session_dir);
  so.sessions.host_bytes = int64_t{absl::GetFlag(FLAGS_session_memory_mb)} * 1048576;
  so.sessions.default_ttl_s = absl::GetFlag(FLAGS_session_ttl_s);
  so.sessions.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  so.prefix_cache_bytes = int64_t{absl::GetFlag(FLAGS_prefix_cache_mb)} * 1048576;
  so.prefix_cache_block = absl::GetFlag(FLAGS_prefix_cache_block);
  so.preemption = absl::GetFlag(FLAGS_preemption);
  so.preempt_after = std::chrono::milliseconds(std::max(0, absl::GetFlag(FLAGS_preempt_after_ms)));
  so.mask_threads = absl::GetFlag(FLAGS_mask_threads);
  if (so.mask_threads < 0 || so.mask_threads > 64) return absl::InvalidArgumentError("--mask_threads must be in [0, 64]");
  if (so.sessions.host_bytes < 0 || so.sessions.default_ttl_s < 0 || so.sessions.max_sessions < 0 ||
      so.prefix_cache_bytes < 0 || so.prefix_cache_block < 1)
    return absl::InvalidArgumentError(
        "--session_memory_mb, --session_ttl_s, --max_sessions and --prefix_cache_mb must be >= 0, "
        "--prefix_cache_block >= 1");
  if (const std::string d = absl::GetFlag(FLAGS_session_durability); d == "always") {
    so.sessions.durability = SessionDurability::kAlways;
  } else if (d == "interval") {
    so.sessions.durability = SessionDurability::kInterval;
  } else if (d == "shutdown") {
    so.sessions.durability = SessionDurability::kShutdown;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--session_durability must be always, interval or shutdown, not '", d, "'"));
  }
  so.sessions.sync_interval_s = absl::GetFlag(FLAGS_session_sync_interval_s);
  if (!(so.sessions.sync_interval_s > 0 && so.sessions.sync_interval_s <= 86400))
    return absl::InvalidArgumentError("--session_sync_interval_s must be in (0, 86400]");
  if (!so.sessions.dir.empty()) RETURN_IF_ERROR(CreateDirectory(so.sessions.dir, "--session_dir"));
  return StateStoreFromFlags(so.sessions);
}

// Whether the GPU can train this model is known only once the model is read (main.cc); what the
// flags alone decide is checked here.
absl::Status FineTuneDeviceFromFlag(ServerOptions& o) {
  if (const std::string where = absl::GetFlag(FLAGS_finetune_device); where == "cuda") {
    if (o.backend != "cuda") return absl::InvalidArgumentError("--finetune_device cuda needs --backend cuda");
    o.finetune_device = FineTuneDevice::kCuda;
  } else if (where == "cpu") {
    o.finetune_device = FineTuneDevice::kCpu;
  } else if (where == "auto") {
    o.finetune_device = FineTuneDevice::kAuto;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--finetune_device must be cuda, cpu or auto, not '", where, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerOptions> ParseServerOptions(int argc, char** argv) {
  ServerOptions o;
  ASSIGN_OR_RETURN(o.adapters, ReadFlags(argc, argv));
  RETURN_IF_ERROR(LogsFromFlags(o));
  RETURN_IF_ERROR(ServingFromFlags(o));
  RETURN_IF_ERROR(FineTuneLimitsFromFlags(o));
  RETURN_IF_ERROR(SecurityFromFlags(o));
  RETURN_IF_ERROR(HttpFromFlags(o));
  RETURN_IF_ERROR(FineTuneDirsFromFlags(o));
  RETURN_IF_ERROR(SessionsFromFlags(o));
  RETURN_IF_ERROR(FineTuneDeviceFromFlag(o));
  return o;
}

}  // namespace gla
