// glad: the GLA inference server.
//
//   glad --model DIR [--listen 0.0.0.0:50051] [--slots 16 | --state_memory_mb M] [--queue_size 256]
//        [--step_token_budget 512] [--threads 0] [--max_prompt_tokens 8192] [--max_new_tokens 1024]
//        [--shutdown_grace_s 10] [--backend auto|cuda|cpu] [--device 0] [--cuda_graphs]
//        (glad --help lists every flag)
//
// Serves gla.v1.Gla, grpc.health.v1.Health and server reflection. SIGTERM/SIGINT: stop
// accepting, let in-flight requests finish for --shutdown_grace_s, cancel the rest, exit 0.
// Startup errors (bad model dir, port in use, bad flag) are one line on stderr and exit 1.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <grpc/impl/codegen/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "engine/backend.h"
#include "engine/scheduler.h"
#include "server/gla_service.h"

ABSL_FLAG(std::string, model, "", "model directory (config.json, model.safetensors[.index.json], tokenizer.model)");
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

namespace gla {
namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "glad: error: %s\n", msg.c_str());
  return 1;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage("GLA inference server. glad --model DIR [--listen HOST:PORT] ...");
  absl::ParseCommandLine(argc, argv);
  // SIGINT/SIGTERM are taken by sigwait below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return Fail("--model is required");
  std::string backend_name = absl::GetFlag(FLAGS_backend);
  if (backend_name != "auto" && backend_name != "cuda" && backend_name != "cpu")
    return Fail(absl::StrCat("--backend ", backend_name, " is not one of auto, cuda, cpu"));
  if (backend_name == "auto") {
    std::string why;
    backend_name = CudaBackendAvailable(&why) ? "cuda" : "cpu";
    if (backend_name == "cpu") std::fprintf(stderr, "glad: --backend auto: cpu (%s)\n", why.c_str());
  }
  for (auto [name, v] : {std::pair{"queue_size", absl::GetFlag(FLAGS_queue_size)},
                         std::pair{"step_token_budget", absl::GetFlag(FLAGS_step_token_budget)},
                         std::pair{"max_prompt_tokens", absl::GetFlag(FLAGS_max_prompt_tokens)},
                         std::pair{"max_new_tokens", absl::GetFlag(FLAGS_max_new_tokens)}})
    if (v < 1) return Fail(absl::StrCat("--", name, " must be at least 1"));  // flag names use underscores
  if (absl::GetFlag(FLAGS_slots) < 1) return Fail("--slots must be at least 1");
  if (absl::GetFlag(FLAGS_state_memory_mb) < 0) return Fail("--state_memory_mb must not be negative");

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

  Scheduler scheduler(**backend, so);
  ServerLimits limits;
  limits.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  limits.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  GlaService service(scheduler, limits, {model, so.queue_size, so.step_token_budget});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  // gRPC sets SO_REUSEPORT by default, which would let a second server share a port in use.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  // gRPC logs its own multi-line account of a failed bind; startup failures are our one line.
  gpr_set_log_function([](gpr_log_func_args*) {});
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  gpr_set_log_function([](gpr_log_func_args* a) {
    std::fprintf(stderr, "grpc: %s:%d: %s\n", a->file, a->line, a->message);
  });
  if (server == nullptr || port == 0) return Fail(absl::StrCat("cannot listen on ", listen, " (in use or invalid)"));
  server->GetHealthCheckService()->SetServingStatus(true);
  const std::string host = listen.substr(0, listen.rfind(':'));
  const Backend& b = **backend;
  std::fprintf(stderr,
               "glad: listening on %s:%d (backend %s, %s, %d slots, %.1f KiB state per sequence; memory: weights "
               "%.1f MiB, state pool %.1f MiB, workspace %.1f MiB)\n",
               host.c_str(), port, b.name().c_str(), b.device().c_str(), (*backend)->pool().capacity(),
               (*backend)->pool().state_bytes() / 1024.0, b.weight_bytes() / 1048576.0,
               b.state_pool_bytes() / 1048576.0, b.workspace_bytes() / 1048576.0);

  int sig = 0;
  sigwait(&signals, &sig);
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_shutdown_grace_s) * 1000));
  std::fprintf(stderr, "glad: %s: draining (grace %.1f s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::GetFlag(FLAGS_shutdown_grace_s));
  server->GetHealthCheckService()->SetServingStatus(false);
  scheduler.Shutdown(grace);  // new requests: UNAVAILABLE; running ones finish or are cancelled
  // Every generation has finished or been cancelled above; what is left are quick unary calls.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server->Wait();
  std::fprintf(stderr, "glad: stopped\n");
  return 0;
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) { return gla::Main(argc, argv); }
