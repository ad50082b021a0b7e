// gla-loadgen: sweeps concurrency against a running glad with streaming requests and reports
// requests/s, generated tokens/s, time to first token and inter-token latency percentiles.
//
//   gla-loadgen --addr HOST:PORT [--concurrency 1,8,64] [--requests 64] [--prompt-len 128]
//               [--max-new-tokens 64] [--seed 1]
//
// Each level runs `requests` streams (at least one per worker) with random token-id prompts and
// ignore_eos, so every request generates exactly max-new-tokens tokens.
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

absl::Status Main(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string addr, a.Required("addr"));
  ASSIGN_OR_RETURN(int requests, a.Int("requests", 64, 1));
  ASSIGN_OR_RETURN(int prompt_len, a.Int("prompt-len", 128, 1));
  ASSIGN_OR_RETURN(int max_new, a.Int("max-new-tokens", 64, 1));
  ASSIGN_OR_RETURN(int seed, a.Int("seed", 1, 0));
  ASSIGN_OR_RETURN(std::vector<int32_t> levels, ParseIdList(a.Has("concurrency") ? a.flags.at("concurrency") : "1,8,64"));
  auto stub = v1::Gla::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  v1::ModelInfoResponse info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status st = stub->ModelInfo(&ctx, {}, &info);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat(addr, ": ", st.error_message()));
  }
  std::printf("server: %s backend=%s device=\"%s\" slots=%u  prompt %d tokens, %d new tokens per request\n",
              info.model_dir().c_str(), info.backend().c_str(), info.device().c_str(), info.slots(), prompt_len, max_new);
  std::printf("| concurrency | requests | ok | failed | seconds | requests/s | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (int c : levels) {
    if (c < 1) return absl::InvalidArgumentError("--concurrency levels must be >= 1");
    const LevelResult r = RunLevel(*stub, c, requests, prompt_len, max_new, info.config().vocab_size(), seed);
    std::printf("| %d | %d | %d | %d | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", c, r.ok + r.failed, r.ok,
                r.failed, r.seconds, r.ok / r.seconds, r.tokens / r.seconds, 1e3 * Percentile(r.ttft, 0.5),
                1e3 * Percentile(r.ttft, 0.99), 1e3 * Percentile(r.itl, 0.5), 1e3 * Percentile(r.itl, 0.99));
    if (!r.first_error.empty()) std::printf("  first error: %s\n", r.first_error.c_str());
    std::fflush(stdout);
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
                               {{"sweep", {"addr", "concurrency", "requests", "prompt-len", "max-new-tokens", "seed"}}});
  absl::Status st = parsed.ok() ? gla::Main(*parsed) : parsed.status();
  if (!st.ok()) {
    std::fprintf(stderr, "gla-loadgen: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
