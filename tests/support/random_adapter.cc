#include "tests/support/random_adapter.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/support/test_util.h"

namespace gla::testing {

LoraAdapter RandomLoraAdapter(const GlaConfig& config, const std::vector<std::string>& targets, unsigned seed, int r,
                              double alpha, float b_range) {
  LoraConfig lc;
  lc.r = r;
  lc.alpha = alpha;
  auto t = ParseLoraTargets(targets);
  EXPECT_TRUE(t.ok()) << t.status();
  if (t.ok()) lc.targets = *t;
  auto a = NewLoraAdapter(config, lc, seed);
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return LoraAdapter{};
  std::mt19937 rng(seed);
  for (auto& layer : a->layers)
    for (auto& pair : layer)
      if (pair.has_value()) pair->b.data = RandomVector(pair->b.data.size(), rng, -b_range, b_range);
  return *std::move(a);
}

}  // namespace gla::testing
