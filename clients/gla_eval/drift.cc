#include "clients/gla_eval/drift.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/status_macros.h"

namespace gla {

namespace {

// log softmax of `row` at temperature 1, in double.
std::vector<double> LogSoftmax(const std::vector<float>& row) {
  const double mx = *std::max_element(row.begin(), row.end());
  double z = 0;
  for (float v : row) z += std::exp(static_cast<double>(v) - mx);
  const double lz = mx + std::log(z);
  std::vector<double> out(row.size());
  for (size_t i = 0; i < row.size(); ++i) out[i] = static_cast<double>(row[i]) - lz;
  return out;
}

int32_t Argmax(const std::vector<float>& row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// A token from softmax(row / temperature).
int32_t Sample(const std::vector<float>& row, double temperature, std::mt19937_64& rng) {
  const double mx = *std::max_element(row.begin(), row.end());
  std::vector<double> w(row.size());
  for (size_t i = 0; i < row.size(); ++i) w[i] = std::exp((static_cast<double>(row[i]) - mx) / temperature);
  std::discrete_distribution<int32_t> pick(w.begin(), w.end());
  return pick(rng);
}

}  // namespace

absl::StatusOr<DriftStats> MeasureDrift(CpuModel& reference, CpuModel& candidate, std::span<const int32_t> prompt,
                                        const DriftOptions& o) {
  if (prompt.empty()) return absl::InvalidArgumentError("drift: an empty prompt");
  if (reference.config().vocab_size != candidate.config().vocab_size)
    return absl::InvalidArgumentError("drift: the two models have different vocabularies");
  if (o.tokens < 1 || o.tokens > DriftOptions::kMaxTokens || !(o.temperature >= 0) || !std::isfinite(o.temperature))
    return absl::InvalidArgumentError(absl::StrCat("drift: tokens must be in [1, ", DriftOptions::kMaxTokens,
                                                   "] and the temperature finite and >= 0"));
  DriftStats st;
  std::vector<double> kls;
  kls.reserve(static_cast<size_t>(o.tokens));
  int agree = 0;
  std::mt19937_64 rng(o.seed);
  {  // teacher-forced on the reference's stream
    SequenceState rs = reference.NewState(), cs = candidate.NewState();
    ASSIGN_OR_RETURN(std::vector<float> r, reference.Run(prompt, rs, false));
    ASSIGN_OR_RETURN(std::vector<float> c, candidate.Run(prompt, cs, false));
    for (int t = 0; t < o.tokens; ++t) {
      const std::vector<double> lr = LogSoftmax(r), lc = LogSoftmax(c);
      double kl = 0;
      for (size_t i = 0; i < lr.size(); ++i) kl += std::exp(lr[i]) * (lr[i] - lc[i]);
      kls.push_back(std::max(kl, 0.0));  // rounding can make a zero divergence -1e-17
      const int32_t top = Argmax(r);
      agree += top == Argmax(c);
      const int32_t next = o.temperature == 0 ? top : Sample(r, o.temperature, rng);
      if (t + 1 == o.tokens) break;
      ASSIGN_OR_RETURN(r, reference.Run(std::span<const int32_t>(&next, 1), rs, false));
      ASSIGN_OR_RETURN(c, candidate.Run(std::span<const int32_t>(&next, 1), cs, false));
    }
  }
  st.tokens = static_cast<int>(kls.size());
  double sum = 0;
  for (double k : kls) sum += k;
  st.mean_kl = sum / static_cast<double>(kls.size());
  std::vector<double> sorted = kls;
  std::sort(sorted.begin(), sorted.end());
  st.max_kl = sorted.back();
  st.p99_kl = sorted[std::min(sorted.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(sorted.size())))];
  st.top1_agreement = static_cast<double>(agree) / static_cast<double>(kls.size());
  {  // greedy, each on its own
    SequenceState rs = reference.NewState(), cs = candidate.NewState();
    ASSIGN_OR_RETURN(std::vector<float> r, reference.Run(prompt, rs, false));
    ASSIGN_OR_RETURN(std::vector<float> c, candidate.Run(prompt, cs, false));
    while (st.free_run_identical < o.tokens) {
      const int32_t a = Argmax(r), b = Argmax(c);
      if (a != b) break;
      ++st.free_run_identical;
      if (st.free_run_identical == o.tokens) break;
      ASSIGN_OR_RETURN(r, reference.Run(std::span<const int32_t>(&a, 1), rs, false));
      ASSIGN_OR_RETURN(c, candidate.Run(std::span<const int32_t>(&b, 1), cs, false));
    }
  }
  return st;
}

}  // namespace gla
