// gla-loadgen: sweeps concurrency against a running glad with streaming requests and reports
// requests/s, generated tokens/s, time to first token and inter-token latency percentiles.
//
//   gla-loadgen --addr HOST:PORT [--concurrency 1,8,64] [--requests 64] [--prompt-len 128]
//               [--max-new-tokens 64] [--seed 1] [--finetune none|lora]
//               [--finetune-batch 1] [--finetune-seq-len 64]
//
// Each level runs `requests` streams (at least one per worker) with random token-id prompts and
// ignore_eos, so every request generates exactly max-new-tokens tokens. With --finetune lora each
// level runs twice: alone, then while a LoRA fine-tune job trains on the server (created before
// the level through gla.v1.FineTune with random token documents, cancelled after it; the server
// needs --adapter_dir; --finetune-batch windows of --finetune-seq-len tokens a step), reporting the training steps and tokens/s the job made meanwhile: what
// serving costs while a job shares the device, and what the job gets.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "clients/common/args.h"
#include "gla/v1/gla.grpc.pb.h"
#include "models/status_macros.h"

namespace gla {
namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

struct LevelResult {
  int ok = 0, failed = 0;  // ok: finished by length/eos/stop; failed: an error or finish_reason CANCELLED
  int64_t tokens = 0;
  double seconds = 0;
  std::vector<double> ttft, itl;
  std::string first_error;
};

LevelResult RunLevel(v1::Gla::Stub& stub, int concurrency, int requests, int prompt_len, int max_new, int vocab,
                     uint64_t seed) {
  LevelResult r;
  std::mutex mu;
  std::atomic<int> next{0};
  const int total = std::max(requests, concurrency);
  const auto start = Clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 1000003 + w);
      for (int i = next++; i < total; i = next++) {
        v1::GenerateRequest req;
        for (int t = 0; t < prompt_len; ++t) req.mutable_token_ids()->add_ids(static_cast<int32_t>(rng() % vocab));
        req.set_max_new_tokens(max_new);
        req.set_ignore_eos(true);
        grpc::ClientContext ctx;
        const auto t0 = Clock::now();
        auto reader = stub.GenerateStream(&ctx, req);
        v1::GenerateStreamResponse m;
        std::vector<double> ttft, itl;
        auto last = t0;
        int64_t n = 0;
        bool cancelled = false;
        while (reader->Read(&m)) {
          cancelled = cancelled || m.finish_reason() == v1::FINISH_REASON_CANCELLED;
          if (m.token_ids_size() == 0) continue;
          const auto now = Clock::now();
          const double dt = std::chrono::duration<double>(now - last).count();
          if (n == 0) ttft.push_back(dt);
          else for (int k = 0; k < m.token_ids_size(); ++k) itl.push_back(dt / m.token_ids_size());
          n += m.token_ids_size();
          last = now;
        }
        const grpc::Status st = reader->Finish();
        std::lock_guard<std::mutex> lock(mu);
        if (st.ok() && !cancelled) {
          ++r.ok;
          r.tokens += n;
          r.ttft.insert(r.ttft.end(), ttft.begin(), ttft.end());
          r.itl.insert(r.itl.end(), itl.begin(), itl.end());
        } else {
          ++r.failed;
          if (r.first_error.empty()) r.first_error = st.ok() ? "cancelled by the server (shutting down?)" : st.error_message();
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

// A LoRA job that outlasts a level: random token documents, many steps; started before the level
// (once RUNNING), cancelled after it. Progress is read before and after to count its steps.
class BackgroundJob {
 public:
  static absl::StatusOr<BackgroundJob> Start(v1::FineTune::Stub* stub, int vocab, int level, uint64_t seed, int batch,
                                             int sequence_length) {
    v1::CreateFineTuneJobRequest req;
    req.set_adapter_name(absl::StrCat("loadgen-", level, "-", std::chrono::system_clock::now().time_since_epoch().count()));
    req.set_method(v1::FINE_TUNE_METHOD_LORA);
    req.mutable_hyperparameters()->set_max_steps(1000000);
    req.mutable_hyperparameters()->set_batch_sequences(batch);
    req.mutable_hyperparameters()->set_sequence_length(sequence_length);
    std::mt19937_64 rng(seed);
    for (int d = 0; d < std::max(16, 2 * batch); ++d) {  // at least two batches of full windows
      auto* ids = req.mutable_token_sequences()->add_sequences();
      for (int t = 0; t <= sequence_length; ++t) ids->add_ids(static_cast<int32_t>(rng() % vocab));
    }
    BackgroundJob job;
    job.stub_ = stub;
    v1::FineTuneJob j;
    grpc::ClientContext ctx;
    const grpc::Status st = stub->CreateFineTuneJob(&ctx, req, &j);
    if (!st.ok()) return absl::FailedPreconditionError(absl::StrCat("CreateFineTuneJob: ", st.error_message()));
    job.id_ = j.id();
    for (int i = 0; i < 600; ++i) {  // until it runs and has made a step (up to a minute)
      ASSIGN_OR_RETURN(j, job.Get());
      if (j.state() == v1::FINE_TUNE_JOB_STATE_RUNNING && j.progress().step() > 0) break;
      if (j.state() > v1::FINE_TUNE_JOB_STATE_RUNNING)
        return absl::InternalError(absl::StrCat("fine-tune job ended before the level: ", j.error()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    job.start_step_ = j.progress().step();
    job.start_time_ = Clock::now();
    return job;
  }
  absl::StatusOr<v1::FineTuneJob> Get() const {
    v1::GetFineTuneJobRequest req;
    req.set_job_id(id_);
    v1::FineTuneJob j;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->GetFineTuneJob(&ctx, req, &j);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("GetFineTuneJob: ", st.error_message()));
    return j;
  }
  // Steps made since Start, their rate, and the job's own training tokens/s; then cancels it.
  absl::StatusOr<std::string> StopAndReport(int tokens_per_step) {
    ASSIGN_OR_RETURN(v1::FineTuneJob j, Get());
    const double s = std::chrono::duration<double>(Clock::now() - start_time_).count();
    const int64_t steps = j.progress().step() - start_step_;
    v1::CancelFineTuneJobRequest req;
    req.set_job_id(id_);
    grpc::ClientContext ctx;
    v1::FineTuneJob ignored;
    stub_->CancelFineTuneJob(&ctx, req, &ignored);
    for (int i = 0; i < 600; ++i) {  // wait for it to stop, so the next level starts alone
      ASSIGN_OR_RETURN(j, Get());
      if (j.state() > v1::FINE_TUNE_JOB_STATE_RUNNING) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::StrCat(steps, " steps, ", static_cast<int64_t>(steps * tokens_per_step / s), " training tok/s");
  }

 private:
  v1::FineTune::Stub* stub_ = nullptr;
  std::string id_;
  int64_t start_step_ = 0;
  Clock::time_point start_time_;
};

void PrintLevel(int c, const LevelResult& r, const std::string& job) {
  std::printf("| %d | %s | %d | %d | %d | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", c, job.c_str(),
              r.ok + r.failed, r.ok, r.failed, r.seconds, r.ok / r.seconds, r.tokens / r.seconds,
              1e3 * Percentile(r.ttft, 0.5), 1e3 * Percentile(r.ttft, 0.99), 1e3 * Percentile(r.itl, 0.5),
              1e3 * Percentile(r.itl, 0.99));
  if (!r.first_error.empty()) std::printf("  first error: %s\n", r.first_error.c_str());
  std::fflush(stdout);
}

absl::Status Main(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string addr, a.Required("addr"));
  ASSIGN_OR_RETURN(int requests, a.Int("requests", 64, 1));
  ASSIGN_OR_RETURN(int prompt_len, a.Int("prompt-len", 128, 1));
  ASSIGN_OR_RETURN(int max_new, a.Int("max-new-tokens", 64, 1));
  ASSIGN_OR_RETURN(int seed, a.Int("seed", 1, 0));
  ASSIGN_OR_RETURN(std::vector<int32_t> levels, ParseIdList(a.Has("concurrency") ? a.flags.at("concurrency") : "1,8,64"));
  const std::string finetune = a.Has("finetune") ? a.flags.at("finetune") : "none";
  ASSIGN_OR_RETURN(const int ft_batch, a.Int("finetune-batch", 1, 1));
  ASSIGN_OR_RETURN(const int ft_seq_len, a.Int("finetune-seq-len", 64, 1));
  if (finetune != "none" && finetune != "lora")
    return absl::InvalidArgumentError(absl::StrCat("--finetune ", finetune, ": none or lora"));
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto stub = v1::Gla::NewStub(channel);
  auto ft_stub = v1::FineTune::NewStub(channel);
  v1::ModelInfoResponse info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status st = stub->ModelInfo(&ctx, {}, &info);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat(addr, ": ", st.error_message()));
  }
  std::printf("server: %s backend=%s device=\"%s\" slots=%u  prompt %d tokens, %d new tokens per request\n",
              info.model_dir().c_str(), info.backend().c_str(), info.device().c_str(), info.slots(), prompt_len, max_new);
  std::printf("| concurrency | fine-tune job | requests | ok | failed | seconds | requests/s | tokens/s | TTFT p50 ms | "
              "TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  const int vocab = info.config().vocab_size();
  for (int c : levels) {
    if (c < 1) return absl::InvalidArgumentError("--concurrency levels must be >= 1");
    PrintLevel(c, RunLevel(*stub, c, requests, prompt_len, max_new, vocab, seed), "none");
    if (finetune == "lora") {
      ASSIGN_OR_RETURN(BackgroundJob job, BackgroundJob::Start(ft_stub.get(), vocab, c, seed, ft_batch, ft_seq_len));
      const LevelResult r = RunLevel(*stub, c, requests, prompt_len, max_new, vocab, seed);
      ASSIGN_OR_RETURN(std::string made, job.StopAndReport(ft_batch * ft_seq_len));
      PrintLevel(c, r, absl::StrCat("LoRA running: ", made));
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) {
  // The command word is optional: `gla-loadgen --addr ...` reads as `gla-loadgen sweep --addr ...`.
  std::vector<char*> args(argv, argv + argc);
  char sweep[] = "sweep";
  if (argc < 2 || std::string(argv[1]).rfind("--", 0) == 0) args.insert(args.begin() + 1, sweep);
  auto parsed = gla::ParseArgs(static_cast<int>(args.size()), args.data(),
                               {{"sweep", {"addr", "concurrency", "requests", "prompt-len", "max-new-tokens", "seed", "finetune", "finetune-batch",
                                           "finetune-seq-len"}}});
  absl::Status st = parsed.ok() ? gla::Main(*parsed) : parsed.status();
  if (!st.ok()) {
    std::fprintf(stderr, "gla-loadgen: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
