// glad: the GLA inference server.
//
//   glad [--model DIR (default: models/gla-brown)] [--listen 0.0.0.0:50051] [--slots 16 | --state_memory_mb M] [--queue_size 256]
//        [--step_token_budget 512] [--threads 0] [--max_prompt_tokens 8192] [--max_new_tokens 1024]
//        [--shutdown_grace_s 10] [--backend auto|cuda|cpu] [--device 0] [--cuda_graphs]
//        [--adapter_dir DIR] [--finetune_data_dir DIR] [--finetune_share 0.25]
//        [--finetune_max_tokens 1000000] [--finetune_max_queued 8] [--finetune_device auto|cuda|cpu] [--adapter NAME=DIR ...]
//        (glad --help lists every flag)
//
// Serves gla.v1.Gla, gla.v1.FineTune, grpc.health.v1.Health and server reflection. SIGTERM/SIGINT:
// cancel fine-tune jobs, stop accepting, let in-flight requests finish for --shutdown_grace_s,
// cancel the rest, exit 0.
// Startup errors (bad model dir, port in use, bad flag) are one line on stderr and exit 1.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpc/impl/codegen/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/adapter_registry.h"
#include "engine/backend.h"
#include "engine/finetune/compute_gate.h"
#include "engine/finetune/jobs.h"
#include "engine/scheduler.h"
#include "models/file_io.h"
#include "models/fingerprint.h"
#include "models/status_macros.h"
#include "server/call_interceptor.h"
#include "server/fine_tune_service.h"
#include "server/gla_service.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/request_guard.h"
#include "server/tls_files.h"

ABSL_FLAG(std::string, model, GLA_DEFAULT_MODEL_DIR,
          "model directory (config.json, model.safetensors[.index.json], tokenizer.model); the default is the "
          "Brown Corpus model that ships with glad (models/gla-brown)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "address to listen on; port 0 picks a free port");
ABSL_FLAG(std::string, backend, "auto", "cuda, cpu, or auto (cuda when this build has CUDA and a GPU is usable)");
ABSL_FLAG(int32_t, device, 0, "CUDA device index (cuda backend)");
ABSL_FLAG(bool, cuda_graphs, true, "replay decode steps as CUDA graphs captured per batch-size bucket (cuda backend)");
ABSL_FLAG(bool, chunked_prefill, true,
          "prefill with the tensor-core chunkwise GLA kernel where the head shape allows it (dk 64/128/256); "
          "false: the fused-recurrent kernel (cuda backend)");
ABSL_FLAG(int32_t, slots, 16, "state slots = sequences served at once (ignored when --state_memory_mb is set)");
ABSL_FLAG(int32_t, state_memory_mb, 0,
          "size the state pool from a memory budget (MiB; GPU memory for the cuda backend) instead of --slots");
ABSL_FLAG(int32_t, queue_size, 256, "requests that may wait for a slot; more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, step_token_budget, 512, "tokens per engine step (decodes first, then prefill chunks)");
ABSL_FLAG(int32_t, threads, 0, "CPU backend BLAS threads (0 = one per core)");
ABSL_FLAG(int32_t, max_prompt_tokens, 8192, "longest prompt accepted");
ABSL_FLAG(int32_t, max_new_tokens, 1024, "most tokens one request may generate (and the default)");
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
// Security and limits (server/request_guard.h).
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls_key); unset: plaintext");
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
// Parsed by TakeAdapterFlags below (absl flags keep only the last of a repeated flag); declared so
// that --help lists it.
ABSL_FLAG(std::string, adapter, "",
          "NAME=DIR: load the PEFT LoRA adapter in DIR at start-up under NAME (repeatable)");

namespace gla {
namespace {

int Fail(const std::string& msg) {
  LogEvent(LogLevel::kError, "error", absl::StrCat("glad: error: ", msg), {{"error", msg}});
  return 1;
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

// --adapter NAME=DIR: each adapter read and checked against the model now, so that a bad one is a
// startup error naming it rather than a failure at its first request.
absl::Status LoadAdapterFlags(const std::vector<std::string>& flags, const GlaConfig& config,
                              AdapterRegistry& registry) {
  for (const std::string& flag : flags) {
    const size_t eq = flag.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == flag.size())
      return absl::InvalidArgumentError(absl::StrCat("--adapter '", flag, "': expected NAME=DIR"));
    const std::string name = flag.substr(0, eq), dir = flag.substr(eq + 1);
    auto adapter = LoadLoraAdapter(dir, config);
    if (!adapter.ok())
      return absl::InvalidArgumentError(absl::StrCat("--adapter ", name, ": ", adapter.status().message()));
    const AdapterInfo info = DescribeAdapter(name, dir, "flag", *adapter);
    absl::Status added = registry.Add(info, std::make_shared<const LoraAdapter>(std::move(*adapter)));
    if (!added.ok()) return absl::InvalidArgumentError(absl::StrCat("--adapter ", info.name, ": ", added.message()));
  }
  return absl::OkStatus();
}

// Every glad flag may also come from the environment as GLAD_<NAME> (GLAD_LISTEN, GLAD_AUTH_TOKEN,
// ...): containers are configured that way. Read before the command line, which wins.
absl::Status FlagsFromEnvironment() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::EndsWith(flag->Filename(), "server/main.cc")) continue;  // Abseil's own flags stay out
    const std::string var = "GLAD_" + absl::AsciiStrToUpper(name);
    const char* value = std::getenv(var.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) return absl::InvalidArgumentError(absl::StrCat(var, ": ", error));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const char* what) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read it"));
  return bytes;
}

