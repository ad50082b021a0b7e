// glad: the GLA inference server.
//
//   glad [--model DIR (default: models/gla-brown)] [--listen 0.0.0.0:50051] [--slots 16 | --state_memory_mb M] [--queue_size 256]
//        [--step_token_budget 512] [--threads 0] [--max_prompt_tokens 8192] [--max_new_tokens 1024]
//        [--shutdown_grace_s 10] [--backend auto|cuda|cpu] [--device 0 | --devices 0,1,...] [--cuda_graphs]
//        [--adapter_dir DIR] [--finetune_data_dir DIR] [--finetune_share 0.25]
//        [--finetune_max_tokens 1000000] [--finetune_max_queued 8] [--finetune_device auto|cuda|cpu] [--adapter NAME=DIR ...]
//        (glad --help lists every flag; they are defined and checked in server/options.cc)
//
// Serves gla.v1.Gla, gla.v1.FineTune, grpc.health.v1.Health and server reflection. SIGTERM/SIGINT:
// cancel fine-tune jobs, stop accepting, let in-flight requests finish for --shutdown_grace_s,
// cancel the rest, exit 0.
// Startup errors (bad model dir, port in use, bad flag) are one line on stderr and exit 1.
//
// This file only wires the parts together: options -> a backend and a scheduler per device (one
// EngineSet) and fine-tune jobs -> services -> gRPC server and metrics -> wait for a signal -> drain.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <grpc/impl/codegen/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/adapter_registry.h"
#include "engine/backend.h"
#include "engine/engine_set.h"
#include "engine/finetune/compute_gate.h"
#include "engine/finetune/jobs.h"
#include "engine/scheduler.h"
#include "models/fingerprint.h"
#include "models/status_macros.h"
#include "server/call_interceptor.h"
#include "server/fine_tune_service.h"
#include "server/front_door.h"
#include "server/gla_service.h"
#include "server/http/http_server.h"
#include "server/http/openai_service.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/request_guard.h"

