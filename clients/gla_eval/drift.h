// How far a model with reduced-precision weights drifts from the model it was made from (issue 23:
// accuracy measured, never assumed): both decode the same token stream from one prompt, and at
// every step the candidate's next-token distribution is compared with the reference's (KL
// divergence, nats per token) and its top choice with the reference's. The stream is the
// reference's own output, greedy or sampled (teacher forcing: one bad step does not derail the
// rest), so the KL is per token of what the reference would say. Then each decodes greedily on its
// own and the first token where their texts part is reported. `gla-eval drift` prints it.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "engine/model/cpu_model.h"

namespace gla {

struct DriftOptions {
  static constexpr int kMaxTokens = 1 << 20;  // (a KL value is kept per token)
  int tokens = 4096;         // decode steps measured, 1..kMaxTokens
  double temperature = 0;    // the reference's stream: 0 greedy, else sampled at this temperature
  uint64_t seed = 1;         // for sampling
};

struct DriftStats {
  int tokens = 0;
  double mean_kl = 0, p99_kl = 0, max_kl = 0;  // KL(reference || candidate), nats per token, at T = 1
  double top1_agreement = 0;                    // steps where both put the same token first
  int free_run_identical = 0;                   // greedy, each on its own: tokens equal before they part
};

// INVALID_ARGUMENT for an empty prompt, models of other vocabularies, a token count outside
// [1, kMaxTokens] or a temperature that is negative or not finite.
absl::StatusOr<DriftStats> MeasureDrift(CpuModel& reference, CpuModel& candidate, std::span<const int32_t> prompt,
                                        const DriftOptions& options);

}  // namespace gla