// Plaintext, TLS, or mutual TLS, from the --tls_* flags.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFlags() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key);
  const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() != key.empty()) return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  if (cert.empty()) {
    if (!client_ca.empty()) return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions o(client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                         : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.private_key, ReadSecretFile(key, "--tls_key"));
  ASSIGN_OR_RETURN(pair.cert_chain, ReadSecretFile(cert, "--tls_cert"));
  RETURN_IF_ERROR(CheckTlsKeyPair(pair.cert_chain, cert, pair.private_key, key));
  if (!client_ca.empty()) {
    ASSIGN_OR_RETURN(o.pem_root_certs, ReadSecretFile(client_ca, "--tls_client_ca"));
    RETURN_IF_ERROR(CheckCaBundle(o.pem_root_certs, client_ca));
  }
  o.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::string> AuthTokenFromFlags() {
  std::string token = absl::GetFlag(FLAGS_auth_token);
  const std::string file = absl::GetFlag(FLAGS_auth_token_file);
  if (!file.empty()) {
    if (!token.empty()) return absl::InvalidArgumentError("--auth_token and --auth_token_file: give one");
    ASSIGN_OR_RETURN(token, ReadSecretFile(file, "--auth_token_file"));
    token = token.substr(0, token.find_first_of("\r\n"));
    // An empty secret must not turn authentication off: the operator asked for a token.
    if (token.empty())
      return absl::InvalidArgumentError(absl::StrCat("--auth_token_file ", file, ": no token on its first line"));
  }
  for (char c : token)
    if (c <= ' ' || c > '~') return absl::InvalidArgumentError("the bearer token must be printable ASCII without spaces");
  return token;
}

// Takes a server builder plugin (by name) out of a builder: gRPC's reflection plugin registers
// itself globally when its library is loaded.
class WithoutPlugin : public grpc::ServerBuilderOption {
 public:
  explicit WithoutPlugin(std::string name) : name_(std::move(name)) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [this](const auto& p) { return p->name() == name_; });
  }

 private:
  std::string name_;
};

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "GLA inference server. glad [--model DIR] [--listen HOST:PORT] ...; every flag may also be set through the "
      "environment as GLAD_<FLAG> (GLAD_LISTEN=..., GLAD_AUTH_TOKEN=...), the command line winning");
  // --help lists glad's own flags (Abseil matches flags to a file named after the program, and
  // ours live in server/main.cc); --helpfull adds Abseil's.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = usage.contains_helpshort_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  const std::vector<std::string> adapter_flags = TakeAdapterFlags(&argc, argv);
  if (absl::Status env = FlagsFromEnvironment(); !env.ok()) return Fail(std::string(env.message()));
  absl::ParseCommandLine(argc, argv);
  RouteProtobufLogs();
  if (const std::string f = absl::GetFlag(FLAGS_log_format); f == "json") {
    SetLogFormat(LogFormat::kJson);
  } else if (f != "text") {
    return Fail(absl::StrCat("--log_format must be text or json, not '", f, "'"));
  }
  // SIGINT/SIGTERM are taken by sigwait below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return Fail("--model is empty: name a model directory");
  std::string backend_name = absl::GetFlag(FLAGS_backend);
  if (backend_name != "auto" && backend_name != "cuda" && backend_name != "cpu")
    return Fail(absl::StrCat("--backend ", backend_name, " is not one of auto, cuda, cpu"));
  if (backend_name == "auto") {
    std::string why;
    backend_name = CudaBackendAvailable(&why) ? "cuda" : "cpu";
    if (backend_name == "cpu")
      LogEvent(LogLevel::kInfo, "backend", absl::StrCat("glad: --backend auto: cpu (", why, ")"), {{"why", why}});
  }
  for (auto [name, v] : {std::pair{"queue_size", absl::GetFlag(FLAGS_queue_size)},
                         std::pair{"step_token_budget", absl::GetFlag(FLAGS_step_token_budget)},
                         std::pair{"max_prompt_tokens", absl::GetFlag(FLAGS_max_prompt_tokens)},
                         std::pair{"max_new_tokens", absl::GetFlag(FLAGS_max_new_tokens)}})
    if (v < 1) return Fail(absl::StrCat("--", name, " must be at least 1"));  // flag names use underscores
  if (absl::GetFlag(FLAGS_slots) < 1) return Fail("--slots must be at least 1");
  if (absl::GetFlag(FLAGS_state_memory_mb) < 0) return Fail("--state_memory_mb must not be negative");
  const double finetune_share = absl::GetFlag(FLAGS_finetune_share);
  if (!(finetune_share >= 0.0 && finetune_share < 1.0)) return Fail("--finetune_share must be in [0, 1)");
  if (absl::GetFlag(FLAGS_finetune_max_tokens) < 2) return Fail("--finetune_max_tokens must be at least 2");
  if (absl::GetFlag(FLAGS_finetune_max_queued) < 1) return Fail("--finetune_max_queued must be at least 1");
  if (absl::GetFlag(FLAGS_max_message_mb) < 1 || absl::GetFlag(FLAGS_max_message_mb) > 2047)
    return Fail("--max_message_mb must be in [1, 2047]");
  if (!(absl::GetFlag(FLAGS_rate_limit) >= 0.0) || !(absl::GetFlag(FLAGS_rate_limit_burst) >= 0.0))
    return Fail("--rate_limit and --rate_limit_burst must not be negative");
  auto credentials = ServerCredentialsFromFlags();
  if (!credentials.ok()) return Fail(std::string(credentials.status().message()));
  auto token = AuthTokenFromFlags();
  if (!token.ok()) return Fail(std::string(token.status().message()));
  RequestGuard guard({*token, absl::GetFlag(FLAGS_rate_limit), absl::GetFlag(FLAGS_rate_limit_burst)});
  const std::string data_dir = absl::GetFlag(FLAGS_finetune_data_dir);
  if (!data_dir.empty() && !std::filesystem::is_directory(data_dir))
    return Fail(absl::StrCat("--finetune_data_dir ", data_dir, " is not a directory"));
  const std::string adapter_dir = absl::GetFlag(FLAGS_adapter_dir);
  if (!adapter_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(adapter_dir, ec);
    if (ec || !std::filesystem::is_directory(adapter_dir))
      return Fail(absl::StrCat("--adapter_dir ", adapter_dir, ": cannot create it (", ec.message(), ")"));
  }

  SchedulerOptions so;
  so.queue_size = absl::GetFlag(FLAGS_queue_size);
  so.step_token_budget = absl::GetFlag(FLAGS_step_token_budget);
  const int64_t state_budget = int64_t{absl::GetFlag(FLAGS_state_memory_mb)} * 1048576;

  absl::StatusOr<std::unique_ptr<Backend>> backend;
  if (backend_name == "cuda") {
    CudaBackendOptions co;
    co.device = absl::GetFlag(FLAGS_device);
    co.slots = absl::GetFlag(FLAGS_slots);
    co.state_memory_bytes = state_budget;
    co.step_token_budget = so.step_token_budget;
    co.min_prefill_tokens = so.min_prefill_tokens;
    co.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    co.chunked_prefill = absl::GetFlag(FLAGS_chunked_prefill);
    backend = MakeCudaBackend(model, co);
  } else {
    CpuBackendOptions bo;
    bo.threads = absl::GetFlag(FLAGS_threads);
    bo.slots = absl::GetFlag(FLAGS_slots);
    if (state_budget > 0) {
      auto config = LoadGlaConfig(model);
      if (!config.ok()) return Fail(std::string(config.status().message()));
      const int64_t per_seq = config->StateFloatsPerLayer() * config->num_hidden_layers * 4;
      bo.slots = static_cast<int>(std::min<int64_t>(state_budget / per_seq, 1 << 20));
      if (bo.slots < 1)
        return Fail(absl::StrCat("--state_memory_mb ", absl::GetFlag(FLAGS_state_memory_mb), " holds no state of ",
                                 per_seq, " bytes"));
    }
    backend = MakeCpuBackend(model, bo);
  }
  if (!backend.ok()) return Fail(std::string(backend.status().message()));

  AdapterRegistry adapters;
  if (absl::Status s = LoadAdapterFlags(adapter_flags, (*backend)->config(), adapters); !s.ok())
    return Fail(std::string(s.message()));
  // Serving and fine-tuning take turns on the device (engine/finetune/compute_gate.h).
  ComputeGate::Options gate_options;
  gate_options.training_share = finetune_share;
  ComputeGate gate(gate_options);
  so.compute_gate = &gate;
  so.sessions.dir = absl::GetFlag(FLAGS_session_dir);
  so.sessions.host_bytes = int64_t{absl::GetFlag(FLAGS_session_memory_mb)} * 1048576;
  so.sessions.default_ttl_s = absl::GetFlag(FLAGS_session_ttl_s);
  so.sessions.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  so.prefix_cache_bytes = int64_t{absl::GetFlag(FLAGS_prefix_cache_mb)} * 1048576;
  so.prefix_cache_block = absl::GetFlag(FLAGS_prefix_cache_block);
  so.preemption = absl::GetFlag(FLAGS_preemption);
  so.preempt_after = std::chrono::milliseconds(std::max(0, absl::GetFlag(FLAGS_preempt_after_ms)));
  if (so.sessions.host_bytes < 0 || so.sessions.default_ttl_s < 0 || so.sessions.max_sessions < 0 ||
      so.prefix_cache_bytes < 0 || so.prefix_cache_block < 1)
    return Fail("--session_memory_mb, --session_ttl_s, --max_sessions and --prefix_cache_mb must be >= 0, "
                "--prefix_cache_block >= 1");
  if (const std::string d = absl::GetFlag(FLAGS_session_durability); d == "always") {
    so.sessions.durability = SessionDurability::kAlways;
  } else if (d == "interval") {
    so.sessions.durability = SessionDurability::kInterval;
  } else if (d == "shutdown") {
    so.sessions.durability = SessionDurability::kShutdown;
  } else {
    return Fail(absl::StrCat("--session_durability must be always, interval or shutdown, not '", d, "'"));
  }
  so.sessions.sync_interval_s = absl::GetFlag(FLAGS_session_sync_interval_s);
  if (!(so.sessions.sync_interval_s > 0 && so.sessions.sync_interval_s <= 86400))
    return Fail("--session_sync_interval_s must be in (0, 86400]");
  if (!so.sessions.dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(so.sessions.dir, ec);
    if (ec || !std::filesystem::is_directory(so.sessions.dir))
      return Fail(absl::StrCat("--session_dir ", so.sessions.dir, ": cannot create it (", ec.message(), ")"));
  }
  {  // session files record the model they were written for
    auto fingerprint = ModelFingerprint(model);
    if (!fingerprint.ok()) return Fail(std::string(fingerprint.status().message()));
    so.sessions.model_fingerprint = *fingerprint;
  }
  Scheduler scheduler(**backend, so);
  for (const std::string& refused : scheduler.refused_session_files())
    LogEvent(LogLevel::kWarning, "session_file_refused", absl::StrCat("glad: refused ", refused), {{"error", refused}});
  FineTuneJobsOptions jo;
  jo.model_dir = model;
  jo.adapter_dir = adapter_dir;
  jo.max_queued = absl::GetFlag(FLAGS_finetune_max_queued);
  {
    const std::string where = absl::GetFlag(FLAGS_finetune_device);
    const absl::Status gpu_ok = CudaTrainingAvailable((*backend)->config());
    const bool cuda_backend = (*backend)->name() == "cuda";
    if (where == "cuda") {
      if (!cuda_backend) return Fail("--finetune_device cuda needs --backend cuda");
      if (!gpu_ok.ok()) return Fail(absl::StrCat("--finetune_device cuda: ", gpu_ok.message()));
    } else if (where != "cpu" && where != "auto") {
      return Fail(absl::StrCat("--finetune_device must be cuda, cpu or auto, not '", where, "'"));
    }
    if (where == "cuda" || (where == "auto" && cuda_backend && gpu_ok.ok()))
      jo.train_device.cuda_device = absl::GetFlag(FLAGS_device);
    else if (where == "auto" && cuda_backend && !adapter_dir.empty())
      LogEvent(LogLevel::kInfo, "finetune_device", absl::StrCat("glad: fine-tune jobs train on the CPU: ", gpu_ok.message()));
    const std::string where_trained =
        jo.train_device.cuda() ? absl::StrCat("cuda:", jo.train_device.cuda_device) : std::string("the CPU");
    if (!adapter_dir.empty())  // without it, CreateFineTuneJob is FAILED_PRECONDITION: nothing trains
      LogEvent(LogLevel::kInfo, "finetune_device", absl::StrCat("glad: fine-tune jobs train on ", where_trained),
               {{"device", where_trained}});
  }
  jo.max_tokens = absl::GetFlag(FLAGS_finetune_max_tokens);
  jo.on_end = [](const JobInfo& j) {  // one line per finished job
    LogEvent(j.state == JobState::kFailed ? LogLevel::kWarning : LogLevel::kInfo, "finetune_ended",
             absl::StrFormat("glad: fine-tune job id=%s adapter=%s %s steps=%d/%d loss=%.4f%s%s", j.id, j.adapter_name,
                             JobStateName(j.state), j.progress.step, j.progress.total_steps, j.progress.loss,
                             j.error.empty() ? "" : " error: ", j.error),
             {{"job", j.id},
              {"adapter", j.adapter_name},
              {"state", std::string_view(JobStateName(j.state))},
              {"steps", j.progress.step},
              {"loss", j.progress.loss},
              {"error", j.error}});
  };
  FineTuneJobs jobs(jo, (*backend)->config(), adapters, &gate);
  for (const std::string& refused : jobs.refused_records())
    LogEvent(LogLevel::kWarning, "job_record_refused", absl::StrCat("glad: refused ", refused), {{"error", refused}});
  FineTuneService fine_tune(jobs, adapters, (*backend)->tokenizer(),
                            {data_dir, absl::GetFlag(FLAGS_finetune_max_tokens), &guard});
  // Metrics: gauges read from their owners at scrape time; declared after them, so it stops first.
  ServerMetrics metrics([&scheduler, &jobs, &backend] {
    ServerSnapshot s;
    const SchedulerStats st = scheduler.stats();
    s.queued = st.queued, s.running = st.running, s.slots = st.slots, s.slots_in_use = st.slots_in_use;
    s.steps = st.steps;
    s.sessions = st.sessions;
    s.prefix_cache = st.prefix_cache;
    s.preemptions = st.preemptions;
    s.has_device_memory = (*backend)->DeviceMemory(&s.device_memory_used, &s.device_memory_total);
    std::map<std::string, int> by_state;
    for (const char* state : {"queued", "running", "succeeded", "failed", "cancelled"}) by_state[state] = 0;
    for (const JobInfo& j : jobs.List()) {
      by_state[JobStateName(j.state)] += 1;
      if (j.state == JobState::kRunning) s.finetune_tokens_per_second = j.progress.tokens_per_second;
    }
    s.finetune_jobs.assign(by_state.begin(), by_state.end());
    return s;
  });
  std::string metrics_line;
  int metrics_port = 0;
  if (const std::string ml = absl::GetFlag(FLAGS_metrics_listen); !ml.empty()) {
    auto port = metrics.Serve(ml);
    if (!port.ok()) return Fail(std::string(port.status().message()));
    metrics_port = *port;
    metrics_line = absl::StrCat("glad: metrics on http://", ml.substr(0, ml.rfind(':')), ":", *port, "/metrics");
  }
  ServerLimits limits;
  limits.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  limits.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  GlaService service(scheduler, limits, {model, so.queue_size, so.step_token_budget, &adapters, &guard, &metrics,
                                                so.prefix_cache_block});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // Reflection would answer without a token (it only describes the API): it is offered on open
  // servers only. Linking gRPC's reflection library registers its plugin by itself, so on a
  // server with a token the plugin is taken out of this builder again.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  if (guard.authenticates()) builder.SetOption(std::make_unique<WithoutPlugin>("proto_server_reflection"));
  // Requests whose bytes do not parse: INVALID_ARGUMENT / UNAUTHENTICATED instead of gRPC's bare UNIMPLEMENTED.
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(std::make_unique<CallInterceptorFactory>(&guard));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_mb) * 1048576);
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  // gRPC sets SO_REUSEPORT by default, which would let a second server share a port in use.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(listen, *credentials, &port);
  builder.RegisterService(&service);
  builder.RegisterService(&fine_tune);
  // gRPC logs its own multi-line account of a failed bind; startup failures are our one line.
  gpr_set_log_function([](gpr_log_func_args*) {});
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  gpr_set_log_function([](gpr_log_func_args* a) {
    LogEvent(LogLevel::kWarning, "grpc", absl::StrCat("grpc: ", a->file, ":", a->line, ": ", a->message),
             {{"file", a->file}, {"line", int64_t{a->line}}});
  });
  if (server == nullptr || port == 0) return Fail(absl::StrCat("cannot listen on ", listen, " (in use or invalid)"));
  server->GetHealthCheckService()->SetServingStatus(true);
  const std::string host = listen.substr(0, listen.rfind(':'));
  const Backend& b = **backend;
  const std::string security =
      absl::StrCat(absl::GetFlag(FLAGS_tls_cert).empty() ? "" : absl::GetFlag(FLAGS_tls_client_ca).empty() ? " tls"
                                                                                                            : " mutual-tls",
                   guard.authenticates() ? " token" : "");
  LogEvent(LogLevel::kInfo, "listening",
           absl::StrFormat("glad: listening on %s:%d%s (backend %s, %s, %d slots, %.1f KiB state per sequence; memory: "
                           "weights %.1f MiB, state pool %.1f MiB, workspace %.1f MiB)",
                           host, port, security, b.name(), b.device(), (*backend)->pool().capacity(),
                           (*backend)->pool().state_bytes() / 1024.0, b.weight_bytes() / 1048576.0,
                           b.state_pool_bytes() / 1048576.0, b.workspace_bytes() / 1048576.0),
           {{"host", host},
            {"port", int64_t{port}},
            {"backend", b.name()},
            {"device", b.device()},
            {"slots", int64_t{(*backend)->pool().capacity()}},
            {"tls", !absl::GetFlag(FLAGS_tls_cert).empty()},
            {"token", guard.authenticates()}});
  if (metrics_port > 0)
    LogEvent(LogLevel::kInfo, "metrics", metrics_line, {{"port", int64_t{metrics_port}}});

  int sig = 0;
  sigwait(&signals, &sig);
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_shutdown_grace_s) * 1000));
  const char* sig_name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
  LogEvent(LogLevel::kInfo, "draining",
           absl::StrFormat("glad: %s: draining (grace %.1f s)", sig_name, absl::GetFlag(FLAGS_shutdown_grace_s)),
           {{"signal", std::string_view(sig_name)}, {"grace_s", absl::GetFlag(FLAGS_shutdown_grace_s)}});
  server->GetHealthCheckService()->SetServingStatus(false);
  jobs.Shutdown();  // fine-tune jobs are not drained: the running one stops at its next step boundary
  scheduler.Shutdown(grace);  // new requests: UNAVAILABLE; running ones finish or are cancelled
  // Every generation has finished or been cancelled above; what is left are quick unary calls.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server->Wait();
  LogEvent(LogLevel::kInfo, "stopped", "glad: stopped");
  return 0;
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) { return gla::Main(argc, argv); }