namespace gla {
namespace {

int Fail(const std::string& msg) {
  LogEvent(LogLevel::kError, "error", absl::StrCat("glad: error: ", msg), {{"error", msg}});
  return 1;
}

int Fail(const absl::Status& status) { return Fail(std::string(status.message())); }

// SIGINT/SIGTERM are taken by sigwait (WaitAndDrain). They are blocked first thing, before any
// thread starts (reading the TLS files starts gRPC's, probing the GPU CUDA's): threads inherit
// the mask, and a thread without it would let the signal kill the process instead of draining.
sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// The backend --backend names, on `device` (one of --devices); the CPU backend's pool is sized from
// --state_memory_mb here (the CUDA backend sizes its own from the GPU's). With several CPU engines
// each takes an equal part of the cores and of --state_memory_mb (host memory is one for all).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const ServerOptions& o, int device) {
  const int engines = static_cast<int>(o.devices.size());
  int64_t state_budget = int64_t{o.state_memory_mb} * 1048576;
  if (o.backend == "cuda") {
    CudaBackendOptions co;
    co.device = device;
    co.slots = o.slots;
    co.state_memory_bytes = state_budget;
    co.step_token_budget = o.scheduler.step_token_budget;
    co.min_prefill_tokens = o.scheduler.min_prefill_tokens;
    co.cuda_graphs = o.cuda_graphs;
    co.chunked_prefill = o.chunked_prefill;
    co.persistent_decode = o.persistent_decode;
    co.persistent_decode_max_batch = o.persistent_decode_max_batch;
    co.paths.tuned_bf16_gemms = o.gemm_tuning;
    co.gemm_tuning_cache = o.gemm_tuning_cache;
    co.weights = o.weights;
    co.state_dtype = o.state_dtype;
    return MakeCudaBackend(o.model, co);
  }
  CpuBackendOptions bo;
  bo.threads = o.threads;
  bo.weights = o.weights;
  bo.state_dtype = o.state_dtype;
  if (engines > 1) {
    const int cores = o.threads > 0 ? o.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    bo.threads = std::max(1, cores / engines);
    state_budget /= engines;
  }
  bo.slots = o.slots;
  if (state_budget > 0) {
    ASSIGN_OR_RETURN(const GlaConfig config, LoadGlaConfig(o.model));
    const int64_t per_seq = StateWords(config.StateFloatsPerLayer() * config.num_hidden_layers, o.state_dtype) * 4;
    bo.slots = static_cast<int>(std::min<int64_t>(state_budget / per_seq, 1 << 20));
    if (bo.slots < 1)
      return absl::InvalidArgumentError(
          absl::StrCat("--state_memory_mb ", o.state_memory_mb, " holds no state of ", per_seq, " bytes"));
  }
  return MakeCpuBackend(o.model, bo);
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

// The options' scheduler settings and what they could not know: the gate, and the model that
// session files record (files written for another model are refused).
absl::StatusOr<SchedulerOptions> MakeSchedulerOptions(const ServerOptions& o, ComputeGate* gate) {
  SchedulerOptions so = o.scheduler;
  so.compute_gate = gate;
  ASSIGN_OR_RETURN(so.sessions.model_fingerprint, ModelFingerprint(o.model));
  return so;
}

// Engine `i` of `n` (engine_set.h): fine-tuning shares only the first engine's device (the gate);
// without a state store each engine keeps the sessions it is home to, in its part of the host
// memory budgets (sessions, prefix cache) and of --max_sessions, and `peers` (null with a store,
// which shares prefix states itself) is their common prefix-state tier.
SchedulerOptions EngineOptions(const SchedulerOptions& so, int i, int n, std::shared_ptr<PeerPrefixStates> peers) {
  if (n == 1) return so;
  SchedulerOptions e = so;
  if (i > 0) e.compute_gate = nullptr;
  // Without a store the engines share prefix states among themselves: the engines' caches and the
  // peer tier each take an equal part of --prefix_cache_mb.
  e.prefix_cache_bytes = so.prefix_cache_bytes / (peers != nullptr ? n + 1 : n);
  e.prefix_peers = std::move(peers);
  if (so.sessions.store == nullptr) {
    e.sessions.owns = [i, n](const std::string& id) { return HomeOf(id, n) == i; };
    e.sessions.max_sessions = (so.sessions.max_sessions + n - 1) / n;
    e.sessions.host_bytes = so.sessions.host_bytes / n;
  }
  return e;
}

// One line per finished fine-tune job.
void LogJobEnded(const JobInfo& j) {
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
}

// Where fine-tune jobs train: --finetune_device against what the loaded model allows on the GPU
// (the options checked what the flags alone decide).
absl::StatusOr<FineTuneJobsOptions> MakeFineTuneJobsOptions(const ServerOptions& o, const Backend& backend) {
  FineTuneJobsOptions jo;
  jo.model_dir = o.model;
  jo.adapter_dir = o.adapter_dir;
  jo.max_queued = o.finetune_max_queued;
  const absl::Status gpu_ok = CudaTrainingAvailable(backend.config());
  const bool cuda_backend = backend.name() == "cuda";
  const bool cuda = o.finetune_device == FineTuneDevice::kCuda, automatic = o.finetune_device == FineTuneDevice::kAuto;
  if (cuda && !gpu_ok.ok())
    return absl::InvalidArgumentError(absl::StrCat("--finetune_device cuda: ", gpu_ok.message()));
  if (cuda || (automatic && cuda_backend && gpu_ok.ok()))
    jo.train_device.cuda_device = o.device;
  else if (automatic && cuda_backend && !o.adapter_dir.empty())
    LogEvent(LogLevel::kInfo, "finetune_device",
             absl::StrCat("glad: fine-tune jobs train on the CPU: ", gpu_ok.message()));
  const std::string where_trained =
      jo.train_device.cuda() ? absl::StrCat("cuda:", jo.train_device.cuda_device) : std::string("the CPU");
  if (!o.adapter_dir.empty())  // without it, CreateFineTuneJob is FAILED_PRECONDITION: nothing trains
    LogEvent(LogLevel::kInfo, "finetune_device", absl::StrCat("glad: fine-tune jobs train on ", where_trained),
             {{"device", where_trained}});
  jo.max_tokens = o.finetune_max_tokens;
  jo.on_end = LogJobEnded;
  return jo;
}

// What the metrics gauges show, read from their owners at scrape time.
ServerSnapshot Snapshot(const EngineSet& engines, const FineTuneJobs& jobs) {
  ServerSnapshot s;
  const SchedulerStats st = engines.stats();
  s.queued = st.queued, s.running = st.running, s.slots = st.slots, s.slots_in_use = st.slots_in_use;
  s.steps = st.steps;
  s.sessions = st.sessions;
  s.prefix_cache = st.prefix_cache;
  s.preemptions = st.preemptions;
  s.has_device_memory = engines.DeviceMemory(&s.device_memory_used, &s.device_memory_total);
  std::map<std::string, int> by_state;
  for (const char* state : {"queued", "running", "succeeded", "failed", "cancelled"}) by_state[state] = 0;
  for (const JobInfo& j : jobs.List()) {
    by_state[JobStateName(j.state)] += 1;
    if (j.state == JobState::kRunning) s.finetune_tokens_per_second = j.progress.tokens_per_second;
  }
  s.finetune_jobs.assign(by_state.begin(), by_state.end());
  return s;
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

// The gRPC server with glad's services, listening on --listen; *port is the port it got (0 and
// null when it cannot listen).
std::unique_ptr<grpc::Server> StartGrpcServer(const ServerOptions& o, RequestGuard& guard, GlaService& service,
                                              FineTuneService& fine_tune, int* port) {
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
  builder.SetMaxReceiveMessageSize(o.max_message_bytes);
  // gRPC sets SO_REUSEPORT by default, which would let a second server share a port in use.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(o.listen, o.credentials, port);
  builder.RegisterService(&service);
  builder.RegisterService(&fine_tune);
  // gRPC logs its own multi-line account of a failed bind; startup failures are our one line.
  gpr_set_log_function([](gpr_log_func_args*) {});
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  gpr_set_log_function([](gpr_log_func_args* a) {
    LogEvent(LogLevel::kWarning, "grpc", absl::StrCat("grpc: ", a->file, ":", a->line, ": ", a->message),
             {{"file", a->file}, {"line", int64_t{a->line}}});
  });
  return server;
}

// The startup lines: where glad listens, on what, with how much memory; where its metrics are.
void LogListening(const ServerOptions& o, int port, int metrics_port, EngineSet& engines, bool token) {
  Backend& b = engines.backend();
  const SchedulerStats st = engines.stats();
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  const std::string security =
      absl::StrCat(!o.tls ? "" : o.tls->client_ca.empty() ? " tls" : " mutual-tls", token ? " token" : "");
  LogEvent(LogLevel::kInfo, "listening",
           absl::StrFormat("glad: listening on %s:%d%s (backend %s, %s, %d slots, %.1f KiB state per sequence; memory: "
                           "weights %.1f MiB, state pool %.1f MiB, workspace %.1f MiB)",
                           host, port, security, b.name(), engines.devices(), st.slots,
                           b.pool().state_bytes() / 1024.0, engines.weight_bytes() / 1048576.0,
                           engines.state_pool_bytes() / 1048576.0, engines.workspace_bytes() / 1048576.0),
           {{"host", host},
            {"port", int64_t{port}},
            {"backend", b.name()},
            {"device", engines.devices()},
            {"engines", int64_t{engines.size()}},
            {"slots", int64_t{st.slots}},
            {"tls", o.tls.has_value()},
            {"token", token}});
  if (metrics_port > 0) {
    const std::string& ml = o.metrics_listen;
    LogEvent(LogLevel::kInfo, "metrics",
             absl::StrCat("glad: metrics on http://", ml.substr(0, ml.rfind(':')), ":", metrics_port, "/metrics"),
             {{"port", int64_t{metrics_port}}});
  }
}

// Each HTTP stream holds a socket: the soft descriptor limit (often 1,024) is raised to the hard
// one, so thousands of streams fit; logged when it stays low.
void RaiseDescriptorLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  if (r.rlim_cur < 4096)
    LogEvent(LogLevel::kWarning, "descriptors",
             absl::StrCat("glad: at most ", r.rlim_cur, " open files (ulimit -n): the HTTP API holds one per connection"),
             {{"limit", static_cast<int64_t>(r.rlim_cur)}});
}

// The OpenAI HTTP API on --http_listen, answering through `openai`; logs where.
absl::StatusOr<std::unique_ptr<http::Server>> StartHttpServer(const ServerOptions& o, http::OpenAiService& openai) {
  RaiseDescriptorLimit();
  http::ServerOptions ho;
  ho.listen = o.http_listen;
  ho.threads = o.http_threads;
  ho.max_body_bytes = o.http_max_body_bytes;
  ho.tls = o.tls;  // the same certificate, key and client CA as the gRPC port
  auto server = http::Server::Start(ho, [&openai](http::Request r, std::shared_ptr<http::Responder> out) {
    openai.Handle(std::move(r), std::move(out));
  });
  if (!server.ok()) return server.status();
  const std::string host = o.http_listen.substr(0, o.http_listen.rfind(':'));
  LogEvent(LogLevel::kInfo, "http",
           absl::StrCat("glad: OpenAI HTTP API on ", o.tls ? "https" : "http", "://", host, ":", (*server)->port(),
                        "/v1 (model \"", o.served_model_name, "\")"),
           {{"port", int64_t{(*server)->port()}}, {"model", o.served_model_name}, {"tls", o.tls.has_value()}});
  return server;
}

// Waits for SIGTERM/SIGINT, then drains: health says not serving, fine-tune jobs stop, requests
// get --shutdown_grace_s to finish, then the gRPC server stops.
void WaitAndDrain(const sigset_t& signals, double grace_s, grpc::Server& server, http::Server* http_server,
                  EngineSet& engines, FineTuneJobs& jobs) {
  int sig = 0;
  sigwait(&signals, &sig);
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
  const char* sig_name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
  LogEvent(LogLevel::kInfo, "draining", absl::StrFormat("glad: %s: draining (grace %.1f s)", sig_name, grace_s),
           {{"signal", std::string_view(sig_name)}, {"grace_s", grace_s}});
  server.GetHealthCheckService()->SetServingStatus(false);
  if (http_server != nullptr) http_server->StopAccepting();  // idle connections close, answers go on
  jobs.Shutdown();  // fine-tune jobs are not drained: the running one stops at its next step boundary
  engines.Shutdown(grace);  // new requests: UNAVAILABLE; running ones finish or are cancelled
  // Every generation has finished or been cancelled above; what is left are quick unary calls.
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server.Wait();
  if (http_server != nullptr) http_server->Shutdown(std::chrono::milliseconds(500));  // last bytes out
  LogEvent(LogLevel::kInfo, "stopped", "glad: stopped");
}

// Objects are declared in the order they depend on each other and destroyed in reverse: the gRPC
// server stops before the services it calls, the metrics before the scheduler and jobs they read.
int Main(int argc, char** argv) {
  const sigset_t signals = BlockShutdownSignals();
  const absl::StatusOr<ServerOptions> options = ParseServerOptions(argc, argv);
  if (!options.ok()) return Fail(options.status());
  const ServerOptions& o = *options;
  RouteProtobufLogs();
  RequestGuard guard(o.guard);

  std::vector<std::unique_ptr<Backend>> backends;  // one per device of --devices
  for (int device : o.devices) {
    absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(o, device);
    if (!backend.ok())
      return Fail(o.devices.size() == 1 ? backend.status()
                                        : absl::Status(backend.status().code(),
                                                       absl::StrCat("device ", device, ": ", backend.status().message())));
    backends.push_back(*std::move(backend));
  }
  Backend& b = *backends.front();
  AdapterRegistry adapters;
  if (absl::Status s = LoadAdapterFlags(o.adapters, b.config(), adapters); !s.ok()) return Fail(s);
  // Serving and fine-tuning take turns on the device (engine/finetune/compute_gate.h).
  ComputeGate::Options gate_options;
  gate_options.training_share = o.finetune_share;
  ComputeGate gate(gate_options);
  const absl::StatusOr<SchedulerOptions> so = MakeSchedulerOptions(o, &gate);
  if (!so.ok()) return Fail(so.status());
  const int n = static_cast<int>(backends.size());
  std::shared_ptr<PeerPrefixStates> peers;
  if (n > 1 && so->sessions.store == nullptr && so->prefix_cache_bytes > 0)
    peers = std::make_shared<PeerPrefixStates>(static_cast<int>(std::min<int64_t>(
        so->prefix_cache_bytes / (n + 1) / std::max<int64_t>(b.pool().state_bytes(), 1), 1 << 20)));
  std::vector<std::unique_ptr<Scheduler>> schedulers;
  std::vector<Scheduler*> engine_list;
  for (int i = 0; i < n; ++i) {
    schedulers.push_back(std::make_unique<Scheduler>(*backends[static_cast<size_t>(i)], EngineOptions(*so, i, n, peers)));
    engine_list.push_back(schedulers.back().get());
  }
  EngineSet engines(std::move(engine_list), so->sessions.store != nullptr);
  for (const std::string& refused : engines.refused_session_files())
    LogEvent(LogLevel::kWarning, "session_file_refused", absl::StrCat("glad: refused ", refused), {{"error", refused}});
  if (so->sessions.store != nullptr) {  // serving starts either way; sessions wait for the store
    const absl::Status ping = so->sessions.store->Ping();
    LogEvent(ping.ok() ? LogLevel::kInfo : LogLevel::kWarning, "state_store",
             ping.ok() ? absl::StrCat("glad: sessions in the state store ", so->sessions.store->address().ToString())
                       : absl::StrCat("glad: the state store does not answer (", ping.message(),
                                      "); session calls are UNAVAILABLE until it does"));
  }

  const absl::StatusOr<FineTuneJobsOptions> jo = MakeFineTuneJobsOptions(o, b);
  if (!jo.ok()) return Fail(jo.status());
  FineTuneJobs jobs(*jo, b.config(), adapters, &gate);
  for (const std::string& refused : jobs.refused_records())
    LogEvent(LogLevel::kWarning, "job_record_refused", absl::StrCat("glad: refused ", refused), {{"error", refused}});
  FineTuneService fine_tune(jobs, adapters, b.tokenizer(), {o.finetune_data_dir, o.finetune_max_tokens, &guard});

  ServerMetrics metrics([&engines, &jobs] { return Snapshot(engines, jobs); });
  int metrics_port = 0;
  if (!o.metrics_listen.empty()) {
    const absl::StatusOr<int> port = metrics.Serve(o.metrics_listen);
    if (!port.ok()) return Fail(port.status());
    metrics_port = *port;
  }
  // One front door for every protocol; the gRPC service is an adapter over it.
  FrontDoor door(engines, o.limits,
                 {o.model, so->queue_size, so->step_token_budget, &adapters, &guard, &metrics, so->prefix_cache_block});
  GlaService service(door);

  int port = 0;
  const std::unique_ptr<grpc::Server> server = StartGrpcServer(o, guard, service, fine_tune, &port);
  if (server == nullptr || port == 0) return Fail(absl::StrCat("cannot listen on ", o.listen, " (in use or invalid)"));
  server->GetHealthCheckService()->SetServingStatus(true);
  LogListening(o, port, metrics_port, engines, guard.authenticates());
  // The OpenAI HTTP API: a second adapter over the same front door.
  absl::StatusOr<http::ChatPrompter> chat = http::ChatPrompter::Load(o.model, o.chat_template, b.tokenizer());
  if (!o.http_listen.empty() && !chat.ok()) return Fail(chat.status());
  http::OpenAiService openai(door, {.served_model_name = o.served_model_name}, chat.ok() ? &*chat : nullptr);
  std::unique_ptr<http::Server> http_server;
  if (!o.http_listen.empty()) {
    auto started = StartHttpServer(o, openai);
    if (!started.ok()) return Fail(started.status());
    http_server = *std::move(started);
  }
  WaitAndDrain(signals, o.shutdown_grace_s, *server, http_server.get(), engines, jobs);
  return 0;
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) { return gla::Main(argc, argv); }
