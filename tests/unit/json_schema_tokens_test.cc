// Issue 21's correctness suite at the token level: every instance of the shared schemas
// (../shared/data/jsonschema) that compiles, written as a generator writes it (compact, members in
// schema order) and tokenized by the default model's tokenizer (models/gla-brown), is forced
// through the constraint token by token: each token must be in the mask the scheduler would apply
// (Matcher::Allowed, start-of-text trie for the first) and the text must end complete. Valid
// instances must be accepted, invalid ones refused. Also measures the masks' time (one core).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/constraints/constraint.h"
#include "models/tokenizer.h"
#include "tests/support/json_canonical.h"

namespace gla {
namespace {

using testing::ordered_json;

struct Forced {
  bool accepted = false;
  int refused_at = -1;  // the token the mask refused (-1: none; the text may still be incomplete)
  std::vector<double> mask_us;
};

// The instance's tokens through the constraint, as the scheduler applies it.
Forced Force(const constraints::Constraint& c, const constraints::ConstraintVocabulary& vocab, const Tokenizer& tok,
             const std::vector<int32_t>& ids) {
  Forced f;
  auto m = c.Start();
  StreamingDetokenizer detok(tok);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const bool at_start = detok.AtStart();
    const auto t0 = std::chrono::steady_clock::now();
    const constraints::TokenMask mask = m->Allowed(vocab, at_start);
    f.mask_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (!constraints::Allowed(mask, id)) {
      f.refused_at = static_cast<int>(i);
      return f;
    }
    if (!m->Advance(vocab.Bytes(id, at_start))) {
      ADD_FAILURE() << "the mask allowed token " << id << " that the matcher then refused";
      return f;
    }
    detok.Push(id);
  }
  f.accepted = m->CanEnd();
  return f;
}

TEST(JsonSchemaTokens, SharedInstancesForcedThroughTheDefaultTokenizer) {
  const std::string dir = std::string(GLA_SOURCE_DIR) + "/../shared/data/jsonschema";
  if (!std::filesystem::is_directory(dir)) GTEST_FAIL() << "no shared schemas at " << dir;
  auto tok = Tokenizer::Load(std::string(GLA_SOURCE_DIR) + "/models/gla-brown/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  constraints::TokenBytes tb;
  (*tok)->TokenBytes(&tb.bytes, &tb.at_start, &tb.invisible_at_start);
  const constraints::ConstraintVocabulary vocab(std::move(tb));

  int schemas = 0, compiled = 0, passing = 0, validation_errors = 0, invalidation_errors = 0, instances = 0;
  int unrepresentable = 0;  // valid texts the vocabulary cannot spell (decode(encode(text)) != text)
  std::vector<double> mask_us;
  // Every 20th schema in name order by default (the grammar masks are slow: the whole set takes
  // ~15 min on one core today); GLA_SCHEMA_TOKENS_EVERY=1 forces all of them.
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".json") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  const char* every_env = std::getenv("GLA_SCHEMA_TOKENS_EVERY");
  const size_t every = every_env != nullptr && std::atoi(every_env) > 0 ? std::atoi(every_env) : 20;
  for (size_t n = 0; n < paths.size(); ++n) {
    const std::filesystem::path& path = paths[n];
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    const ordered_json file = ordered_json::parse(text.str(), nullptr, false);
    if (!file.is_object() || !file.contains("schema")) continue;
    ++schemas;
    if (n % every != 0) continue;
    auto c = constraints::Constraint::Compile(constraints::Constraint::Kind::kJsonSchema, file["schema"].dump());
    if (!c.ok()) continue;  // refusals: counted by json_schema_test
    ++compiled;
    std::map<std::string, int> order;
    testing::PropertyOrder(file["schema"], &order);
    bool all_right = true;
    for (const ordered_json& t : file["tests"]) {
      ordered_json data = t["data"];
      testing::Canonical(data, &file["schema"], file["schema"], order);
      const std::string instance = data.dump();
      auto ids = (*tok)->Encode(instance, /*add_bos=*/false);
      ASSERT_TRUE(ids.ok()) << ids.status();
      auto back = (*tok)->Decode(*ids);
      const bool valid = t["valid"].get<bool>();
      if (!back.ok() || *back != instance) {  // NFKC or unknown characters: no output can be this text
        if (valid) ++unrepresentable;
        continue;
      }
      ++instances;
      const Forced f = Force(**c, vocab, **tok, *ids);
      mask_us.insert(mask_us.end(), f.mask_us.begin(), f.mask_us.end());
      if (valid && !f.accepted) {
        ++validation_errors, all_right = false;
        if (validation_errors <= 10)
        {
          std::string pieces;
          for (int i = std::max(0, f.refused_at - 3); i <= f.refused_at && i < static_cast<int>(ids->size()); ++i)
            pieces += "[" + (*tok)->PieceText((*ids)[i]) + "]";
          std::printf("[ detail ] valid instance refused at token %d %s: %s: %s\n", f.refused_at, pieces.c_str(),
                      path.filename().c_str(), instance.substr(0, 120).c_str());
        }
      }
      if (!valid && f.accepted) {
        ++invalidation_errors, all_right = false;
        if (invalidation_errors <= 10)
          std::printf("[ detail ] invalid instance accepted: %s: %s\n", path.filename().c_str(),
                      instance.substr(0, 160).c_str());
      }
    }
    passing += all_right;
  }
  ASSERT_GT(schemas, 1500) << "the shared schemas are missing";
  ASSERT_FALSE(mask_us.empty());
  std::sort(mask_us.begin(), mask_us.end());
  double sum = 0;
  for (double u : mask_us) sum += u;
  std::printf("[ measure ] token level (gla-brown, %d-token vocabulary): %d schemas, %d compiled, %d passing; "
              "%d instances forced: validation errors %d, invalidation errors %d; %d valid texts the vocabulary "
              "cannot spell\n",
              vocab.vocab_size(), schemas, compiled, passing, instances, validation_errors, invalidation_errors,
              unrepresentable);
  std::printf("[ measure ] mask per token (one core, %zu masks): mean %.1f us, p50 %.1f us, p99 %.1f us, max %.0f us\n",
              mask_us.size(), sum / mask_us.size(), mask_us[mask_us.size() / 2], mask_us[mask_us.size() * 99 / 100],
              mask_us.back());
  const auto cache = constraints::TerminalTokensCache::Shared().stats();
  std::printf("[ measure ] terminal tokens cache: %zu entries, %.1f MiB, %lld hits, %lld made\n", cache.entries,
              cache.bytes / 1048576.0, static_cast<long long>(cache.hits), static_cast<long long>(cache.misses));
  EXPECT_EQ(validation_errors, 0);
  EXPECT_EQ(invalidation_errors, 0);
}

}  // namespace
}  // namespace gla
