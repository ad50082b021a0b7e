#include "tests/support/reference_data.h"

#include <gtest/gtest.h>

#include <string>

#include "models/safetensors.h"
#include "tests/support/test_util.h"

namespace gla::testing {

TinyExpected LoadTinyExpected() {
  TinyExpected e;
  auto f = SafetensorsFile::Open(ReferenceDir() + "/gla-tiny/expected.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return e;
  auto ids = [&](const std::string& name) {
    std::vector<int32_t> out;
    const auto* t = f->Find(name);
    EXPECT_NE(t, nullptr) << name;
    if (t == nullptr) return out;
    auto v = ToInt64(*t);
    EXPECT_TRUE(v.ok()) << name;
    if (v.ok()) out.assign(v->begin(), v->end());
    return out;
  };
  auto f64 = [&](const std::string& name) {
    const auto* t = f->Find(name);
    EXPECT_NE(t, nullptr) << name;
    if (t == nullptr) return std::vector<double>();
    auto v = ToFloat64(*t);
    EXPECT_TRUE(v.ok()) << name;
    return v.ok() ? *v : std::vector<double>();
  };
  for (int j = 0; j < 3; ++j) {
    e.seq_ids.push_back(ids("seq" + std::to_string(j) + ".input_ids"));
    e.seq_logits.push_back(f64("seq" + std::to_string(j) + ".logits"));
  }
  e.prompt = ids("greedy.prompt_ids");
  e.greedy = ids("greedy.output_ids");
  e.margins = f64("greedy.top2_margin");
  return e;
}

}  // namespace gla::testing
