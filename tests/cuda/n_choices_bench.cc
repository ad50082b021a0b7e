// gla-n-bench: what n > 1 costs on the CUDA backend, through the scheduler the server runs
// (issue 20: "one prefill, then n-1 copies of the state; n = 8 costs about one prefill").
//
//   gla-n-bench --model DIR [--name gla-1.3B] [--prompts 512,2048] [--n 8] [--new_tokens 1,32]
//
// For each prompt length T and completion length: the wall time of one request (n = 1), of n
// generations submitted as one group (Scheduler::SubmitGroup: one prefill, then state copies), and
// of the same n submitted as independent requests (n prefills, as a KV-cache server without
// prefix sharing would run them). The ratio column is each time over the n = 1 time. The floor is
// one prefill's FLOPs at the bf16 GEMM peak measured in this run (tests/cuda/device_ceilings.h)
// plus, per generated token, the weights once and n states read and written at the copy
// bandwidth. The median of 5 runs after one warm-up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/backend.h"
#include "engine/scheduler.h"
#include "tests/cuda/bench_report.h"
#include "tests/cuda/device_ceilings.h"
#include "tests/cuda/model_costs.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "gla-n-bench: error: %s\n", msg.c_str());
  std::exit(1);
}

std::vector<int> Numbers(const std::string& list, const char* flag) {
  std::vector<int> v;
  for (absl::string_view s : absl::StrSplit(list, ',')) {
    int x = 0;
    if (!absl::SimpleAtoi(s, &x) || x < 1) Die(std::string("--") + flag + " wants positive numbers");
    v.push_back(x);
  }
  return v;
}

// Submits the specs (as one group or one by one) and waits until every one has finished; seconds.
double Run(gla::Scheduler& s, const std::vector<gla::GenerationSpec>& specs, bool group) {
  std::vector<std::promise<void>> done(specs.size());
  std::vector<gla::UpdateSink> sinks;
  for (auto& d : done)
    sinks.push_back([&d](gla::GenerationUpdate&& u) {
      if (!u.finished) return;
      if (!u.status.ok()) Die(std::string(u.status.message()));
      d.set_value();
    });
  const auto t0 = Clock::now();
  if (group) {
    auto h = s.SubmitGroup(specs, sinks);
    if (!h.ok()) Die(std::string(h.status().message()));
  } else {
    for (size_t i = 0; i < specs.size(); ++i)
      if (auto h = s.Submit(specs[i], sinks[i]); !h.ok()) Die(std::string(h.status().message()));
  }
  for (auto& d : done) d.get_future().wait();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags = {
      {"model", ""}, {"name", ""}, {"prompts", "512,2048"}, {"n", "8"}, {"new_tokens", "1,32"}};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    if (f.rfind("--", 0) != 0 || !flags.count(f.substr(2))) Die("unknown option " + f);
    flags[f.substr(2)] = argv[i + 1];
  }
  if (flags["model"].empty()) Die("--model DIR is required");
  const std::vector<int> prompts = Numbers(flags["prompts"], "prompts"), lengths = Numbers(flags["new_tokens"], "new_tokens");
  const int n = Numbers(flags["n"], "n").front();
  const int max_prompt = *std::max_element(prompts.begin(), prompts.end());

  gla::CudaBackendOptions o;
  o.slots = 2 * n + 1;
  o.step_token_budget = max_prompt + n;  // a whole prompt in one step, as the TTFT measurements do
  auto backend_or = gla::MakeCudaBackend(flags["model"], o);
  if (!backend_or.ok()) Die(std::string(backend_or.status().message()));
  gla::Backend& b = **backend_or;
  const gla::GlaConfig& c = b.config();
  const std::string name = flags["name"].empty() ? flags["model"] : flags["name"];
  gla::bench::BenchReport report("n-choices-" + name, gla::bench::MeasureDeviceCeilings());
  const gla::bench::DeviceCeilings& ceil = report.ceilings();

  const gla::bench::ModelCosts costs = gla::bench::CostsOf(b);
  const double flops_per_token = costs.flops_per_token, state_bytes = costs.state_bytes;
  const double step_weight_bytes = costs.step_weight_bytes;

  report.PrintHeader();
  std::printf("# %s: state %.1f MiB per sequence; n = %d, sampled at temperature 0.8 (a seed per generation)\n",
              name.c_str(), state_bytes / 1048576.0, n);
  report.SetNote("model", name);
  std::printf("%-8s %-7s %-24s %10s %10s %10s %9s\n", "prompt", "tokens", "mode", "time ms", "x n=1", "floor ms",
              "of floor");
  gla::Scheduler s(b, {.queue_size = 4 * n, .step_token_budget = o.step_token_budget, .min_prefill_tokens = 16});
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> tok(3, std::min(c.vocab_size, 32000) - 1);
  for (int T : prompts) {
    std::vector<int32_t> prompt(T);
    for (auto& t : prompt) t = tok(rng);
    for (int new_tokens : lengths) {
      auto specs = [&](int count) {
        std::vector<gla::GenerationSpec> v;
        for (int j = 0; j < count; ++j) {
          gla::GenerationSpec g;
          g.prompt = prompt;
          g.max_new_tokens = new_tokens;
          g.ignore_eos = true;
          g.sampling.temperature = 0.8f;
          g.sampling.seed = 100 + j;
          v.push_back(std::move(g));
        }
        return v;
      };
      double one = 0;
      for (auto [mode, count, group] : {std::tuple{std::string("n=1"), 1, false},
                                        std::tuple{"n=" + std::to_string(n) + " one prefill (group)", n, true},
                                        std::tuple{"n=" + std::to_string(n) + " independent", n, false}}) {
        std::vector<double> times;
        for (int rep = 0; rep < 6; ++rep) times.push_back(Run(s, specs(count), group));
        std::sort(times.begin() + 1, times.end());  // the first is warm-up
        const double t = times[3];
        if (count == 1) one = t;
        const double floor_s = ceil.FlopsSeconds(flops_per_token * T) +
                               new_tokens * ceil.BytesSeconds(step_weight_bytes + 2.0 * count * state_bytes);
        std::printf("%-8d %-7d %-24s %10.3f %9.2fx %10.3f %8.1f%%\n", T, new_tokens, mode.c_str(), t * 1e3, t / one,
                    floor_s * 1e3, 100.0 * floor_s / t);
        report.AddRow()
            .Num("prompt", T)
            .Num("new_tokens", new_tokens)
            .Str("mode", mode)
            .Num("time_ms", t * 1e3)
            .Num("x_n1", t / one)
            .Num("floor_ms", floor_s * 1e3);
      }
    }
  }
  std::printf("# forks (state copies) made: %llu\n", static_cast<unsigned long long>(s.stats().forks));
  return report.WriteJsonIfAsked() ? 0 : 1;
}
